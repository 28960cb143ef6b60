"""Load one calibration tensor from a `.raw` or `.npy` file for a model input.

A `.raw` file is a headerless little-endian C-order dump (FORMATS.md b.1): float32 unless
`native` (the input's own dtype, qairt's --use_native_input_files), then cast to the input's
dtype (int64 token ids, bool masks). Its byte size must match the input exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtool.errors import DataError
from qtool.io.files import read_bytes


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def _from_npy(path: Path, spec: InputSpec, where: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise DataError(f"{path} not found", where=where) from e
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npy file: {e}", where=where) from e
    if array.size != int(np.prod(spec.shape)):
        raise DataError(
            f"{path} holds shape {list(array.shape)}, input {spec.name!r} needs {spec.describe()}",
            where=where,
        )
    return array.reshape(spec.shape)


def _from_raw(path: Path, spec: InputSpec, where: str, native: bool) -> np.ndarray:
    file_dtype = np.dtype(spec.dtype if native else np.float32).newbyteorder("<")
    if not path.is_file():
        raise DataError(f"{path} not found", where=where)
    data = read_bytes(path, "raw input file")
    need = int(np.prod(spec.shape)) * file_dtype.itemsize
    if len(data) != need:
        raise DataError(
            f"{path} has {len(data)} bytes, input {spec.name!r} needs {need} ({file_dtype.name}{list(spec.shape)})",
            where=where,
        )
    return np.frombuffer(data, dtype=file_dtype).reshape(spec.shape)


def load_tensor(path: Path, spec: InputSpec, where: str, native: bool = False) -> np.ndarray:
    """Read `path` for input `spec`; `where` ("list.txt:7") prefixes every error."""
    array = _from_npy(path, spec, where) if path.suffix == ".npy" else _from_raw(path, spec, where, native)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path} contains NaN or Inf values", where=where)
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))

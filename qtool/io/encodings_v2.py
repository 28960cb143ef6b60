"""AIMET encodings 2.0.0 (FORMATS.md b.2): each tensor described as ONNX QuantizeLinear sees it.

A document is `{"version": "2.0.0", "encodings": [entry, ...]}` (aimet_onnx's layout). An entry
has `name`, `output_dtype` (int4/uint4/int8/uint8/int16/uint16/int32/uint32), `y_scale` (a number,
or one per channel), `y_zero_point` (optional, default 0) and `axis` (per-channel only). The zero
point lies on the grid `output_dtype` names (AIMET `AffineEncoding._to_2_0_0`):
`y_zero_point = -offset` on unsigned grids, `-(offset + 2^(bw-1))` on signed ones, so symmetric
encodings have none.

2.0.0 has no activation/param sections. qtool writes `param_names` next to `encodings` (readers
that do not know it ignore it), so its own files read back into the same `Encodings`; without it,
per-channel entries are taken as params and the rest as activations. The sectioned layout
(`activation_encodings`/`param_encodings` lists of 2.0.0 entries) is read too.
- Float encodings (fp16, fp32) have no 2.0.0 entry (AIMET `FloatEncoding`); they are not written.
- An entry without `y_scale` is qtool's precision request (calibration fills the range), like a
  0.6.1 entry without min/max.
- Per-block and LPBQ entries (`block_size`, nested scales) are read and written by
  `encodings_blocks.py`; 2-bit grids are rejected with a DataError.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import DataError
from qtool.io import encodings_blocks
from qtool.io.encodings_blocks import shown
from qtool.io.files import quoted

VERSION = "2.0.0"
DTYPES = {f"{'' if signed else 'u'}int{bw}": (bw, signed)
          for bw in (*enc.INT_BITWIDTHS, enc.NARROW_WEIGHT_BITWIDTH) for signed in (True, False)}  # fmt: skip

Sections = tuple[dict[str, Encoding], dict[str, Encoding]]


def is_v2(data: dict) -> bool:
    """A 2.x document: by its version, or by AIMET's single `encodings` list."""
    version = str(data.get("version", ""))
    return version.startswith("2") or ("encodings" in data and "activation_encodings" not in data)


def finite_number(value: Any) -> float | None:
    """`value` as a finite float; None for a bool, a non-number, NaN, an infinity or an int past float's range."""
    if type(value) is float:  # most are: a file's 10^6 entries read this 3 x 10^6 times
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


FLOAT32_SCALES = (1.1754944e-38, 3.4028235e38)  # float32's smallest normal and largest: every scale is written as one


def off_float32(scales: Any) -> float | None:
    """The first scale float32 cannot hold (1e300 is inf there, 1e-300 is 0: the QDQ reader refused the model
    qtool had just built, naming a node and not the file), or None."""
    scales = np.asarray(scales, np.float64)  # at once: a 1.0.0 file of a 2.35 GB decoder holds 18 M block scales
    outside = ~((FLOAT32_SCALES[0] <= scales) & (scales <= FLOAT32_SCALES[1]))
    return float(scales[outside][0]) if outside.any() else None


def _numbers(value: Any, key: str, where: str, *, integers: bool) -> list[float]:
    values = value.tolist() if isinstance(value, np.ndarray) else value if isinstance(value, list) else [value]
    if not values:
        raise DataError(f"'{key}' must not be empty", where=where)
    for v in values:
        if isinstance(v, list):
            raise DataError(
                f"nested '{key}' lists are per-block scales: they need 'block_size' and 'axis'", where=where
            )
        number = finite_number(v)
        if number is None or (integers and not number.is_integer()):
            kind = "an integer" if integers else "a finite number"
            raise DataError(f"every '{key}' value must be {kind}, got {shown(v)}", where=where)
    return [float(v) for v in values]


def _axis(entry: dict, channels: int, where: str) -> int | None:
    axis = entry.get("axis")
    if axis is None:
        if channels > 1:
            raise DataError(f"{channels} scales need an 'axis' (per-channel)", where=where)
        return None
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise DataError(f"'axis' must be an integer, got {shown(axis)}", where=where)
    return axis if channels > 1 else None


def parse_entry(entry: Any, where: str) -> tuple[str, Encoding]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError("each 2.0.0 encoding must be an object with a 'name'", where=where)
    name = entry["name"]
    where = f"{where}: {quoted(name)}"
    dtype = entry.get("output_dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise DataError(f"output_dtype {shown(dtype)} is not supported; use one of {sorted(DTYPES)}", where=where)
    bitwidth, signed = DTYPES[dtype]
    if "block_size" in entry or "per_block_int_scale" in entry:
        return name, encodings_blocks.v2_block(entry, bitwidth, signed, where)
    if "y_scale" not in entry:
        return name, Encoding(bitwidth=bitwidth, is_symmetric=signed)
    scale = _numbers(entry["y_scale"], "y_scale", where, integers=False)
    if any(s <= 0 for s in scale):
        raise DataError("every y_scale must be positive", where=where)
    if (off := off_float32(scale)) is not None:
        raise DataError(f"y_scale {off:g} is past float32's range (1.2e-38 to 3.4e38)", where=where)
    zero_point = _numbers(entry.get("y_zero_point", 0), "y_zero_point", where, integers=True)
    if len(zero_point) == 1:
        zero_point = zero_point * len(scale)
    if len(zero_point) != len(scale):
        raise DataError(f"{len(zero_point)} zero points for {len(scale)} scales", where=where)
    qmin, qmax = (-(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) if signed else (0, 2**bitwidth - 1)
    if any(not qmin <= z <= qmax for z in zero_point):
        raise DataError(f"y_zero_point must lie in [{qmin}, {qmax}] for {dtype}", where=where)
    if any(not math.isfinite(s * (2**bitwidth - 1)) for s in scale):
        raise DataError("y_scale is too large: the range it spans is not a finite number", where=where)
    shift = 2 ** (bitwidth - 1) if signed else 0
    offset = [-(int(z) + shift) for z in zero_point]
    symmetric = signed and not any(zero_point)
    return name, enc.from_scale_offset(
        scale, offset, bitwidth, symmetric=symmetric, axis=_axis(entry, len(scale), where)
    )


def named_entries(body: list, where: str, parse: Callable[[Any, str], tuple[str, Encoding]]) -> dict[str, Encoding]:
    """A list of named encodings (1.0.0's and 2.0.0's), each read by `parse`; a tensor listed twice is refused, as
    0.6.1's duplicate keys are (the last one would win)."""
    found: dict[str, Encoding] = {}
    for i, item in enumerate(body):
        name, value = parse(item, f"{where}[{i}]")
        if name in found:
            raise DataError(f"tensor {quoted(name)} is listed twice", where=f"{where}[{i}]")
        found[name] = value
    return found


def _entries(body: Any, where: str) -> dict[str, Encoding]:
    if not isinstance(body, list):
        raise DataError("must be a list of encodings", where=where)
    return named_entries(body, where, parse_entry)


def parse(data: dict, where: str) -> Sections:
    """(activations, params) of a 2.x document; 7 bits (int7, --weights_bitwidth 7) for weights only."""
    acts, params = _sections(data, where)
    for name, e in acts.items():
        if e.bitwidth == enc.NARROW_WEIGHT_BITWIDTH:
            raise DataError(f"{quoted(name)}: an activation's output_dtype is 4, 8, 16 or 32 bits, not 7 (onnxruntime's "
                            "reduce_range is a weight grid: list the weight in 'param_names')", where=where)  # fmt: skip
    return acts, params


def _sections(data: dict, where: str) -> Sections:
    if "encodings" not in data:
        missing = [k for k in ("activation_encodings", "param_encodings") if k not in data]
        if missing:
            raise DataError("a 2.0.0 file needs an 'encodings' list", where=where)
        acts = _entries(data["activation_encodings"], f"{where}: activation_encodings")
        return acts, _entries(data["param_encodings"], f"{where}: param_encodings")
    found = _entries(data["encodings"], f"{where}: encodings")
    hint = data.get("param_names")
    if hint is not None and (not isinstance(hint, list) or not all(isinstance(n, str) for n in hint)):
        raise DataError("'param_names' must be a list of tensor names", where=where)
    params = set(hint) if hint is not None else {n for n, e in found.items() if e.axis is not None or e.blocks}
    return {n: e for n, e in found.items() if n not in params}, {n: e for n, e in found.items() if n in params}


def entry(name: str, e: Encoding) -> dict[str, Any] | None:
    """The 2.0.0 entry of one encoding; None for float encodings, which have none."""
    if e.is_float:
        return None
    if e.blocks is not None:
        return encodings_blocks.v2_entry(name, e)
    out: dict[str, Any] = {"name": name, "output_dtype": f"{'' if e.signed else 'u'}int{e.bitwidth}"}
    if not e.scale:
        return out
    per_channel = e.axis is not None or len(e.scale) > 1
    zero_point = [int(z) for z in e.zero_point()]
    out["y_scale"] = list(e.scale) if per_channel else e.scale[0]
    if any(zero_point):
        out["y_zero_point"] = zero_point if per_channel else zero_point[0]
    if per_channel:
        out["axis"] = e.axis if e.axis is not None else 0
    return out


def document(activations: dict[str, Encoding], params: dict[str, Encoding]) -> dict[str, Any]:
    """The whole 2.0.0 document, entries sorted by name, each made as it is written (a callable: a 2.35 GB decoder's
    W4 B32 entries hold 18 M block scales, over a GB as Python lists at once)."""
    named = sorted([*activations.items(), *params.items()], key=lambda item: item[0])
    entries = [functools.partial(entry, n, value) for n, value in named if not value.is_float]
    return {
        "version": VERSION,
        "encodings": entries,
        "param_names": sorted(n for n, e in params.items() if not e.is_float),
    }

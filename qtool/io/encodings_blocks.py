"""Per-block and LPBQ entries of AIMET encodings 1.0.0 and 2.0.0 (FORMATS.md b.2) <-> `Encoding`.

1.0.0 (aimet `AffineEncoding` / `GroupedBlockEncoding.to_qnn_encoding_dict("1.0.0")`):
- `PER_BLOCK`: `scale` and `offset` hold one value per block, the scale tensor flattened row-major
  in the weight's own layout (a MatMul weight [K, N] has [K/B, N]), plus `block_size`.
- `LPBQ`: `bw` is the decompressed bitwidth (8), `compressed_bw` the weights' (4); `scale` holds one
  float per output channel, `offset` −2^(bw−1) each, `per_block_int_scale` one integer per block
  (same order as PER_BLOCK's scales); a block's scale is channel scale × its integer.
  1.0.0 gives no shapes or axes: the plan places these on their weight (`blocks.place`).
2.0.0: `axis` is the block axis and `block_size` is set; `y_scale` (PER_BLOCK) is nested in the
  scale tensor's shape; LPBQ has no `y_scale` but a nested `per_block_int_scale` and a
  `per_channel_float_scale` of the same rank with 1 on the block axis; its decompressed bitwidth
  is 2 x `output_dtype`'s (AIMET's default), written as `decompressed_bw` only when it differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from typing import Any

import numpy as np

from qtool import encoding as enc
from qtool.encoding import Blocks, Encoding
from qtool.errors import DataError, UsageError
from qtool.io.files import clipped

BLOCK_TYPES = ("PER_BLOCK", "LPBQ")


def shown(value: Any) -> str:
    """`value` as the file writes it (the string "3" with its quotes, null, true), cut short: a hostile file's
    number may have thousands of digits."""
    try:
        text = json.dumps(value.tolist() if isinstance(value, np.ndarray) else value)
    except (TypeError, ValueError):  # not JSON (a YAML date): as Python writes it
        text = repr(value)
    return clipped(text, 40)


def _positive_int(entry: dict, key: str, where: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 20:
        raise DataError(f"'{key}' must be a positive integer, got {shown(value)}", where=where)
    return value


def _int_scales(values: np.ndarray, bitwidth: int, decompressed_bw: int, where: str) -> enc.Values:
    top = 2 ** (decompressed_bw - bitwidth)
    if not np.all((values == np.floor(values)) & (values >= 1) & (values <= top)):
        raise DataError(f"every per_block_int_scale must be an integer in [1, {top}]", where=where)
    return enc.Values(values, np.int64)


def _not_narrow(bitwidth: int, where: str) -> None:
    if bitwidth == enc.NARROW_WEIGHT_BITWIDTH:
        raise DataError(f"{bitwidth}-bit blocks: a block's grid is 4 or 8 bits (7 is a per-tensor or per-channel "
                        "weight grid, onnxruntime's reduce_range)", where=where)  # fmt: skip


def v1_block(entry: dict, enc_type: str, scale: list[float], offset: list[float], bw: int, where: str) -> Encoding:
    """A 1.0.0 PER_BLOCK or LPBQ entry whose scale/offset lists `_from_v1_entry` already checked."""
    _not_narrow(bw, where)
    size = _positive_int(entry, "block_size", where)
    symmetric = entry.get("is_sym") in (True, "True", "true", 1)
    if enc_type == "PER_BLOCK":
        made = enc.from_scale_offset(scale, offset, bw, symmetric=symmetric)
        return dataclasses.replace(made, blocks=Blocks(size))
    compressed = entry.get("compressed_bw")
    if compressed not in enc.INT_BITWIDTHS or isinstance(compressed, bool) or not compressed < bw:
        raise DataError(f"LPBQ 'compressed_bw' {shown(compressed)} must be 4, 8 or 16 and below 'bw' {bw}", where=where)
    if np.any(np.asarray(offset) != -(2 ** (bw - 1))):
        raise DataError(f"LPBQ is symmetric: every offset must be {-(2 ** (bw - 1))}", where=where)
    ints = entry.get("per_block_int_scale")
    if not isinstance(ints, list | np.ndarray) or not len(ints) or len(ints) % len(scale):
        raise DataError(f"'per_block_int_scale' must be a list of a multiple of {len(scale)} integers", where=where)
    numbers = _numbers(ints, "per_block_int_scale", where)
    blocks = Blocks(size, decompressed_bw=bw, channel_scale=enc.Values(scale),
                    int_scale=_int_scales(numbers, compressed, bw, where))  # fmt: skip
    return Encoding(bitwidth=compressed, is_symmetric=True, blocks=blocks)


def v1_entry(name: str, e: Encoding) -> dict[str, Any]:
    b = e.blocks
    assert b is not None
    if not b.is_lpbq:
        return {"name": name, "enc_type": "PER_BLOCK", "dtype": "INT", "bw": e.bitwidth, "is_sym": e.is_symmetric,
                "scale": list(e.scale), "offset": list(e.offset), "block_size": b.size}  # fmt: skip
    bw = b.decompressed_bw
    return {"name": name, "enc_type": "LPBQ", "dtype": "INT", "bw": bw, "compressed_bw": e.bitwidth, "is_sym": True,
            "scale": list(b.channel_scale), "offset": [-(2 ** (bw - 1))] * len(b.channel_scale),  # type: ignore[operator]
            "block_size": b.size, "per_block_int_scale": list(b.int_scale)}  # fmt: skip


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"every '{key}' value must be a number, got {shown(value)}", where=where)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DataError(f"every '{key}' value must be a finite number, got {shown(value)}", where=where)
    return number


def _numbers(values: list | np.ndarray, key: str, where: str) -> np.ndarray:
    """Each value as a float, in one numpy call where all are finite floats and ints (an LPBQ entry of a 2.35 GB
    decoder holds 18 M integers; load_json made it an array); else a value at a time, the first that is no finite
    number refused."""
    if isinstance(values, np.ndarray):
        return values
    if set(map(type, values)) <= {float, int}:
        with contextlib.suppress(OverflowError), np.errstate(all="ignore"):  # an int past float's: a value at a time
            found = np.array(values, np.float64)
            if np.isfinite(found).all():
                return found
    return np.array([_number(v, key, where) for v in values], np.float64)


def nested(value: Any, key: str, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A rectangular nested list of finite numbers: (values row-major, shape)."""
    if not isinstance(value, list | np.ndarray):
        raise DataError(f"'{key}' of a per-block encoding must be a nested list", where=where)
    level: list[Any] = [value]
    shape: list[int] = []
    while level and all(isinstance(v, list | np.ndarray) for v in level):
        sizes = {len(v) for v in level}
        if len(sizes) != 1 or 0 in sizes:
            raise DataError(f"'{key}' must be a rectangular, non-empty nested list", where=where)
        shape.append(sizes.pop())
        level = [x for v in level for x in v]
    return _numbers(level, key, where), tuple(shape)


def _axis(entry: dict, rank: int, where: str) -> int:
    axis = entry.get("axis")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
        raise DataError(f"a per-block entry needs an integer 'axis' within its {rank}-D scales", where=where)
    return axis % rank


def v2_block(entry: dict, bitwidth: int, signed: bool, where: str) -> Encoding:
    """A 2.0.0 entry with `block_size`: PER_BLOCK (nested y_scale) or LPBQ (per_block_int_scale)."""
    _not_narrow(bitwidth, where)
    size = _positive_int(entry, "block_size", where)
    if "per_block_int_scale" in entry:
        if not signed or "y_zero_point" in entry:
            raise DataError("LPBQ is symmetric: a signed output_dtype and no y_zero_point", where=where)
        ints, shape = nested(entry["per_block_int_scale"], "per_block_int_scale", where)
        axis = _axis(entry, len(shape), where)
        channel, channel_shape = nested(entry.get("per_channel_float_scale"), "per_channel_float_scale", where)
        if channel_shape != tuple(1 if i == axis else d for i, d in enumerate(shape)) or channel.min() <= 0:
            raise DataError(f"'per_channel_float_scale' must be positive, of shape {list(shape)} with 1 on axis {axis}",
                            where=where)  # fmt: skip
        decompressed = entry.get("decompressed_bw", 2 * bitwidth)
        if decompressed not in enc.INT_BITWIDTHS or isinstance(decompressed, bool) or decompressed <= bitwidth:
            raise DataError(f"'decompressed_bw' {shown(decompressed)} must exceed {bitwidth}", where=where)
        blocks = Blocks(
            size, axis, shape, decompressed, enc.Values(channel), _int_scales(ints, bitwidth, decompressed, where)
        )
        return Encoding(bitwidth=bitwidth, is_symmetric=True, blocks=blocks)
    scale, shape = nested(entry.get("y_scale"), "y_scale", where)
    if scale.min() <= 0:
        raise DataError("every y_scale must be positive", where=where)
    axis = _axis(entry, len(shape), where)
    zero_point = np.zeros(len(scale))
    if "y_zero_point" in entry:
        zero_point, zp_shape = nested(entry["y_zero_point"], "y_zero_point", where)
        if zp_shape != shape or not np.all(zero_point == np.floor(zero_point)):
            raise DataError(f"'y_zero_point' must be integers of y_scale's shape {list(shape)}", where=where)
    qmin, qmax = (-(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) if signed else (0, 2**bitwidth - 1)
    if not np.all((qmin <= zero_point) & (zero_point <= qmax)):
        raise DataError(f"y_zero_point must lie in [{qmin}, {qmax}]", where=where)
    shift = 2 ** (bitwidth - 1) if signed else 0
    offset = -(zero_point.astype(np.int64) + shift)
    made = enc.from_scale_offset(scale, offset, bitwidth, symmetric=signed and not zero_point.any())
    return dataclasses.replace(made, blocks=Blocks(size, axis, shape))


def v2_entry(name: str, e: Encoding) -> dict[str, Any]:
    b = e.blocks
    assert b is not None
    if not b.shape or b.axis is None:
        raise UsageError(f"the per-block encoding of {name!r} came from a 1.0.0 file, which gives no shapes: "
                         "quantize with it to write 2.0.0")  # fmt: skip
    out: dict[str, Any] = {"name": name, "output_dtype": f"{'' if e.signed else 'u'}int{e.bitwidth}"}
    if b.is_lpbq:
        channel_shape = tuple(1 if i == b.axis else d for i, d in enumerate(b.shape))
        out["per_block_int_scale"] = np.asarray(b.int_scale, dtype=np.int64).reshape(b.shape).tolist()
        out["per_channel_float_scale"] = np.asarray(b.channel_scale).reshape(channel_shape).tolist()
        if b.decompressed_bw != 2 * e.bitwidth:
            out["decompressed_bw"] = b.decompressed_bw
    else:
        out["y_scale"] = np.asarray(e.scale).reshape(b.shape).tolist()
        zero_point = e.zero_point()
        if zero_point.any():
            out["y_zero_point"] = zero_point.reshape(b.shape).tolist()
    out.update(axis=b.axis, block_size=b.size)
    return out

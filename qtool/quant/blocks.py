"""Per-block weight encodings: `--weights_block_size B` and LPBQ (`--use_lpbq`).

A Conv/Gemm/MatMul weight gets one symmetric scale per output channel per block of B consecutive
input channels (onnxruntime `block_size`, AIMET `PER_BLOCK`, Quark per-group). The scales form
AIMET's encoding shape: the weight's own layout with its channel dim, its input dim / B, and 1
elsewhere (a MatMul weight [K, N] has scales [K/B, N]; a Conv weight [O, I, kh, kw] has
[O, I/B, 1, 1], one scale for the B·kh·kw values of a block). ONNX's blocked DequantizeLinear
(opset 21) wants the scale tensor in the weight's full shape with the input dim divided by B,
so the writer repeats a Conv block's scale over the kernel positions (`onnx_array`).

A weight whose input count is not a multiple of B falls back to per-channel (with a warning):
AIMET and QNN refuse a partial last block, so a file with one could not be read back there.

Block scales are calibrated on the block's own values: `min-max` takes its absmax; `mse` and
`sqnr` (the 4-bit default) try clipped absmax · f (f in BLOCK_FACTORS) and keep the least error,
rounding noise plus clipping noise weighted as range_search weighs it (1x, 3x); `percentile` and
`entropy` need more values than a block has and act as `min-max`.

LPBQ (AIMET `GroupedBlockEncoding`, QNN "low-power blockwise quantization"): the block scales are
compressed to a per-channel float scale (float32, so that a QDQ model's float32 scales give it back exactly)
times per-block integers in [1, 2^(decompressed_bw − bw)] (1..16 for 4-bit weights, decompressed 8-bit), some
block of each channel at 16 (a QDQ model's channel scale is read back as its largest block scale / 16).
`min-max`, as AIMET: the channel scale is the largest block scale / 16, each other block the smallest integer
that clips nothing (AIMET rounds to nearest). `mse`/`sqnr`: the channel scale is searched with the integers by
weight error (`_lpbq_by_weight_error`: AIMET's, the largest / 16, is one candidate), by output error
(clipsearch) likewise (`output_lpbq`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import onnx

from qtool import encoding as enc
from qtool.encoding import Blocks, Encoding
from qtool.errors import DataError, UsageError
from qtool.io.digest import blake2b
from qtool.quant.range_search import FACTORS as RANGE_FACTORS  # the histogram search's candidates
from qtool.quant.range_search import GAMMA

BLOCK_SIZES = (16, 32, 64, 128, 256)
BLOCK_BITWIDTHS = (4, 8)
LPBQ_BITWIDTH, LPBQ_DECOMPRESSED_BW = 4, 8  # AIMET's defaults: decompressed = 2 x compressed
BLOCK_FACTORS = np.linspace(0.4, 1.0, 31)  # clipped absmax candidates, in range_search's 0.02 steps
SWEEPS = 2  # coordinate-descent passes of the output-error search over a row's blocks
# asymmetric blocks: the (min, max) shares tried, each side 0.5-1.0 in 0.05 steps
ASYMMETRIC_PAIRS = np.stack(np.meshgrid(*[np.linspace(0.5, 1.0, 11)] * 2, indexing="ij"), -1).reshape(-1, 2)
LPBQ_FACTORS = np.round(np.linspace(0.8, 1.2, 9), 2)  # the largest block's scale over its searched one (LPBQ)
# the same by weight error, AIMET's 1 first (a tie keeps it); 0.02 steps or 0.94-1.06 cost a third but scored
# lower held-out output SQNR on the zoo's encoders (flan-t5's 13.53 and 13.15 dB against 13.56)
LPBQ_CHANNEL_FACTORS = sorted(np.round(np.linspace(0.9, 1.1, 21), 2), key=lambda f: abs(f - 1))
_CHUNK = 1 << 11  # blocks scored at once: bounds the (factors x chunk x block) working array
# values scored per candidate range at once: the (factors x rows x values) float64 working array stays ~1.6 MB,
# in cache (MiniLM's weights: 0.58 -> 0.33 s a 1536 x 384 weight against 32x larger chunks, the same ranges)
_CANDIDATE_VALUES = 1 << 12


def check_options(
    block_size: int | None, bitwidth: int, lpbq: bool, encodings_format: str, asymmetric: bool = False
) -> None:
    """The flag combinations the issue lists as mistakes, each one line naming the flag."""
    if block_size is not None:
        if block_size not in BLOCK_SIZES:
            raise UsageError(
                f"--weights_block_size {block_size} must be a power of two from 16 to 256 ({', '.join(map(str, BLOCK_SIZES))})"
            )
        if bitwidth not in BLOCK_BITWIDTHS:
            raise UsageError(f"--weights_block_size needs --weights_bitwidth 4 or 8, not {bitwidth}")
        if encodings_format == "legacy":
            raise UsageError(
                "--weights_block_size: the legacy (0.6.1) encodings format cannot express per-block scales",
                hint="add --encodings_format 1.0.0 or 2.0.0",
            )
    if lpbq and block_size is None:
        raise UsageError("--use_lpbq needs --weights_block_size: LPBQ compresses per-block scales")
    if asymmetric and (block_size is None or lpbq):
        raise UsageError("--use_asymmetric_blocks needs --weights_block_size and no --use_lpbq (LPBQ is symmetric)")
    if lpbq and bitwidth != LPBQ_BITWIDTH:
        raise UsageError(f"--use_lpbq needs --weights_bitwidth 4 (compressed 4-bit, decompressed 8-bit), not {bitwidth}")


def block_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The input-channel axis of `node`'s weight at `index`, where blocks can run; None elsewhere
    (biases, ConvTranspose, MatMul weights of rank > 2). A Gather's 2-D embedding table (gathered along
    axis 0) takes blocks along its features (axis 1), one scale per row (token) per block, as onnxruntime's
    GatherBlockQuantized does."""
    if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 0 and rank == 2:
        return 1 if all(a.i in (0, -2) for a in node.attribute if a.name == "axis") else None
    if index != 1 or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Conv" and rank >= 3:
        return 1
    if node.op_type == "Gemm" and rank == 2:
        return 1 if any(a.name == "transB" and a.i for a in node.attribute) else 0
    if node.op_type == "MatMul" and rank == 2:
        return 0
    return None


def channel_of(channel_axis: int | None, axis: int, rank: int) -> int | None:
    """The channel axis of a weight blocked along `axis`: the op's own, unless that is the block axis (a
    Gather table's per-row channels are its features): then the other axis of a 2-D table."""
    return 1 - axis if rank == 2 and channel_axis in (None, axis) else channel_axis


def weights_taking_blocks(model: onnx.ModelProto, initializers: dict) -> dict[str, int]:
    """Initializers some node reads as a weight that blocks can run along -> their input count."""
    found = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input[:2]):
            if name in initializers and (axis := block_axis(node, index, len(initializers[name].dims))) is not None:
                found[name] = initializers[name].dims[axis]
    return found


def check_fits(model: onnx.ModelProto, initializers: dict, size: int) -> None:
    """--weights_block_size must fit some weight: else it is a mistake, not a per-channel request."""
    if not any(inputs % size == 0 for inputs in weights_taking_blocks(model, initializers).values()):
        raise UsageError(
            f"--weights_block_size {size}: no Conv/Gemm/MatMul weight has a multiple of {size} inputs per output channel",
            hint="use a smaller block size",
        )


def scale_shape(shape: tuple[int, ...], channel_axis: int, axis: int, size: int) -> tuple[int, ...]:
    return tuple(d if i == channel_axis else d // size if i == axis else 1 for i, d in enumerate(shape))


def _grouped(values: np.ndarray, channel_axis: int, axis: int, size: int) -> np.ndarray:
    """(channels, blocks, values of a block) view of a weight."""
    shape = values.shape
    split = values.reshape(*shape[:axis], shape[axis] // size, size, *shape[axis + 1 :])
    channel = channel_axis if channel_axis < axis else channel_axis + 1
    return np.moveaxis(split, [channel, axis], [0, 1]).reshape(shape[channel_axis], shape[axis] // size, -1)


def _flat(per_channel_block: np.ndarray, channel_axis: int, axis: int) -> np.ndarray:
    """(channels, blocks) values flattened in the scale shape's row-major order."""
    return per_channel_block.ravel() if channel_axis < axis else per_channel_block.T.ravel()


def _error(x: np.ndarray, scale: np.ndarray, bitwidth: int, gamma: float) -> np.ndarray:
    """Per block: squared error of x on a symmetric grid, clipped values weighted `gamma` (range_search).
    In place on one working array: the same numbers as the plain expression, in 0.6x its time."""
    lo, hi = -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1
    clipped = (x < lo * scale) | (x > hi * scale) if gamma != 1.0 else None
    error = np.divide(x, scale)
    np.rint(error, out=error)
    np.clip(error, lo, hi, out=error)
    error *= scale
    error -= x
    np.square(error, out=error)
    if clipped is not None:
        np.multiply(error, gamma, out=error, where=clipped)
    return error.sum(axis=-1)


def _absmax(x: np.ndarray, bitwidth: int, method: str, factors: np.ndarray = BLOCK_FACTORS) -> np.ndarray:
    """Each row's chosen |range| (rows of x are blocks, or channels): its absmax, or the clipped one (absmax ·
    `factors`) of least error on the row's own values."""
    absmax = np.maximum(np.abs(x).max(axis=1).astype(np.float64), enc.MIN_RANGE / 2)
    if method not in GAMMA:
        return absmax
    chosen = np.empty_like(absmax)
    step = max(1, _CANDIDATE_VALUES // max(x.shape[1], 1))  # rows at once: (factors x step x row) stays in cache
    for start in range(0, len(x), step):
        # float64 once, not in each candidate's mixed-type steps (exact: every float32 is a float64)
        part, top = x[start : start + step].astype(np.float64), absmax[start : start + step]
        candidates = top[None, :] * factors[:, None]  # (factors, rows)
        errors = _error(part[None], enc.symmetric_scale(candidates, bitwidth)[..., None], bitwidth, GAMMA[method])
        chosen[start : start + step] = candidates[np.argmin(errors, axis=0), np.arange(len(part))]
    return chosen


def channel_absmax(rows: np.ndarray, bitwidth: int, method: str) -> np.ndarray:
    """Per-channel symmetric |ranges| of a weight's (channels, values) rows by weight error (`mse`/`sqnr`): of
    range_search's candidates (absmax x 0.02..1.0), the least error on the row's own values, not on a histogram
    whose every in-range value costs scale²/12: that cost clipped MiniLM's FFN-down column of one 7.9 among values
    under 0.38 to 2.2 (error 32), where keeping it costs the bulk's energy (2.5). Within `remembered()`, searched
    once per weight's values."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return _remember(("channel_absmax", bitwidth, method), rows, lambda: _absmax(rows, bitwidth, method, RANGE_FACTORS))


def _asymmetric_grid(lo: np.ndarray, hi: np.ndarray, bitwidth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, scale, offset) of ranges [lo, hi] (lo <= 0 <= hi) on enc.tf's asymmetric grid."""
    hi = np.maximum(hi, lo + enc.MIN_RANGE)
    scale = (hi - lo) / (2**bitwidth - 1)
    return lo, scale, np.sign(lo) * np.floor(np.abs(lo / scale) + 0.5)  # enc.tf's offset: round half away


def _asymmetric_ranges(x: np.ndarray, bitwidth: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Each block's (lo, hi) (rows of x are blocks) on an asymmetric grid (enc.tf's): its min and max, or both
    shrunk towards 0 by the pair of factors (ASYMMETRIC_PAIRS) of least error."""
    lo, hi = np.minimum(x.min(axis=1).astype(np.float64), 0.0), np.maximum(x.max(axis=1).astype(np.float64), 0.0)
    if method not in GAMMA:
        return lo, hi
    top, best = 2**bitwidth - 1, (np.full(len(x), np.inf), lo.copy(), hi.copy())
    for start in range(0, len(x), _CHUNK):
        at = slice(start, start + _CHUNK)
        part = x[at]
        for a, b in ASYMMETRIC_PAIRS:
            low, scale, offset = _asymmetric_grid(lo[at] * a, hi[at] * b, bitwidth)
            q = np.clip(np.rint(part / scale[:, None]) - offset[:, None], 0, top)
            clipped = (part < offset[:, None] * scale[:, None]) | (part > (offset + top)[:, None] * scale[:, None])
            error = np.sum((part - (q + offset[:, None]) * scale[:, None]) ** 2 * np.where(clipped, GAMMA[method], 1.0), axis=1)
            better = error < best[0][at]
            for kept, new in zip(best, (error, low, hi[at] * b), strict=True):
                kept[at][better] = new[better]
    return best[1], best[2]


def _lpbq_min_max(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`min-max` LPBQ of (channels, blocks) scales: AIMET's channel scale and, per block, the smallest integer that
    clips nothing, the largest block keeping the top one."""
    top, channel = 2 ** (LPBQ_DECOMPRESSED_BW - LPBQ_BITWIDTH), _lpbq_channel(scale)
    ints = np.clip(np.ceil(scale / channel[:, None] - 1e-9), 1, top)
    ints[np.arange(len(ints)), np.argmax(scale, axis=1)] = top
    return channel, ints.astype(np.int64)


def _lpbq_by_weight_error(x: np.ndarray, scale: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(channel scales, (channels, blocks) integers) of LPBQ by weight error (`_error`) on x (channels, blocks,
    values): per channel scale c (16 c = f x the largest searched block scale, f in LPBQ_CHANNEL_FACTORS), each
    block's integer of least error of the two either side of its searched scale / c, the block cheapest to move
    to 16 moved where no block took it; each channel keeps its c of least total error. AIMET's c alone (f = 1,
    the integers by least error) lost 0.14 dB of weight SQNR to free blocks on khmersm, 0.11 on g2p's BERT; this
    0.07 and 0.05."""
    top, (channels, count) = 2 ** (LPBQ_DECOMPRESSED_BW - LPBQ_BITWIDTH), scale.shape
    best = (np.full(channels, np.inf), np.zeros(channels), np.zeros((channels, count), np.int64))
    step = max(1, _CANDIDATE_VALUES * 16 // max(x[0].size, 1))  # channels at once: working arrays of ~0.5 MB
    for start in range(0, channels, step):
        at = slice(start, start + step)
        part, kept = x[at], tuple(b[at] for b in best)
        for f in LPBQ_CHANNEL_FACTORS:
            channel = _lpbq_channel(scale[at] * f)
            low = np.clip(np.floor(scale[at] / channel[:, None]), 1, top)
            ks = np.stack([low, np.minimum(low + 1, top)])
            errors = np.stack([_error(part, (channel[:, None] * k)[..., None], LPBQ_BITWIDTH, gamma) for k in ks])
            pick = np.argmin(errors, axis=0)[None]
            ints, error = np.take_along_axis(ks, pick, 0)[0], np.take_along_axis(errors, pick, 0)[0]
            if len(lack := np.flatnonzero(ints.max(axis=1) < top)):  # no 16: the block it costs least takes it
                at_top = _error(part[lack], channel[lack, None, None] * top, LPBQ_BITWIDTH, gamma)
                moved = np.argmin(at_top - error[lack], axis=1)
                ints[lack, moved], error[lack, moved] = top, at_top[np.arange(len(lack)), moved]
            total = error.sum(axis=1)
            better = total < kept[0]
            for old, new in zip(kept, (total, channel, ints), strict=True):
                old[better] = new[better]
    return best[1], best[2]


def block_encoding(
    values: np.ndarray, channel_axis: int, axis: int, size: int, bitwidth: int, *, method: str, lpbq: bool = False,
    asymmetric: bool = False,
) -> Encoding:  # fmt: skip
    """The per-block (or LPBQ) symmetric encoding of a weight (asymmetric: a zero point per block too); its
    input count is a multiple of `size`. Within `remembered()`, searched once per weight's values and scheme."""
    values = np.asarray(values)
    channel_axis = channel_of(channel_axis, axis, values.ndim)  # type: ignore[assignment]
    if _SEARCHED is None:
        return _searched(values, channel_axis, axis, size, bitwidth, method, lpbq, asymmetric)
    values = np.ascontiguousarray(values)
    scheme = (channel_axis, axis, size, bitwidth, method, lpbq, asymmetric)
    return _remember(scheme, values, lambda: _searched(values, channel_axis, axis, size, bitwidth, method, lpbq, asymmetric))


# The plan runs again for every layer sequential GPTQ rounds and every trial an algorithm scores, and a weight's
# range search is a pure function of its values and the scheme: MiniLM's embedding tables, which adaround does
# not change, were searched 38 times in one run (208 of its 370 s); smoothquant's keep-if-better trials searched
# each 4-bit per-channel weight 5 times (527 of 715 s). Within `remembered()` (one quantize run), each is searched
# once, keyed by its values (a changed weight is searched anew; the oldest entry goes past SEARCHED_ENTRIES);
# outside, nothing is kept.
T = TypeVar("T")
_SEARCHED: dict[bytes, Any] | None = None
SEARCHED_ENTRIES = 256


def _remember(scheme: tuple, values: np.ndarray, search: Callable[[], T]) -> T:
    """search(), or what it returned before for the same scheme and contiguous `values`."""
    if _SEARCHED is None:
        return search()
    described = (values.dtype.str, values.shape, *scheme)
    key = blake2b(repr(described).encode() + memoryview(values).cast("B"), digest_size=16).digest()
    if (found := _SEARCHED.get(key)) is None:
        found = search()
        if len(_SEARCHED) >= SEARCHED_ENTRIES:
            del _SEARCHED[next(iter(_SEARCHED))]
        _SEARCHED[key] = found
    return found


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    global _SEARCHED
    outer, _SEARCHED = _SEARCHED, {} if _SEARCHED is None else _SEARCHED
    try:
        yield
    finally:
        _SEARCHED = outer


def _searched(values: np.ndarray, channel_axis: int, axis: int, size: int, bitwidth: int, method: str, lpbq: bool,
              asymmetric: bool) -> Encoding:  # fmt: skip
    # the weight's own float type: every step below meets a float64 operand, so it computes as in float64
    # (to the bit), without a float64 copy of the whole weight (an embedding table's was 94 MB)
    x = _grouped(values if values.dtype in (np.float32, np.float64) else values.astype(np.float64), channel_axis, axis, size)
    channels, count = x.shape[:2]
    if asymmetric:
        lo, hi = (r.reshape(channels, count) for r in _asymmetric_ranges(x.reshape(channels * count, -1), bitwidth, method))
        return _assemble_asymmetric(lo, hi, values.shape, channel_axis, axis, size, bitwidth)
    absmax = _absmax(x.reshape(channels * count, -1), bitwidth, method).reshape(channels, count)
    if not lpbq:
        return _assemble(absmax, values.shape, channel_axis, axis, size, bitwidth)
    scale = enc.symmetric_scale(absmax, bitwidth)
    channel, ints = _lpbq_by_weight_error(x, scale, GAMMA[method]) if method in GAMMA else _lpbq_min_max(scale)
    return _assemble(absmax, values.shape, channel_axis, axis, size, bitwidth, (channel, ints))


def _assemble_asymmetric(lo: np.ndarray, hi: np.ndarray, weight_shape: tuple[int, ...], channel_axis: int, axis: int,
                         size: int, bitwidth: int) -> Encoding:  # fmt: skip
    """The asymmetric (enc.tf) per-block encoding of (channels, blocks) ranges [lo, hi]."""
    e = enc.tf(_flat(lo, channel_axis, axis), _flat(hi, channel_axis, axis), bitwidth, channel_axis)
    return _written(e, Blocks(size, axis, scale_shape(weight_shape, channel_axis, axis, size)))


def _written(e: Encoding, blocks: Blocks) -> Encoding:
    """`e` on `blocks`, each block's scale the float32 the QDQ model holds, so that its integers are rounded against
    the scale written, as quantize with the exported encodings rounds them: against float64 scales the 2.35 GB
    decoder's W4 B32 round trip quantize -> export -> quantize flipped 1 to 3 integers in 12 of its 65 weights."""
    scale = e.scale_array().astype(np.float32)
    made = enc.from_scale_offset(scale, np.asarray(e.offset), e.bitwidth, symmetric=e.is_symmetric, axis=e.axis)
    return dataclasses.replace(made, blocks=blocks)


def _lpbq_channel(scale: np.ndarray) -> np.ndarray:
    """AIMET's LPBQ channel scale: the channel's largest block scale / 2^(decompressed − compressed), in float32."""
    return (scale.max(axis=1) / 2 ** (LPBQ_DECOMPRESSED_BW - LPBQ_BITWIDTH)).astype(np.float32).astype(np.float64)


def _assemble(absmax: np.ndarray, weight_shape: tuple[int, ...], channel_axis: int, axis: int, size: int,
              bitwidth: int, lpbq: tuple[np.ndarray, np.ndarray] | None = None) -> Encoding:  # fmt: skip
    """The encoding of (channels, blocks) ranges, or of LPBQ (channel scales, block integers)."""
    shape = scale_shape(weight_shape, channel_axis, axis, size)
    if lpbq is None:
        e = enc.symmetric(-_flat(absmax, channel_axis, axis), _flat(absmax, channel_axis, axis), bitwidth, channel_axis)
        return _written(e, Blocks(size, axis, shape))
    channel, ints = lpbq
    blocks = Blocks(size, axis, shape, LPBQ_DECOMPRESSED_BW, enc.Values(channel),
                    enc.Values(_flat(ints, channel_axis, axis), np.int64))  # fmt: skip
    return _lpbq_encoding(blocks, channel_axis)


def _least_output_error(
    rows: np.ndarray, gram: np.ndarray, size: int, bitwidth: int, candidates, sweeps: int = SWEEPS
) -> np.ndarray:
    """Per (row, block) the index of the candidate scale that minimises the row's output error eᵀ G e
    (G = E[xxᵀ] of the layer's input, e the row's rounding error): block by block, each block's choice given
    the others' current errors (coordinate descent from zero: the first sweep sees only the blocks before
    it, later ones all; each never raises the error). One block (per channel) is exact in one sweep.
    `candidates(b)` gives block b's (candidates, rows) scales, or (scales, offsets) on the unsigned grid."""
    count = rows.shape[1] // size
    chosen = np.zeros((rows.shape[0], count), dtype=np.int64)
    errors = np.zeros_like(rows)  # the rounding error of the choices so far

    def rounded(part: np.ndarray, scale: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        if offset is None:  # the signed symmetric grid
            offset = np.full(scale.shape, -(2 ** (bitwidth - 1)))
        q = np.clip(np.rint(part / scale[:, None]) - offset[:, None], 0, 2**bitwidth - 1)
        return (q + offset[:, None]) * scale[:, None] - part

    for _ in range(sweeps if count > 1 else 1):
        for b in range(count):
            at = slice(b * size, (b + 1) * size)
            part, g = rows[:, at], gram[at, at]
            cross = 2 * (errors @ gram[:, at] - errors[:, at] @ g)  # the other blocks' share, (rows, size)
            best = np.full(rows.shape[0], np.inf)
            found = candidates(b)
            scales, offsets = found if isinstance(found, tuple) else (found, None)
            for i, scale in enumerate(scales):
                e = rounded(part, scale, None if offsets is None else offsets[i])
                error = np.einsum("ni,ni->n", e @ g + cross, e)
                better = error < best
                best[better], chosen[better, b] = error[better], i
            pick = (chosen[:, b], np.arange(rows.shape[0]))
            errors[:, at] = rounded(part, scales[pick], None if offsets is None else offsets[pick])
    return chosen


def output_ranges(rows: np.ndarray, gram: np.ndarray, size: int, bitwidth: int) -> np.ndarray:
    """(rows, blocks) symmetric |ranges| of `rows` (out_features, fan_in) in blocks of `size` inputs (fan_in:
    per channel), each the clipped absmax (BLOCK_FACTORS, the weight-error search's candidates) of least output
    error eᵀ G e rather than least weight error."""
    count = rows.shape[1] // size
    absmax = np.maximum(np.abs(rows).reshape(rows.shape[0], count, size).max(axis=2), enc.MIN_RANGE / 2)
    picked = _least_output_error(
        rows, gram, size, bitwidth, lambda b: enc.symmetric_scale(absmax[None, :, b] * BLOCK_FACTORS[:, None], bitwidth)
    )
    return absmax * BLOCK_FACTORS[picked]


def output_asymmetric(rows: np.ndarray, gram: np.ndarray, size: int, bitwidth: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, blocks) asymmetric ranges (lo, hi) of `rows` in blocks of `size` inputs, each block's min and max
    shrunk by the pair (ASYMMETRIC_PAIRS, the weight-error search's) of least output error eᵀ G e."""
    x = rows.reshape(rows.shape[0], -1, size)
    lo, hi = np.minimum(x.min(axis=2), 0.0), np.maximum(x.max(axis=2), 0.0)

    def candidates(b: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = ASYMMETRIC_PAIRS
        return _asymmetric_grid(lo[None, :, b] * pairs[:, :1], hi[None, :, b] * pairs[:, 1:], bitwidth)[1:]

    picked = _least_output_error(rows, gram, size, bitwidth, candidates)
    return lo * ASYMMETRIC_PAIRS[picked, 0], hi * ASYMMETRIC_PAIRS[picked, 1]


def output_lpbq(rows: np.ndarray, gram: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPBQ of `rows` by output error: block ranges as `output_ranges`; the largest block keeps 16, so its
    scale is 16 x the channel scale, tried at f x its searched scale for each f in LPBQ_FACTORS (1: AIMET's
    channel scale); for each, every other block's integer 1..16 of least output error (coordinate descent,
    the largest block's scale fixed); each row keeps the f of least output error.
    Returns (absmax, channel scales, integers)."""
    absmax = output_ranges(rows, gram, size, LPBQ_BITWIDTH)
    scale = enc.symmetric_scale(absmax, LPBQ_BITWIDTH)
    top, largest, at = 2 ** (LPBQ_DECOMPRESSED_BW - LPBQ_BITWIDTH), np.argmax(scale, axis=1), np.arange(len(rows))
    ks = np.arange(1, top + 1, dtype=np.float64)
    best = (np.full(len(rows), np.inf), np.zeros(len(rows)), np.zeros(scale.shape, np.int64))
    for factor in LPBQ_FACTORS:
        channel = _lpbq_channel(scale * factor)

        def candidates(b: int, channel: np.ndarray = channel) -> np.ndarray:
            return np.where(largest == b, top, ks[:, None]) * channel[None, :]

        ints = _least_output_error(rows, gram, size, LPBQ_BITWIDTH, candidates) + 1
        ints[at, largest] = top
        error = _row_errors(rows, gram, np.repeat(channel[:, None] * ints, size, axis=1), LPBQ_BITWIDTH)
        better = error < best[0]
        for kept, new in zip(best, (error, channel, ints), strict=True):
            kept[better] = new[better]
    return absmax, best[1], best[2]


def _row_errors(rows: np.ndarray, gram: np.ndarray, scale: np.ndarray, bitwidth: int) -> np.ndarray:
    """Each row's output error eᵀ G e rounded to nearest on per-element `scale`."""
    e = np.clip(np.rint(rows / scale), -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) * scale - rows
    return np.einsum("nk,nk->n", e @ gram, e)


def _lpbq_encoding(blocks: Blocks, channel_axis: int, bitwidth: int = LPBQ_BITWIDTH) -> Encoding:
    scale = enc.lpbq_scales(blocks, channel_axis)
    offset = np.full(scale.size, -(2 ** (bitwidth - 1)))
    e = enc.from_scale_offset(scale, offset, bitwidth, symmetric=True, axis=channel_axis)
    return dataclasses.replace(e, blocks=blocks)


def place(e: Encoding, shape: tuple[int, ...], channel_axis: int, axis: int | None, where: str) -> Encoding:
    """A per-block override checked against its weight and given its axes (a 1.0.0 file has none)."""
    b = e.blocks
    assert b is not None
    channel_axis = channel_of(channel_axis, axis, len(shape)) if axis is not None else channel_axis  # type: ignore[assignment]
    if axis is None or channel_axis == axis:
        raise DataError("per-block encodings apply only to 2-D Gemm/MatMul and Conv weights", where=where)
    if shape[axis] % b.size:
        raise DataError(f"block_size {b.size} does not divide the weight's {shape[axis]} inputs (axis {axis})", where=where)
    expected = scale_shape(shape, channel_axis, axis, b.size)
    if b.shape and (b.shape != expected or b.axis != axis):
        raise DataError(
            f"block scales of shape {list(b.shape)} on axis {b.axis}; the weight {list(shape)} needs "
            f"{list(expected)} on axis {axis}",
            where=where,
        )
    count, channels = math.prod(expected), shape[channel_axis]
    placed = dataclasses.replace(b, axis=axis, shape=expected)
    if b.is_lpbq:
        if len(b.int_scale) != count or len(b.channel_scale) != channels:
            raise DataError(
                f"LPBQ needs {channels} channel scales and {count} block integers, got "
                f"{len(b.channel_scale)} and {len(b.int_scale)}",
                where=where,
            )
        return _lpbq_encoding(placed, channel_axis, e.bitwidth)
    if len(e.scale) != count:
        raise DataError(f"{len(e.scale)} block scales, but the weight {list(shape)} has {count} blocks of {b.size}",
                        where=where)  # fmt: skip
    # its values as read (a file's are from_scale_offset's), not copies: the overrides stay alive beside the plan
    return dataclasses.replace(e, axis=channel_axis, blocks=placed)


def onnx_array(values: np.ndarray, e: Encoding, weight_shape: tuple[int, ...]) -> np.ndarray:
    """Flat per-block `values` (scales, zero points) as blocked DequantizeLinear wants them: the
    weight's shape with the block axis divided by the block size (repeated over Conv kernels)."""
    b = e.blocks
    assert b is not None and b.axis is not None
    target = list(weight_shape)
    target[b.axis] = weight_shape[b.axis] // b.size
    return np.ascontiguousarray(np.broadcast_to(values.reshape(b.shape), target))


def from_onnx(arrays: list[np.ndarray], axis: int, channel_axis: int | None) -> list[np.ndarray]:
    """A blocked DequantizeLinear's scale and zero point in the encoding shape: dims other than the
    block and channel axes collapse to 1 where neither varies along them (a Conv's kernel)."""
    out = list(arrays)
    for dim in range(out[0].ndim):
        firsts = [np.take(a, [0], axis=dim) for a in out]
        if dim not in (axis, channel_axis) and all(np.array_equal(a, np.broadcast_to(f, a.shape)) for a, f in zip(out, firsts, strict=True)):
            out = firsts
    return out


def as_lpbq(e: Encoding, bitwidth: int, decompressed_bw: int) -> Encoding | None:
    """A placed per-block encoding read from a QDQ model as the LPBQ it was written from: channel
    scale = largest block scale / 2^(decompressed_bw − bitwidth), every block an exact integer
    multiple of it in float32 (what `block_encoding` writes); None if the scales are not that."""
    b = e.blocks
    if b is None or b.axis is None or e.axis is None or not 0 < decompressed_bw - bitwidth < 16:
        return None
    axis = channel_of(e.axis, b.axis, len(b.shape))  # a Gather table read back: its channels are its rows
    assert axis is not None
    top = 2 ** (decompressed_bw - bitwidth)
    flat = e.scale_array().reshape(b.shape)
    per_channel = np.moveaxis(flat, axis, 0).reshape(b.shape[axis], -1)
    channel = per_channel.max(axis=1) / top
    ints = np.rint(per_channel / channel[:, None])
    exact = (channel[:, None] * ints).astype(np.float32) == per_channel.astype(np.float32)
    if not (np.all(exact) and ints.min() >= 1 and ints.max() <= top):
        return None
    back = np.moveaxis(ints.reshape(np.moveaxis(flat, axis, 0).shape), 0, axis).ravel()
    lpbq = dataclasses.replace(b, decompressed_bw=decompressed_bw, channel_scale=enc.Values(channel),
                               int_scale=enc.Values(back, np.int64))  # fmt: skip
    return _lpbq_encoding(lpbq, axis, bitwidth)


def output_encoding(e: Encoding, rows: np.ndarray, gram: np.ndarray, weight_shape: tuple[int, ...]) -> Encoding:
    """`e` (a symmetric per-channel, per-block or LPBQ weight encoding of a 2-D weight, or an asymmetric per-block
    one; `rows` its (out_features, fan_in) view) with its ranges chosen anew by output error against G = E[xxᵀ]."""
    assert e.axis is not None
    if e.blocks is None:
        absmax = output_ranges(rows, gram, rows.shape[1], e.bitwidth)[:, 0]
        return enc.symmetric(-absmax, absmax, e.bitwidth, e.axis)
    b = e.blocks
    assert b.axis is not None
    if not e.is_symmetric:
        lo, hi = output_asymmetric(rows, gram, b.size, e.bitwidth)
        return _assemble_asymmetric(lo, hi, weight_shape, e.axis, b.axis, b.size, e.bitwidth)
    if b.is_lpbq:
        absmax, channel, ints = output_lpbq(rows, gram, b.size)
        return _assemble(absmax, weight_shape, e.axis, b.axis, b.size, e.bitwidth, (channel, ints))
    return _assemble(output_ranges(rows, gram, b.size, e.bitwidth), weight_shape, e.axis, b.axis, b.size, e.bitwidth)

"""The `Encoding` value and every range -> scale/offset computation. The only copy of this math.

Conventions (QNN seed "Quantization", AIMET encoding spec; DESIGN.md):
- grid: unsigned [0, 2^bw - 1]; `offset = round(min / scale)` <= 0 (AIMET's sign; the seed's
  prose "offset 200" is AIMET's -200); `q = clamp(round(x / scale) - offset, 0, 2^bw - 1)`;
  `x = (q + offset) * scale`.  ONNX QDQ: `zero_point = -offset` on the unsigned grid, or
  `offset + 2^(bw-1)` (= 0 for symmetric) on the signed grid.
- tf (asymmetric): range widened to include 0, at least 0.0001 wide, then nudged so that 0.0
  is exactly representable: [-1.8, 0.5] -> [-1.803922, 0.496078], scale 0.009020, offset -200.
- symmetric: absmax = max(|min|, |max|); scale = absmax / (2^(bw-1) - 1); offset = -2^(bw-1),
  so min = -2^(bw-1)·scale and max = (2^(bw-1) - 1)·scale (AIMET's per-channel example).
- Rounding of the offset is half away from zero, as AIMET's C++ `round()`.
- per-block (`blocks`): one symmetric scale per output channel per block of `size` inputs; the
  scales are the flattened scale tensor of AIMET's encoding shape (the weight's own layout: its
  channel dim, its input dim / size, 1 elsewhere). LPBQ (AIMET `GroupedBlockEncoding`): each block's
  scale is `channel_scale[c] · int_scale[c, b]`, the integers in [1, 2^(decompressed_bw − bitwidth)].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_RANGE = 1e-4  # QNN seed: "Minimum range of 0.0001 is enforced"
# A per-channel activation encoding (the residual stream's, quant/residual.py) runs along the last axis:
# the files' 0.6.1 and 1.0.0 formats have no axis field, and hidden channels are last in every exporter.
ACTIVATION_CHANNEL_AXIS = -1
INT_BITWIDTHS = (4, 8, 16, 32)
# --weights_bitwidth 7 (onnxruntime's reduce_range, [-64, 63] in int8): a weight's per-tensor or per-channel grid only
NARROW_WEIGHT_BITWIDTH = 7
WEIGHT_BITWIDTHS = (4, NARROW_WEIGHT_BITWIDTH, 8, 16)  # --weights_bitwidth's, and adaround's default_param_bw
FLOAT_BITWIDTHS = (16, 32)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _vec(x: object) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


class Values(Sequence):
    """An encoding's numbers (per channel, per block) as one read-only numpy array that reads as the tuple it
    stands for: len, indexing, iteration, == and hash give Python floats and ints, and np.asarray the array.
    A 2.35 GB decoder's 18 M block scales are then 8 bytes each, not a Python float and a pointer (32 bytes)
    in each of four tuples."""

    __slots__ = ("array",)

    def __init__(self, values: object, dtype: type = np.float64) -> None:
        self.array = np.array(values, dtype=dtype).ravel()
        self.array.flags.writeable = False

    @classmethod
    def shared(cls, array: np.ndarray) -> Values:
        """A read-only 1-D array's values as they are, not copied (a view of another Values' array)."""
        values = object.__new__(cls)
        values.array = array
        return values

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Any:
        return Values(self.array[index], self.array.dtype.type) if isinstance(index, slice) else self.array[index].item()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array.tolist())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.array if dtype is None else self.array.astype(dtype, copy=False)
        return out.copy() if copy else out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Values):
            return bool(np.array_equal(self.array, other.array))
        return tuple(self) == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))  # a tuple's: equal to one, the same hash

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self) -> tuple:
        return Values, (self.array, self.array.dtype.type)


@dataclass(frozen=True)
class Blocks:
    """Per-block layout of a weight encoding. `shape` is () and the encoding's `axis` None until the
    plan places an encoding read from a 1.0.0 file (which has no shapes) on its weight."""

    size: int
    axis: int | None = None  # the input-channel axis the blocks run along (ONNX DequantizeLinear's `axis`)
    shape: tuple[int, ...] = ()
    decompressed_bw: int | None = None  # LPBQ only, with the two below
    channel_scale: Sequence[float] = ()  # Values, or a tuple
    int_scale: Sequence[int] = ()

    @property
    def is_lpbq(self) -> bool:
        return self.decompressed_bw is not None


def lpbq_scales(blocks: Blocks, channel_axis: int) -> np.ndarray:
    """The exact per-block scales of a placed LPBQ layout, flat: channel scale times block integer."""
    channel_shape = [1] * len(blocks.shape)
    channel_shape[channel_axis] = blocks.shape[channel_axis]
    channel = np.asarray(blocks.channel_scale, dtype=np.float64).reshape(channel_shape)
    ints = np.asarray(blocks.int_scale, dtype=np.float64).reshape(blocks.shape)
    return (channel * ints).ravel()


@dataclass(frozen=True)
class Encoding:
    """One quantization decision for one tensor. Per-channel when `axis` is set.

    `min`, `max`, `scale`, `offset` hold one entry per channel or block (one for per-tensor): `Values`.
    A float encoding (`dtype == "float"`) keeps the tensor in float at `bitwidth` 16 or 32.
    """

    bitwidth: int
    dtype: str = "int"
    is_symmetric: bool = False
    min: Sequence[float] = ()  # Values (see _finish), or a tuple
    max: Sequence[float] = ()
    scale: Sequence[float] = ()
    offset: Sequence[int] = ()
    axis: int | None = None  # the output-channel axis of a per-channel or per-block weight
    blocks: Blocks | None = None
    # a request only (no range): the grid this many times as wide as calibration's range (auto mixed
    # precision's 16-bit grids; group_range.with_headroom says why). Never written to a file.
    headroom: float = 1.0

    @property
    def is_float(self) -> bool:
        return self.dtype == "float"

    def channels(self, start: int, stop: int) -> Encoding:
        """Channels start:stop of a per-channel grid as an encoding of their own (per channel where more than one),
        its values views of this one's, not copies: a 0.6.1 file's grids are made in one and cut up (made one at a
        time, its 10^6 entries took minutes)."""
        fields = dict(self.__dict__, axis=0 if stop - start > 1 else None)
        for key in ("min", "max", "scale", "offset"):
            fields[key] = Values.shared(fields[key].array[start:stop])
        cut = object.__new__(Encoding)  # its fields set at once: the frozen __init__'s ten setattrs cost twice this
        cut.__dict__.update(fields)
        return cut

    @property
    def signed(self) -> bool:
        """Stored on the signed grid in ONNX: symmetric encodings (zero point 0)."""
        return self.is_symmetric

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bitwidth - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bitwidth - 1) - 1 if self.signed else 2**self.bitwidth - 1

    def zero_point(self) -> np.ndarray:
        """ONNX zero point on the grid `signed` selects."""
        shift = 2 ** (self.bitwidth - 1) if self.signed else 0
        return -(np.asarray(self.offset, dtype=np.int64) + shift)

    def scale_array(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float64)

    def _broadcast(self, values: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.blocks is not None:  # each block's value repeated over its inputs
            b = self.blocks
            return np.repeat(values.reshape(b.shape), b.size, axis=b.axis)  # type: ignore[arg-type]
        if self.axis is None or x.ndim == 0:
            return values.reshape(()) if values.size == 1 else values
        shape = [1] * x.ndim
        shape[self.axis] = values.size
        return values.reshape(shape)

    def expand(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Per-tensor, -channel or -block `values` (scales, zero points) as one per element of `shape`."""
        return np.broadcast_to(self._broadcast(np.asarray(values), np.empty(shape, dtype=np.uint8)), shape)

    def _on_grid(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, scale, zero point) broadcastable together; per block, x with its block axis split in (blocks,
        size) and a block's values not repeated over its inputs (for an embedding table, 16 bytes a weight)."""
        scale, zp = self.scale_array(), self.zero_point()
        if self.blocks is None:
            return x, self._broadcast(scale, x), self._broadcast(zp, x)
        b, a = self.blocks, self.blocks.axis
        split = (*b.shape[:a], b.shape[a], 1, *b.shape[a + 1 :])  # type: ignore[index,misc]
        view = x.reshape(*x.shape[:a], x.shape[a] // b.size, b.size, *x.shape[a + 1 :])  # type: ignore[index,misc]
        return view, scale.reshape(split), zp.reshape(split)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Integers on the ONNX grid (signed or not), round half to even as QuantizeLinear."""
        x = np.asarray(x)
        view, scale, zp = self._on_grid(x)
        q = np.asarray(view / scale, dtype=np.float64)  # a new array, rounded and clipped in place
        np.rint(q, out=q)
        q += zp
        np.clip(q, self.qmin, self.qmax, out=q)
        return q.astype(np.int64).reshape(x.shape)

    def holds(self, x: np.ndarray) -> bool:
        """Every value of x rounds onto the grid without clipping."""
        view, scale, zp = self._on_grid(np.asarray(x))
        q = np.rint(np.asarray(view / scale, dtype=np.float64)) + zp
        return bool(np.all((q >= self.qmin) & (q <= self.qmax)))

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.int64)
        view, scale, zp = self._on_grid(q)
        return ((view - zp) * scale).astype(np.float32).reshape(q.shape)

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """dequantize(quantize(x)), bit for bit, in one float64 array: the grid's integers are exact in float64,
        and the int64 round trip was a third of the per-layer comparison's time."""
        x = np.asarray(x)
        return self._rounded(*self._on_grid(x)).astype(np.float32).reshape(x.shape)

    def _rounded(self, view: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
        q = np.asarray(view / scale, dtype=np.float64)
        np.rint(q, out=q)
        q += zp
        np.clip(q, self.qmin, self.qmax, out=q)
        q -= zp
        q *= scale
        return q

    def squared_error(self, x: np.ndarray, chunk: int = 1 << 22) -> float:
        """Σ (x - fake_quantize(x))² in float64, about `chunk` values at a time along the grid's first axis: a whole
        weight's float64 copies were 1.5 GB for a 2.35 GB decoder's 250 MB LM head (its quality diagnosis's peak)."""
        view, scale, zp = self._on_grid(np.asarray(x))
        view = view.reshape(1) if view.ndim == 0 else view
        rows, total = max(1, chunk // max(1, view[0].size)), 0.0
        for start in range(0, len(view), rows):
            s, z = (a[start : start + rows] if a.ndim and a.shape[0] > 1 else a for a in (scale, zp))
            # rounded first, its float64 gone before delta's: both at once were 5x a chunk's float32 bytes, not 3x
            rounded = self._rounded(view[start : start + rows], s, z).astype(np.float32)
            delta = view[start : start + rows].astype(np.float64)
            delta -= rounded
            del rounded
            total += float(np.einsum("i,i->", delta.ravel(), delta.ravel()))
        return total


def float_encoding(bitwidth: int) -> Encoding:
    return Encoding(bitwidth=bitwidth, dtype="float")


def _finish(scale: np.ndarray, offset: np.ndarray, bitwidth: int, symmetric: bool, axis: int | None) -> Encoding:
    levels = 2**bitwidth - 1
    new_min = offset * scale
    new_max = new_min + scale * levels
    return Encoding(
        bitwidth=bitwidth,
        is_symmetric=symmetric,
        min=Values(new_min),
        max=Values(new_max),
        scale=Values(scale),
        offset=Values(np.asarray(offset).astype(np.int64), np.int64),  # astype truncates, as int(v)
        axis=axis,
    )


def tf(lo: object, hi: object, bitwidth: int, axis: int | None = None) -> Encoding:
    """Asymmetric encoding of the range [lo, hi] by the seed's tf rules (vectorised per channel)."""
    lo, hi = np.minimum(_vec(lo), 0.0), np.maximum(_vec(hi), 0.0)
    hi = np.maximum(hi, lo + MIN_RANGE)
    scale = (hi - lo) / (2**bitwidth - 1)
    offset = _round_half_away(lo / scale)
    return _finish(scale, offset, bitwidth, False, axis)


def symmetric_scale(absmax: np.ndarray, bitwidth: int) -> np.ndarray:
    """The scale of a signed symmetric grid reaching ±absmax (per-block searches score candidates with it)."""
    return absmax / (2 ** (bitwidth - 1) - 1)


def symmetric(lo: object, hi: object, bitwidth: int, axis: int | None = None) -> Encoding:
    """Signed symmetric encoding: offset -2^(bw-1), zero point 0 on the signed grid."""
    absmax = np.maximum(np.maximum(np.abs(_vec(lo)), np.abs(_vec(hi))), MIN_RANGE / 2)
    scale = symmetric_scale(absmax, bitwidth)
    offset = np.full_like(scale, -(2 ** (bitwidth - 1)))
    return _finish(scale, offset, bitwidth, True, axis)


def unsigned_symmetric(lo: object, hi: object, bitwidth: int, axis: int | None = None) -> Encoding:
    """Non-negative tensors use the whole unsigned grid from 0; others fall back to symmetric."""
    if np.any(_vec(lo) < 0):
        return symmetric(lo, hi, bitwidth, axis)
    hi = np.maximum(_vec(hi), MIN_RANGE)
    scale = hi / (2**bitwidth - 1)
    return _finish(scale, np.zeros_like(scale), bitwidth, False, axis)


def adjusted(lo: object, hi: object, bitwidth: int, axis: int | None = None) -> Encoding:
    """QNN's "TF adjusted" (weights): like tf, but the range is expanded, never shifted, so the true
    min and max both stay representable ("the max will be expanded or the min will be decreased").

    Rule chosen: the smallest scale with an integer zero point z in [0, 2^bw - 1] such that
    [lo, hi] lies inside [-z·scale, (2^bw - 1 - z)·scale]; of the two z next to the ideal one,
    the one giving the smaller scale wins.
    """
    levels = 2**bitwidth - 1
    lo, hi = np.minimum(_vec(lo), 0.0), np.maximum(_vec(hi), 0.0)
    hi = np.maximum(hi, lo + MIN_RANGE)
    ideal = levels * -lo / (hi - lo)
    candidates = []
    for z in (np.floor(ideal), np.ceil(ideal)):
        with np.errstate(divide="ignore", invalid="ignore"):
            need_lo = np.where(z > 0, -lo / np.maximum(z, 1), np.where(lo < 0, np.inf, 0.0))
            need_hi = np.where(z < levels, hi / np.maximum(levels - z, 1), np.where(hi > 0, np.inf, 0.0))
        candidates.append((np.maximum(need_lo, need_hi), -z))
    (s0, o0), (s1, o1) = candidates
    pick = s1 < s0
    return _finish(np.where(pick, s1, s0), np.where(pick, o1, o0), bitwidth, False, axis)


def from_scale_offset(
    scale: object, offset: object, bitwidth: int, *, symmetric: bool, axis: int | None = None
) -> Encoding:
    """Rebuild an encoding whose scale/offset are given (AIMET 1.0.0 files, QDQ models)."""
    return _finish(_vec(scale), _vec(offset), bitwidth, symmetric, axis)


INT32_MAX = 2**31 - 1
# An int32 bias is added to the layer's int32 accumulator: within a quarter of int32's range, it leaves the
# products 1.6e9 of room (a bias at -2147481500 wrapped the accumulator of onnxruntime's fused kernel around).
BIAS_INT32_MAX = INT32_MAX // 4


def weight_for_int32_bias(
    input_scale: float, weight: Encoding, values: np.ndarray, channels: Sequence[int] | None = None
) -> Encoding:
    """`weight` with its scale raised on each channel whose 32-bit bias `values` would not fit on the
    accumulator's grid (input scale x weight scale). onnxruntime's QLinearConv / QGemm and QNN's HTP add an int32
    bias on that grid whatever scale its DequantizeLinear says: a tagger's unused tags (weights ~1e-5, bias
    -13.7) needed -4.4e9 there, and given a scale twice the grid (bias_int32) their logits moved by 7 in
    onnxruntime's fused kernels (41.7 dB in Q/DQ arithmetic, -1.9 dB as onnxruntime runs it). A raised weight
    scale costs only those channels' precision, whose weights are too small to matter next to their bias."""
    if weight.is_float or weight.blocks is not None or not weight.scale:
        return weight
    scale = weight.scale_array()
    need = np.abs(_vec(values)) / (float(input_scale) * BIAS_INT32_MAX)
    if channels is not None and len(scale) > 1:  # a weight channel serves these output channels (per_output_channel)
        need, by_output = np.zeros(len(scale)), need
        np.maximum.at(need, np.asarray(channels), by_output)
    need = need if len(scale) > 1 else np.full(1, need.max(initial=0.0))
    if len(need) != len(scale) or np.all(scale >= need):
        return weight
    raised = np.maximum(scale, need * (1 + 1e-6))  # on the grid, the bias's largest value rounds inside the limit
    return _finish(raised, np.asarray(weight.offset, dtype=np.float64), weight.bitwidth, weight.is_symmetric, weight.axis)


def per_output_channel(weight: Encoding, channels: Sequence[int] | None) -> Encoding:
    """`weight` with the scale each output channel takes, `channels[o]` the weight channel output channel o reads
    (a grouped ConvTranspose's, rules.output_channels): what its int32 bias is scaled by, one value per channel."""
    if channels is None or weight.is_float or len(weight.scale) <= 1:
        return weight
    index = np.asarray(channels)
    return _finish(weight.scale_array()[index], np.asarray(weight.offset)[index], weight.bitwidth,
                   weight.is_symmetric, 0)  # fmt: skip


def bias_int32(input_scale: float, weight: Encoding, values: np.ndarray) -> Encoding:
    """32-bit bias: scale = input scale x weight scale (per channel when the weight is).

    A bias that overflows int32 there raises its weight's scale first (weight_for_int32_bias, as the plan does);
    where the weight's encoding is the user's, such channels take the smallest scale that holds their value
    instead of being clipped.
    """
    scale = float(input_scale) * weight.scale_array()
    limit = INT32_MAX
    needed = (
        np.abs(_vec(values)) / limit
        if len(scale) > 1 or np.size(values) == 1
        else np.full(1, np.abs(values).max() / limit)
    )
    scale = np.maximum(scale, needed)
    offset = np.full_like(scale, -(2**31))
    return _finish(scale, offset, 32, True, 0 if len(scale) > 1 else None)


SCHEMAS = {
    "asymmetric": tf,
    "tf": tf,
    "symmetric": symmetric,
    "unsignedsymmetric": unsigned_symmetric,
    "adjusted": adjusted,
}


def power_of_2(e: Encoding) -> Encoding:
    """The same encoding with each scale rounded *up* to a power of two (TIDL / Vitis `fix_point`
    targets), so the range only grows; the offset is recomputed so that 0 stays exact."""
    scale = 2.0 ** np.ceil(np.log2(e.scale_array()))
    if e.is_symmetric:
        offset = np.full_like(scale, -(2 ** (e.bitwidth - 1)))
    else:
        offset = np.clip(_round_half_away(np.asarray(e.min) / scale), -(2**e.bitwidth - 1), 0)
    return _finish(scale, offset, e.bitwidth, e.is_symmetric, e.axis)


def holding(e: Encoding, value: float) -> Encoding | None:
    """`e` (one grid) with its scale raised just enough that `value` lands on a level, or None where no level can:
    a constant below the smallest step the minimum range allows (1e-8 at 8 bits: steps of 1e-4 / 255). A raised
    scale only widens the range, so it still holds [min, max], the minimum range and an exact zero."""
    levels = np.floor(abs(value) / e.scale[0] * (1 + 1e-9))  # the most steps that fit in |value|: the least raise
    if not value or levels < 1:
        return None if value else e
    return _finish(_vec(abs(value) / levels), _vec(e.offset[0]), e.bitwidth, e.is_symmetric, e.axis)


def fix_point(e: Encoding) -> list[int] | None:
    """Fractional bits per channel (Vitis Q-format: x = q · 2^-fix_point), or None if not power-of-2."""
    bits = -np.log2(e.scale_array())
    if not np.allclose(bits, np.round(bits), rtol=0, atol=1e-9):
        return None
    return [int(b) for b in np.round(bits)]


def with_schema(
    schema: str, lo: object, hi: object, bitwidth: int, axis: int | None = None, pow2: bool = False
) -> Encoding:
    e = SCHEMAS[schema](lo, hi, bitwidth, axis)
    return power_of_2(e) if pow2 else e

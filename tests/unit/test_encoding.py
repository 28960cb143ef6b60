"""qtool.encoding: the QNN seed's worked examples as goldens, then hypothesis properties.

Golden values come from ../shared/seeds/qnn-quantization.txt ("Quantization Example" and
"Dequantization Example", lines 163-195; the three zero-handling cases, lines 107-139) and
FORMATS.md b.2 (the per-channel override example, offset -128, scale 0.005520610358771377).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from qtool import encoding as enc

# --- goldens ---------------------------------------------------------------------------------


def test_seed_worked_example_encoding() -> None:
    # seed: "encoding-min is adjusted to −1.803922 and encoding-max to 0.496078", "step size is 0.009020",
    # "offset is 200" (AIMET's sign: -200)
    e = enc.tf(-1.8, 0.5, 8)
    assert e.min[0] == pytest.approx(-1.803922, abs=1e-6)
    assert e.max[0] == pytest.approx(0.496078, abs=1e-6)
    assert e.scale[0] == pytest.approx(0.009020, abs=1e-6)
    assert e.scale[0] == pytest.approx(2.3 / 255, rel=1e-12)
    assert e.offset == (-200,)
    assert not e.is_symmetric and e.axis is None and e.bitwidth == 8


def test_seed_worked_example_quantize_dequantize() -> None:
    # seed: "quantized values are [0, 89, 200, 255]"; "dequantized values = [−1.8039, −1.0011, 0.0000, 0.4961]"
    e = enc.tf(-1.8, 0.5, 8)
    q = e.quantize(np.array([-1.8, -1.0, 0.0, 0.5]))
    assert q.tolist() == [0, 89, 200, 255]
    x = e.dequantize(q)
    # the seed prints 4 decimals, truncated (-1.001176 -> -1.0011)
    np.testing.assert_allclose(x, [-1.8039, -1.0011, 0.0, 0.4961], atol=1e-4)
    np.testing.assert_allclose(x, [-1.803922, -1.001176, 0.0, 0.496078], atol=1e-6)
    assert x[2] == 0.0
    assert e.zero_point().tolist() == [200]  # ONNX zero point on the unsigned grid = -offset


def test_observed_values_give_the_same_encoding_as_their_range() -> None:
    values = np.array([-1.8, -1.0, 0.0, 0.5])
    assert enc.tf(values.min(), values.max(), 8) == enc.tf(-1.8, 0.5, 8)


@pytest.mark.parametrize(
    ("lo", "hi", "want_min", "want_max"),
    [
        pytest.param(-5.1, 5.1, -5.12, 5.08, id="mixed-signs-shifted-by-half-a-step"),
        pytest.param(5.0, 10.0, 0.0, 10.0, id="strictly-positive-min-to-zero"),
        pytest.param(-20.0, -6.0, -20.0, 0.0, id="strictly-negative-max-to-zero"),
    ],
)
def test_seed_zero_handling_cases(lo: float, hi: float, want_min: float, want_max: float) -> None:
    e = enc.tf(lo, hi, 8)
    assert e.min[0] == pytest.approx(want_min, abs=1e-9)
    assert e.max[0] == pytest.approx(want_max, abs=1e-9)
    assert e.dequantize(e.quantize(np.array(0.0))) == 0.0


def test_mixed_case_zero_is_fixed_point_128() -> None:
    # seed: "floating point zero is now exactly representable by the fixed point value of 128"
    assert enc.tf(-5.1, 5.1, 8).quantize(np.array([0.0])).tolist() == [128]


def test_strictly_negative_zero_is_the_largest_value() -> None:
    # seed: "zero floating point value is exactly representable by the largest fixed point value 255"
    e = enc.tf(-20.0, -6.0, 8)
    assert e.quantize(np.array([0.0, -20.0])).tolist() == [255, 0]
    assert e.offset == (-255,)


@pytest.mark.parametrize("value", [0.0, 3.0, -2.5e-5])
def test_minimum_range(value: float) -> None:
    # seed: "encoding-max is adjusted to max(true max, true min + 0.0001)"
    e = enc.tf(value, value, 8)
    assert e.max[0] - e.min[0] >= enc.MIN_RANGE * (1 - 1e-9)
    assert e.dequantize(e.quantize(np.array(0.0))) == 0.0


def test_min_range_constant() -> None:
    assert enc.MIN_RANGE == 1e-4


@pytest.mark.parametrize("schema", ["asymmetric", "symmetric", "unsignedsymmetric"])
@pytest.mark.parametrize("value", [1e-6, -3.3e-6, 4e-5, 0.25])
def test_holding_puts_one_value_on_a_level_within_the_minimum_range(schema: str, value: float) -> None:
    e = enc.holding(enc.with_schema(schema, min(value, 0), max(value, 0), 8), value)
    assert e is not None and e.max[0] - e.min[0] >= enc.MIN_RANGE * (1 - 1e-9)
    assert e.fake_quantize(np.array([value, 0.0], np.float32)).tolist() == pytest.approx([value, 0.0], rel=1e-6)


def test_holding_finds_no_level_below_the_smallest_step_of_a_bitwidth() -> None:
    assert enc.holding(enc.tf(0, 1e-8, 8), 1e-8) is None  # steps of 1e-4 / 255 at least
    assert enc.holding(enc.tf(0, 1e-8, 16), 1e-8) is not None  # ... of 1e-4 / 65535


@pytest.mark.parametrize("bitwidth", [4, 8, 16])
def test_symmetric_offset_is_minus_two_to_bw_minus_one(bitwidth: int) -> None:
    e = enc.symmetric(-0.3, 1.2, bitwidth)
    assert e.offset == (-(2 ** (bitwidth - 1)),)
    assert e.is_symmetric and e.signed
    assert e.zero_point().tolist() == [0]
    assert e.scale[0] == pytest.approx(1.2 / (2 ** (bitwidth - 1) - 1))
    assert e.max[0] == pytest.approx(1.2)
    assert e.min[0] == pytest.approx(-(2 ** (bitwidth - 1)) * e.scale[0])


def test_formats_per_channel_example() -> None:
    # FORMATS.md b.2 / QNN seed per-channel Case 2, channel 0: max 0.7011175155639648,
    # min -0.7066381259227362, scale 0.005520610358771377, offset -128
    e = enc.symmetric(-0.7011175155639648, 0.7011175155639648, 8)
    assert e.scale[0] == pytest.approx(0.005520610358771377, rel=1e-12)
    assert e.offset == (-128,)
    assert e.min[0] == pytest.approx(-0.7066381259227362, rel=1e-12)
    assert e.max[0] == pytest.approx(0.7011175155639648, rel=1e-12)


def test_per_channel_vectorised() -> None:
    lo, hi = np.array([-0.7011175155639648, -0.5, -1.0]), np.array([0.2, 0.5228064656257629, 0.1])
    e = enc.symmetric(lo, hi, 8, axis=0)
    assert e.axis == 0 and len(e.scale) == 3 and e.offset == (-128,) * 3
    assert e.scale[0] == pytest.approx(0.005520610358771377, rel=1e-12)
    assert e.scale[1] == pytest.approx(0.004116586343509945, rel=1e-9)
    w = np.array([[0.7], [-0.5], [1.0]])
    q = e.quantize(w)
    assert q.shape == (3, 1)
    np.testing.assert_allclose(e.dequantize(q), w, atol=max(e.scale) / 2 + 1e-7)


def test_from_scale_offset_rebuilds_min_max() -> None:
    e = enc.from_scale_offset(2.3 / 255, -200, 8, symmetric=False)
    assert e == enc.tf(-1.8, 0.5, 8)


def test_float_encoding() -> None:
    e = enc.float_encoding(16)
    assert e.is_float and e.bitwidth == 16 and e.scale == ()


# --- properties ------------------------------------------------------------------------------

finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
data_arrays = arrays(np.float32, array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=16), elements=finite32)
bitwidths = st.sampled_from([8, 16])


def _tolerance(e: enc.Encoding, x: np.ndarray) -> float:
    # dequantize returns float32: allow its rounding on the largest magnitude involved, plus float64 slack
    big = max(float(np.max(np.abs(x), initial=0.0)), abs(e.min[0]), abs(e.max[0]))
    return 4 * float(np.finfo(np.float32).eps) * big + 1e-9 * e.scale[0]


@given(data_arrays, bitwidths)
def test_tf_properties(x: np.ndarray, bitwidth: int) -> None:
    e = enc.tf(float(x.min()), float(x.max()), bitwidth)
    (lo,), (hi,), (scale,), (offset,) = e.min, e.max, e.scale, e.offset
    # 0 lies in the range and dequantizes exactly
    assert lo <= 0.0 <= hi
    assert e.dequantize(e.quantize(np.array(0.0))) == 0.0
    assert -(2**bitwidth - 1) <= offset <= 0
    # the range is at least the seed's minimum, and is what scale and offset describe
    assert hi - lo >= enc.MIN_RANGE * (1 - 1e-9)
    assert scale == pytest.approx((hi - lo) / (2**bitwidth - 1), rel=1e-9)
    assert lo == pytest.approx(offset * scale, rel=1e-12, abs=1e-300)
    # every integer stays on the unsigned grid
    q = e.quantize(x)
    assert q.min() >= 0 and q.max() <= 2**bitwidth - 1
    # round trip error is at most half a step, over the data (the nudge shifts by < scale/2)
    err = np.abs(e.dequantize(q).astype(np.float64) - x.astype(np.float64))
    assert float(err.max()) <= scale / 2 + _tolerance(e, x)


@given(data_arrays, bitwidths)
def test_symmetric_properties(x: np.ndarray, bitwidth: int) -> None:
    e = enc.symmetric(float(x.min()), float(x.max()), bitwidth)
    (lo,), (hi,), (scale,), (offset,) = e.min, e.max, e.scale, e.offset
    half = 2 ** (bitwidth - 1)
    assert offset == -half
    assert lo <= 0.0 <= hi
    assert e.dequantize(e.quantize(np.array(0.0))) == 0.0
    assert hi - lo >= enc.MIN_RANGE * (1 - 1e-9)
    assert hi >= float(np.max(np.abs(x))) * (1 - 1e-12)
    q = e.quantize(x)
    assert q.min() >= -half and q.max() <= half - 1
    err = np.abs(e.dequantize(q).astype(np.float64) - x.astype(np.float64))
    assert float(err.max()) <= scale / 2 + _tolerance(e, x)


@given(finite32, finite32, bitwidths)
def test_tf_is_idempotent_on_its_own_range(a: float, b: float, bitwidth: int) -> None:
    """Re-encoding an encoding's own min/max gives it back (what reading overrides relies on)."""
    lo, hi = min(a, b), max(a, b)
    e = enc.tf(lo, hi, bitwidth)
    again = enc.tf(e.min[0], e.max[0], bitwidth)
    assert again.offset == e.offset
    assert again.scale[0] == pytest.approx(e.scale[0], rel=1e-9)

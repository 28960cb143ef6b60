"""Range schemas and calibration methods of the QNN seed ("Quantization Modes") and qairt."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qtool import encoding as enc
from qtool.quant.observers import OBSERVERS, make_observer

values = arrays(np.float32, st.integers(1, 64), elements=st.floats(-1e4, 1e4, width=32))
SCHEMA_NAMES = ["asymmetric", "symmetric", "unsignedsymmetric", "adjusted"]


@settings(max_examples=60, deadline=None)
@given(x=values, bitwidth=st.sampled_from([4, 8, 16]), schema=st.sampled_from(SCHEMA_NAMES))
def test_every_schema_keeps_the_seed_requirements(x: np.ndarray, bitwidth: int, schema: str) -> None:
    e = enc.with_schema(schema, float(x.min()), float(x.max()), bitwidth)
    assert e.dequantize(e.quantize(np.zeros(1)))[0] == 0.0  # zero exactly representable
    assert e.max[0] - e.min[0] >= enc.MIN_RANGE * 0.999
    q = e.quantize(x)
    assert q.min() >= e.qmin and q.max() <= e.qmax
    inside = (x >= e.min[0]) & (x <= e.max[0])
    err = np.abs(e.dequantize(q) - x.astype(np.float64))[inside]
    assert np.all(err <= e.scale[0] / 2 + 1e-6 * max(1.0, float(np.abs(x).max())))
    if e.is_symmetric:
        assert e.offset[0] == -(2 ** (bitwidth - 1))


def test_symmetric_range_is_minus_max_abs_to_max_abs() -> None:
    e = enc.symmetric(-0.3, 0.9, 8)
    assert e.scale[0] == pytest.approx(0.9 / 127)
    assert e.zero_point()[0] == 0 and e.signed


def test_unsignedsymmetric_uses_the_whole_unsigned_grid_for_non_negative_data() -> None:
    e = enc.unsigned_symmetric(0.0, 2.55, 8)
    assert (e.min[0], e.offset[0], e.scale[0]) == (0.0, 0, pytest.approx(0.01))
    assert enc.unsigned_symmetric(-1.0, 1.0, 8).is_symmetric  # signed data falls back to symmetric


@pytest.mark.parametrize(("lo", "hi"), [(-1.8, 0.5), (-5.1, 5.1), (-2.1, 1.7), (-0.01, 7.3)])
def test_adjusted_expands_so_the_true_range_stays_representable(lo: float, hi: float) -> None:
    """TF adjusted: "the max will be expanded or the min will be decreased if necessary"."""
    adjusted, tf = enc.adjusted(lo, hi, 8), enc.tf(lo, hi, 8)
    assert adjusted.min[0] <= lo + 1e-12 and adjusted.max[0] >= hi - 1e-12
    assert adjusted.dequantize(adjusted.quantize(np.zeros(1)))[0] == 0.0
    assert adjusted.scale[0] <= tf.scale[0] * 1.02  # expanding costs at most a sliver of resolution


def _sqnr(e: enc.Encoding, x: np.ndarray) -> float:
    noise = ((x - e.fake_quantize(x)) ** 2).sum()
    return float(10 * np.log10((x.astype(np.float64) ** 2).sum() / noise))


def test_enhanced_clips_a_long_tail_and_beats_min_max_sqnr() -> None:
    """The seed: most values in [-100, 1000], a few far outside; enhanced ignores the tail."""
    rng = np.random.default_rng(0)
    body = rng.uniform(-100, 1000, 200_000)
    tail = rng.uniform(1000, 30_000, 20) * rng.choice([-1, 1], 20)
    x = np.concatenate([body, tail]).astype(np.float32)
    observer = OBSERVERS["sqnr"]("t")
    for part in np.array_split(x, 5):
        observer.update(part)
    lo, hi = observer.range(8, "asymmetric")
    enhanced, minmax = enc.tf(lo, hi, 8), enc.tf(x.min(), x.max(), 8)
    assert lo > x.min() or hi < x.max()  # clipped
    assert enhanced.min[0] <= 0.0 <= enhanced.max[0]
    assert _sqnr(enhanced, x) > _sqnr(minmax, x)


@pytest.mark.parametrize("method", ["min-max", "sqnr", "mse", "percentile", "entropy"])
def test_every_method_gives_a_range_inside_the_data(method: str) -> None:
    x = np.random.default_rng(3).normal(size=50_000).astype(np.float32)
    lo, hi = make_observer(method, "t").range() if False else _observe(method, x)
    assert x.min() - 1e-3 <= lo < 0 < hi <= x.max() + 1e-3


def _observe(method: str, x: np.ndarray) -> tuple[float, float]:
    observer = make_observer(method, "t", percentile=99.9)
    for part in np.array_split(x, 4):
        observer.update(part)
    return observer.range(8, "asymmetric")


def test_percentile_of_a_uniform_distribution() -> None:
    x = np.random.default_rng(4).uniform(0, 100, 400_000).astype(np.float32)
    lo, hi = _observe("percentile", x)
    assert lo == pytest.approx(0.1, abs=0.2) and hi == pytest.approx(99.9, abs=0.2)


def test_bias_int32_scale_is_input_times_weight_scale_and_never_overflows() -> None:
    weight = enc.symmetric([-1.0, -2.0], [1.0, 2.0], 8, axis=0)
    bias = enc.bias_int32(0.01, weight, np.array([0.5, -0.25]))
    assert bias.scale == pytest.approx((0.01 / 127, 0.02 / 127))
    tiny = enc.bias_int32(1e-6, enc.symmetric(-1e-4, 1e-4, 16), np.array([3.0]))
    assert np.abs(tiny.quantize(np.array([3.0]))).max() <= 2**31 - 1
    assert tiny.fake_quantize(np.array([3.0]))[0] == pytest.approx(3.0, rel=1e-6)


@given(
    st.floats(1e-4, 1e-1), arrays(np.float64, 6, elements=st.floats(1e-7, 1.0)),
    arrays(np.float64, 6, elements=st.floats(-100.0, 100.0)),
)  # fmt: skip
def test_a_bias_too_large_for_the_accumulator_grid_raises_its_weight_scale_not_its_own(x_scale, absmax, bias) -> None:
    """onnxruntime's QLinearConv / QGemm and QNN's HTP add the int32 bias on input scale x weight scale whatever
    its own scale says: the bias must sit on that grid, within a quarter of int32's range (room for the products)."""
    weight = enc.weight_for_int32_bias(x_scale, enc.symmetric(-absmax, absmax, 8, axis=0), bias)
    assert np.all(weight.scale_array() >= enc.symmetric(-absmax, absmax, 8, axis=0).scale_array())
    on_grid = enc.bias_int32(x_scale, weight, bias)
    np.testing.assert_allclose(on_grid.scale_array(), x_scale * weight.scale_array(), rtol=1e-12)
    assert np.abs(on_grid.quantize(bias)).max() <= enc.BIAS_INT32_MAX
    fits = np.abs(bias) <= x_scale * enc.symmetric(-absmax, absmax, 8, axis=0).scale_array() * enc.BIAS_INT32_MAX
    assert np.array_equal(weight.scale_array()[fits], enc.symmetric(-absmax, absmax, 8, axis=0).scale_array()[fits])



def test_the_int8_grid_check_holds_a_chunk_of_float64_steps_not_the_weights() -> None:
    """A weight whose first values lie on the grid (openWakeWord's mel filters start with zeros) is checked whole:
    its float64 steps were 24 B a value at once (3 MB of a ~95 MB peak); by chunks, the same answer."""
    import tracemalloc

    from qtool.quant.plan import _on_its_grid

    values = np.random.default_rng(1).integers(-127, 128, (512, 600)).astype(np.float32) * np.float32(0.01)
    values[-1, -1] += 0.003  # off the grid in its last value: the usual grid stays
    usual = enc.symmetric(-1.27, 1.27, 8)
    tracemalloc.start()
    try:
        kept = _on_its_grid(values, usual, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept is usual and peak < 2 << 20, peak


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_weight_on_an_int8_grid_keeps_that_grid(per_channel: bool) -> None:
    """A model quantize_dynamic shipped comes back from convert with weights on their int8 grids: any other grid
    rounds them again; a weight off every such grid gets the usual one."""
    from qtool.io.encodings import Encodings
    from qtool.quant.plan import PlanOptions, _weight_encoding

    rng = np.random.default_rng(0)
    on_grid = rng.integers(-127, 128, (16, 8)).astype(np.float32) * np.float32(0.01)
    on_grid[0, 0] = 1.27  # the grid's end: absmax / 127 is its scale, as quantize_dynamic computes it
    e = _weight_encoding("w", on_grid, 1, per_channel, Encodings(), PlanOptions())
    assert e.is_symmetric and np.allclose(e.fake_quantize(on_grid), on_grid, atol=1e-6)
    assert len(e.scale) == (8 if per_channel else 1) and np.allclose(e.scale, 0.01)
    off_grid = on_grid + rng.normal(0, 0.003, on_grid.shape).astype(np.float32)
    assert not np.allclose(_weight_encoding("w", off_grid, 1, per_channel, Encodings(), PlanOptions()).scale, 0.01)
    table = (rng.random((16, 8)) < 0.5).astype(np.float32)  # a 0/1 table the usual grid holds already: left as it was
    assert _weight_encoding("w", table, 1, per_channel, Encodings(), PlanOptions()).is_symmetric == per_channel

"""Observers and the calibration cache (issue: calibration engine)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper
from qnn_models import three_conv_model

from qtool import runtime
from qtool.errors import DataError
from qtool.io.kept_outputs import KeptOutputs
from qtool.quant import range_search
from qtool.quant.calibrate import FloatOutputs, calibrate
from qtool.quant.observers import Histogram, MinMax, from_state, make_observer, read_as
from qtool.quant.stats import load_stats, save_stats

chunks = st.lists(
    arrays(np.float32, st.integers(1, 200), elements=st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=6
)


@settings(max_examples=50, deadline=None)
@given(parts=chunks)
def test_min_max_split_batches_equal_one_batch_and_merge_equals_update(parts: list[np.ndarray]) -> None:
    whole, split, left, right = MinMax(), MinMax(), MinMax(), MinMax()
    whole.update(np.concatenate(parts))
    for i, part in enumerate(parts):
        split.update(part)
        (left if i % 2 else right).update(part)
    left.merge(right)
    assert whole.range() == split.range() == left.range()


@settings(max_examples=30, deadline=None)
@given(parts=chunks)
def test_histogram_split_batches_stay_within_one_bin(parts: list[np.ndarray]) -> None:
    whole, split, left, right = (Histogram(select="percentile", q=99.0) for _ in range(4))
    whole.update(np.concatenate(parts))
    for i, part in enumerate(parts):
        split.update(part)
        (left if i % 2 else right).update(part)
    left.merge(right)
    width = (whole.hi - whole.lo) / whole.bins
    assert split.counts.sum() == whole.counts.sum() == left.counts.sum()
    for other in (split, left):
        assert (other.lo, other.hi) == (whole.lo, whole.hi)
        assert np.allclose(other.range(), whole.range(), atol=2 * width + 1e-9)


@pytest.mark.parametrize(
    ("method", "data", "expected"),
    [
        ("percentile", "uniform", ((0.0, 0.1), (99.9, 100.0))),
        ("entropy", "normal", ((-4.8, -3.0), (3.0, 4.8))),  # KL is flat here: 3-4.8 sigma
        ("entropy", "relu", ((0.0, 0.0), (3.0, 4.8))),  # the zeros' spike must not pull it down
        ("mse", "normal", ((-4.3, -3.6), (3.6, 4.3))),
    ],
)
def test_known_distributions_give_the_expected_ranges(method: str, data: str, expected: tuple) -> None:
    rng = np.random.default_rng(0)
    x = {
        "uniform": rng.uniform(0, 100, 1_000_000),
        "normal": rng.normal(size=1_000_000),
        "relu": np.maximum(rng.normal(size=1_000_000), 0),
    }[data]
    observer = make_observer(method, "t", percentile=99.99)
    for batch in np.array_split(x.astype(np.float32), 64):  # as 64 calibration samples
        observer.update(batch)
    lo, hi = observer.range(8, "asymmetric")
    (lo_min, lo_max), (hi_min, hi_max) = expected
    assert lo_min <= lo <= lo_max and hi_min <= hi <= hi_max


@settings(max_examples=60, deadline=None)
@given(
    bins=st.integers(4, 400),
    ends=st.tuples(st.floats(-50, -0.01), st.floats(0.01, 50)),
    seed=st.integers(0, 2**16),
    schema=st.sampled_from(["asymmetric", "symmetric"]),
    bitwidth=st.sampled_from([4, 8, 16]),
    method=st.sampled_from(["mse", "sqnr"]),
)
def test_range_search_picks_the_candidate_an_exhaustive_pass_picks(bins, ends, seed, schema, bitwidth, method) -> None:
    """The search shortlists by prefix sums; it must land where scoring every candidate on every bin does."""
    centers = np.linspace(*ends, bins)
    counts = np.random.default_rng(seed).poisson(40 * np.exp(-((centers / max(ends, key=abs) * 4) ** 2)))
    counts[bins // 2] += 1
    lo, hi = min(centers[counts > 0].min(), 0.0), max(centers[counts > 0].max(), 0.0)
    if schema == "symmetric":
        absmax = max(-lo, hi)
        cand_lo, cand_hi = np.where(lo < 0, -absmax * range_search.FACTORS, 0.0), absmax * range_search.FACTORS
    else:
        grid = np.meshgrid(lo * range_search.FACTORS, hi * range_search.FACTORS, indexing="ij")
        cand_lo, cand_hi = grid[0].ravel(), grid[1].ravel()
    gamma = range_search.GAMMA[method]
    best = np.argmin(range_search.expected_noise(centers, counts, cand_lo, cand_hi, bitwidth, schema, gamma))
    got = range_search.search(centers, counts, bitwidth, schema, method)
    assert got == (float(cand_lo[best]), float(cand_hi[best]))


def test_entropy_does_not_clip_a_heavy_tail_past_what_the_whole_range_costs() -> None:
    # A residual stream is heavy-tailed. KL counts every clipped value as one more in the last bin
    # however far out it was, so alone it clipped this tail at 1.0 (and PP-OCRv4 rec's at a tenth).
    x = (np.random.default_rng(0).standard_t(3, 1_000_000) * 0.1).astype(np.float32)
    entropy = make_observer("entropy", "t")
    for batch in np.array_split(x, 64):
        entropy.update(batch)
    lo, hi = entropy.range(8, "asymmetric")
    assert lo <= -2.0 and hi >= 2.0
    assert abs(hi) <= max(abs(x.min()), abs(x.max()))


def test_nan_in_a_calibration_output_names_the_tensor() -> None:
    with pytest.raises(DataError, match="'act'"):
        Histogram("act").update(np.array([1.0, np.nan], dtype=np.float32))


def test_histogram_state_round_trips_and_serves_other_histogram_methods() -> None:
    observer = Histogram("t", select="sqnr")
    observer.update(np.random.default_rng(1).normal(size=10_000).astype(np.float32))
    state = json.loads(json.dumps(observer.state()))
    again = from_state("t", state, "sqnr")
    assert again.range() == observer.range()
    assert from_state("t", state, "percentile").range() != observer.range()
    with pytest.raises(ValueError, match="min/max only"):
        from_state("t", MinMax("t").state() | {"lo": 0, "hi": 1, "count": 1}, "entropy")


def _samples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(f"list.txt:{i + 1}", {"data_0": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)}) for i in range(n)]


@pytest.mark.parametrize("method", ["min-max", "percentile"])
def test_batched_calibration_equals_sample_by_sample(method: str) -> None:
    model = three_conv_model()
    tensors = ["data_0", "conv1_1", "conv2_1", "relu", "out"]
    one, n1 = calibrate(model, tensors, _samples(12), observer=method)
    four, n4 = calibrate(model, tensors, _samples(12), observer=method, batch_size=4)
    assert n1 == n4 == 12
    for name in tensors:
        assert np.allclose(one[name].range(), four[name].range(), rtol=1e-5, atol=1e-3)


def test_a_batch_size_leaves_inputs_with_no_batch_axis_of_one_as_they_are() -> None:
    """A [3, 4] input (a window of frames, no batch axis): stacking 4 of them gave 12 rows, each split off as a
    [1, 4] feed onnxruntime refused; a scalar input cannot stack either. Each runs one at a time instead."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "g", [x, k], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    samples = [(f"s{i}", {"x": rng.normal(size=(3, 4)).astype(np.float32), "k": np.array(i + 1, np.float32)}) for i in range(6)]
    one, n1 = calibrate(model, ["x", "y"], samples)
    four, n4 = calibrate(model, ["x", "y"], samples, batch_size=4)
    assert n1 == n4 == 6
    assert all(one[t].range() == four[t].range() for t in ("x", "y"))


@pytest.mark.parametrize("method", ["min-max", "sqnr", "mse", "percentile", "entropy"])
def test_one_histogram_pass_read_as_each_method_gives_that_methods_own_ranges(method: str) -> None:
    """auto's trials calibrate each half once and read every method off it (observers.read_as)."""
    model = three_conv_model()
    tensors = ["data_0", "conv1_1", "conv2_1", "relu", "out"]
    shared, _ = calibrate(model, tensors, _samples(6), observer="sqnr", percentile=99.9)
    own, _ = calibrate(model, tensors, _samples(6), observer=method, percentile=99.9)
    for name in tensors:
        read = read_as(shared[name], method, 99.9)
        assert type(read) is type(own[name]) and read.range(8, "asymmetric") == own[name].range(8, "asymmetric")
    assert shared["relu"].select == "sqnr"  # the pass itself is left as it was


def test_calibration_keeps_the_first_samples_float_outputs_in_memory_then_on_disk(tmp_path: Path) -> None:
    model = three_conv_model()
    tensors = ["data_0", "conv1_1", "conv2_1", "relu", "out"]
    session = runtime.session(model, optimized=True, layout=False)  # calibration's layout (calibrate.py)
    expected = [session.run(None, feed) for _, feed in _samples(3)]

    def kept(memory: int, disk: int = 1 << 30) -> KeptOutputs:
        return KeptOutputs(memory, lambda name: str(tmp_path / name), disk)

    keep = FloatOutputs(3, kept(1 << 20))
    calibrate(model, tensors, _samples(8), keep=keep)
    assert keep.complete and len(keep.values) == 3
    for got, want in zip(keep.values, expected, strict=True):
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    spilled = FloatOutputs(3, kept(expected[0][0].nbytes))  # the second and third samples go to files
    calibrate(model, tensors, _samples(8), keep=spilled)
    assert spilled.complete and len(list(tmp_path.iterdir())) == 2
    assert all(np.array_equal(g[0], w[0]) for g, w in zip(spilled.values, expected, strict=True))
    over = FloatOutputs(3, kept(expected[0][0].nbytes, disk=expected[0][0].nbytes))  # the third passes both
    calibrate(model, tensors, _samples(8), keep=over)
    assert over.values is None and not over.complete
    batched = FloatOutputs(3, kept(1 << 20))  # batches run another model: the evaluation runs its own float pass
    calibrate(model, tensors, _samples(8), keep=batched, batch_size=4)
    assert not batched.complete


def test_min_max_calibration_is_the_exact_range_and_a_relu_output_starts_at_zero() -> None:
    model = three_conv_model()
    tensors = ["data_0", "conv1_1", "conv2_1", "relu", "out"]
    samples = _samples(6)
    observers, _ = calibrate(model, tensors, samples)
    outputs = [o.name for o in model.graph.output]
    session = runtime.session(runtime.with_outputs(model, tensors[:-1]), optimized=False)
    values = [dict(zip([*outputs, *tensors[:-1]], session.run(None, feed), strict=True)) for _, feed in samples]
    for name in ("data_0", "conv1_1", "conv2_1"):  # signed: both ends exactly as numpy sees them
        lo, hi = min(float(v[name].min()) for v in values), max(float(v[name].max()) for v in values)
        assert observers[name].range() == pytest.approx((lo, hi), rel=1e-6)
    # a ReLU's min is not probed: every encoding's range includes 0 anyway
    assert observers["relu"].range() == pytest.approx((0.0, max(float(v["relu"].max()) for v in values)), rel=1e-6)


def test_histogram_samples_reach_every_position_of_a_tensor_over_many_samples() -> None:
    # 1024 samples -> 256 values per sample: a stride of 257 over 65536 values. Outliers sit at
    # positions no fixed start would ever read (p = 128 mod 257), 0.4% of all values.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 65536])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 65536])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.abs(np.random.default_rng(0).normal(size=(1, 65536))).astype(np.float32)
    x[0, 128::257] = 50.0
    samples = [(f"l.txt:{i}", {"x": x}) for i in range(1024)]
    observers, _ = calibrate(model, ["y"], samples, observer="percentile", percentile=99.9, expected_samples=1024)
    assert observers["y"].range()[1] > 40.0


def test_stats_files_merge_and_refuse_another_model(tmp_path: Path) -> None:
    model = three_conv_model()
    tensors = ["data_0", "conv1_1"]
    first, _ = calibrate(model, tensors, _samples(5, 0))
    second, _ = calibrate(model, tensors, _samples(5, 1))
    listing = tmp_path / "l.txt"
    listing.write_text("x.raw\n")
    save_stats(tmp_path / "a.stats", model, first, [listing], 5)
    save_stats(tmp_path / "b.stats", model, second, [listing], 5)
    merged, samples = load_stats([tmp_path / "a.stats", tmp_path / "b.stats"], model, "min-max")
    both, _ = calibrate(model, tensors, _samples(5, 0) + _samples(5, 1))
    assert samples == 10 and all(merged[t].range() == both[t].range() for t in tensors)
    other = three_conv_model(channels=5)
    with pytest.raises(DataError, match="different model"):
        load_stats([tmp_path / "a.stats"], other, "min-max")
    (tmp_path / "bad.stats").write_text("{not json")
    with pytest.raises(DataError, match="not a qtool stats file"):
        load_stats([tmp_path / "bad.stats"], model, "min-max")


def test_vectorised_histogram_fold_equals_one_observer_at_a_time() -> None:
    from qtool.quant.observers import observe_histograms

    rng = np.random.default_rng(5)
    batches = [
        [rng.normal(scale=s, size=n).astype(np.float32) for s, n in ((1, 50), (3, 700), (0.1, 9))] for _ in range(4)
    ]
    alone = [Histogram(f"t{i}", select="percentile", q=99.0) for i in range(3)]
    together = [Histogram(f"t{i}", select="percentile", q=99.0) for i in range(3)]
    for batch in batches:
        for observer, x in zip(alone, batch, strict=True):
            observer.observe(float(x.min()), float(x.max()), x)
        observe_histograms(together, np.array([x.min() for x in batch]), np.array([x.max() for x in batch]), batch)
    for a, b in zip(alone, together, strict=True):
        assert (a.lo, a.hi, a.count) == (b.lo, b.hi, b.count)
        assert np.array_equal(a.counts, b.counts)


def test_a_runs_histograms_are_binned_in_bounded_slices(monkeypatch) -> None:
    """Binning every tensor's samples of a run at once held five arrays of all their values (a small model's
    whole calibration costs less than ddddocr's detector held for it): slices of about BINNED_AT_ONCE values,
    with the counts one observer at a time gives."""
    from qtool.quant import observers as obs

    rng = np.random.default_rng(7)
    sizes = [3000] * 50 + [70000, 7]  # the large one arrives subsampled to about SAMPLE_CAP values
    batches = [[rng.normal(scale=1 + k % 5, size=n).astype(np.float32) for k, n in enumerate(sizes)] for _ in range(2)]
    alone = [Histogram(f"t{i}", select="sqnr") for i in range(len(sizes))]
    together = [Histogram(f"t{i}", select="sqnr") for i in range(len(sizes))]
    binned, bincount = [], np.bincount
    for batch in batches:
        for observer, x in zip(alone, batch, strict=True):
            observer.observe(float(x.min()), float(x.max()), obs._subsample(x))
        monkeypatch.setattr(np, "bincount", lambda x, **kw: binned.append(x.size) or bincount(x, **kw))
        obs.observe_histograms(together, np.array([x.min() for x in batch]), np.array([x.max() for x in batch]), batch)
        monkeypatch.setattr(np, "bincount", bincount)
    assert max(binned) <= obs.BINNED_AT_ONCE and len(binned) > 2 * len(batches)
    for a, b in zip(alone, together, strict=True):
        assert (a.lo, a.hi, a.count) == (b.lo, b.hi, b.count) and np.array_equal(a.counts, b.counts)


def test_histogram_fold_of_a_near_empty_range_is_quiet_and_complete() -> None:
    # a range ~1e-39 wide makes bins/width overflow float32; every value must still land in a bin
    from qtool.quant.observers import observe_histograms

    tiny = np.array([0.0, 1e-39, 5e-40], dtype=np.float32)
    wide = np.array([-3e38, 0.0, 3e38], dtype=np.float32)
    observers = [Histogram("tiny", select="sqnr"), Histogram("wide", select="sqnr")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        observe_histograms(observers, np.array([0.0, -3e38]), np.array([1e-39, 3e38]), [tiny, wide])
    assert [int(o.counts.sum()) for o in observers] == [3, 3]
    assert observers[1].counts[0] == 1 and observers[1].counts[-1] == 1

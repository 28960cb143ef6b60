"""Streaming observers: splitting the data into batches, or into merged shards, changes nothing
(MinMax exactly; a Histogram's percentile range within one bin, STYLE.md Do 8)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from qtool.errors import DataError
from qtool.io.encodings import Encodings
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import group_encoding
from qtool.quant.observers import Histogram, MinMax, SoftmaxInput

finite32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)
batches = st.lists(
    arrays(np.float32, array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8), elements=finite32),
    min_size=1,
    max_size=6,
)


def _observe(cls, parts) -> MinMax:
    observer = cls("t")
    for part in parts:
        observer.update(part)
    return observer


@given(batches)
def test_minmax_split_batches_equal_one_batch(parts: list[np.ndarray]) -> None:
    whole = _observe(MinMax, [np.concatenate([p.ravel() for p in parts])])
    split = _observe(MinMax, parts)
    assert split.range() == whole.range()
    assert split.range() == (float(min(p.min() for p in parts)), float(max(p.max() for p in parts)))


@given(batches, batches)
def test_minmax_merge_equals_update(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    merged = _observe(MinMax, first)
    merged.merge(_observe(MinMax, second))
    streamed = _observe(MinMax, first + second)
    assert merged.range() == streamed.range()
    assert merged.count == streamed.count == len(first) + len(second)


def test_minmax_merge_with_an_empty_observer_is_neutral() -> None:
    a = _observe(MinMax, [np.array([-2.0, 3.0])])
    a.merge(MinMax("empty"))
    assert a.range() == (-2.0, 3.0)
    empty = MinMax("empty")
    empty.merge(_observe(MinMax, [np.array([-2.0, 3.0])]))
    assert empty.range() == (-2.0, 3.0)


def test_minmax_empty_batches_are_ignored() -> None:
    observer = MinMax("t")
    observer.update(np.zeros((0, 3), np.float32))
    assert observer.count == 0
    assert observer.range() == (0.0, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_minmax_rejects_non_finite_outputs(bad: float) -> None:
    observer = MinMax("conv_out")
    with pytest.raises(DataError, match="NaN or Inf") as info:
        observer.update(np.array([0.0, bad], np.float32))
    assert "conv_out" in str(info.value)


@pytest.mark.parametrize("seed", range(12))
def test_histogram_split_batches_within_one_bin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # growing ranges force a re-bin at almost every batch
    parts = [rng.normal(0, 1, rng.integers(5, 400)) * (1 + i * rng.uniform(0, 3)) for i in range(rng.integers(2, 7))]
    whole = Histogram("t", select="percentile", q=99.0)
    whole.update(np.concatenate(parts))
    split = Histogram("t", select="percentile", q=99.0)
    for part in parts:
        split.update(part)
    assert (split.lo, split.hi) == (whole.lo, whole.hi)
    assert split.counts.sum() == whole.counts.sum() == sum(p.size for p in parts)
    bin_width = (whole.hi - whole.lo) / whole.bins
    for a, b in zip(split.range(), whole.range(), strict=True):
        assert abs(a - b) <= bin_width * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_histogram_merge_equals_update_within_one_bin(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    first = [rng.normal(0, 1, 300), rng.normal(1, 2, 200)]
    second = [rng.normal(-3, 0.5, 250)]
    merged = Histogram("t", select="percentile", q=99.0)
    for part in first:
        merged.update(part)
    other = Histogram("t", select="percentile", q=99.0)
    for part in second:
        other.update(part)
    merged.merge(other)
    streamed = Histogram("t", select="percentile", q=99.0)
    for part in first + second:
        streamed.update(part)
    assert (merged.lo, merged.hi) == (streamed.lo, streamed.hi)
    assert merged.counts.sum() == streamed.counts.sum()
    assert merged.count == streamed.count
    bin_width = (streamed.hi - streamed.lo) / streamed.bins
    for a, b in zip(merged.range(), streamed.range(), strict=True):
        assert abs(a - b) <= bin_width * (1 + 1e-9)


@pytest.mark.parametrize("softmax_first", [True, False])
@pytest.mark.parametrize("observer_kind", [MinMax, Histogram])
def test_a_softmax_input_decides_its_groups_range_whatever_the_order(softmax_first: bool, observer_kind) -> None:
    """A Reshape before a Softmax shares its input's encoding; with --act_quantizer_calibration sqnr its
    observer is a histogram, which could not merge a SoftmaxInput (YOLOv8's DFL head: internal error)."""
    rows = np.array([[0.0, -30.0, 5.0], [2.0, -40.0, 1.0]], dtype=np.float32)
    scores = SoftmaxInput("scores")
    scores.observe_rows(float(rows.max()), float(rows.min()), float(rows.max(axis=1).min()))
    before = observer_kind("reshaped")
    before.update(rows)
    group = ["scores", "reshaped"] if softmax_first else ["reshaped", "scores"]
    model = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [], []), opset_imports=[onnx.helper.make_opsetid("", 17)]
    )
    encoding = group_encoding(
        GraphFacts.of(model),
        group,
        {"scores": scores, "reshaped": before},
        Encodings(),
        bitwidth=8,
        schema="asymmetric",
    )
    # A member that is not the Softmax input may hold any row's maximum: the clamp yields to it, in either order.
    assert encoding.min[0] == pytest.approx(-40.0, abs=0.2) and encoding.max[0] == pytest.approx(5.0, abs=0.2)


def test_a_sigmoid_output_raised_with_headroom_keeps_its_inputs_headroom() -> None:
    """Mixed precision raises a Sigmoid's input and output to 16 bits on grids twice their calibrated range
    (RAISED_HEADROOM): the output's grid then reaches past its observed top, so the Sigmoid is not flat there and
    the input keeps the room above its observed top that held-out values need."""
    from qtool.encoding import Encoding

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Sigmoid", ["a"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    a = np.linspace(-10.0, 0.4, 64, dtype=np.float32)
    observers = {"a": _observe(MinMax, [a]), "y": _observe(MinMax, [1 / (1 + np.exp(-a))])}
    raised = Encoding(bitwidth=16, headroom=2.0)
    encoding = group_encoding(
        GraphFacts.of(model), ["a"], observers, Encodings({"a": raised, "y": raised}), bitwidth=8, schema="asymmetric"
    )
    assert encoding.max[0] > 5.0  # 0.4 observed, 10.4 more room split over its two ends; cut at 0.4 before

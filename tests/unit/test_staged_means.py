"""bc's float channel means a stage at a time (runtime.staged) and a channel at a time (_channel_mean): the same
values, bit for bit, as fetching every layer at once and averaging each whole tensor in float64."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool import runtime
from qtool.quant.algorithms import bias_correction


def _net() -> onnx.ModelProto:
    """x -> Conv a -> Relu r -> Conv b -> Add(b, r) s (a skip over b) -> Split into p, q -> Conv c reads p."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"w{i}") for i in range(3)]
    weights.append(numpy_helper.from_array(np.array([2, 2], np.int64), "halves"))
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "r"], ["s"]),
        helper.make_node("Split", ["s", "halves"], ["p", "q"], axis=1),
        helper.make_node("Concat", ["p", "p"], ["pp"], axis=1),
        helper.make_node("Conv", ["pp", "w2"], ["c"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c", "q")], weights,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_staged_run_gives_the_whole_runs_values_a_stage_at_a_time(monkeypatch):
    model, names = _net(), ["a", "r", "b", "p", "q", "c"]
    sizes = {name: 4 * 4 * 8 * 8 for name in names} | {"p": 2 * 4 * 8 * 8, "q": 2 * 4 * 8 * 8}  # 1 KB, p and q half
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 4, 8, 8)).astype(np.float32)} for k in range(3)]
    whole = runtime.runner(model, names)
    built = []
    session = runtime.session
    monkeypatch.setattr(runtime, "session", lambda part, *a, **k: built.append(part) or session(part, *a, **k))
    # budget 0: a stage a name; q comes with p (one Split made both), so its stage runs nothing
    for budget, stages, sessions in [(0, 6, 5), (2048, 3, 3), (1 << 20, 1, 1)]:
        built.clear()
        staged = runtime.staged(model, names, sizes, budget)
        for feed in feeds:
            parts = list(staged(feed))
            assert len(parts) == stages and [n for part in parts for n in part] == names
            expected = whole(feed)
            for part in parts:
                for name, value in part.items():
                    np.testing.assert_array_equal(value, expected[name], err_msg=f"{name} at budget {budget}")
        assert len(built) == sessions  # each stage's session is built once, on its first sample
        # a later stage runs from what the ones before left alive, not from the input again
        assert all("x" not in {i.name for i in part.graph.input} for part in built[1:])


def test_a_large_conv_output_is_averaged_a_channel_at_a_time_to_the_same_bits(monkeypatch):
    rng = np.random.default_rng(1)
    value = (rng.standard_normal((1, 5, 300, 70)) * 30 + 2).astype(np.float32)
    whole = [bias_correction._channel_mean(value, 1, seen) for seen in
             (np.asarray, lambda x: np.clip(x, 0.0, 6.0), lambda x: (x > 0.0) & (x < 6.0))]  # fmt: skip
    calls = []
    monkeypatch.setattr(bias_correction, "CHANNEL_LOOP_BYTES", 0)
    for k, seen in enumerate((np.asarray, lambda x: np.clip(x, 0.0, 6.0), lambda x: (x > 0.0) & (x < 6.0))):
        looped = bias_correction._channel_mean(value, 1, lambda x, seen=seen: calls.append(x.shape) or seen(x))
        assert looped.dtype == np.float64 and np.array_equal(looped, whole[k])
    assert set(calls) == {(300, 70)}  # a channel at a time

"""What mixed precision's trials reuse from the float model: keyed by proto identity, only inside the scope."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper, version_converter

from qtool.graph import lazy_weights, trial_memo
from qtool.graph import model as gm


def test_outside_a_scope_nothing_is_kept() -> None:
    calls = []
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    for _ in range(2):
        trial_memo.remember("k", (tensor,), lambda: calls.append(1))
    assert len(calls) == 2


def test_inside_the_same_proto_computes_once_and_another_proto_again() -> None:
    a = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")  # equal, but another proto
    with trial_memo.remembered():
        first = lazy_weights.array(a)
        assert lazy_weights.array(a) is first
        assert lazy_weights.array(b) is not first
        assert trial_memo.remember("q", (a,), lambda: 1, 8) == 1
        assert trial_memo.remember("q", (a,), lambda: 2, 16) == 2  # `extra` is part of the key
        assert trial_memo.remember("q", (a,), lambda: 3, 8) == 1
    assert lazy_weights.array(a) is not first  # the scope is gone


def test_a_kept_array_is_read_only() -> None:
    tensor = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    with trial_memo.remembered():
        values = trial_memo.remember("sum", (tensor,), lambda: np.zeros(2))
        with pytest.raises(ValueError, match="read-only"):
            values[0] = 1.0


def test_past_the_budget_the_oldest_go_and_latest_only_keeps_one() -> None:
    protos = [numpy_helper.from_array(np.zeros(4, np.float32), f"w{i}") for i in range(3)]
    with trial_memo.remembered(budget=40):  # two 16-byte arrays fit, three do not
        for p in protos:
            lazy_weights.array(p)
        memo = trial_memo._SCOPES[-1]
        assert [k[1] for k in memo.entries] == [id(protos[1]), id(protos[2])] and memo.held == 32
        trial_memo.remember("model", (protos[0],), lambda: "a", latest_only=True)
        trial_memo.remember("model", (protos[1],), lambda: "b", latest_only=True)
        assert [v[1] for k, v in memo.entries.items() if k[0] == "model"] == ["b"]


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [info("x", 1, [1, 16])], [info("y", 1, [1, 16])],
        [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_upgrade_converts_the_same_model_once(monkeypatch) -> None:
    """Outside any scope too: auto's trials upgrade the same float model for every Q/DQ they write, and onnx's
    converter copies every op schema on each call (Silero VAD's quantize peaked there). Each upgrade is a model of
    its own with the converter's bytes, its weights put back; another model is converted again."""
    calls, original = [], version_converter.convert_version
    monkeypatch.setattr(version_converter, "convert_version", lambda m, target: calls.append(target) or original(m, target))
    monkeypatch.setattr(gm, "_LAST_UPGRADE", {})
    weight = np.arange(256, dtype=np.float32).reshape(16, 16)  # 1 KB: left out of the converter's copy
    model = _matmul_model(weight)
    first, second = gm.upgrade_opset(model, 21, "m"), gm.upgrade_opset(model, 21, "m")
    assert len(calls) == 1 and first is not second
    assert first.SerializeToString() == second.SerializeToString() == original(model, 21).SerializeToString()
    assert gm.default_opset(first) == 21 and np.array_equal(numpy_helper.to_array(first.graph.initializer[0]), weight)
    first.graph.node[0].name = "changed"  # a caller's change reaches no later upgrade
    assert gm.upgrade_opset(model, 21, "m").graph.node[0].name != "changed"
    other = _matmul_model(weight)
    other.opset_import[0].version = 18
    gm.upgrade_opset(other, 21, "m")
    assert len(calls) == 2


def test_the_qdq_writer_upgrades_without_a_copy_of_the_weights(monkeypatch) -> None:
    """A 16-bit grid needs opset 21: the writer upgrades a weightless copy and quantizes the float model's own
    weight protos, so no upgraded copy holds every weight once more while it writes (each of auto's and bc's trials
    wrote one); the written model is the one a whole upgraded model gives."""
    from qtool import encoding
    from qtool.quant import qdq
    from qtool.quant.plan import QuantPlan

    model = _matmul_model(np.arange(256, dtype=np.float32).reshape(16, 16) / 256)
    plan = QuantPlan(
        activations={n: encoding.tf(-1.0, 1.0, 16) for n in ("x", "y")}, params={"w": encoding.symmetric(-1.0, 1.0, 8)}
    )
    read, param = [], qdq._Writer.param
    monkeypatch.setattr(qdq._Writer, "param", lambda self, init, e: read.append(init) or param(self, init, e))
    written = qdq.write_qdq(model, plan)
    assert len(read) == 1 and read[0] is model.graph.initializer[0]  # the float model's own proto, not a copy's
    assert gm.default_opset(written) == 21
    full = gm.upgrade_opset(model, 21, "m")
    assert written.SerializeToString() == qdq.write_qdq(full, plan).SerializeToString()

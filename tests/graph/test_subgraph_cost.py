"""graph/subgraph_cost: the bound on the work onnx's shape inference does on a model's subgraphs, and its setting."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from qtool.errors import ModelError, UsageError
from qtool.graph.subgraph_cost import STEPS_ENV, check_subgraph_work


def _ifs(count: int) -> onnx.ModelProto:
    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", ["x"], [tag])], tag, [],
                                 [helper.make_tensor_value_info(tag, TensorProto.FLOAT, [1])])  # fmt: skip

    ifs = [helper.make_node("If", ["c"], [f"y{i}"], then_branch=branch(f"t{i}"), else_branch=branch(f"e{i}"))
           for i in range(count)]  # fmt: skip
    graph = helper.make_graph(ifs, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1]) for i in range(count)])  # fmt: skip
    return helper.make_model(graph)


def test_the_bound_the_refusal_names_can_be_given_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """d3106ae named its bound as 'past 1e+04 steps' and read QTOOL_MAX_SUBGRAPH_STEPS as a byte count: '1e+04'
    given back was refused as 'must be a number of bytes'. The bound is now written whole, and a bad setting named
    as steps."""
    monkeypatch.setenv(STEPS_ENV, "10000")
    with pytest.raises(ModelError) as refused:
        check_subgraph_work(_ifs(20), "m.onnx")
    assert "past 10000 steps" in str(refused.value)
    monkeypatch.setenv(STEPS_ENV, "1e5")
    with pytest.raises(UsageError, match=f"{STEPS_ENV}='1e5' must be a number of steps"):
        check_subgraph_work(_ifs(20), "m.onnx")
    monkeypatch.setenv(STEPS_ENV, "100000")
    check_subgraph_work(_ifs(20), "m.onnx")

"""runtime.runner: a tensor costs only the part of the model it depends on."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from qtool import runtime


def _value(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])


def _branch(k: int) -> onnx.GraphProto:
    """out_k = a * k, where `a` comes from the enclosing graph."""
    constant = helper.make_tensor(f"k{k}", TensorProto.FLOAT, [1], [float(k)])
    node = helper.make_node("Mul", ["a", f"k{k}"], [f"out{k}"])
    return helper.make_graph([node], f"branch{k}", [], [_value(f"out{k}")], [constant])


def _model() -> onnx.ModelProto:
    """x -> a = x+1 -> b = If(flag){a*2}{a*3}; c = Exp(x) does not feed b."""
    nodes = [
        helper.make_node("Add", ["x", "one"], ["a"]),
        helper.make_node("If", ["flag"], ["b"], then_branch=_branch(2), else_branch=_branch(3)),
        helper.make_node("Exp", ["x"], ["c"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [_value("x"), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [_value("b"), _value("c")],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pruned_keeps_what_a_subgraph_reads_from_outside():
    pruned = runtime.pruned(_model(), ["b"])
    assert [n.op_type for n in pruned.graph.node] == ["Add", "If"]  # Exp dropped, Add kept for the branch
    onnx.checker.check_model(pruned)
    feed = {"x": np.array([1.0, 2.0], np.float32), "flag": np.array(True)}
    np.testing.assert_allclose(runtime.runner(_model(), ["b"])(feed)["b"], [4.0, 6.0])


def test_runner_returns_intermediate_tensors_by_name():
    feed = {"x": np.array([0.0, 1.0], np.float32), "flag": np.array(False)}
    found = runtime.runner(_model(), ["a", "c"])(feed)
    np.testing.assert_allclose(found["a"], [1.0, 2.0])
    np.testing.assert_allclose(found["c"], np.exp([0.0, 1.0]), rtol=1e-6)

"""FuseLayerNormPass: paddle2onnx/torch-style decomposed layer norms become LayerNormalization."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def decomposed_layernorm(square: str = "Pow", axis: int = 2) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "beta"),
    ]
    squared = (
        helper.make_node("Pow", ["d", "two"], ["sq"])
        if square == "Pow"
        else helper.make_node("Mul", ["d", "d"], ["sq"])
    )
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[axis], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        squared,
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[axis], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["ns"]),
        helper.make_node("Add", ["ns", "beta"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(("square", "axis"), [("Pow", 2), ("Mul", -1)])
def test_decomposed_layernorm_becomes_one_op_with_the_same_output(square: str, axis: int) -> None:
    model = decomposed_layernorm(square, axis)
    out = normalise(model, {}, "ln.onnx")
    ops = [n.op_type for n in out.graph.node]
    assert ops == ["LayerNormalization"]
    assert out.graph.output[0].name == "y"
    x = np.random.default_rng(1).normal(size=(1, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-5)


def test_a_mean_over_another_axis_is_left_alone() -> None:
    out = normalise(decomposed_layernorm("Pow", 1), {}, "ln.onnx")
    assert "LayerNormalization" not in [n.op_type for n in out.graph.node]

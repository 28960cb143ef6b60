"""tf2onnx writes a Keras LayerNormalization over the last axis as TensorFlow's FusedBatchNormV3 trick: the rows
reshaped into a BatchNormalization's channels, its mean and variance computed beside it (ReduceMean,
ReduceSumSquare / D), then γ and β. magika 0.5.1's standard_v1 (new-model sweep round 19) ends so; convert left
the BatchNormalization with computed statistics, whose variance (up to 8e13 there) quantize put on an 8-bit grid."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise

WIDTH = 8


def keras_layernorm(rows: int = 1, bn_scale: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    inits = [
        const("shape4", np.array([1, -1, WIDTH, 1], np.int64)),
        const("shape2", np.array([rows, WIDTH], np.int64)),
        const("axes", np.array([0, 2, 3], np.int64)),
        const("count", np.array(float(WIDTH), np.float32)),
        const("ones", np.full(rows, bn_scale, np.float32)),
        const("zeros", np.zeros(rows, np.float32)),
        const("gamma", rng.normal(size=WIDTH).astype(np.float32)),
        const("beta", rng.normal(size=WIDTH).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "shape4"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["mean"], axes=[0, 2, 3], keepdims=1),
        helper.make_node("Sub", ["r", "mean"], ["d"]),
        helper.make_node("ReduceSumSquare", ["d"], ["ss"], axes=[0, 2, 3], keepdims=0),
        helper.make_node("Squeeze", ["mean", "axes"], ["m"]),
        helper.make_node("Div", ["ss", "count"], ["v"]),
        helper.make_node("BatchNormalization", ["r", "ones", "zeros", "m", "v"], ["n4"], epsilon=1e-3),
        helper.make_node("Reshape", ["n4", "shape2"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["ns"]),
        helper.make_node("Add", ["ns", "beta"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "keras_ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, WIDTH])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("rows", [1, 3])
def test_the_fused_batchnorm_form_becomes_one_layernorm_with_the_same_output(rows: int) -> None:
    model = keras_layernorm(rows)
    out = normalise(model, {}, "ln.onnx")
    assert [n.op_type for n in out.graph.node] == ["LayerNormalization"]
    assert out.graph.output[0].name == "y"
    x = (np.random.default_rng(1).normal(size=(rows, WIDTH)) * 1e3).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_a_batchnorm_with_a_scale_of_its_own_is_left_alone() -> None:
    out = normalise(keras_layernorm(bn_scale=2.0), {}, "ln.onnx")
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]


@pytest.mark.parametrize("statistic", ["d", "ss", "m", "v"])
@pytest.mark.parametrize("read_by", ["another node", "the graph's outputs"])
def test_a_statistic_read_elsewhere_keeps_the_form_whole(statistic: str, read_by: str) -> None:
    """The deviations, their sum of squares, the squeezed mean or the variance read past the BatchNormalization (a
    node of its own, or a graph output): fusing removed its producer and convert stopped, 'internal error'."""
    model = keras_layernorm(3)
    if read_by == "another node":
        model.graph.node.append(helper.make_node("Neg", [statistic], ["seen"]))
        statistic = "seen"
    model.graph.output.append(helper.make_tensor_value_info(statistic, TensorProto.FLOAT, None))
    out = normalise(model, {}, "ln.onnx")
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    x = np.random.default_rng(1).normal(size=(3, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)

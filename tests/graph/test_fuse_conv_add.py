"""FuseConvAddPass: a Conv followed by an Add of one constant per output channel (paddle2onnx 2.x's bias)
becomes the Conv's bias; a shift that varies over space or feeds more than the Add stays apart."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def conv_add(shift: np.ndarray, *, with_bias: bool = False, shift_first: bool = False, extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(shift.astype(np.float32), "t")]  # fmt: skip
    conv_inputs = ["x", "w"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["t", "c"] if shift_first else ["c", "t"], ["y"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    return helper.make_model(helper.make_graph(nodes, "g", [x], outputs, inits), opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize(
    "shift, with_bias, shift_first",
    [(np.arange(4.0).reshape(1, 4, 1, 1), False, False), (np.arange(4.0).reshape(4, 1, 1), True, True), (np.array(0.5), True, False)],
)
def test_a_per_channel_shift_becomes_the_conv_bias(shift: np.ndarray, with_bias: bool, shift_first: bool) -> None:
    model = conv_add(shift, with_bias=with_bias, shift_first=shift_first)
    out = normalise(model, {}, "m.onnx")
    assert [(n.op_type, n.name) for n in out.graph.node] == [("Conv", "conv")]
    assert out.graph.output[0].name == "y" and len(out.graph.node[0].input) == 3
    bias = next(i for i in out.graph.initializer if i.name == out.graph.node[0].input[2])
    assert list(bias.dims) == [4]  # per output channel: the int32 bias rule needs it so
    x = np.random.default_rng(1).normal(size=(1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_a_shift_over_space_or_a_conv_read_elsewhere_stays_apart() -> None:
    for model in (conv_add(np.ones((1, 4, 6, 6))), conv_add(np.arange(4.0).reshape(1, 4, 1, 1), extra_reader=True)):
        out = normalise(model, {}, "m.onnx")
        assert sorted(n.op_type for n in out.graph.node if n.op_type in ("Conv", "Add")) == ["Add", "Conv"]

"""paddle2onnx's DB text-detection heads write ConvTranspose -> Add(per-channel bias) -> BatchNormalization
(PP-OCRv5's detector, PP-OCRv4's seal detector): the bias Add is the ConvTranspose's bias and the BatchNorm folds
into its weights along their output channels (axis 1 of [C_in, C_out/group, k...], per group)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def transpose_bias_bn(group: int, *, bias_add: bool = True, scale: bool = False, identities: bool = False) -> onnx.ModelProto:
    """`identities`: an Identity after each op, as paddle2onnx writes them (folding bypasses them, and until they are
    removed each op's output has a second reader)."""
    rng = np.random.default_rng(0)
    c_in, c_out = 4, 6
    inits = [numpy_helper.from_array(rng.normal(size=(c_in, c_out // group, 2, 2)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, c_out, 1, 1)).astype(np.float32), "t"),
             numpy_helper.from_array(rng.uniform(0.5, 2, size=(1, c_out, 1, 1)).astype(np.float32), "s")]  # fmt: skip
    for name, values in (("gamma", rng.uniform(0.5, 2, c_out)), ("beta", rng.normal(size=c_out)),
                         ("mean", rng.normal(size=c_out)), ("var", rng.uniform(0.5, 2, c_out))):  # fmt: skip
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], name="up", strides=[2, 2], group=group)]
    last = "c"
    for op, constant, wanted in (("Identity", None, identities), ("Add", "t", bias_add), ("Identity", None, identities), ("Mul", "s", scale)):
        if wanted:
            nodes.append(helper.make_node(op, [last] + ([constant] if constant else []), [f"{last}_{op}"]))
            last = f"{last}_{op}"
    nodes += [helper.make_node("BatchNormalization", [last, "gamma", "beta", "mean", "var"], ["b"], name="bn"),
              helper.make_node("Relu", ["b"], ["y"])]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "group, bias_add, scale, identities",
    [(1, True, False, False), (2, True, False, False), (2, True, True, False), (2, False, False, False), (1, True, False, True)],
)
def test_a_batchnorm_after_a_conv_transposes_bias_add_folds_into_it(group: int, bias_add: bool, scale: bool, identities: bool) -> None:
    model = transpose_bias_bn(group, bias_add=bias_add, scale=scale, identities=identities)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["ConvTranspose", "Relu"] and out.graph.node[0].name == "up"
    x = np.random.default_rng(1).normal(size=(1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_a_conv_transposes_bias_add_becomes_its_bias() -> None:
    """Without a BatchNorm after it, the Add is still the ConvTranspose's bias: one rounding, an int32 bias."""
    model = transpose_bias_bn(2)
    del model.graph.node[2]  # the BatchNorm: the Relu reads the sum
    model.graph.node[-1].input[0] = "c_Add"  # written before the Relu's input was the BatchNorm's
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["ConvTranspose", "Relu"]
    bias = next(i for i in out.graph.initializer if i.name == out.graph.node[0].input[2])
    assert list(bias.dims) == [6]
    x = np.random.default_rng(1).normal(size=(1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)

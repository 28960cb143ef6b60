"""SplitAffineOverConcatPass: a per-channel Mul spanning more than 16x and the Add after it (a BatchNorm after a
concatenation) go onto each input, the model computing what it did; a narrow scale, or a constant that is not one
value per channel, stays after the Concat."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise
from qtool.graph.passes.split_affine_over_concat import SplitAffineOverConcatPass


def concat_then_batchnorm(scale_shape: tuple[int, ...] = (1, 7, 1), spread: float = 100.0) -> onnx.ModelProto:
    """Concat([1,3,5] x, [1,4,5] Relu(y)) on axis 1, then x · s + t, |s| spanning `spread`."""
    rng = np.random.default_rng(0)
    scale = np.geomspace(1.0, spread, int(np.prod(scale_shape))).reshape(scale_shape) / spread
    inits = [numpy_helper.from_array(scale.astype(np.float32), "s"),
             numpy_helper.from_array(rng.normal(size=(1, 7, 1)).astype(np.float32), "t")]  # fmt: skip
    nodes = [helper.make_node("Relu", ["y"], ["r"]), helper.make_node("Concat", ["x", "r"], ["c"], axis=1),
             helper.make_node("Mul", ["c", "s"], ["m"]), helper.make_node("Add", ["t", "m"], ["z"])]  # fmt: skip
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5]),
              helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto) -> np.ndarray:
    rng = np.random.default_rng(1)
    feed = {"x": (rng.normal(size=(1, 3, 5)) * 100).astype(np.float32), "y": rng.normal(size=(1, 4, 5)).astype(np.float32)}
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_a_batchnorm_after_a_concat_scales_each_input_before_it() -> None:
    model = concat_then_batchnorm()
    out = normalise(model, {}, "m.onnx")
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Mul") == 2 and ops.count("Add") == 2 and ops[-1] == "Concat"
    assert out.graph.node[-1].output[0] == "z"  # the name overrides and reports use
    np.testing.assert_allclose(run(out), run(model), rtol=1e-5, atol=1e-4)


def test_a_constant_that_varies_along_another_axis_stays_after_the_concat() -> None:
    model = concat_then_batchnorm(scale_shape=(1, 1, 5))
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node].count("Concat") == 1
    assert next(n for n in out.graph.node if n.op_type == "Mul").input[0] == "c"
    np.testing.assert_allclose(run(out), run(model), rtol=1e-5, atol=1e-4)


def test_a_narrow_scale_stays_after_the_concat() -> None:
    """Branches the scale barely tells apart share a grid well: split, each would only round once more."""
    model = concat_then_batchnorm(spread=8.0)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node].count("Mul") == 1
    np.testing.assert_allclose(run(out), run(model), rtol=1e-5, atol=1e-4)


def test_a_constant_that_is_not_per_channel_is_not_read() -> None:
    """Its shape decides: onnx_ir maps an external constant's whole data file to read it (a 2.35 GB decoder's
    nine rotary tables after their Concats took 21 GB of address space, past prlimit --as)."""
    model = ir.serde.deserialize_model(concat_then_batchnorm(scale_shape=(1, 1, 5)))
    scale = model.graph.initializers["s"]
    reads = []
    values = scale.const_value.numpy()
    scale.const_value = ir.LazyTensor(lambda: reads.append(1) or ir.tensor(values), dtype=ir.DataType.FLOAT,
                                      shape=ir.Shape(values.shape))  # fmt: skip
    concat = next(n for n in model.graph if n.op_type == "Concat")
    concat.inputs[1].shape, concat.outputs[0].shape = ir.Shape([1, 4, 5]), ir.Shape([1, 7, 5])  # as convert infers
    SplitAffineOverConcatPass()(model)
    assert reads == []
    assert [n.op_type for n in model.graph].count("Concat") == 1

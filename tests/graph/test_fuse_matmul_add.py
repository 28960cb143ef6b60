"""FuseMatMulAddPass: a 2-D dense layer's MatMul + bias becomes one Gemm; anything else stays."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def dense(x_shape: list[int], bias: np.ndarray, *, bias_first: bool = False, extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(bias.astype(np.float32), "b")]  # fmt: skip
    add_inputs = ["b", "mm"] if bias_first else ["mm", "b"]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="dense"), helper.make_node("Add", add_inputs, ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["mm"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_matmul_plus_bias_becomes_one_gemm_with_a_vector_bias() -> None:
    for bias, bias_first in ((np.arange(4), False), (np.arange(4).reshape(1, 4), True), (np.array(0.5), False)):
        model = dense([3, 8], bias, bias_first=bias_first)
        out = normalise(model, {}, "m.onnx")
        assert [(n.op_type, n.name) for n in out.graph.node] == [("Gemm", "dense")]
        assert out.graph.output[0].name == "y"
        gemm_bias = next(i for i in out.graph.initializer if i.name == out.graph.node[0].input[2])
        assert list(gemm_bias.dims) == [4]  # per output feature: the int32 bias rule needs it so
        x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
        np.testing.assert_allclose(run(out, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_rank_3_inputs_and_matmuls_read_elsewhere_stay_as_they_are() -> None:
    for model in (dense([2, 3, 8], np.arange(4)), dense([3, 8], np.arange(4), extra_reader=True)):
        out = normalise(model, {}, "m.onnx")
        assert sorted(n.op_type for n in out.graph.node if n.op_type in ("MatMul", "Add", "Gemm")) == ["Add", "MatMul"]

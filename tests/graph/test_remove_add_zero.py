"""RemoveAddZeroPass: scores + zeros, as torch.onnx's dynamo exporter writes an attention without a mask, is the
scores themselves; zeros that broadcast the data to a larger shape, 0 - x, an output an override names, and a
non-zero constant stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def scores_plus(constant: np.ndarray, op: str = "Add", zeros_first: bool = False) -> onnx.ModelProto:
    """x [1, 2, 4, 4] -> MatMul(x, x) -> op(., c) -> Softmax."""
    inputs = ["c", "s"] if zeros_first else ["s", "c"]
    nodes = [helper.make_node("MatMul", ["x", "x"], ["s"]), helper.make_node(op, inputs, ["m"]),
             helper.make_node("Softmax", ["m"], ["y"], axis=-1)]  # fmt: skip
    out_shape = list(np.broadcast_shapes((1, 2, 4, 4), constant.shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(constant.astype(np.float32), "c")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_scores_plus_zeros_are_the_scores() -> None:
    x = np.random.default_rng(0).normal(0, 1, (1, 2, 4, 4)).astype(np.float32)
    for op, first in (("Add", False), ("Add", True), ("Sub", False)):
        source = scores_plus(np.zeros((1, 1, 4, 4)), op, first)
        model = normalise(source, {}, "m.onnx")
        assert [n.op_type for n in model.graph.node] == ["MatMul", "Softmax"], (op, first)
        assert not model.graph.initializer
        np.testing.assert_array_equal(run(model, x), run(source, x))


def test_what_is_not_the_data_unchanged_stays() -> None:
    cases = {
        "broadcasts": scores_plus(np.zeros((3, 2, 4, 4))),  # the output is larger than the scores
        "zero minus": scores_plus(np.zeros((1, 1, 4, 4)), "Sub", zeros_first=True),  # 0 - s is -s
        "non-zero": scores_plus(np.full((1, 1, 4, 4), 1e-9)),
    }
    for label, source in cases.items():
        assert [n.op_type for n in normalise(source, {}, "m.onnx").graph.node] == ["MatMul", source.graph.node[1].op_type,
                                                                                    "Softmax"], label  # fmt: skip
    kept = normalise(scores_plus(np.zeros((1, 1, 4, 4))), {}, "m.onnx", keep=frozenset({"m"}))
    assert [n.op_type for n in kept.graph.node] == ["MatMul", "Add", "Softmax"]  # an override names 'm'

"""EinsumToMatMulPass: an Einsum of an activation and a constant contracting one letter becomes a MatMul with a
2-D weight (plus the Transpose / Reshape the letters need), with unchanged outputs; other Einsums stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise
from qtool.graph.passes.einsum_to_matmul import lowering

SIZES = {"b": 1, "t": 5, "d": 6, "f": 4, "h": 3, "e": 2, "i": 7, "k": 8, "g": 1, "q": 2}


def einsum_model(equation: str, constant_first: bool = False) -> onnx.ModelProto:
    left, right = equation.split("->")[0].split(",")
    data, weight = (right, left) if constant_first else (left, right)
    out = equation.split("->")[1]
    w = np.random.default_rng(0).normal(size=[SIZES[c] for c in weight]).astype(np.float32)
    inputs = ["w", "x"] if constant_first else ["x", "w"]
    graph = helper.make_graph(
        [helper.make_node("Einsum", inputs, ["y"], name="einsum", equation=equation)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SIZES[c] for c in data])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SIZES[c] for c in out])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("equation", "constant_first", "ops"),
    [
        ("btf,fd->btd", False, ["MatMul"]),  # a Linear
        ("btd,hde->bhte", False, ["MatMul", "Reshape", "Transpose"]),  # a multi-head projection
        ("bdt,dk->btk", False, ["Transpose", "MatMul"]),  # the contracted letter not last
        ("ik,bti->bkt", True, ["MatMul", "Transpose"]),  # the constant first, its letters the other way round
        ("btgi,gih->btgh", False, ["MatMul"]),  # DeepFilterNet's grouped linear with one group: g is a broadcast
        ("btqi,qih->btqh", False, ["Unsqueeze", "MatMul", "Reshape"]),  # ... with two groups: q batches the MatMul
        ("qih,btqi->bhtq", True, ["Unsqueeze", "MatMul", "Reshape", "Transpose"]),  # the output in another order
    ],
)
def test_an_einsum_with_a_constant_becomes_a_matmul_with_the_same_outputs(equation, constant_first, ops) -> None:
    model = einsum_model(equation, constant_first)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ops
    matmul = next(n for n in out.graph.node if n.op_type == "MatMul")
    assert matmul.name == "einsum" and out.graph.output[0].name == "y"
    weight = next(i for i in out.graph.initializer if i.name == matmul.input[1])
    assert len(weight.dims) == (3 if "q" in equation else 2)  # a weight per-channel grids can run along
    data = equation.split("->")[0].split(",")[1 if constant_first else 0]
    x = np.random.default_rng(1).normal(size=[SIZES[c] for c in data]).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "equation",
    ["bti,ik->bti",  # i kept in the output: no contraction
     "bti,i->bt",  # nothing new from the weight: a weighted sum, not a MatMul
     "bti,bik->bt",  # k summed away too
     "btik,ik->bt"],  # two contracted letters
)  # fmt: skip
def test_other_einsums_are_left_alone(equation: str) -> None:
    left, right = equation.split("->")[0].split(",")
    assert lowering(left, right, equation.split("->")[1]) is None
    sizes = SIZES | {"b": 2, "g": 2}
    w = np.ones([sizes[c] for c in right], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [sizes[c] for c in left])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    out = normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Einsum"]


def test_two_einsums_reading_one_weight_each_become_a_matmul() -> None:
    """Their lowered weights were both registered as `w_matmul`: convert failed on the second."""
    w = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["a"], equation="btf,fd->btd"),
         helper.make_node("Einsum", ["x", "w"], ["b"], equation="btf,fd->btd"), helper.make_node("Add", ["a", "b"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 6])], [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node].count("MatMul") == 2
    x = np.random.default_rng(1).normal(size=(1, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-5)

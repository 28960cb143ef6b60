"""An output that is each row's best probability (ReduceMax over a Softmax's axis) is no class-score vector: the
report takes no argmax over its rows (inspect/compare.best_probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def recogniser() -> onnx.ModelProto:
    """x [1, 6, 4] -> MatMul w [4, 5] -> logits [1, 6, 5] (6 steps, 5 classes) -> Softmax(axis 2) -> ReduceMax over
    axis 2: conf [1, 6], each step's best probability (trueocr 0.1.1's recogniser); over axis 1: scores [1, 5], each
    class's best step (a keyword spotter's max over time)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p"], axis=2),
             helper.make_node("ReduceMax", ["p"], ["conf"], axes=[2], keepdims=0),
             helper.make_node("ReduceMax", ["p"], ["scores"], axes=[1], keepdims=0)]  # fmt: skip
    graph = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])],
                              [helper.make_tensor_value_info("conf", TensorProto.FLOAT, [1, 6]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 5])], [w])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_rows_best_probability_gets_no_top1_agreement(tmp_path: Path) -> None:
    """conf [1, 6] read 'top1_agreement' (which step is the most confident), 0.0938 on trueocr's recogniser whose
    lines decode as float decodes them for 31%; the class scores [1, 5] keep theirs."""
    onnx.save(recogniser(), tmp_path / "rec.onnx")
    rng = np.random.default_rng(1)
    for i in range(8):
        rng.normal(size=(1, 6, 4)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{i}.raw\n" for i in range(8)))
    result = run_cli(["quantize", "-i", tmp_path / "rec.onnx", "-l", tmp_path / "list.txt", "-o", tmp_path / "q.onnx",
                      "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    outputs = {row["output"]: row for row in json.loads(result.stdout)["outputs (float vs quantized)"]}
    assert outputs["conf"]["top1_agreement"] == "" and outputs["conf"]["sqnr_db"] > 30
    assert outputs["scores"]["top1_agreement"] == 1.0


def test_a_rows_best_probability_is_found_with_its_axis_counted_from_either_end(tmp_path: Path) -> None:
    """Softmax(axis -1) with ReduceMax over axis 2 (torch's softmax(-1).max(2)), and the other way round, name the
    same axis of a rank-3 tensor: read as two axes, conf kept its top1_agreement (an argmax over steps)."""
    rng = np.random.default_rng(1)
    for i in range(8):
        rng.normal(size=(1, 6, 4)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{i}.raw\n" for i in range(8)))
    for softmax_axis, reduce_axis in ((-1, 2), (2, -1)):
        model = recogniser()
        model.graph.node[1].attribute[0].i = softmax_axis
        model.graph.node[2].attribute[0].ints[:] = [reduce_axis]
        onnx.save(model, tmp_path / "rec.onnx")
        result = run_cli(["quantize", "-i", tmp_path / "rec.onnx", "-l", tmp_path / "list.txt", "-o", tmp_path / "q.onnx",
                          "--json"])  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs = {row["output"]: row for row in json.loads(result.stdout)["outputs (float vs quantized)"]}
        assert outputs["conf"]["top1_agreement"] == "", (softmax_axis, reduce_axis)
        assert outputs["scores"]["top1_agreement"] == 1.0

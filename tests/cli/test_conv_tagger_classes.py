"""A Conv's output channels are a class axis where a Softmax normalises them and Transposes, Squeezes or Casts
bring them last: tf2onnx's Keras Conv1D tagger head, Conv -> Squeeze -> Softmax(axis 1) -> Transpose(0, 2, 1) ->
Cast(float16) (slovorez 0.1.0's morpheme tags [32, 20, 27]), gets a top-1 agreement a position
(inspect/compare.class_axes); the same head without the Softmax, a regression a position, gets none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.inspect.compare import class_axes

STEPS, CLASSES = 12, 5


def tagger(softmax: bool = True) -> onnx.ModelProto:
    """x [1, 4, STEPS] -> Unsqueeze(2) -> Conv 1x1 [CLASSES, 4] (+ bias) -> Squeeze(2) -> [Softmax(axis 1)] ->
    Transpose(0, 2, 1) -> Cast(float16): tags [1, STEPS, CLASSES]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (CLASSES, 4, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, CLASSES).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]  # fmt: skip
    nodes = [helper.make_node("Unsqueeze", ["x", "axis2"], ["x4"]), helper.make_node("Conv", ["x4", "w", "b"], ["c"]),
             helper.make_node("Squeeze", ["c", "axis2"], ["s"])]  # fmt: skip
    nodes += [helper.make_node("Softmax", ["s"], ["p"], axis=1)] if softmax else [helper.make_node("Identity", ["s"], ["p"])]
    nodes += [helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 1]),
              helper.make_node("Cast", ["t"], ["tags"], to=TensorProto.FLOAT16)]  # fmt: skip
    graph = helper.make_graph(nodes, "tagger", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, STEPS])],
                              [helper.make_tensor_value_info("tags", TensorProto.FLOAT16, [1, STEPS, CLASSES])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_taggers_channels_are_its_classes_only_through_a_softmax() -> None:
    assert class_axes(tagger()) == {"tags": CLASSES}
    assert class_axes(tagger(softmax=False)) == {}


def test_quantize_reports_a_conv_taggers_top1_agreement_a_position(tmp_path: Path) -> None:
    """The report's table had no top1_agreement for the tags (slovorez: 98.96 % of the held-out characters' tags
    agree with float's, measured by hand); now it has one, over STEPS positions a sample."""
    onnx.save(tagger(), tmp_path / "tagger.onnx")
    rng = np.random.default_rng(1)
    for i in range(8):
        rng.normal(size=(1, 4, STEPS)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{i}.raw\n" for i in range(8)))
    result = run_cli(["quantize", "-i", tmp_path / "tagger.onnx", "-l", tmp_path / "list.txt", "-o",
                      tmp_path / "q.onnx", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    row = {r["output"]: r for r in json.loads(result.stdout)["outputs (float vs quantized)"]}["tags"]
    assert isinstance(row["top1_agreement"], float) and row["top1_agreement"] > 0.9, row

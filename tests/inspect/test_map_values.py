"""inspect says what convert will refuse: a map output (skl2onnx's ZipMap) is an error finding, not "lint findings:
none" (helper-40: onnxruntime's logreg_iris)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from qnn_models import qtool


def _zipmap_classifier() -> onnx.ModelProto:
    nodes = [
        helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", classlabels_ints=[0, 1],
                         coefficients=np.ones(8, np.float32).tolist(), intercepts=[0.0, 0.0]),
        helper.make_node("ZipMap", ["scores"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]),
    ]  # fmt: skip
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        nodes, "zipmap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [1]), helper.make_value_info("probabilities", maps)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model


def test_inspect_flags_a_map_output_that_convert_refuses(tmp_path: Path) -> None:
    onnx.save(_zipmap_classifier(), tmp_path / "m.onnx")
    code, out, _ = qtool("inspect", tmp_path / "m.onnx", "--fail-on", "error")
    assert code == 5 and "map-value" in out and "probabilities" in out and "zipmap" in out
    code, _, err = qtool("convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx")
    assert code == 3 and "is a map" in err

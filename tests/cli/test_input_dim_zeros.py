"""convert's run on zeros after an --input_dim changes a dim the model fixes (api/common.check_changed_dims): it
refuses a change the model cannot run with, not a model whose postprocessing zeros fail as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def detector(channels: int = 3) -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> Conv -> Relu -> the top-1 of its nonzero positions (TopK over NonZero): zeros leave no
    position, and TopK's k=1 fails on an empty axis, as a detector's top-k fails on an image without detections."""
    inits = [numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, channels, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "k")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=0), helper.make_node("NonZero", ["f"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["nzf"], to=TensorProto.FLOAT),
             helper.make_node("TopK", ["nzf", "k"], ["top", "idx"], axis=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("top", TensorProto.FLOAT, [2, 1]),
                               helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 8, 8])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_new_height_and_width_pass_where_zeros_fail_the_model_as_given(tmp_path: Path) -> None:
    """'--input_dim x 1,3,16,16' on this fully convolutional net was 'as converted, onnxruntime cannot run it on
    zeros: ... TopK ... k argument [1] should not be greater than specified axis dim value [0]', exit 3, though
    the model as given fails on zeros the same way: zeros say nothing of the new dims there. A channel count the
    Conv cannot take is still refused."""
    onnx.save(detector(), tmp_path / "det.onnx")
    result = run_cli(["convert", "-i", tmp_path / "det.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "1,3,16,16"])
    assert result.exit_code == 0, result.output
    out = onnx.load(str(tmp_path / "c.onnx"))
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 16, 16]
    result = run_cli(["convert", "-i", tmp_path / "det.onnx", "-o", tmp_path / "c4.onnx", "--input_dim", "x", "1,4,8,8"])
    assert result.exit_code != 0 and "cannot run it on zeros" in result.output and not (tmp_path / "c4.onnx").exists()


def test_a_changed_dim_that_fails_the_load_is_named(tmp_path: Path) -> None:
    """rapid_table_det 0.0.1's table detector fixes its image at 928x928; '--input_dim image 1,3,640,640' failed
    onnxruntime's load at a Reshape ('incompatible shapes', exit 3) with no hint, where a failure at run time named
    the --input_dim. Now the load failure names it too: here a Reshape to [1, -1, 128] of an 8x8 map given 4x4."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Reshape", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 128])],
                              [w, numpy_helper.from_array(np.array([1, -1, 128], np.int64), "s")])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "1,3,4,4"])
    assert result.exit_code == 3 and not (tmp_path / "c.onnx").exists()
    assert "onnxruntime cannot load it" in result.output, result.output
    assert "--input_dim x sets dim 2 to 4, the model's 8" in result.output, result.output

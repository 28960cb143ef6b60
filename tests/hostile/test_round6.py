"""Hostile round six (helper-52): a quantized output that overflows to inf.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import save_model
from hostile_env import Workspace
from onnx import numpy_helper


def test_a_quantized_output_that_overflows_is_minus_inf_db_not_an_internal_error(tmp_path: Path) -> None:
    """A weight near float32's largest value: outputs overflow to inf where the two models disagree, the noise
    energy is inf, and the report's SQNR took log10(0) (ValueError: math domain error, exit 1)."""
    weight = np.random.RandomState(0).randn(4, 3, 3, 3).astype(np.float32)
    weight[0, 0, 0, 0] = 3e38
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    ws = Workspace(tmp_path)
    save_model(model, ws.model)
    for i, seed in enumerate((1, 2)):
        np.random.RandomState(seed).randn(1, 3, 8, 8).astype(np.float32).tofile(tmp_path / f"x{i}.raw")
    ws.listing.write_text("x0.raw\nx1.raw\n")
    result = ws.quantize("-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    assert '"sqnr_db": -Infinity' in result.stdout, result.stdout

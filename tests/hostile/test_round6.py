"""Hostile round six (helper-52): a quantized output that overflows to inf, and a data type ONNX does not define.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import save_model
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import numpy_helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _weight_type(model: onnx.ModelProto) -> None:
    next(t for t in model.graph.initializer if t.name == "B").data_type = 99


def _input_type(model: onnx.ModelProto) -> None:
    model.graph.input[0].type.tensor_type.elem_type = 99


def _cast_to(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Cast"
    relu.attribute.append(onnx.helper.make_attribute("to", 99))


# onnx.checker passes all three, and onnx_ir's reader, onnx's constant folding or inspect's table then failed:
# an internal error (exit 1) from convert, quantize and inspect
@pytest.mark.parametrize(("mutate", "named"), [(_weight_type, "'B'"), (_input_type, "'x'"), (_cast_to, "Cast")])
@pytest.mark.parametrize("command", ["convert", "quantize", "inspect"])
def test_a_data_type_onnx_does_not_define_is_a_model_error(ws: Workspace, mutate, named: str, command: str) -> None:
    model = onnx.load(str(ws.model))
    mutate(model)
    save_model(model, ws.model)
    before = ws.snapshot()
    args = {
        "convert": ["convert", "-i", ws.model, "-o", ws.out],
        "quantize": ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out],
        "inspect": ["inspect", ws.model],
    }[command]
    assert_refused(ws, before, ws.run(*args), 3, "model.onnx", named, "data type 99")


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

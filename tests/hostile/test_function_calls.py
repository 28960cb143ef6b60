"""A local function called with more inputs or outputs than it declares (follows up 51e5234): onnx's inliner asserts
in C++ and raises RuntimeError, not the checker's ValidationError written_out catches, so convert and quantize, and
inspect since it writes functions out, stopped on 'qtool: internal error' (inspect had exited 0 before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto, helper, numpy_helper

LOCAL = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _misfit_call(inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """x [1, 8, 8, 8] -> local::Blk(i, w) = Relu(Conv(i, w)), called with `inputs` and `outputs`."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "W")
    body = [helper.make_node("Conv", ["i", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["o"])]
    function = helper.make_function("local", "Blk", ["i", "w"], ["o"], body, LOCAL)
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 8, 8]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Blk", inputs, outputs, domain="local", name="blk")], "g", value[:1],
                              value[1:], [weight])  # fmt: skip
    model = helper.make_model(graph, opset_imports=LOCAL, functions=[function])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("inputs, outputs", [(["x", "W", "x"], ["y"]), (["x", "W"], ["y", "z"])])
def test_a_call_that_does_not_fit_its_function_is_one_line(ws: Workspace, inputs: list[str], outputs: list[str]) -> None:
    path = ws.root / "fn.onnx"
    onnx.save(_misfit_call(inputs, outputs), path)
    before = ws.snapshot()
    for command in (["inspect", "-i", path], ["convert", "-i", path, "-o", ws.root / "c.onnx"],
                    ["quantize", "-i", path, "--input_list", ws.listing, "-o", ws.out]):  # fmt: skip
        assert_refused(ws, before, ws.run(*command), 3, "fn.onnx", "call does not fit its function",
                       "actual parameters cannot exceed")  # fmt: skip

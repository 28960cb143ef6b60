"""Round 24 (helper h-hostile34): models of local functions as torch exports them, parsers and declared sizes,
outputs and signals, probed on an installed wheel as a careless user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- local functions: inspect sees the nodes they hold ------------------------------------------------------------

LOCAL = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]


def _block_model(functions: list[onnx.FunctionProto], call: str) -> onnx.ModelProto:
    """x [1, 8, 8, 8] -> Conv -> local::<call>(h, W) -> y: a module exported as a function (torch.onnx's
    export_modules_as_functions), its weight an initializer of the graph the call passes in."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), n) for n in ("W0", "W")]
    nodes = [helper.make_node("Conv", ["x", "W0"], ["h"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node(call, ["h", "W"], ["y"], domain="local", name="blk")]  # fmt: skip
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 8, 8]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", value[:1], value[1:], weights), opset_imports=LOCAL,
                              functions=functions)  # fmt: skip
    model.ir_version = 8
    return model


def _block(name: str, calls: str | None = None) -> onnx.FunctionProto:
    """local::<name>(i, w) = Relu(Conv(i, w)) + i, or a call of local::<calls> in its place."""
    inner = [helper.make_node(calls, ["i", "w"], ["o"], domain="local")] if calls else [
        helper.make_node("Conv", ["i", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "i"], ["o"])]  # fmt: skip
    return helper.make_function("local", name, ["i", "w"], ["o"], inner, LOCAL)


def test_inspect_counts_the_layers_a_local_function_holds(ws: Workspace) -> None:
    """A torch export with export_modules_as_functions keeps each module's Conv inside a local function: inspect
    listed the call as one op 'Blk' with no MACs, so a model whose blocks held 82 % of its MACs read as its stem and
    head alone, and inspect --reference ranked the call's output, not the Conv, Relu and Add in it. Now inspect writes
    the functions out as convert does (graph/convert.written_out): the block's Conv is counted and ranked."""
    model = _block_model([_block("Blk")], "Blk")
    onnx.save(model, ws.root / "fn.onnx")
    result = ws.run("inspect", "-i", ws.root / "fn.onnx")
    assert result.exit_code == 0, result.output
    table = result.output.split("MACs per layer")[1]
    conv_rows = [line for line in table.splitlines() if " Conv " in line]
    assert len(conv_rows) == 2, table  # the stem's and the block's, 36864 MACs each
    assert all("36864" in row for row in conv_rows), table
    assert "Blk" not in result.output


@pytest.mark.parametrize("functions, problem", [
    ([_block("A", calls="A")], "Cycle detected"),
    ([_block(f"F{k}", calls=f"F{k + 1}") for k in range(300)] + [_block("F300")], "call chain depth"),
])  # fmt: skip
def test_inspect_of_a_recursive_or_too_deep_function_is_one_line(ws: Workspace, functions: list, problem: str) -> None:
    """A local function that calls itself, or calls nested 300 deep: convert and quantize refused them (onnx.checker),
    but inspect, which runs no checker, was an internal error (its shape inference raised onnx's ValidationError).
    Now inspect refuses it in one line naming the model, exit 3, as the others do."""
    path = ws.root / "fn.onnx"
    onnx.save(_block_model(functions, functions[0].name), path)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", "-i", path), 3, "fn.onnx", problem)
    assert_refused(ws, before, ws.run("inspect", "-i", path, "--input_list", ws.listing), 3, "fn.onnx", problem)

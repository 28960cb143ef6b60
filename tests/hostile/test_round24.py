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


# --- a domain opset_import lists twice -------------------------------------------------------------------------------


def _reduce_model(versions: tuple[int, ...]) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Conv -> ReduceSum over axis 1 -> y [N, 8, 8], its opset_import listing the default domain
    once a version: the axes an input where the last is 13 or more (opset 13's form), else an attribute."""
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "W")]
    reduce = helper.make_node("ReduceSum", ["c", "axes"], ["y"], keepdims=0)
    if versions[-1] < 13:
        reduce = helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0, axes=[1])
    else:
        weights.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), reduce]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8])], weights)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", v) for v in versions])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("versions", [(11, 17), (17, 11)])
def test_a_domain_listed_twice_is_read_at_its_last_version(ws: Workspace, versions: tuple[int, int]) -> None:
    """opset_import listing '' at 11 then at 17: onnxruntime and onnx.checker read the last, and run the model, but
    qtool's passes took the first: quantize refused it, 'cannot upgrade opset 11 to 13: ... convert_version:
    Assertion ... failed'; listed (17, 11) it was converted at 11 (onnx-ir's reading, the last) with Q/DQ written for
    17, and refused as 'quantized model: onnxruntime cannot load it'. Now the last version is read everywhere."""
    import onnxruntime as ort

    onnx.save(_reduce_model(versions), ws.model)
    result = ws.quantize("-o", ws.out)
    assert result.exit_code == 0, result.output
    written = onnx.load(ws.out)
    assert len([o for o in written.opset_import if o.domain in ("", "ai.onnx")]) == 1  # at 13 for its Q/DQ, or more
    x = np.random.default_rng(2).uniform(-1, 1, size=(1, 3, 8, 8)).astype(np.float32)  # as the samples are
    want = ort.InferenceSession(str(ws.model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(ws.out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape == (1, 8, 8)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


# --- a negative declared dim is dynamic to inspect too ---------------------------------------------------------------


def test_inspect_reads_a_negative_declared_dim_as_dynamic(tmp_path: Path) -> None:
    """An input declared [-5, 4] (dim_value -1 is how some exporters write a dynamic batch): quantize reads it as
    dynamic, batch 1, since round 7, but inspect -l refused the model's own sample, 'x.raw has 16 bytes, input 'x'
    needs -80 (float32[-5, 4])', and inspect --reference so too. Now graph/model.input_specs takes a negative dim as
    dynamic, and inspect reads the samples as convert fixes the input, [1, 4]."""
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [-5, 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", value[:1], value[1:]),
                              opset_imports=[helper.make_opsetid("", 13)])  # fmt: skip
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    np.arange(-2, 2, dtype=np.float32).tofile(tmp_path / "x.raw")
    (tmp_path / "list.txt").write_text("x.raw\n")
    ws = Workspace(tmp_path)
    result = ws.run("inspect", "-i", tmp_path / "m.onnx", "-l", tmp_path / "list.txt")
    assert result.exit_code == 0, result.output
    assert "dim 0 is dynamic" in result.output  # its lint, as before
    assert ws.run("quantize", "-i", tmp_path / "m.onnx", "-l", tmp_path / "list.txt", "-o", tmp_path / "q.onnx").exit_code == 0
    result = ws.run("inspect", "-i", tmp_path / "q.onnx", "-l", tmp_path / "list.txt", "--reference", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "outputs (float vs quantized)" in result.output


# --- float16: a scale it holds to a few bits stays float32 -----------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-6, 1e-7])
def test_a_scale_float16_holds_to_a_few_bits_stays_float32(tmp_path: Path, scale: float) -> None:
    """convert --float_bitwidth 16 of y = (x W) * 1e-7: float16 holds 1e-7 as a subnormal, 1.19e-7, so every output
    was 19 % off (1e-6: 1.4 %), exit 0 and no word, where a scale of 1e-8 (rounding to 0) was kept float32 with a
    warning. Now a Mul's or Div's constant below 2^-17 (under 8 bits in float16) is kept float32 as well, with the
    values it scales: the outputs are float16's MatMul's (0.1 %), and the warning names it."""
    import onnxruntime as ort

    weights = [numpy_helper.from_array(np.random.default_rng(0).normal(0, 1000, (4, 3)).astype(np.float32), "W"),
               numpy_helper.from_array(np.float32([scale]), "s")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Mul", ["m", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], weights)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    result = Workspace(tmp_path).run("convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "h.onnx", "--float_bitwidth", 16)
    assert result.exit_code == 0, result.output
    assert "a Mul's scale it holds to under 8 bits" in result.stderr and "(s: " in result.stderr, result.stderr
    x = np.random.default_rng(1).uniform(-1, 1, (1, 4)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    half = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    fed = x.astype(np.float16) if "float16" in half.get_inputs()[0].type else x
    got = half.run(None, {"x": fed})[0].astype(np.float32)
    assert np.abs(got - want).max() < 0.005 * np.abs(want).max()

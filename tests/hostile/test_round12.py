"""Round 12 (helper-78): convert's flags and odd graphs, calibration data's values, probed on an installed wheel
as a careless user would."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a model left with no input ---------------------------------------------------------------------------------


def _matmul(inputs: list[str], initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    declared = [oh.make_tensor_value_info(n, TensorProto.FLOAT, list(initializers.get(n, np.zeros((1, 4))).shape))
                for n in inputs]  # fmt: skip
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["y"])], "g", declared,
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [nh.from_array(v.astype(np.float32), k) for k, v in initializers.items()])  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


@pytest.mark.parametrize("case, flags, said", [
    ("shadowed", [], "(x: an initializer of its name"),
    ("none", [], "(the graph has none)"),
    ("pinned", ["--input_value", "x", "1,2,3,4"], "(--input_value pins x)"),
])  # fmt: skip
def test_convert_refuses_a_model_left_with_no_input(ws: Workspace, case: str, flags: list[str], said: str) -> None:
    """A graph whose one input has an initializer of its name (a default value), with no input at all, or whose
    every input --input_value pins, was converted into a model of constants with exit 0 (nodes 1 -> 0, 'inputs'
    blank); quantize refused it a command later, blaming the input list's first line."""
    weight = np.eye(4)
    initializers = {"W": weight, "x": np.ones((1, 4))} if case != "pinned" else {"W": weight}
    model = _matmul(["x", "W"] if case == "pinned" else [] if case == "none" else ["x"], initializers)
    onnx.save(model, ws.model)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.out, *flags), 3,
                   f"{ws.model}: the model takes no input data {said}", "its outputs are constants")  # fmt: skip


def test_quantize_says_an_input_value_pinned_every_input(ws: Workspace) -> None:
    """quantize --input_value pinning a model's one input blamed the list's first line for 'each of its graph inputs
    has a default value (an initializer)', which this model has not."""
    values = ",".join(["0.5"] * 192)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--input_value", "x", values), 3,
                   f"{ws.model}: the model takes no input data (--input_value pins x)")  # fmt: skip


# --- bc on a model whose output is float ------------------------------------------------------------------------


def test_bc_on_a_weight_only_model_corrects_its_output_layer(ws: Workspace) -> None:
    """`--act_bitwidth 32 --apply_algorithms bc` was an internal error (StopIteration): bc looked for the graph
    output's layer under '<output>_prequant', the name a Q/DQ pair on the output leaves it, and a float output has
    none (a calibration sample whose values reached 1e30 left the output float the same way)."""
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--apply_algorithms", "bc")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert ws.out.exists()


# --- a calibration sample past 1e30 ---------------------------------------------------------------------------


def test_a_sample_past_1e30_into_a_conv_is_warned_of_naming_its_line(ws: Workspace) -> None:
    """One sample whose values reached 1e30 (the mark of a mask's finfo.min) left the input and everything after
    it float: 'activations quantized 0', exit 0, said at info level only. A tensor a Conv, Gemm or MatMul reads
    is data, not a mask: the first one is warned of, with the line that carried it."""
    lines = ws.listing.read_text().split()
    bad = ws.root / "loud.raw"
    (np.random.default_rng(0).normal(size=192) * 1e31).astype(np.float32).tofile(bad)
    listing = ws.root / "loud.txt"
    listing.write_text("\n".join([lines[0], str(bad), *lines[1:]]) + "\n")
    result = ws.run("quantize", "-i", ws.model, "-l", listing, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "reads as a mask's value" in line]
    assert len(warned) == 1 and warned[0].startswith(f"qtool: WARNING: {listing}:2: 'x' reaches "), result.stderr
    assert "Conv" in warned[0]


# --- sparse tensors ---------------------------------------------------------------------------------------------


def _sparse_model(where: str, dims: list[int]) -> onnx.ModelProto:
    """y = x + k, k a sparse [1, 4] tensor (one value, 1.0 at index 3) or a slice of a longer one."""
    k = oh.make_sparse_tensor(nh.from_array(np.array([1.0], np.float32), "k"), nh.from_array(np.array([3]), "i"), dims)
    nodes = [oh.make_node("Slice", ["k", "s", "e"], ["k4"]), oh.make_node("Add", ["x", "k4"], ["y"])]
    if where == "constant":
        nodes.insert(0, oh.make_node("Constant", [], ["k"], sparse_value=k))
    ends = [nh.from_array(np.array([0]), "s"), nh.from_array(np.array([4]), "e")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])], ends,
                          sparse_initializer=[k] if where == "initializer" else None)  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])


@pytest.mark.parametrize("where", ["constant", "initializer"])
def test_a_sparse_tensor_is_converted_dense_and_a_huge_one_refused(tmp_path: Path, where: str) -> None:
    """A Constant's sparse_value was 'qtool: internal error' (onnx-ir's SerdeError) in convert and quantize, a
    sparse initializer 'onnxruntime cannot load it: Node input 'k' is not a graph input': onnxruntime runs both.
    Densified, up to the gigavalue bound every constant has."""
    import onnxruntime as ort

    ws = Workspace(tmp_path)
    onnx.save(_sparse_model(where, [4]), ws.model)
    assert ws.run("convert", "-i", ws.model, "-o", ws.out).exit_code == 0
    x = np.arange(4, dtype=np.float32)
    got = ort.InferenceSession(str(ws.out)).run(None, {"x": x})[0]
    assert got.tolist() == [0.0, 1.0, 2.0, 4.0]
    onnx.save(_sparse_model(where, [2_000_000_000]), ws.model)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.out), 3,
                   f"{ws.model}: sparse tensor 'k' is 2000000000 values dense")  # fmt: skip


# --- an --input_dim that changes a fixed dim ------------------------------------------------------------------


def test_an_input_dim_changing_a_fixed_channel_count_is_refused_by_convert(ws: Workspace) -> None:
    """`--input_dim x 1,4,8,8` on a model declaring x [N,3,8,8] loads (neither onnx's inference nor onnxruntime's
    checks a Conv's channels), and convert wrote it with exit 0; every sample then failed in quantize. A dim the
    model fixes that --input_dim changes is run once on zeros; a fully convolutional net's H and W still may."""
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.out, "--input_dim", "x", "1,4,8,8"), 3,
                   f"{ws.model}: as converted, onnxruntime cannot run it on zeros: ", "Input channels C",
                   "(--input_dim x sets dim 1 to 4, the model's 3; it declares x [N,3,8,8])")  # fmt: skip (its layout)
    assert ws.run("convert", "-i", ws.model, "-o", ws.out, "--input_dim", "x", "2,3,8,8").exit_code == 0


# --- calibration samples that are all zeros ---------------------------------------------------------------------


def test_an_input_that_is_zero_in_every_sample_is_warned_of(ws: Workspace) -> None:
    """.raw files of zeros (placeholders) calibrated x's grid to [0, 1e-4]: the report read 39 dB, judged on the
    same zeros, exit 0 and nothing said; on real inputs that model is at -0.5 dB (inspect --reference)."""
    for raw in ws.listing.read_text().split():
        Path(raw).write_bytes(np.zeros(192, np.float32).tobytes())
    result = ws.quantize("-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert f"qtool: WARNING: {ws.listing}: input 'x' is 0 in every calibration sample" in result.stderr
    result = make_workspace(ws.root / "real").quantize("-o", ws.root / "real" / "q.onnx")
    assert result.exit_code == 0 and "calibration sample" not in result.stderr, result.stderr


# --- float16 of odd graph outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("outputs", [["y", "y"], ["y", "W"]])
def test_convert_to_float16_keeps_a_repeated_output_and_a_weight_output_valid(tmp_path: Path, outputs: list[str]) -> None:
    """`convert --float_bitwidth 16` on a graph listing its output twice wrote two Casts back defining 'y' (and
    two nodes named 'y_to_fp32'), on one whose weight W is an output too a Cast from a 'W_fp16' nothing made beside
    the float16 W: invalid models onnxruntime refused, written with exit 0."""
    import onnxruntime as ort

    ws = Workspace(tmp_path)
    model = _matmul(["x"], {"W": np.arange(16).reshape(4, 4) / 8})
    model.graph.output.extend(oh.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4] if n == "y" else [4, 4])
                              for n in outputs[1:])  # fmt: skip
    onnx.save(model, ws.model)
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--float_bitwidth", "16")
    assert result.exit_code == 0, result.stderr
    x = np.ones((1, 4), np.float32)
    got = ort.InferenceSession(str(ws.out)).run(None, {"x": x})
    want = ort.InferenceSession(str(ws.model)).run(None, {"x": x})
    assert [g.dtype for g in got] == [np.float32] * 2
    assert all(np.allclose(g, w, atol=1e-2) for g, w in zip(got, want, strict=True))


# --- a stats file given as overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_stats_file_as_overrides_is_one_line_naming_what_it_is(ws: Workspace, command: str) -> None:
    """A --save_stats file passed to -q printed five warnings ('top-level key 'format' is not read', 'tensors'...)
    before its error: the sections an encodings file needs are checked before its other keys are warned of."""
    stats = ws.root / "s.json"
    assert ws.quantize("-o", ws.out, "--save_stats", stats).exit_code == 0
    before = ws.snapshot()
    args = ["-o", ws.root / "again.onnx", "-q", stats]
    result = ws.quantize(*args) if command == "quantize" else ws.run("convert", "-i", ws.model, *args)
    line = assert_refused(ws, before, result, 4, f"{stats}: missing section 'activation_encodings'")
    assert line.endswith("(a qtool stats file: --load_stats reads it)")
    assert "WARNING" not in result.stderr


# --- inspect --reference of a model far from its float one ----------------------------------------------------------


def test_inspect_fail_on_warning_stops_a_model_far_from_its_float_one(ws: Workspace) -> None:
    """A model calibrated on zeros, compared on real samples, read -0.5 dB and top-1 agreement 0 in the drift table
    with 'lint findings: none': `inspect --reference ... --fail-on warning`, a CI gate, passed it with exit 0."""
    real = make_workspace(ws.root / "real")
    for raw in ws.listing.read_text().split():
        Path(raw).write_bytes(np.zeros(192, np.float32).tobytes())
    assert ws.quantize("-o", ws.out).exit_code == 0
    result = ws.run("inspect", ws.out, "--reference", ws.model, "-l", real.listing, "--fail-on", "warning")
    assert result.exit_code == 5, result.stderr
    assert "far-from-float" in result.stdout and "the outputs are far from --reference's (SQNR " in result.stdout
    good = real.quantize("-o", real.out)
    assert good.exit_code == 0
    result = real.run("inspect", real.out, "--reference", real.model, "-l", real.listing, "--fail-on", "warning")
    assert result.exit_code == 0 and "far-from-float" not in result.stdout, result.stdout


def test_inspect_with_a_list_on_a_model_with_a_dynamic_dim_names_the_model(ws: Workspace) -> None:
    """`qtool inspect model.onnx -l list.txt` on the model as exported (batch N, not converted) printed 'qtool: error:
    input 'x' has dynamic dim 0 (N)', naming no file. (Since round 19 a dynamic batch is read as 1, as convert and
    quantize read it; a dynamic dim past the batch is refused, naming the model.)"""
    ws.model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[N,3,H,8] x) => (float[N,3,H,8] y) { y = Relu (x) }""").SerializeToString())
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.model, "-l", ws.listing), 3,
                   f"{ws.model}: input 'x' dim 2 (H) is dynamic")  # fmt: skip
    assert ws.run("inspect", make_workspace(ws.root / "batch").model, "-l", ws.listing).exit_code == 0


def test_a_clipping_ratio_past_a_million_is_printed_short(ws: Workspace) -> None:
    """A held-out sample holding 3e38 was blamed as 'clipped: values reach
    301422039573070501983558437156153196544.0x its grid's end' in the quality warning (and inspect's layer table)."""
    loud = np.random.default_rng(0).normal(size=192).astype(np.float32)
    loud[5] = 3e38
    loud.tofile(ws.root / "loud.raw")
    (ws.root / "eval.txt").write_text(f"{ws.root / 'loud.raw'}\n")
    result = ws.quantize("-o", ws.out, "--eval_list", ws.root / "eval.txt")
    assert result.exit_code == 0, result.stderr
    assert "clipped: values reach 3e+38x its grid's end" in result.stderr, result.stderr


def test_an_input_dim_making_huge_activations_is_not_run_on_zeros(tmp_path: Path, monkeypatch) -> None:
    """convert's run on zeros (for an --input_dim that changes a dim the model fixes) ran a fully convolutional net
    given 1x3x20000x20000 on 4.8 GB of zeros, and onnxruntime's std::bad_alloc refused a conversion the model as
    given allows. Past RUN_CHECK_VALUES in one activation the run is left out (the session still loads it)."""
    import qtool.runtime as rt

    ws = Workspace(tmp_path)
    weight = nh.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    graph = oh.make_graph([oh.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weight])  # fmt: skip
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), ws.model)
    real = rt.session

    class OutOfMemory:  # what a run at these dims meets, without taking the memory
        def __init__(self, session) -> None:
            self.session = session

        def run(self, *args, **kwargs):
            raise RuntimeError("std::bad_alloc")

    monkeypatch.setattr(rt, "session", lambda *a, **k: OutOfMemory(real(*a, **k)))
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--input_dim", "x", "1,3,20000,20000")
    assert result.exit_code == 0, result.stderr


# --- nothing quantized, said for what it is -----------------------------------------------------------------------


def test_a_float32_model_left_all_float_is_not_said_to_have_no_float32_tensor(ws: Workspace) -> None:
    """`--mixed_precision auto --target_sqnr 500` (past any grid) kept all 8 tensors float, and quantize warned 'nothing
    was quantized: the model has no float32 activation or weight qtool can put on a grid (float64 and integer
    tensors ...)': the float64 model's words, for a float32 model."""
    result = ws.quantize("-o", ws.out, "--mixed_precision", "auto", "--target_sqnr", "500")
    assert result.exit_code == 0, result.stderr
    assert "nothing was quantized: --mixed_precision auto left all 8 of its tensors float" in result.stderr
    assert "no float32" not in result.stderr


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_model_whose_outputs_read_no_input_is_refused(ws: Workspace, command: str) -> None:
    """y = Relu(W) beside an input x that nothing reads: convert folded y to a constant and wrote it with exit 0,
    and quantize reported 'y inf dB' for a model of no quantized tensor."""
    graph = oh.make_graph([oh.make_node("Relu", ["W"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                          [nh.from_array(np.ones((4, 4), np.float32), "W")])  # fmt: skip
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), ws.model)
    np.zeros(4, np.float32).tofile(ws.root / "x.raw")
    ws.listing.write_text(f"{ws.root / 'x.raw'}\n")
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out) if command == "convert" else ws.quantize("-o", ws.out)
    assert_refused(ws, before, result, 3, f"{ws.model}: no output depends on its inputs (x): each folds to a constant")


# --- an --eval_list of calibration samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("same_file", [True, False])
def test_an_eval_list_of_calibration_samples_is_said_not_to_be_held_out(ws: Workspace, same_file: bool) -> None:
    """--eval_list naming the calibration list itself, or a copy of it, reported 'evaluated on copy.txt' as if held
    out: the figures, and mixed precision's judgement, were on the samples that set the ranges."""
    held = ws.listing
    if not same_file:
        held = ws.root / "copy.txt"
        held.write_text(ws.listing.read_text())
    result = ws.quantize("-o", ws.out, "--eval_list", held)
    assert result.exit_code == 0, result.stderr
    assert f"{held}: 4 of the 4 samples it is judged on are --input_list's too" in result.stderr
    other = make_workspace(ws.root / "other")
    result = ws.quantize("-o", ws.out, "--eval_list", other.listing)
    assert result.exit_code == 0 and "judged on" not in result.stderr, result.stderr


# --- a --config key spelt as the flag is ------------------------------------------------------------------------------


def test_config_keys_spelt_as_the_flags_are_read(ws: Workspace) -> None:
    """`input_dim:` in a --config YAML (the flag is --input_dim) was 'unknown key 'input_dim' (did you mean
    'input_dims'...)', its parameter's name; so were input_value and the float_bw / float_bias_bw aliases the command
    line takes, where act_bw and weight_bw were read."""
    config = ws.root / "c.yaml"
    config.write_text('input_dim: [[x, "2,3,8,8"]]\n')
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 4, "input 'x' needs 1536")
    config.write_text("float_bw: 16\nfloat_bias_bw: 16\n")
    assert ws.quantize("-o", ws.out, "--config", config).exit_code == 0
    config.write_text('input_dim: [[x, "1,3,8,8"]]\ninput_dims: [[x, "1,3,8,8"]]\n')
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "'input_dim' and 'input_dims' set the same")


# --- model-local functions ----------------------------------------------------------------------------------------------


def test_a_model_local_function_is_written_out_so_its_weights_quantize(ws: Workspace) -> None:
    """Two calls of a local function Lin(a, w) = Relu(MatMul(a, w)) (torch's export_modules_as_functions): convert
    kept the calls, and quantize left the MatMuls float, 'float weights 2 (Lin 2: read outside a slot qtool quantizes
    as a weight)'. Inlined before the passes, W is a MatMul weight like any other."""
    body = [oh.make_node("MatMul", ["a", "w"], ["m"]), oh.make_node("Relu", ["m"], ["b"])]
    lin = oh.make_function("local", "Lin", ["a", "w"], ["b"], body, [oh.make_opsetid("", 13)])
    graph = oh.make_graph([oh.make_node("Lin", ["x", "W"], ["t"], domain="local"),
                           oh.make_node("Lin", ["t", "W"], ["y"], domain="local")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [nh.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "W")])  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13), oh.make_opsetid("local", 1)], functions=[lin])
    onnx.save(model, ws.model)
    np.random.default_rng(1).normal(size=4).astype(np.float32).tofile(ws.root / "x.raw")
    ws.listing.write_text(f"{ws.root / 'x.raw'}\n")
    converted = ws.root / "c.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted).exit_code == 0
    written = onnx.load(str(converted))
    assert [n.op_type for n in written.graph.node] == ["MatMul", "Relu", "MatMul", "Relu"] and not written.functions
    result = ws.run("quantize", "-i", converted, "-l", ws.listing, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert "float weights" not in result.stdout and re.search(r"params quantized +1\n", result.stdout), result.stdout

"""Round 15 (helper h-hostile): the auto calibration default beside the algorithms its trials run, overrides that
leave it nothing to choose, stats replays given a percentile, and lists that feed an input --input_value pins,
probed on an installed wheel as a careless user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import conv_bn_model, write_samples
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- auto's trials speak of the list they were given -------------------------------------------------------------


def test_auto_trials_do_not_warn_of_adaround_samples_the_list_has(ws: Workspace) -> None:
    """--apply_algorithms adaround on a list of 8: auto's trials (adaround on each half) warned 'adaround:
    num_batches 16, but the input_list has 4 samples', of a list of 8 the user never cut in half."""
    write_samples(ws.root, conv_bn_model(), 8)
    result = ws.quantize("-o", ws.out, "--apply_algorithms", "adaround")
    assert result.exit_code == 0, result.stderr
    assert "calibration auto" in result.stdout
    warned = [line for line in result.stderr.splitlines() if "adaround: num_batches" in line]
    assert warned == ["qtool: WARNING: adaround: num_batches 32, but the input_list has 8 samples"], warned


# --- auto with nothing to choose ----------------------------------------------------------------------------------


def test_auto_tries_no_method_where_the_overrides_set_every_activation_range(ws: Workspace) -> None:
    """An AIMET encodings file given as -q with its activation ranges (a port from another tool) beside an
    --input_list: auto ran its six trial quantizations, each with the overrides' ranges, and reported 'min-max
    31.8, sqnr 31.8, mse 31.8 dB' of a choice that changed nothing (a zoo model's trials take a minute)."""
    assert ws.quantize("-o", ws.root / "first" / "q.onnx").exit_code == 0
    doc = json.loads((ws.root / "first" / "q.encodings.json").read_text())
    given = ws.root / "acts.json"
    given.write_text(json.dumps({**doc, "param_encodings": {}}))
    runs = {}
    for name, flags in (("auto", ()), ("min-max", ("--act_quantizer_calibration", "min-max"))):
        out = ws.root / name / "q.onnx"
        result = ws.quantize("-o", out, "-q", given, *flags)
        assert result.exit_code == 0, result.stderr
        runs[name] = result.stdout, out.with_suffix(".encodings.json").read_bytes()
    said = f"calibration auto: min-max (the overrides set all {len(doc['activation_encodings'])} activation ranges"
    assert said in runs["auto"][0] and "none was tried" in runs["auto"][0], runs["auto"][0]
    assert runs["auto"][1] == runs["min-max"][1]


# --- a stats replay given a percentile --------------------------------------------------------------------------


def _saved(ws: Workspace, *flags: str) -> Path:
    saved = ws.root / "saved.json"
    result = ws.quantize("-o", ws.root / "saving" / "q.onnx", "--save_stats", saved, *flags)
    assert result.exit_code == 0, result.stderr
    return saved


def test_a_percentile_replay_takes_the_percentile_given(ws: Workspace) -> None:
    """A file saved at percentile 95, replayed at 99 without naming the method its states record: refused as
    '--percentile_calibration_value is only allowed with percentile calibration', where the replay is percentile's."""
    saved = _saved(ws, "--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "95")
    encodings = []
    for name, flags in (("given", ()), ("named", ("--act_quantizer_calibration", "percentile"))):
        out = ws.root / name / "q.onnx"
        result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", out,
                        "--percentile_calibration_value", "99", *flags)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        encodings.append(out.with_suffix(".encodings.json").read_bytes())
    assert encodings[0] == encodings[1]


def test_a_percentile_given_to_replay_min_max_states_is_refused(ws: Workspace) -> None:
    saved = _saved(ws, "--act_quantizer_calibration", "min-max")
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out, "--percentile_calibration_value", "99")
    assert_refused(ws, before, result, 4, f"{saved}: tensor ", "holds min/max only; percentile calibration needs a histogram")


# --- a list that feeds an input --input_value pins ---------------------------------------------------------------


def _scaled_model(ws: Workspace) -> None:
    """y = MatMul(x, W) * s: s is a setting (a gain, a threshold) a user pins with --input_value."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    s = oh.make_tensor_value_info("s", TensorProto.FLOAT, [1])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Mul", ["m", "s"], ["y"])]
    graph = oh.make_graph(nodes, "g", [x, s], [y], [w])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ws.model)


@pytest.mark.parametrize("named", [True, False])
def test_a_list_feeding_a_pinned_input_says_it_is_pinned(ws: Workspace, named: bool) -> None:
    """The list written for the model as given (x:=... s:=...), quantized with --input_value s 2: 'unknown input
    name 's'' of an input the model has, and positional lines '2 file(s) for 1 model input(s) (x) (give one file
    per input ...)'."""
    _scaled_model(ws)
    rng, lines = np.random.default_rng(1), []
    for k in range(4):
        rng.standard_normal((1, 8)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
        np.array([2.0], np.float32).tofile(ws.root / f"s{k}.raw")
        lines.append(f"x:=x{k}.raw s:=s{k}.raw" if named else f"x{k}.raw s{k}.raw")
    ws.listing.write_text("\n".join(lines) + "\n")
    before = ws.snapshot()
    said = ("feeds input 's', which --input_value pins: a pinned input is folded into the model as a constant (drop "
            "s:=... from the list)" if named else "2 file(s) for 1 model input(s) (x) (--input_value pins s: drop its "
            "file from each line)")  # fmt: skip
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--input_value", "s", "2"), 4, f"{ws.listing}:1: {said}")


# --- raw files of the input's own type, or float64 -----------------------------------------------------------------


def _uint8_model(ws: Workspace) -> None:
    """x uint8 [1, 8] -> Cast -> /255 -> MatMul: an image model that takes its pixels as bytes."""
    x = oh.make_tensor_value_info("x", TensorProto.UINT8, [1, 8])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    scale = onh.from_array(np.array(1 / 255, np.float32), "scale")
    nodes = [oh.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT), oh.make_node("Mul", ["c", "scale"], ["n"]),
             oh.make_node("MatMul", ["n", "w"], ["y"])]  # fmt: skip
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x], [y], [w, scale]), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip


@pytest.mark.parametrize("written, native, said", [
    ("uint8", False, "x0.raw has 8 bytes, input 'x' needs 32 (float32[1, 8]) (its size is 8 uint8 values, the input's "
                     "own type: add --use_native_input_files)"),
    ("float32", True, "x0.raw has 32 bytes, input 'x' needs 8 (uint8[1, 8]) (its size is 8 float32 values: drop "
                      "--use_native_input_files to read .raw files as float32)"),
])  # fmt: skip
def test_a_raw_file_of_the_other_type_names_the_flag(ws: Workspace, written: str, native: bool, said: str) -> None:
    """uint8 pixels for a uint8 input, without --use_native_input_files: 'if its 2 float32 values are what the
    model takes, give convert or quantize their dims: --input_dim x D0,D1,...', a shape change for a type slip."""
    _uint8_model(ws)
    for k in range(4):
        np.random.default_rng(k).integers(0, 255, (1, 8)).astype(written).tofile(ws.root / f"x{k}.raw")
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(4)))
    before = ws.snapshot()
    flags = ("--use_native_input_files",) if native else ()
    assert_refused(ws, before, ws.quantize("-o", ws.out, *flags), 4, f"{ws.listing}:1: ", said)


def test_a_float64_raw_file_is_said_to_be_float64(ws: Workspace) -> None:
    """np.save's default float64, dumped with .tofile: 'if its 384 float32 values are what the model takes, give
    convert or quantize their dims: --input_dim x D0,D1,...'."""
    for k in range(4):
        np.random.default_rng(k).standard_normal((1, 3, 8, 8)).tofile(ws.root / f"x{k}.raw")
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(4)))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "x0.raw has 1536 bytes, input 'x' needs 768 (float32[1, "
                   "3, 8, 8]) (its size is 192 float64 values: a .raw file is float32 (write it with .astype(np.float32)), "
                   "or an .npy file carries its own type)")  # fmt: skip


# --- auto named for a list too short to hold half out ---------------------------------------------------------------


def test_auto_named_for_three_samples_keeps_min_max(tmp_path: Path) -> None:
    """--act_quantizer_calibration auto on 3 samples (the default's min-max, named by hand): its one fold scored each
    method on the samples that calibrated it, reported as 'output SQNR on held-out halves of the list', and chose
    by that fit (the digits CNN: mse 33.6 against min-max 32.0 on its own 3 samples)."""
    ws = make_workspace(tmp_path, samples=3)
    runs = {}
    for method in ("auto", "min-max"):
        out = ws.root / method / "q.onnx"
        result = ws.quantize("-o", out, "--act_quantizer_calibration", method)
        assert result.exit_code == 0, result.stderr
        runs[method] = result.stdout, out.with_suffix(".encodings.json").read_bytes()
    assert "calibration auto: min-max (fewer than 4 samples: none to hold out; none was tried)" in runs["auto"][0]
    assert "held-out" not in runs["auto"][0]
    assert runs["auto"][1] == runs["min-max"][1]


# --- auto's reused ranges and --save_stats ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [("--evaluate_samples", "0"), ("--eval_list", "EVAL")])
def test_auto_keeping_min_max_still_saves_the_stats(ws: Workspace, flags: tuple[str, ...]) -> None:
    """--act_quantizer_calibration auto --save_stats s.json, judged on another list (or none): auto kept min-max and
    took the run's ranges from its trials' passes, skipping the calibration that writes the stats file: exit 0,
    'calibration seconds 0', and no s.json."""
    flags = tuple(str(ws.listing) if f == "EVAL" else f for f in flags)
    saved = ws.root / "s.json"
    result = ws.quantize("-o", ws.out, "--save_stats", saved, "--act_quantizer_calibration", "auto", *flags)
    assert result.exit_code == 0, result.stderr
    assert "calibration auto: min-max" in result.stdout
    assert json.loads(saved.read_text())["samples"] == 4


# --- a graph input that is a graph output too ------------------------------------------------------------------------


def test_qoperator_export_of_a_model_returning_its_input(ws: Workspace) -> None:
    """y = MatMul(x, W) beside x itself as an output ('return x, out'): the qoperator export dequantized x under its
    own name for the MatMul and again for the output, and onnxruntime refused what it wrote: 'Duplicate definition of
    name (x)'. The output x is the input as given, as in the QDQ model."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y, x], [w])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ws.model)
    write_samples(ws.root, onnx.load(ws.model), 6)
    assert ws.quantize("-o", ws.out).exit_code == 0
    result = ws.run("export", "-i", ws.out, "-o", ws.root / "ex", "--format", "qoperator")
    assert result.exit_code == 0, result.stderr
    feed = {"x": np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)}
    got = ort.InferenceSession(str(ws.root / "ex" / "q.qoperator.onnx")).run(None, feed)
    want = ort.InferenceSession(str(ws.out)).run(None, feed)
    assert np.array_equal(got[1], feed["x"])
    np.testing.assert_allclose(got[0], want[0], atol=0.1)


def test_a_replay_says_the_method_its_files_recorded(ws: Workspace) -> None:
    """Replayed without naming a method, a stats file is read by the one it records (7b44a59), and the report said
    nothing of it: a shard saved at percentile 95 and one saved by min-max gave reports alike but for the figures."""
    saved = _saved(ws, "--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "95")
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["calibration"] == "percentile 95 (the method the --load_stats files recorded)"


def test_auto_tries_no_method_where_op_types_name_no_op_of_the_model(ws: Workspace) -> None:
    """--op_types_to_quantize LSTM on a CNN: auto's six trials quantized nothing and reported 'min-max inf, sqnr inf,
    mse inf dB' above the warning that nothing was quantized."""
    result = ws.quantize("-o", ws.out, "--op_types_to_quantize", "LSTM")
    assert result.exit_code == 0, result.stderr
    assert "calibration auto: min-max (--op_types_to_quantize names no op of the model; none was tried)" in result.stdout
    assert "min-max inf" not in result.stdout


# --- graph inputs and outputs that declare no shape ----------------------------------------------------------------


def _unshaped(ws: Workspace, output: bool, both: bool = False) -> None:
    """Conv -> AveragePool, its output (or input, or both) declared with an element type and no shape: any rank,
    as onnxscript's to_model_proto and Microsoft's Llama-2-Onnx write them; onnxruntime runs it."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, None if both or not output else [1, 3, 8, 8])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, None if both or output else [1, 4, 4, 4])
    w = onh.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             oh.make_node("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]  # fmt: skip
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip


def test_an_output_that_declares_no_shape_takes_the_inferred_one(ws: Workspace) -> None:
    """onnx.checker refused it, naming nothing: 'model.onnx: onnx.checker: Field 'shape' of 'type' is required but
    missing', exit 3, for convert and quantize alike."""
    _unshaped(ws, output=True)
    result = ws.quantize("-o", ws.out)
    assert result.exit_code == 0, result.stderr
    result = ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.stderr
    dims = onnx.load(ws.root / "c.onnx").graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 4, 4, 4]


def test_an_input_that_declares_no_shape_is_named(ws: Workspace) -> None:
    _unshaped(ws, output=False)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx"), 3,
                   f"{ws.model}: input 'x' declares no shape (any rank), which onnx.checker refuses", "--input_dim x D0,D1,...")  # fmt: skip


# --- a list that names its files twice ------------------------------------------------------------------------------


def test_auto_counts_a_repeated_list_by_its_distinct_samples(ws: Workspace) -> None:
    """'cat a.txt a.txt' (3 files, 6 lines): auto ran, calibrating each method on lines 1-3 and scoring it on lines
    4-6, the same files, and reported 'output SQNR on held-out halves of the list'."""
    lines = ws.listing.read_text().splitlines()[:3]
    ws.listing.write_text("\n".join(lines * 2) + "\n")
    result = ws.quantize("-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["calibration"] == "min-max (the default, not auto: fewer than 4 distinct samples: none to hold out)"


def test_trials_hold_out_the_files_a_repeated_list_names(ws: Workspace) -> None:
    """4 files named twice (8 lines): each trial fold's halves held the same 4 files, scored where they calibrated."""
    from qtool.api.quantize import held_out_folds
    from qtool.io.input_list import read_input_list

    lines = ws.listing.read_text().splitlines()
    ws.listing.write_text("\n".join(lines * 2) + "\n")
    listing = read_input_list(ws.listing)
    for fit, check in held_out_folds(listing):
        assert not {listing.samples[k].paths for k in fit} & {listing.samples[k].paths for k in check}


def test_a_percentile_for_the_weights_leaves_a_replay_its_recorded_method(ws: Workspace) -> None:
    """--percentile_calibration_value beside --param_quantizer_calibration percentile is the weights': a min-max
    file replayed so still reads its activations by min-max."""
    saved = _saved(ws, "--act_quantizer_calibration", "min-max")
    flags = ("--param_quantizer_calibration", "percentile", "--percentile_calibration_value", "99.9")
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out, "--json", *flags)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["calibration"] == "min-max (the method the --load_stats files recorded)"


@pytest.mark.parametrize("both", [False, True])
@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_an_input_that_declares_no_shape_takes_input_dim(ws: Workspace, command: str, both: bool) -> None:
    """--input_dim x 1,3,8,8 for an input of any rank: the checker refused the model before the flag was read (and
    an output of no shape as well, which inference shapes only once the input has one)."""
    _unshaped(ws, output=False, both=both)
    flags = ("--input_dim", "x", "1,3,8,8")
    result = ws.quantize("-o", ws.out, *flags) if command == "quantize" else ws.run("convert", "-i", ws.model, "-o",
                                                                                  ws.root / "c.onnx", *flags)  # fmt: skip
    assert result.exit_code == 0, result.stderr


# --- an output under another ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("html", ["d/q.onnx/r.html", "d/q.onnx/deeper/r.html"])
def test_an_output_under_another_is_named(ws: Workspace, html: str) -> None:
    """-o d/q.onnx --html d/q.onnx/r.html: each output checked alone passed (neither exists), and the write failed
    as 'd/q.onnx: cannot write: Is a directory', naming neither flag."""
    before = ws.snapshot()
    result = ws.quantize("-o", ws.root / "d" / "q.onnx", "--html", ws.root / html)
    assert_refused(ws, before, result, 2, f"--html {ws.root / html} lies under -o {ws.root / 'd' / 'q.onnx'}, a file "
                   "this command writes")  # fmt: skip


def test_a_replay_says_it_ignores_the_batch_size(ws: Workspace) -> None:
    """--load_stats s.json --calib_batch_size 8: the replay runs no calibration, and exit 0 said nothing of the 8."""
    saved = _saved(ws, "--act_quantizer_calibration", "min-max")
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out, "--calib_batch_size", "8")
    assert result.exit_code == 0, result.stderr
    assert "qtool: WARNING: --calib_batch_size 8 batches calibration, which --load_stats replaces: ignored" in \
        result.stderr.splitlines(), result.stderr  # fmt: skip
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out)
    assert "calib_batch_size" not in result.stderr


def test_a_replay_of_a_file_recording_no_percentile_names_the_one_read(ws: Workspace) -> None:
    """A stats file that records 'calibration': 'percentile' and no 'percentile' (hand-written, or cut) was read at
    --percentile_calibration_value's 99.99, and the report line said 'percentile (the method ...)', no value."""
    saved = _saved(ws, "--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "95")
    doc = json.loads(saved.read_text())
    del doc["percentile"]
    saved.write_text(json.dumps(doc))
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["calibration"] == "percentile 99.99 (the method the --load_stats files recorded)"


@pytest.mark.parametrize("named", [True, False])
def test_inspect_of_a_model_quantized_with_a_pinned_input_says_it_is_pinned(ws: Workspace, named: bool) -> None:
    """The list written for the model as given (x:=... s:=...), inspected on the model quantized with --input_value
    s 2: quantize said 's' was pinned (155e968), and inspect 'unknown input name 's'' of an input the user wrote."""
    _scaled_model(ws)
    rng = np.random.default_rng(1)
    for k in range(4):
        rng.standard_normal((1, 8)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
        np.array([2.0], np.float32).tofile(ws.root / f"s{k}.raw")
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(4)))
    assert ws.quantize("-o", ws.out, "--input_value", "s", "2").exit_code == 0
    both = ws.root / "both.txt"
    both.write_text("".join(f"x:=x{k}.raw s:=s{k}.raw\n" if named else f"x{k}.raw s{k}.raw\n" for k in range(4)))
    before = ws.snapshot()
    said = ("feeds input 's', which --input_value pins: a pinned input is folded into the model as a constant (drop "
            "s:=... from the list)" if named else "2 file(s) for 1 model input(s) (x) (--input_value pins s: drop its "
            "file from each line)")  # fmt: skip
    assert_refused(ws, before, ws.run("inspect", ws.out, "-l", both), 4, f"{both}:1: {said}")


# --- outputs with nothing to measure ---------------------------------------------------------------------------------


def _always_zero_model(ws: Workspace) -> None:
    """z = Relu(-|x @ W|): zero for every input, float and quantized alike."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    z = oh.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])
    w = onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Abs", ["m"], ["a"]),
             oh.make_node("Neg", ["a"], ["n"]), oh.make_node("Relu", ["n"], ["z"])]  # fmt: skip
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x], [z], [w]), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip
    write_samples(ws.root, onnx.load(ws.model), 6)


def test_auto_on_an_always_zero_output_says_there_was_no_error_to_choose_by(ws: Workspace) -> None:
    """auto's line read 'output SQNR on held-out halves of the list: min-max inf, sqnr inf, mse inf dB; median
    sample against min-max: sqnr +0.0, mse +0.0 dB', scores of an output with nothing to measure."""
    _always_zero_model(ws)
    result = ws.quantize("-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["algorithms"] == ("calibration auto: min-max (every method's outputs on the "
                                                       "held-out halves equal the float model's: no error to choose by); "
                                                       "bc auto: not tried (the held-out halves' outputs equal the float "
                                                       "model's: no error to correct; --apply_algorithms bc runs it)")  # fmt: skip


def test_an_output_empty_in_every_sample_shows_nothing_measured(ws: Workspace) -> None:
    """y = Relu(x @ W) beside e = (x @ W)[:, 0:0], empty for every input (a detector's boxes where nothing is found):
    its row read 'e  inf  1  0', an exact match of nothing compared."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]), oh.make_tensor_value_info("e", TensorProto.FLOAT, [1, 0])]
    consts = [onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w"),
              *(onh.from_array(np.array([v], np.int64), n) for n, v in (("st", 0), ("en", 0), ("ax", 1)))]  # fmt: skip
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Relu", ["m"], ["y"]),
             oh.make_node("Slice", ["m", "st", "en", "ax"], ["e"])]  # fmt: skip
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x], outputs, consts), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip
    write_samples(ws.root, onnx.load(ws.model), 6)
    result = ws.quantize("-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["output"]: row for row in json.loads(result.stdout)["outputs (float vs quantized)"]}
    assert (rows["e"]["sqnr_db"], rows["e"]["cosine"], rows["e"]["max_abs_error"]) == (None, None, None), rows["e"]
    assert rows["y"]["sqnr_db"] > 20
    text = ws.quantize("-o", ws.out).stdout.splitlines()
    assert next(line for line in text if line.startswith("e ")).split() == ["e", "-", "-", "-"], text

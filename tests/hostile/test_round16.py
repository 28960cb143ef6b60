"""Round 16 (helper h-hostile): overrides and 16-bit names on tensors qtool keeps float, and what a careless user
gives first, probed on an installed wheel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _gru_model(ws: Workspace, gates: int = 3) -> None:
    """x [5, 1, 4] -> GRU (W, R) -> Reshape -> MatMul: x, which only the GRU reads, and W, R stay float. `gates` 4
    (an LSTM's) gives weights the checker passes and onnxruntime refuses."""
    rng = np.random.default_rng(0)
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 4])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])
    inits = [onh.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("W", (1, 3 * gates, 4)), ("R", (1, 3 * gates, 3)), ("M", (3, 3)))]  # fmt: skip
    inits.append(onh.from_array(np.array([5, 3], np.int64), "shape"))
    nodes = [oh.make_node("GRU", ["x", "W", "R"], ["h"], hidden_size=3), oh.make_node("Reshape", ["h", "shape"], ["r"]),
             oh.make_node("MatMul", ["r", "M"], ["y"])]  # fmt: skip
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x], [y], inits), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip
    for k in range(6):
        rng.standard_normal((5, 1, 4)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(6)))


# --- names qtool keeps float ----------------------------------------------------------------------------------------


def test_a_weight_override_on_a_recurrent_op_says_it_is_not_applied(ws: Workspace) -> None:
    """An AIMET export of a GRU model carries its W's grid; qtool keeps a GRU's weights float and dropped the
    override without a word (7d6e98c says so of activations only): the report's 'float weights 2' was all."""
    _gru_model(ws)
    overrides = ws.root / "o.json"
    grid = [{"bitwidth": 8, "dtype": "int", "min": -1.0, "max": 1.0}]
    overrides.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"W": grid, "M": grid}}))
    result = ws.quantize("-o", ws.out, "-q", overrides)
    assert result.exit_code == 0, result.stderr
    said = "override for 'W' is not applied: 'W' stays float (GRU reads it outside a slot qtool quantizes as a weight)"
    assert said in result.stderr
    assert "'M' is not applied" not in result.stderr
    result = ws.quantize("-o", ws.root / "other" / "q.onnx", "-q", overrides, "--op_types_to_quantize", "MatMul")
    assert result.exit_code == 0 and "not applied" not in result.stderr, result.stderr  # the user's choice


@pytest.mark.parametrize("ignored", [False, True])
def test_a_16_bit_name_on_a_tensor_kept_float_says_it_is_not_applied(ws: Workspace, ignored: bool) -> None:
    """--act_16bit_tensors x, an input only a GRU reads: exit 0 and nothing said, where the same name in an
    overrides file is warned of."""
    _gru_model(ws)
    flags = ("--ignore_quantization_overrides",) if ignored else ()
    result = ws.quantize("-o", ws.out, "--act_16bit_tensors", "x", "--act_16bit_tensors", "r", *flags)
    assert result.exit_code == 0, result.stderr
    assert ("--act_16bit_tensors x is not applied: 'x' stays float (LSTM, GRU or RNN ops alone read it, and they run "
            "in float)") in result.stderr  # fmt: skip
    assert "--act_16bit_tensors r" not in result.stderr
    acts = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert "x" not in acts and acts["r"][0]["bitwidth"] == 16


# --- a 1.0.0 override written with ONNX's zero point --------------------------------------------------------------


def _matmul_model(ws: Workspace) -> np.ndarray:
    """x [1, 64] @ W [64, 16]: W spans about [-3.9, 3.9]."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 16)).astype(np.float32)
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y], [onh.from_array(weight, "W")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ws.model)
    for k in range(6):
        rng.standard_normal((1, 64)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(6)))
    return weight


@pytest.mark.parametrize("offset", [0, -128])
def test_a_symmetric_weight_override_with_offset_0_says_it_loses_the_negative_half(ws: Workspace, offset: int) -> None:
    """A 1.0.0 'is_sym': true weight written with ONNX's int8 zero point 0 as its offset: read as AIMET's unsigned
    grid [0, 255 scale], every negative weight quantized to 0, exit 0 (output SQNR 1.3 dB, and a quality warning
    blaming the grid's being per tensor); -128 is AIMET's offset for it."""
    weight = _matmul_model(ws)
    scale = float(np.abs(weight).max() / 127)
    entry = {"name": "W", "dtype": "INT", "enc_type": "PER_TENSOR", "bw": 8, "is_sym": True, "scale": [scale],
             "offset": [offset]}  # fmt: skip
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}))
    result = ws.quantize("-o", ws.out, "-q", overrides, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    said = ("override for 'W' has a grid from 0 ([0, 7.82955]: offset 0, AIMET's unsigned grid) but the tensor's values "
            "reach -3.89942: every negative value quantizes to 0 (a signed symmetric grid's AIMET offset is -128, where "
            "ONNX's zero point is 0)")  # fmt: skip
    assert (said in result.stderr) == (offset == 0), result.stderr


# --- export of a model that is not QDQ ----------------------------------------------------------------------------


def test_export_of_a_qoperator_model_says_what_it_is(ws: Workspace) -> None:
    """onnxruntime's quantize_static in QOperator form (QLinearConv, QGemm...) given to export: 'has no
    QuantizeLinear/DequantizeLinear encodings to export' of a model with a QuantizeLinear and a DequantizeLinear,
    saying neither what it is nor what export takes (a float model was told the same)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": np.random.default_rng(k).standard_normal((1, 3, 8, 8)).astype(np.float32)}
                               for k in range(2)])  # fmt: skip

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    qop = ws.root / "qop.onnx"
    quantize_static(str(ws.model), str(qop), Reader(), quant_format=QuantFormat.QOperator)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("export", "-i", qop, "-o", ws.root / "ex"), 2, "has no QuantizeLinear",
                   "(it is in onnxruntime's integer form (QGemm, QLinearConv): export reads QDQ models; quantize its float "
                   "original with qtool quantize (or quantize_static with QuantFormat.QDQ))")  # fmt: skip
    assert_refused(ws, before, ws.run("export", "-i", ws.model, "-o", ws.root / "ex"), 2,
                   "(export reads the QDQ model qtool quantize writes: quantize this model first)")  # fmt: skip


# --- input_list entries cut at a space in a file's name ------------------------------------------------------------


@pytest.mark.parametrize("named", [False, True])
def test_a_list_naming_a_file_with_a_space_says_so(ws: Workspace, named: bool) -> None:
    """'my data/x0.raw' in a list: the list separates entries at spaces, and the line was refused as '2 file(s) for
    1 model input(s) (x) (give one file per input, ...)', or 'mixes <name>:=<path> entries with bare paths', of a
    line that names one file."""
    (ws.root / "raw").rename(ws.root / "my data")
    ws.listing.write_text("".join(f"{'x:=' if named else ''}my data/{k:03d}_x.raw\n" for k in range(4)))
    before = ws.snapshot()
    said = "mixes <name>:=<path> entries with bare paths" if named else "2 file(s) for 1 model input(s) (x)"
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, f"{ws.listing}:1: {said}",
                   f"'{ws.root}/my data/000_x.raw' is one file whose name holds a space, and the list separates entries "
                   "at spaces, as qairt's does: rename it, or link it under a name without one")  # fmt: skip


# --- weight-only runs with an activation override by precision alone --------------------------------------------------


@pytest.mark.parametrize("method", [None, "sqnr"])
def test_weight_only_calibrates_an_activation_override_given_by_precision(ws: Workspace, method: str | None) -> None:
    """--act_bitwidth 32 with an --input_list and '-q' naming an activation by bitwidth alone (no min/max): refused
    as 'no encoding and no calibration data for tensor 'y' (give --input_list, or an override with bitwidth, min and
    max for it)', an --input_list it had been given."""
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"y": [{"bitwidth": 8, "dtype": "int"}]},
                                     "param_encodings": {}}))  # fmt: skip
    flags = ("--act_quantizer_calibration", method) if method else ()
    result = ws.quantize("-o", ws.out, "-q", overrides, "--act_bitwidth", "32", *flags)
    assert result.exit_code == 0, result.stderr
    acts = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert list(acts) == ["y"] and acts["y"][0]["bitwidth"] == 8 and acts["y"][0]["max"] > 0


# --- raw files of one batch item ------------------------------------------------------------------------------------


def test_a_raw_file_of_one_batch_item_names_the_batch(ws: Workspace) -> None:
    """An input of a fixed batch of 2 (an export's example dims, or --input_dim x 2,...) fed one sample a file: 'if
    its 192 float32 values are what the model takes, give convert or quantize their dims: --input_dim x D0,D1,...'
    told a user who had given --input_dim to give it."""
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--input_dim", "x", "2,3,8,8")
    assert_refused(ws, before, result, 4, "has 768 bytes, input 'x' needs 1536 (float32[2, 3, 8, 8]) (its size is one "
                   "item of the batch of 2 the input takes: a .raw file holds the whole batch, its items one after "
                   "another (as qairt's do), or give convert or quantize --input_dim x 1,3,8,8)")  # fmt: skip


# --- a config's paths written against its own folder ------------------------------------------------------------------


def test_a_config_path_written_against_the_yamls_folder_says_where_paths_resolve(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'input_list: ../input_list.txt' in configs/q.yaml, run from elsewhere: '../input_list.txt: input_list not
    found', naming neither the config nor that its paths resolve against the current folder (README); a command
    line -l replaces it, and runs."""
    (ws.root / "configs").mkdir()
    (ws.root / "elsewhere" / "deeper").mkdir(parents=True)
    config = ws.root / "configs" / "q.yaml"
    config.write_text("act_bitwidth: 8\ninput_list: ../input_list.txt\n")
    monkeypatch.chdir(ws.root / "elsewhere" / "deeper")
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "-c", config)
    assert_refused(ws, before, result, 2, f"{config}:2: input_list ../input_list.txt: not found in the current folder, "
                   "against which a config's paths resolve, as on the command line (not the YAML's folder) (give "
                   f"{ws.root}/configs/../input_list.txt, the file beside the YAML)")  # fmt: skip
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "-c", config, "-l", ws.listing)
    assert result.exit_code == 0, result.stderr


# --- a model onnxruntime cannot run, under the default calibration and inspect -----------------------------------------


@pytest.mark.parametrize("command", ["quantize", "inspect"])
def test_a_model_onnxruntime_cannot_run_is_blamed_not_the_first_line(ws: Workspace, command: str) -> None:
    """A GRU whose W has an LSTM's 12 rows (the checker passes it): under the default auto calibration, and in
    'inspect -l', the run failed as 'input_list.txt:1: inference failed: ... Input W must have shape {1,9,4}', the
    list's first line blamed where min-max calibration says 'model.onnx: onnxruntime cannot run it (on the first
    sample, ...)'."""
    _gru_model(ws, gates=4)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out) if command == "quantize" else ws.run("inspect", ws.model, "-l", ws.listing)
    assert_refused(ws, before, result, 3, f"{ws.model}: onnxruntime cannot run it (on the first sample, {ws.listing}:1)",
                   "Input W must have shape {1,9,4}")  # fmt: skip


# --- an override on a Conv output a BatchNorm fold takes away ---------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_an_override_on_a_conv_output_before_its_folded_batchnorm_says_so(ws: Workspace, command: str) -> None:
    """An override naming the Conv's output 'c' that a BatchNormalization reads (AIMET folds BatchNorms before it
    quantizes, and names the folded Conv's output): 'names tensor 'c', which the graph does not have (did you mean
    ...)', of a tensor the model given has; convert's fold took it away, and the folded Conv writes 'b'."""
    overrides = ws.root / "o.json"
    grid = [{"bitwidth": 8, "dtype": "int", "min": -4.0, "max": 4.0}]
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"c": grid}, "param_encodings": {}}))
    before = ws.snapshot()
    if command == "convert":
        result = ws.run("convert", "-i", ws.model, "-o", ws.root / "out" / "c.onnx", "-q", overrides)
    else:
        result = ws.quantize("-o", ws.out, "-q", overrides)
    assert_refused(ws, before, result, 4, f"{overrides}: names tensor 'c', which convert folds away: the "
                   "BatchNormalization reading it folds into the layer writing it, which writes 'b' now (rename the "
                   "entry 'b' if its range was measured after the fold, as AIMET's are; a range from before the fold "
                   "has no tensor left)")  # fmt: skip


# --- a folder of samples, or one sample, given as the list --------------------------------------------------------------


@pytest.mark.parametrize("given", ["folder", "sample"])
def test_a_folder_or_a_sample_given_as_the_input_list_says_what_the_list_is(ws: Workspace, given: str) -> None:
    """'-l raw/' (the folder of samples) or '-l raw/000_x.raw': 'input_list is a folder, expected a file' and
    'input_list is not UTF-8 text (byte 2)', saying nothing of what --input_list takes."""
    path = ws.root / "raw" if given == "folder" else ws.root / "raw" / "000_x.raw"
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-l", path, "-o", ws.out)
    said = (f"(input_list is a text file naming one sample's files a line: for the .raw files in that folder, ls "
            f"{path}/*.raw > list.txt)" if given == "folder" else "(input_list is a text file naming one sample's "
            "files a line: write this file's path into one)")  # fmt: skip
    assert_refused(ws, before, result, 4, f"{path}: input_list is ", said)


# --- a repeatable flag given several values at once ------------------------------------------------------------------


@pytest.mark.parametrize("flag, values", [("--apply_algorithms", ("cle", "bc")), ("--algorithms", ("cle", "bc")),
                                          ("--op_types_to_quantize", ("Conv", "Gemm"))])  # fmt: skip
def test_a_repeatable_flag_given_two_values_says_to_repeat_it(ws: Workspace, flag: str, values: tuple[str, str]) -> None:
    """'--apply_algorithms cle bc' (argparse's nargs='+' habit: qnn-onnx-converter's --algorithms, onnxruntime's op
    lists): 'Got unexpected extra argument (bc)', naming neither the flag nor that it repeats."""
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, flag, *values)
    assert_refused(ws, before, result, 2, f"Got unexpected extra argument ({values[1]}): {flag} takes one value a time; "
                   f"repeat it for each: {flag} {values[0]} {flag} {values[1]}")  # fmt: skip
    assert "takes one value" not in assert_refused(ws, before, ws.quantize("-o", ws.out, "x.raw"), 2, "(x.raw)")


# --- an .npz archive in a list -----------------------------------------------------------------------------------------


def test_an_npz_archive_in_a_list_is_named_as_one(ws: Workspace) -> None:
    """np.savez's archive named in a list: read as raw bytes and refused as 'has 1000 bytes, input 'x' needs 768
    (...) (its size is ... float64 values ...)', or, at the right size, read as float32 values."""
    np.savez(ws.root / "x.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    ws.listing.write_text("x.npz\n" * 4)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, f"{ws.listing}:1: {ws.root}/x.npz is an .npz archive (a zip "
                   "of arrays); qtool reads .raw and .npy files (write each input's array with np.save: an .npy file "
                   "for each entry of a line)")  # fmt: skip


# --- output directives naming the other kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["#", "%"])
def test_a_directive_naming_the_other_kind_says_which_line_takes_it(ws: Workspace, kind: str) -> None:
    """'#r' (a tensor on a layer line) or '%' and a node's name: 'names layer (node) 'r', which the model does not
    have', of a tensor it has, with no word of the other line."""
    convert = ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx")
    assert convert.exit_code == 0, convert.stderr
    relu = next(n for n in onnx.load(ws.root / "c.onnx").graph.node if n.output[0] == "r")
    ws.listing.write_text(f"{kind}{'r' if kind == '#' else relu.name}\n" + ws.listing.read_text())
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.root / "c.onnx", "-l", ws.listing, "-o", ws.out)
    said = (f"('r' is a tensor, which a '%' line names; '#' names the node writing it: '{relu.name}')" if kind == "#"
            else f"('{relu.name}' is a node, which a '#' line names; '%' names its output: 'r')")  # fmt: skip
    assert_refused(ws, before, result, 4, f"{ws.listing}:1: output directive '{kind}' names ", said)


# --- qairt's DLC names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_an_output_named_dlc_is_refused(ws: Workspace, command: str) -> None:
    """'--output_dlc q.dlc' (qairt's flag, which qtool takes as an alias of -o): an ONNX model written under a DLC's
    name, exit 0."""
    before = ws.snapshot()
    out = ws.root / "out" / "q.dlc"
    result = ws.run("convert", "-i", ws.model, "-o", out) if command == "convert" else ws.quantize("--output_dlc", out)
    assert_refused(ws, before, result, 2, f"-o {out}: qtool writes ONNX models, not qairt's DLC (-o {out.with_suffix('.onnx')})")


def test_a_dlc_given_as_the_model_says_what_to_give(ws: Workspace) -> None:
    (ws.root / "m.dlc").write_bytes(b"PK\x03\x04 not a protobuf" * 8)
    before = ws.snapshot()
    result = ws.run("quantize", "--input_dlc", ws.root / "m.dlc", "-l", ws.listing, "-o", ws.out)
    assert_refused(ws, before, result, 3, "not an ONNX model", "(a .dlc is qairt's compiled model: give the ONNX model it "
                   "was converted from)")  # fmt: skip


# --- an input with a default value --------------------------------------------------------------------------------------


def _defaulted_model(ws: Workspace) -> np.ndarray:
    """y = MatMul(x, W) * s, where the input s has a default value 2 (an initializer by its name)."""
    rng = np.random.default_rng(0)
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    s = oh.make_tensor_value_info("s", TensorProto.FLOAT, [1])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    weight = rng.standard_normal((8, 8)).astype(np.float32)
    inits = [onh.from_array(weight, "w"), onh.from_array(np.array([2.0], np.float32), "s")]
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Mul", ["m", "s"], ["y"])]
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x, s], [y], inits), opset_imports=[oh.make_opsetid("", 17)]),
              ws.model)  # fmt: skip
    for k in range(4):
        rng.standard_normal((1, 8)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
        np.array([3.0], np.float32).tofile(ws.root / f"s{k}.raw")
    return weight


def test_an_input_value_replaces_an_inputs_default(ws: Workspace) -> None:
    """--input_value s 3 on an input with a default value: '--input_value names 's', which is not a graph input', of
    an input the model declares (and onnxruntime lets a caller feed)."""
    weight = _defaulted_model(ws)
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(4)))
    result = ws.quantize("-o", ws.out, "--input_value", "s", "3")
    assert result.exit_code == 0, result.stderr
    x = np.fromfile(ws.root / "x0.raw", np.float32).reshape(1, 8)
    got = ort.InferenceSession(str(ws.out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ weight * 3, atol=0.2)


def test_a_list_feeding_an_input_with_a_default_says_so(ws: Workspace) -> None:
    """'x:=x0.raw s:=s0.raw' for an input s with a default value: 'unknown input name 's'', of an input the model
    declares."""
    _defaulted_model(ws)
    ws.listing.write_text("".join(f"x:=x{k}.raw s:=s{k}.raw\n" for k in range(4)))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, f"{ws.listing}:1: feeds input 's', whose default value (an "
                   "initializer) qtool keeps as a constant (drop s:=... from the list, or give it another value with "
                   "convert's or quantize's --input_value s VALUES)")  # fmt: skip


# --- onnxruntime's 4-bit block QDQ model: negative scales --------------------------------------------------------------


def test_onnxruntimes_block_qdq_model_with_negative_scales_is_read(ws: Workspace) -> None:
    """onnxruntime's MatMulNBitsQuantizer in QDQ form signs each block's scale (the largest magnitude lands on -8):
    convert, inspect and export refused the model as 'scale ... holds no value, or values that are not finite and
    positive', though onnxruntime runs it. A negative scale is its grid mirrored: the stripped weights are the
    DequantizeLinear's values exactly."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    _matmul_model(ws)
    config = DefaultWeightOnlyQuantConfig(block_size=16, is_symmetric=True, quant_format=QuantFormat.QDQ)
    quantizer = MatMulNBitsQuantizer(onnx.load(ws.model), algo_config=config)
    quantizer.process()
    qdq = ws.root / "ort_blocks.onnx"
    onnx.save(quantizer.model.model, qdq)
    scales = next(onh.to_array(i) for i in onnx.load(qdq).graph.initializer if i.name.endswith("scales"))
    assert (scales < 0).any() and (scales > 0).any()
    result = ws.run("export", "-i", qdq, "-o", ws.root / "ex", "--format", "stripped")
    assert result.exit_code == 0, result.stderr
    assert ws.run("convert", "-i", qdq, "-o", ws.root / "c.onnx").exit_code == 0
    x = np.fromfile(ws.root / "x0.raw", np.float32).reshape(1, 64)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # its fused kernel rounds otherwise
    want = ort.InferenceSession(str(qdq), plain).run(None, {"x": x})[0]
    for path in (ws.root / "ex" / "ort_blocks.stripped.onnx", ws.root / "c.onnx"):
        np.testing.assert_allclose(ort.InferenceSession(str(path)).run(None, {"x": x})[0], want, atol=1e-4)


# --- an override naming a tensor inside an If branch --------------------------------------------------------------------


@pytest.mark.parametrize("pinned", [False, True])
def test_an_override_inside_an_if_branch_says_where_it_is(ws: Workspace, pinned: bool) -> None:
    """'t' written inside an If's then-branch: 'names tensor 't', which the graph does not have (if convert rewrote
    it away ..., give the file to qtool convert --quantization_overrides, which keeps the tensors it names)' from
    convert itself, of a tensor the model has; pinned with --input_value, the branch's return is the If's output."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    c = oh.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    then = oh.make_graph([oh.make_node("Relu", ["m"], ["t"])], "then", [], [oh.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    other = oh.make_graph([oh.make_node("Neg", ["m"], ["e"])], "else", [], [oh.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    w = onh.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    onnx.save(oh.make_model(oh.make_graph(nodes, "g", [x, c], [y], [w]), opset_imports=[oh.make_opsetid("", 17)]), ws.model)
    overrides = ws.root / "o.json"
    grid = [{"bitwidth": 8, "dtype": "int", "min": 0.0, "max": 4.0}]
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"t": grid}, "param_encodings": {}}))
    before = ws.snapshot()
    flags = ("--input_value", "c", "1") if pinned else ()
    result = ws.run("convert", "-i", ws.model, "-o", ws.root / "out" / "c.onnx", "-q", overrides, *flags)
    said = ("names tensor 't', which the If writing 'y' returns from its then_branch: --input_value folded the If away, "
            "and what it returned is 'y' now (rename the entry, if that is the branch the value picks)" if pinned else
            "names tensor 't', inside a branch of the If writing 'y': qtool quantizes no op in an If, Loop or Scan body "
            "(an If on an input folds to the branch it picks with --input_value NAME VALUE; else drop the entry)")  # fmt: skip
    assert_refused(ws, before, result, 4, f"{overrides}: {said}")


def test_the_quality_warning_does_not_call_per_channel_override_weights_per_tensor(ws: Workspace) -> None:
    """Per-channel weight grids given by an override (and far from the float model: offset 0 on a signed grid): the
    quality warning read 'its weights are per tensor: --use_per_row_quantization gives each output channel its own
    grid', of weights that had one grid a channel already."""
    weight = _matmul_model(ws)
    scales = [float(s) for s in np.abs(weight).max(axis=0) / 127]
    entry = {"name": "W", "dtype": "INT", "enc_type": "PER_CHANNEL", "bw": 8, "is_sym": True, "scale": scales,
             "offset": [0] * len(scales)}  # fmt: skip
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}))
    result = ws.quantize("-o", ws.out, "-q", overrides)
    assert result.exit_code == 0, result.stderr
    assert "the quantized model is far from the float one" in result.stderr
    assert "per tensor" not in result.stderr, result.stderr
    entry.update(enc_type="PER_TENSOR", scale=[max(scales)], offset=[0])  # one grid: still said
    overrides.write_text(json.dumps({"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}))
    result = ws.quantize("-o", ws.root / "plain" / "q.onnx", "-q", overrides)
    assert "its weights are per tensor: --use_per_row_quantization" in result.stderr, result.stderr


# --- a symlinked list -------------------------------------------------------------------------------------------------


def test_a_symlinked_lists_entries_resolve_beside_its_target(ws: Workspace) -> None:
    """data/list.txt naming 'raw/000_x.raw' beside it, linked into work/: 'work/raw/000_x.raw not found', where the
    entries were written against the folder the list is in."""
    (ws.root / "data").mkdir()
    (ws.root / "raw").rename(ws.root / "data" / "raw")
    (ws.root / "data" / "list.txt").write_text("".join(f"raw/{k:03d}_x.raw\n" for k in range(4)))
    (ws.root / "work").mkdir()
    (ws.root / "work" / "list.txt").symlink_to("../data/list.txt")
    result = ws.run("quantize", "-i", ws.model, "-l", ws.root / "work" / "list.txt", "-o", ws.out)
    assert result.exit_code == 0, result.stderr


# --- a list written on Windows ----------------------------------------------------------------------------------------


def test_a_list_with_windows_separators_says_so(ws: Workspace) -> None:
    """'raw\\000_x.raw' (a list written on Windows): 'raw\\000_x.raw not found', of a file that is there."""
    ws.listing.write_text("".join(f"raw\\{k:03d}_x.raw\n" for k in range(4)))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "000_x.raw not found ('\\' separates folders on Windows, "
                   f"not here: write the list's paths with '/': '{ws.root}/raw/000_x.raw' exists)")  # fmt: skip


def test_a_16_bit_weight_name_on_a_recurrent_layer_says_its_weights_stay_float(ws: Workspace) -> None:
    """--params_16bit_tensors h, the GRU's output: 'names 'h', whose producer has no weights', of a GRU with W and R."""
    _gru_model(ws)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--params_16bit_tensors", "h"), 2, "--params_16bit_tensors "
                   "names 'h', written by GRU, whose weights qtool keeps float (GRU reads them outside a slot qtool "
                   "quantizes as a weight)")  # fmt: skip


def test_a_target_set_in_a_config_file_says_where_it_goes(ws: Workspace) -> None:
    """'target: qnn-htp' in a --config YAML: "unknown key 'target' (did you mean 'target_sqnr'?)", steering a user
    to mixed precision's goal."""
    config = ws.root / "c.yaml"
    config.write_text("act_bitwidth: 8\ntarget: qnn-htp\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "-c", config), 2, f"{config}:2: 'target' cannot be set in a "
                   "config file: give --target on the command line (the config's values override its preset's)")  # fmt: skip


def test_an_input_dim_on_an_input_with_a_default_says_it_is_a_constant(ws: Workspace) -> None:
    """--input_dim s 1 on an input with a default value: "names 's', which is not a graph input", of one it declares."""
    _defaulted_model(ws)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx", "--input_dim", "s", "1"), 2,
                   "--input_dim names 's', a constant of the model (an initializer: a weight, or the default value of "
                   "an input, which qtool keeps), not an input qtool feeds")  # fmt: skip


def test_an_input_value_on_an_input_convert_pinned_says_so(ws: Workspace) -> None:
    """quantize --input_value s 5 on the model convert wrote with --input_value s 3: "names 's', which is not a graph
    input", of the input the user pinned a step before."""
    _defaulted_model(ws)
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(4)))
    converted = ws.root / "c.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted, "--input_value", "s", "3").exit_code == 0
    before = ws.snapshot()
    result = ws.run("quantize", "-i", converted, "-l", ws.listing, "-o", ws.out, "--input_value", "s", "5")
    assert_refused(ws, before, result, 2, "--input_value names 's', which convert pinned when it wrote this model (pin "
                   "another value converting the original: --input_value s VALUES)")  # fmt: skip

"""Round 18 (helper h-hostile18): what hurts a user most, probed on an installed wheel: exports and encodings files
that say otherwise than the model, block and weight-only flags beside overrides, reports, configs and paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from conftest import log_spectrum_model
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- 7-bit weights (--weights_bitwidth 7) read back ----------------------------------------------------------------


def _param_bitwidths(path: Path) -> dict[str, int]:
    doc = json.loads(path.read_text())
    if "encodings" in doc:  # 2.0.0
        return {e["name"]: int(e["output_dtype"].removeprefix("u").removeprefix("int"))
                for e in doc["encodings"] if e["name"] in doc["param_names"]}  # fmt: skip
    params = doc["param_encodings"]
    if isinstance(params, dict):  # 0.6.1
        return {name: entries[0]["bitwidth"] for name, entries in params.items()}
    return {e["name"]: e["bw"] for e in params}


@pytest.mark.parametrize("schema", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("fmt", ["legacy", "1.0.0", "2.0.0"])
def test_seven_bit_weights_read_back_from_the_encodings_qtool_wrote(ws: Workspace, fmt: str, schema: str) -> None:
    """--weights_bitwidth 7 (onnxruntime's reduce_range) wrote 'bitwidth': 7 (2.0.0: "int7") into the encodings
    file, and quantize -q refused its own file ('bitwidth 7 is not supported for dtype 'int'; use one of [4, 8, 16,
    32]', exit 4), as it did export's stripped + encodings round trip; asymmetric 7-bit weights were exported as 8-bit
    ones with a warning ("weight 'W' is marked 7 bits, which its storage does not fit: read as stored"). Now both
    read back as 7 bits, and quantizing with the file gives the same model byte for byte."""
    flags = ["--weights_bitwidth", "7", "--param_quantizer_schema", schema, "--encodings_format", fmt]
    first = ws.quantize("-o", ws.out, *flags)
    assert first.exit_code == 0, first.stderr
    own = ws.out.with_suffix(".encodings.json")
    assert set(_param_bitwidths(own).values()) >= {7}
    again = ws.root / "again" / "q.onnx"
    result = ws.quantize("-o", again, "-q", own, *flags)
    assert result.exit_code == 0, result.stderr
    assert again.read_bytes() == ws.out.read_bytes()
    folder = ws.root / "exp"
    result = ws.run("export", "-i", ws.out, "-o", folder, "--format", "stripped", "--format", "encodings",
                    "--encodings_format", fmt)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    exported = folder / "q.encodings.json"
    assert _param_bitwidths(exported) == _param_bitwidths(own)
    back = ws.root / "back" / "q.onnx"
    result = ws.run("quantize", "-i", folder / "q.stripped.onnx", "-q", exported, "-f", "-o", back, *flags)
    assert result.exit_code == 0, result.stderr
    assert back.read_bytes() == ws.out.read_bytes()


@pytest.mark.parametrize(
    ("doc", "wanted"),
    [
        pytest.param({"activation_encodings": {"c": [{"bitwidth": 7, "dtype": "int", "min": -1.0, "max": 1.0}]},
                      "param_encodings": {}}, "'c'[0]: bitwidth 7 is not supported for dtype 'int'", id="legacy"),
        pytest.param({"version": "2.0.0", "encodings": [{"name": "c", "output_dtype": "uint7", "y_scale": 0.1}],
                      "param_names": []}, "'c': an activation's output_dtype is 4, 8, 16 or 32 bits, not 7", id="2.0.0"),
        pytest.param({"version": "1.0.0", "activation_encodings": [], "param_encodings": [
            {"name": "W", "enc_type": "PER_BLOCK", "dtype": "INT", "bw": 7, "is_sym": True, "block_size": 16,
             "scale": [0.1] * 4, "offset": [-64] * 4}]}, "'W': 7-bit blocks: a block's grid is 4 or 8 bits", id="blocks"),
    ],
)  # fmt: skip
def test_seven_bits_elsewhere_than_a_weights_grid_is_refused(ws: Workspace, doc: dict, wanted: str) -> None:
    """7 bits is a weight's grid (int8 storage in [-64, 63]); an activation's QuantizeLinear would saturate at 255,
    past the grid the encoding states, and blocks are 4 or 8 bits."""
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps(doc))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "-q", overrides, "--encodings_format", "1.0.0"), 4, wanted)


# --- two overrides or config files ---------------------------------------------------------------------------------


def _two_overrides(ws: Workspace) -> tuple[Path, Path]:
    acts, params = ws.root / "acts.json", ws.root / "params.json"
    acts.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "int"}]}, "param_encodings": {}}))
    params.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"W": [{"bitwidth": 16, "dtype": "int"}]}}))
    return acts, params


@pytest.mark.parametrize(
    ("command", "wanted"),
    [
        pytest.param(["quantize", "-q", "{acts}", "--quantization_overrides={params}"],
                     "--quantization_overrides is given twice ({acts}, then {params}) and takes one file", id="-q"),
        pytest.param(["quantize", "--config", "{a}", "-c", "{b}"], "--config is given twice", id="--config"),
        pytest.param(["convert", "-q", "{acts}", "-q", "{params}"], "--quantization_overrides is given twice", id="convert"),
    ],
)  # fmt: skip
def test_two_overrides_or_config_files_are_refused(ws: Workspace, command: list[str], wanted: str) -> None:
    """click keeps the last value of an option that takes one: '-q acts.json -q params.json' (two overrides files,
    one for activations and one for weights) quantized with params.json alone, exit 0, the 16-bit activation
    'r' at 8 bits and nothing said; two --config files (each a part of the settings) likewise."""
    acts, params = _two_overrides(ws)
    (ws.root / "a.yaml").write_text("act_bitwidth: 16\n")
    (ws.root / "b.yaml").write_text("weights_bitwidth: 16\n")
    names = {"acts": acts, "params": params, "a": ws.root / "a.yaml", "b": ws.root / "b.yaml", "root": ws.root,
             "model": ws.model}  # fmt: skip
    args = [a.format(**names) for a in command]
    if args[0] == "quantize":
        args += ["-i", str(ws.model), "--input_list", str(ws.listing), "-o", str(ws.out)]
    elif args[0] == "convert":
        args += ["-i", str(ws.model), "-o", str(ws.out)]
    before = ws.snapshot()
    assert_refused(ws, before, ws.run(*args), 2, wanted.format(**names), "(give one: merge their entries into one file)")


def test_a_file_given_twice_alike_or_a_setting_given_again_is_taken(ws: Workspace) -> None:
    """The same overrides file twice changes nothing, and another option given again is the last one, as on most
    command lines (a script appending '--act_bitwidth 16' to its base command's 8): taken."""
    acts, _ = _two_overrides(ws)
    result = ws.quantize("-o", ws.out, "-q", acts, "-q", acts, "--act_bitwidth", "8", "--act_bw", "16",
                         "--act_quantizer_calibration", "min-max")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    model = onnx.load(ws.out)
    zero_points = {n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert {i.data_type for i in model.graph.initializer if i.name in zero_points} == {onnx.TensorProto.UINT16}



# --- '~' that no shell expanded, '-o=PATH' ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "config", "wanted"),
    [
        pytest.param(["--output_path=~/q.onnx"], None, "~/q.onnx: -o: starts with '~', which only a shell expands",
                     id="--flag=~"),
        pytest.param([], "output_path: ~/q.onnx\n", "qtool would make a folder named '~' here (give {home}/q.onnx)",
                     id="config"),
        pytest.param(["-o=q.onnx"], None, "=q.onnx: -o: starts with '=', which would be part of its name", id="-o="),
        pytest.param(["--html", "~/r.html", "-o", "q.onnx"], None, "~/r.html: --html: starts with '~'", id="--html"),
    ],
)  # fmt: skip
def test_an_output_path_no_shell_expanded_is_refused(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, args: list[str], config: str | None, wanted: str
) -> None:
    """'output_path: ~/q.onnx' in a --config (or '--output_path=~/q.onnx', after '=' where no shell expands ~) wrote
    ./~/q.onnx and ./~/q.encodings.json, exit 0: a folder named '~' in the current folder, which 'rm -rf ~' would
    clean up with the user's home; and '-o=q.onnx' wrote a file named '=q.onnx'. Now refused before any work."""
    home = ws.root / "home"
    home.mkdir()
    monkeypatch.chdir(ws.root)
    if config is not None:
        (ws.root / "o.yaml").write_text(config)
        args = [*args, "--config", "o.yaml"]
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--input_list", ws.listing, *args, env={"HOME": str(home)})
    assert_refused(ws, before, result, 2, wanted.format(home=home))


@pytest.mark.parametrize("how", ["--input_list=~/l.txt", "config"])
def test_an_input_path_no_shell_expanded_names_the_file_it_meant(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """'input_list: ~/l.txt' in a config was '~/l.txt: input_list not found', where the user's ~/l.txt exists."""
    home = ws.root / "home"
    home.mkdir()
    (home / "l.txt").write_text(ws.listing.read_text())
    monkeypatch.chdir(ws.root)
    args = [how]
    if how == "config":
        (ws.root / "i.yaml").write_text("input_list: ~/l.txt\n")
        args = ["--config", "i.yaml"]
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, *args, "-o", ws.out, env={"HOME": str(home)})
    assert_refused(ws, before, result, 4, "~/l.txt: input_list not found", f"(~ is the shell's: {home}/l.txt exists)")


# --- a float16 weight-only run's encodings read back --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0"])
def test_a_float16_weight_only_runs_encodings_keep_its_weights_quantized(ws: Workspace, fmt: str) -> None:
    """--act_bitwidth 32 --float_bitwidth 16 lists every activation float16 in its encodings (0.6.1, 1.0.0: qairt
    quantizes what a file leaves out), and read back in the same weight-only run, QNN's rule (a float output makes
    its Conv's weights and bias float) made every weight float: 'override for 'W' is not applied: 'W' stays float',
    'nothing was quantized', exit 0, a float16 model. Under weight-only every output is float: only a float weight
    or bias floats its layer now, and the file gives the same model byte for byte."""
    flags = ["--act_bitwidth", "32", "--float_bitwidth", "16", "--encodings_format", fmt]
    first = ws.quantize("-o", ws.out, *flags)
    assert first.exit_code == 0, first.stderr
    again = ws.root / "again" / "q.onnx"
    result = ws.quantize("-o", again, "-q", ws.out.with_suffix(".encodings.json"), *flags)
    assert result.exit_code == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert again.read_bytes() == ws.out.read_bytes()


def test_a_float_weight_still_floats_its_layer_under_weight_only(ws: Workspace) -> None:
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"W": [{"bitwidth": 16, "dtype": "float"}]}}))
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "-q", overrides, "--encodings_format", "1.0.0")
    assert result.exit_code == 0, result.stderr
    params = {e["name"]: e for e in json.loads(ws.out.with_suffix(".encodings.json").read_text())["param_encodings"]}
    assert params["W"]["dtype"] == "FLOAT" and params["B"]["dtype"] == "FLOAT" and params["FW"]["dtype"] == "INT"


# --- convert --float_bitwidth 16 of an epsilon float16 flushes to zero --------------------------------------------


def test_convert_to_float16_keeps_an_epsilon_float16_cannot_hold(ws: Workspace) -> None:
    """A log power spectrum, Log(x * x + 1e-10), as TensorFlow's basic-pitch writes it (normalised after by its min
    and max): float16 makes 1e-10 zero, Log(0) -inf on a silent bin and (-inf) - (-inf) NaN: convert --float_bitwidth
    16 of basic-pitch gave NaN on every output of every sample, exit 0, nothing said. Now the epsilon, the Add and
    the Log stay float32, with a warning."""
    model = log_spectrum_model(8)
    onnx.save(model, ws.model)
    half = ws.root / "out" / "h.onnx"
    result = ws.run("convert", "-i", ws.model, "-o", half, "--float_bitwidth", "16")
    assert result.exit_code == 0, result.stderr
    assert f"{ws.model}: fp16: 2 values are nonzero below float16's smallest (eps: 1e-10" in result.stderr
    feeds = {"x": np.array([[0.0, 0.0, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0]], np.float32)}
    expected = ort.InferenceSession(str(ws.model)).run(None, feeds)[0]
    got = ort.InferenceSession(str(half)).run(None, feeds)[0]
    assert np.isfinite(got).all(), got
    assert np.abs(got - expected).max() < 1e-2, (got, expected)


# --- clipsearch's num_batches warning -----------------------------------------------------------------------------


def test_clipsearch_names_itself_when_the_list_is_shorter_than_its_num_batches(ws: Workspace) -> None:
    """--apply_algorithms clipsearch on 4 samples warned 'adaround: num_batches 32, but the input_list has 4
    samples', of an algorithm the run did not ask for (clipsearch collects its moments with adaround's code)."""
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--use_per_row_quantization", "--apply_algorithms",
                         "clipsearch")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "qtool: WARNING: clipsearch: num_batches 32, but the input_list has 4 samples" in result.stderr
    assert "adaround" not in result.stderr, result.stderr


@pytest.mark.parametrize("args", [["-i={model}", "--input_list", "{listing}"], ["-i", "{model}", "-l={listing}"]])
def test_a_one_letter_flag_given_with_an_equals_sign_names_the_file_it_meant(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """'-i=model.onnx' is '=model.onnx' to click (as to getopt): 'model file not found', of a file that is there."""
    monkeypatch.chdir(ws.root)
    names = {"model": ws.model.name, "listing": ws.listing.name}
    before = ws.snapshot()
    result = ws.run("quantize", *[a.format(**names) for a in args], "-o", "q.onnx")
    assert_refused(ws, before, result, 4, "not found (a one-letter flag's value follows a space ('-l=x' is '=x'): ",
                   " exists)")  # fmt: skip

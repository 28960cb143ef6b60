"""Round 11 (helper-74): export in every format, block and LPBQ weights, stats and overrides files, external
data, environment, probed on an installed wheel as a careless user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _param_bitwidths(path: Path) -> dict[str, int]:
    """Each weight's bitwidth in an encodings file (0.6.1 or 1.0.0)."""
    params = json.loads(path.read_text())["param_encodings"]
    if isinstance(params, dict):
        return {name: entries[0]["bitwidth"] for name, entries in params.items()}
    return {entry["name"]: entry["bw"] for entry in params}


# --- 4-bit weights stored unpacked --------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [
    ["--use_per_channel_quantization"],
    ["--weights_block_size", "16", "--use_asymmetric_blocks", "--encodings_format", "1.0.0"],
])  # fmt: skip
def test_an_unpacked_4_bit_weight_is_exported_as_4_bits(ws: Workspace, flags: list[str]) -> None:
    """Without --pack_4_bit_weights a 4-bit weight is int8 holding 4-bit values; export read its bitwidth from
    the storage type and wrote `bw: 8` on the 4-bit scale (min -41 for a weight in [-2.6, 2.2]), where
    quantize's own file said 4: the 7-bit mark in the model's metadata now covers unpacked 4-bit weights."""
    assert ws.quantize("-o", ws.out, "--weights_bitwidth", "4", *flags).exit_code == 0
    written = _param_bitwidths(ws.root / "out" / "q.encodings.json")
    assert written["W"] == written["FW"] == 4
    for fmt in ("legacy", "1.0.0") if "--weights_block_size" not in flags else ("1.0.0",):
        result = ws.run("export", "-i", ws.out, "-o", ws.root / fmt, "--format", "encodings", "--encodings_format", fmt)
        assert result.exit_code == 0, result.stderr
        assert _param_bitwidths(ws.root / fmt / "q.encodings.json") == written


# --- mixed precision's goals without mixed precision ----------------------------------------------------------


@pytest.mark.parametrize("flags", [["--target_sqnr", "40"], ["--max_cosine_drop", "0.001"],
                                   ["--mixed_precision_factor", "1.5"], ["--strict"]])  # fmt: skip
def test_a_mixed_precision_goal_without_mixed_precision_is_refused(ws: Workspace, flags: list[str]) -> None:
    """`--target_sqnr 40` without `--mixed_precision auto` was ignored: a W8A8 model at 31 dB, exit 0, which a
    careless user took for one that met 40 (and --strict, 'exit non-zero when the target cannot be met', too)."""
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, *flags), 2, flags[0], "--mixed_precision auto")
    config = ws.root / "c.yaml"
    config.write_text(f"{flags[0][2:]}: {flags[1] if len(flags) > 1 else 'true'}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, flags[0])


# --- inspect --reference that is a quantized model --------------------------------------------------------------


@pytest.mark.parametrize("swapped", [True, False])
def test_a_quantized_reference_is_refused(ws: Workspace, swapped: bool) -> None:
    """MODEL and --reference swapped (the float model as MODEL) gave exit 0 and a report of the float model's
    'error', its layers ranked by the Q/DQ of the reference ('logits' by a DequantizeLinear, fixes naming
    '..._dequantized' tensors); a quantized model as both did too."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    before = ws.snapshot()
    model = ws.model if swapped else ws.out
    line = assert_refused(ws, before, ws.run("inspect", model, "--reference", ws.out, "-l", ws.listing), 2,
                          f"{ws.out}: ", "a quantized model, not MODEL's float model")  # fmt: skip
    assert ("swapped?" in line) == swapped


@pytest.mark.parametrize("flags", [
    ["--weights_block_size", "16", "--use_lpbq", "--encodings_format", "2.0.0"],
    ["--weights_block_size", "16", "--encodings_format", "1.0.0"],
])  # fmt: skip
def test_a_weight_a_matmulnbits_took_is_read_back_without_a_warning(ws: Workspace, flags: list[str]) -> None:
    """export --format matmulnbits moves a blocked weight into a MatMulNBits and packs the 4-bit weights left to INT4,
    keeping their LPBQ and 4-bit marks: every reader of that model then warned 'weight 'FW' is marked LPBQ, but its
    block scales are not' of a weight it no longer has (and '... marked 4 bits' of the packed ones)."""
    assert ws.quantize("-o", ws.out, "--weights_bitwidth", "4", *flags).exit_code == 0
    result = ws.run("export", "-i", ws.out, "-o", ws.root / "m", "--format", "matmulnbits")
    assert result.exit_code == 0, result.stderr
    exported = ws.root / "m" / "q.matmulnbits.onnx"
    for args in (["inspect", exported], ["export", "-i", exported, "-o", ws.root / "e", "--format", "qdq"]):
        result = ws.run(*args)
        assert result.exit_code == 0 and "marked" not in result.stderr, result.stderr


# --- power-of-2 weights in blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--param_power_of_2"], ["--target", "vitis-dpu"], ["--param_power_of_2", "--use_lpbq"]])
def test_blocks_with_power_of_2_weights_are_refused(ws: Workspace, flags: list[str]) -> None:
    """--param_power_of_2 (the vitis-dpu preset's) was ignored by per-block scales, exit 0: export --format fixpoint then
    refused the model, telling the user to quantize with --target vitis-dpu, which they had."""
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--weights_bitwidth", "4", "--weights_block_size", "16", "--encodings_format",
                         "1.0.0", *flags)  # fmt: skip
    line = assert_refused(ws, before, result, 2, "--weights_block_size with --param_power_of_2")
    assert ("vitis-dpu preset" in line) == ("--target" in flags)


# --- nodes sharing a name --------------------------------------------------------------------------------------


def test_nodes_sharing_a_name_are_renamed_on_load(ws: Workspace) -> None:
    """onnx.checker passes two nodes of one name and onnxruntime refuses the model: inspect failed with
    'model: onnxruntime cannot load it' (no file named), and export's qdq and stripped models kept the names and
    did not load (exit 0). convert renamed them already; every command now does when it reads a model."""
    import onnx
    import onnxruntime as ort

    assert ws.quantize("-o", ws.out).exit_code == 0
    for path in (ws.model, ws.out):
        model = onnx.load(str(path))
        model.graph.node[1].name = model.graph.node[0].name = "same"
        onnx.save(model, str(path))
    result = ws.run("inspect", ws.out, "--reference", ws.model, "-l", ws.listing)
    assert result.exit_code == 0, result.stderr
    result = ws.run("export", "-i", ws.out, "-o", ws.root / "e", "--format", "qdq", "--format", "stripped")
    assert result.exit_code == 0, result.stderr
    for name in ("q.qdq.onnx", "q.stripped.onnx"):
        ort.InferenceSession(str(ws.root / "e" / name))


@pytest.mark.parametrize("fmt", ["stripped", "encodings", "fp16"])
def test_a_model_holding_matmulnbits_is_refused_by_the_formats_that_drop_them(ws: Workspace, fmt: str) -> None:
    """quantize --target ort-cpu with 4-bit blocks writes MatMulNBits beside Q/DQ activations; export's default formats
    wrote an encodings file without their weights (and without a word) and a 'stripped' model
    still holding their 4-bit integers, which quantize refuses as quantized already: exit 0."""
    flags = ["--target", "ort-cpu", "--weights_bitwidth", "4", "--weights_block_size", "16", "--encodings_format", "1.0.0"]
    assert ws.quantize("-o", ws.out, *flags).exit_code == 0
    before = ws.snapshot()
    result = ws.run("export", "-i", ws.out, "-o", ws.root / "e", "--format", "qdq", "--format", fmt)
    assert_refused(ws, before, result, 2, f"{ws.out}: --format {fmt}: it holds MatMulNBits", "quantize wrote")
    assert ws.run("export", "-i", ws.out, "-o", ws.root / "e", "--format", "qoperator").exit_code == 0


# --- the preset --target reads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--save_stats", "--html", "-o"])
def test_the_targets_preset_is_an_input_no_output_replaces(ws: Workspace, flag: str) -> None:
    """`--target qnn-htp --save_stats <the installed qnn-htp.yaml>` replaced the preset with a stats file, exit 0,
    and every later --target qnn-htp run failed on it ('unknown key format'): the preset was not one of the
    command's inputs. (A QTOOL_CONFIGS folder stands in for the installed one.)"""
    from hostile_env import qtool_process

    presets = ws.root / "presets"
    presets.mkdir()
    preset = presets / "qnn-htp.yaml"
    preset.write_text("act_bitwidth: 16\n")
    env = {"QTOOL_CONFIGS": str(presets)}
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, *([] if flag == "-o" else ["-o", ws.out]),
                           flag, preset, "--target", "qnn-htp", env=env)  # fmt: skip
    assert_refused(ws, before, result, 2, "is the same file as --target's preset")
    if flag == "--html":
        result = qtool_process("inspect", ws.model, "--target", "qnn-htp", "--html", preset, env=env)
        assert_refused(ws, before, result, 2, "is the same file as --target's preset")


@pytest.mark.parametrize("which", ["MODEL", "--reference"])
def test_a_model_onnxruntime_cannot_load_is_named_by_its_file_in_inspect(ws: Workspace, which: str) -> None:
    """inspect named a model onnxruntime refused by its role ('qtool: error: reference model: onnxruntime has no
    kernel for Foo...'), where quantize, convert and export name the file."""
    import onnx
    from onnx import helper

    assert ws.quantize("-o", ws.out).exit_code == 0
    broken = ws.root / "broken.onnx"
    model = onnx.load(str(ws.out if which == "MODEL" else ws.model))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Foo", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, str(broken))
    pair = [broken, "--reference", ws.model] if which == "MODEL" else [ws.out, "--reference", broken]
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", *pair, "-l", ws.listing), 3, f"{broken}: onnxruntime has no kernel")


# --- round 11's open points on block and LPBQ overrides -------------------------------------------------------


def _lpbq_override(**change: object) -> dict:
    """A 1.0.0 LPBQ entry for the MLP's W0 ([64, 96] MatMul: 96 channels, 2 blocks of 32), wrong counts: 2 and 4."""
    entry = {"name": "W0", "dtype": "INT", "enc_type": "LPBQ", "is_sym": True, "bw": 8, "block_size": 32,
             "compressed_bw": 4, "scale": [0.1, 0.1], "offset": [-128, -128], "per_block_int_scale": [1, 2, 3, 4]}
    return {"version": "1.0.0", "activation_encodings": [], "param_encodings": [{**entry, **change}]}  # fmt: skip


@pytest.mark.parametrize(("change", "wanted"), [
    ({}, "ov.json: 'W0': LPBQ needs 96 channel scales and 192 block integers, got 2 and 4"),
    ({"per_block_int_scale": [1, 2, "3", 4]}, "every 'per_block_int_scale' value must be a number, got \"3\""),
    ({"block_size": "32"}, "'block_size' must be a positive integer, got \"32\""),
])  # fmt: skip
def test_block_override_mistakes_name_the_file_and_show_the_value_as_written(
    tmp_path: Path, change: dict, wanted: str
) -> None:
    """A block or LPBQ entry of the wrong count was refused by the plan as "override 'W0': ..." (no file named;
    after calibration where there is one), and a quoted number read as the number it spells ("got 3" of "3")."""
    from block_models import mlp_model
    from conftest import run_cli, save_model

    source, overrides = save_model(mlp_model(), tmp_path / "m.onnx"), tmp_path / "ov.json"
    overrides.write_text(json.dumps(_lpbq_override(**change)))
    result = run_cli(["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--act_bitwidth", "32", "--weights_bitwidth",
                      "4", "--encodings_format", "1.0.0", "--quantization_overrides", overrides])  # fmt: skip
    assert result.exit_code == 4 and wanted in result.stderr, result.stderr
    assert not (tmp_path / "q.onnx").exists()

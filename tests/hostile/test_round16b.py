"""Round 16's leftovers (helper-106): what helper-100's hostile round 16 left unfixed, probed on an installed wheel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from test_round16 import _defaulted_model


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def test_inspect_of_a_list_feeding_an_input_with_a_default_says_so(ws: Workspace) -> None:
    """inspect -l with 'x:=x0.raw s:=s0.raw', s an input with a default value: 'unknown input name 's'', of an input
    the model declares (quantize says what it is since 5ee1f39); its hint names the commands that take --input_value,
    which inspect does not."""
    _defaulted_model(ws)
    ws.listing.write_text("".join(f"x:=x{k}.raw s:=s{k}.raw\n" for k in range(4)))
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.model, "-l", ws.listing), 4, f"{ws.listing}:1: feeds input 's', "
                   "whose default value (an initializer) qtool keeps as a constant (drop s:=... from the list, or give "
                   "it another value with convert's or quantize's --input_value s VALUES)")  # fmt: skip


def test_inspect_of_a_qoperator_model_says_what_it_is_and_counts_its_macs(ws: Workspace) -> None:
    """inspect of `export --format qoperator`'s model (QLinearConv, QGemm...): 'kind quantized', 'MACs 0' (onnx's
    inference stops at the com.microsoft ops, and no integer op was counted) and, with --reference, 'outputs computed
    in the model's QDQ arithmetic' of a model with no QDQ pair inside."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    assert ws.run("export", "-i", ws.out, "-o", ws.root / "exp", "--format", "qoperator").exit_code == 0
    qdq = json.loads(ws.run("inspect", ws.out, "--json").stdout)
    qoperator = ws.root / "exp" / "q.qoperator.onnx"
    result = ws.run("inspect", qoperator, "-l", ws.listing, "--reference", ws.model, "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["MACs"] == qdq["MACs"] > 0
    assert facts["kind"].startswith("quantized, in onnxruntime's integer (QOperator) form: ")
    assert "QLinearConv" in facts["kind"] and "QDQ arithmetic" not in facts["outputs computed"]
    assert facts["outputs computed"].startswith("by onnxruntime's integer kernels on this CPU: the model's own")


def test_a_calibration_method_that_weight_only_ignores_is_warned_of(ws: Workspace) -> None:
    """--act_quantizer_calibration mse with --act_bitwidth 32: exit 0 and nothing said, the method unused (no
    activation is calibrated); an override naming an activation by precision alone is calibrated by it (89939af),
    and a --target preset's own method is no slip."""
    said = ("--act_quantizer_calibration mse does nothing with --act_bitwidth 32: activations stay float and no range "
            "is calibrated")  # fmt: skip
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--act_quantizer_calibration", "mse")
    assert result.exit_code == 0 and said in result.stderr, result.stderr
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"y": [{"bitwidth": 8, "dtype": "int"}]},
                                     "param_encodings": {}}))  # fmt: skip
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--act_quantizer_calibration", "mse", "-q", overrides)
    assert result.exit_code == 0 and "does nothing" not in result.stderr, result.stderr
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--target", "qnn-htp")
    assert result.exit_code == 0 and "does nothing" not in result.stderr, result.stderr



def test_an_int_weight_override_made_float_by_the_layers_float_output_is_warned_of(ws: Workspace) -> None:
    """-q with the Conv weight 'W' int8 and the Conv's output 'b' (its BatchNorm's, folded) float: the weight went
    float (QNN's rule: a float output, weight or bias of a Conv makes all three float), exit 0, nothing said."""
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"b": [{"bitwidth": 32, "dtype": "float"}]},
                                     "param_encodings": {"W": [{"bitwidth": 8, "dtype": "int", "min": -1, "max": 1}]}}))  # fmt: skip
    result = ws.quantize("-o", ws.out, "-q", overrides, "--act_quantizer_calibration", "min-max")
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "override for 'W'" in line)
    assert "override for 'W' is not applied: 'W' stays float (Conv " in warning and " runs in float32, as its output " in warning
    assert warning.endswith("is overridden float: QNN makes a Conv, ConvTranspose, Gemm or MatMul's output, weights and "
                            "bias all float when one of them is)")  # fmt: skip
    params = json.loads(ws.out.with_suffix(".encodings.json").read_text())["param_encodings"]
    assert params["W"][0]["dtype"] == "float"  # the rule holds: said, not changed


def test_inspect_of_a_min_max_model_names_no_auto_in_the_long_tail_lint(ws: Workspace) -> None:
    """A model quantized with min-max, inspected with -l: its grid spans a tensor's long tail, and the lint said
    'info ... (the default, auto, tries ranges that clip it)', as of a float model quantize has yet to calibrate."""
    ws.listing.write_text("".join(f"x{k}.raw\n" for k in range(64)))
    rng = np.random.default_rng(0)
    for k in range(64):
        x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
        x[0, 0, 0, 0] = 200.0 if k == 3 else x[0, 0, 0, 0]  # one value in 12288: a tail min-max's grid spans
        x.tofile(ws.root / f"x{k}.raw")
    assert ws.quantize("-o", ws.out, "--act_quantizer_calibration", "min-max").exit_code == 0
    result = ws.run("inspect", ws.out, "-l", ws.listing, "--json")
    tails = [f for f in json.loads(result.stdout)["findings"] if f["lint"] == "long-tail" and f["where"] == "tensor 'x'"]
    assert tails and "auto" not in tails[0]["why"] and tails[0]["severity"] == "warning", tails
    assert tails[0]["why"].endswith("(this model's grid spans it all, as min-max's range does)")


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_an_encodings_file_with_0_6_1_sections_under_a_newer_version_is_read_with_a_warning(ws: Workspace,
                                                                                         version: str) -> None:  # fmt: skip
    """A 2.0.0 file laid out with 0.6.1's sections (activation_encodings / param_encodings as objects) was refused as
    'activation_encodings: must be a list of encodings', where the 1.0.0 one is read, with a warning."""
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({"version": version, "param_encodings": {},
                                     "activation_encodings": {"y": [{"bitwidth": 8, "dtype": "int", "min": -2, "max": 6}]}}))  # fmt: skip
    result = ws.quantize("-o", ws.out, "-q", overrides, "--act_quantizer_calibration", "min-max")
    assert result.exit_code == 0, result.stderr
    assert (f"{overrides}: version {version}, but 'activation_encodings' is laid out as 0.6.1 writes it: read as "
            "0.6.1") in result.stderr  # fmt: skip
    acts = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert (acts["y"][0]["min"], acts["y"][0]["max"]) == pytest.approx((-2, 6), abs=0.05)

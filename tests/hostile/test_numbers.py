"""Numbers are validated: NaN and infinities refused by every flag, config value and stats field.

Issue 19, class 4. On a399be9 `--percentile_calibration_value nan` passed the 90-100 range check
and silently clipped activations; a stats file with `lo: "nan"` was an internal error.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.parametrize(
    "args",
    [
        ["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "nan"],
        ["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "inf"],
        ["--mixed_precision", "auto", "--target_sqnr", "nan"],
        ["--mixed_precision", "auto", "--target_sqnr", "-inf"],
        ["--mixed_precision", "auto", "--max_cosine_drop", "nan"],
        ["--mixed_precision", "auto", "--mixed_precision_factor", "inf"],
    ],
    ids=lambda a: f"{a[-2]}={a[-1]}",
)
def test_non_finite_flags_are_refused(ws: Workspace, args: list[str]) -> None:
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, *args), 2, args[-2])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("act_quantizer_calibration: percentile\npercentile_calibration_value: .nan\n", ["not a finite number"]),
        ("target_sqnr: .inf\nmixed_precision: auto\n", ["not a finite number"]),
        ("calib_batch_size: [1, 2]\n", ["calib_batch_size must be one value"]),
        ("act_16bit_tensors: conv1\n", ["act_16bit_tensors must be a list"]),
        ("act_bitwidth: {a: 1}\n", ["act_bitwidth must be one value"]),
        ("adaround:\n  num_batches: .nan\n", ["num_batches", "positive integer"]),
    ],
    ids=["percentile-nan", "sqnr-inf", "list-for-one", "scalar-for-list", "mapping", "section-nan"],
)
def test_config_values_must_be_finite_and_shaped(ws: Workspace, text: str, words: list[str]) -> None:
    config = ws.root / "c.yaml"
    config.write_text(text)
    extra = ["--apply_algorithms", "adaround"] if "adaround" in text else []
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config, *extra), 2, *words)


def test_a_config_that_is_not_utf8_is_a_usage_error(ws: Workspace) -> None:
    config = ws.root / "c.yaml"
    config.write_bytes(b"act_bitwidth: 8\n# \xff\xfe\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", "not UTF-8")


def _saved_stats(ws: Workspace, method: str) -> dict:
    stats = ws.root / "s.json"
    result = ws.quantize("-o", ws.root / "first.onnx", "--save_stats", stats, "--act_quantizer_calibration", method)
    assert result.exit_code == 0, result.stderr
    return json.loads(stats.read_text())


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lo", float("nan"), ["not finite"]),
        ("hi", float("inf"), ["not finite"]),
        ("lo", 1e9, ["lo > hi"]),
        ("count", -1, ["non-negative integer"]),
        ("count", 1.5, ["non-negative integer"]),
        ("lo", [1], ["must be numbers"]),
        ("counts", "@@@", ["base64"]),
        ("counts", base64.b64encode(np.full(2048, -1, "<i8").tobytes()).decode(), ["non-negative"]),
        ("counts", "//////////8=", ["2048 int64 bin counts"]),
        ("method", "magic", ["not an observer state"]),
    ],
)
def test_stats_files_are_validated_as_data(ws: Workspace, field: str, value: object, words: list[str]) -> None:
    doc = _saved_stats(ws, "sqnr")
    name = sorted(doc["tensors"])[0]
    doc["tensors"][name][field] = value
    stats = ws.root / "s.json"
    stats.write_text(json.dumps(doc))
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--load_stats", stats, "--act_quantizer_calibration",
                    "sqnr")  # fmt: skip
    assert_refused(ws, before, result, 4, "s.json", name, *words)


def test_a_stats_sample_count_must_be_a_count(ws: Workspace) -> None:
    doc = _saved_stats(ws, "min-max")
    doc["samples"] = "many"
    stats = ws.root / "s.json"
    stats.write_text(json.dumps(doc))
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--load_stats", stats)
    assert_refused(ws, before, result, 4, "s.json", "'samples'")


@pytest.mark.parametrize(("key", "value"), [("scale", "NaN"), ("scale", "Infinity"), ("scale", "-1"), ("offset", "NaN"),
                                            ("min", "-Infinity"), ("offset", "0.5")])  # fmt: skip
def test_overrides_with_non_finite_or_bad_numbers_are_refused(ws: Workspace, key: str, value: str) -> None:
    overrides = ws.root / "ov.json"
    overrides.write_text(
        '{"activation_encodings": {}, "param_encodings": {"W": [{"bitwidth": 8, "dtype": "int", '
        '"is_symmetric": "True", "scale": 0.1, "offset": 0, "min": -1, "max": 1}]}}'.replace(f'"{key}": ', f'"{key}": {value}, "_": ')
    )
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "ov.json")


def test_a_key_given_twice_is_refused_not_silently_the_last(ws: Workspace) -> None:
    """YAML and JSON both keep the last of two equal keys: which one did the user mean?"""
    config = ws.root / "c.yaml"
    config.write_text("act_bitwidth: 8\nact_bitwidth: 16\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml:2", "'act_bitwidth' is given twice")
    overrides = ws.root / "ov.json"
    overrides.write_text('{"activation_encodings": {}, "param_encodings": {}, "activation_encodings": {}}')
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "ov.json", "'activation_encodings' is given twice")

"""Two overrides files are refused by the paths given, compared whole (cli/options.refuse_repeated_values, b6e2260):
the error line clips each path (at its start since io/files.clipped_path), and two files deep in one folder clipped
alike were taken as one file given twice, the first dropped without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _overrides(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    acts, params = folder / "shard_acts.json", folder / "shard_params.json"
    acts.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "int"}]}, "param_encodings": {}}))
    params.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"W": [{"bitwidth": 16, "dtype": "int"}]}}))
    return acts, params


def test_two_files_whose_paths_differ_past_the_clip_are_refused(ws: Workspace) -> None:
    acts, params = _overrides(ws.root / ("d" * 100))
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "-q", acts, "-q", params)
    assert_refused(ws, before, result, 2, "--quantization_overrides is given twice", "(give one: merge their entries into one file)")


def test_one_file_spelt_two_ways_is_taken(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _overrides(ws.root / "o")
    monkeypatch.chdir(ws.root)
    result = ws.quantize("-o", ws.out, "-q", "o/shard_acts.json", "-q", "./o/../o/shard_acts.json")
    assert result.exit_code == 0, result.stderr
    assert ws.out.exists()


def test_a_config_naming_one_overrides_file_and_a_q_naming_another_is_refused(ws: Workspace) -> None:
    """--config c.yaml naming shard_acts.json with -q shard_params.json quantized with shard_params.json alone, exit 0:
    the command line's file replaced the config's, whose 16-bit 'r' came out at 8 bits."""
    acts, params = _overrides(ws.root / "o")
    config = ws.root / "c.yaml"
    config.write_text(f"quantization_overrides: {acts}\n")
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--config", config, "-q", params)
    assert_refused(ws, before, result, 2, f"--quantization_overrides is given twice ({acts} in --config ", "c.yaml:1, then ",
                   "the command line's would replace the config's (give one: merge their entries into one file, or "
                   "take quantization_overrides out of the config to use the command line's alone)")  # fmt: skip


def test_a_config_and_a_q_naming_one_file_are_taken(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _overrides(ws.root / "o")
    monkeypatch.chdir(ws.root)
    (ws.root / "c.yaml").write_text("quantization_overrides: o/shard_acts.json\n")
    result = ws.quantize("-o", ws.out, "--config", "c.yaml", "-q", "./o/shard_acts.json")
    assert result.exit_code == 0, result.stderr
    assert ws.out.exists()

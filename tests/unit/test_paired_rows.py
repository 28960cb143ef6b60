"""bench/paired_rows.py: two zoo rows of one model compared sample by sample from results.json's energies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "paired_rows.py"


def _results(tmp_path: Path) -> Path:
    """One model's two rows, three samples each: [signal, noise] energies per sample."""
    rows = [
        {"model": "m", "kind": kind, "variant": kind, "commit": "c",
         "metrics": {"outputs": {"y": {"samples": [[1.0, noise], [1.0, 2 * noise], [1.0, 3 * noise]]}}}}
        for kind, noise in (("qtool:w8a8", 1e-3), ("ort:pre", 2e-3))
    ]  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"suites": {"zoo": rows}}))
    return path


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "m", "qtool:w8a8", "ort:pre", "--results", str(_results(tmp_path)), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_two_rows_are_compared_on_the_first_samples(tmp_path: Path) -> None:
    result = _run(tmp_path, "--first", "2")
    assert result.returncode == 0, result.stderr
    assert "a: qtool:w8a8 (c): 2 samples" in result.stdout and "a leads on 2, b on 0 of 2" in result.stdout


@pytest.mark.parametrize("first", ["0", "-1"])
def test_first_below_one_is_a_one_line_error(tmp_path: Path, first: str) -> None:
    """--first 0 divided by zero (a traceback); -1 silently scored all samples but the last."""
    result = _run(tmp_path, "--first", first)
    assert result.returncode == 1 and not result.stdout
    assert result.stderr == f"paired_rows.py: --first {first}: the number of samples to score, 1 or more\n"


@pytest.mark.parametrize("text", [None, "{}", "not json"], ids=["missing", "no zoo suite", "not json"])
def test_a_results_file_that_cannot_be_read_is_a_one_line_error(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "r.json"
    if text is not None:
        path.write_text(text)
    args = [sys.executable, str(SCRIPT), "m", "qtool:w8a8", "ort:pre", "--results", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and not result.stdout
    assert result.stderr.startswith(f"paired_rows.py: {path}: no zoo results read (") and result.stderr.count("\n") == 1

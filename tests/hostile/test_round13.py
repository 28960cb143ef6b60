"""Round 13 (helper-80): inspect's outputs beside its inputs, stats files and lists that repeat themselves, models
that compute nothing, probed on an installed wheel as a careless user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- inspect --html on the encodings quantize wrote -------------------------------------------------------------


def test_inspect_html_does_not_replace_the_models_encodings(ws: Workspace) -> None:
    """`inspect q.onnx --html q.encodings.json` (a tab completion one character short) replaced the encodings
    quantize wrote beside the model with the HTML report, exit 0: they are not inspect's to replace."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    encodings = ws.out.with_suffix(".encodings.json")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.out, "--html", encodings), 2,
                   f"--html {encodings} is the same file as the encodings quantize wrote beside MODEL")  # fmt: skip

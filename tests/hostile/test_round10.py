"""Round 10 (helper-70): round 9's open findings (an output under /proc as root, a long list of one repeated
file, export's encodings over quantize's, a non-breaking space in an input_list), then a wheel probed as a
careless user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/self").is_dir(), reason="needs root and /proc")
@pytest.mark.parametrize("output", ["/proc/qtool-round10/q.onnx", "/proc/qtool-round10.onnx"])
def test_an_output_under_proc_is_refused_before_any_work_as_root(ws: Workspace, output: str) -> None:
    """Root passes os.access in /proc, where no file can be made: the output was refused only when written,
    after calibration (here a sample of the wrong size, which must not be the error: the output is checked
    first)."""
    (ws.root / "raw" / "000_x.raw").write_bytes(b"\0" * 12)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", output), 2, output, "cannot write in /proc")


def test_an_export_folder_that_cannot_be_made_is_named_as_given(ws: Workspace) -> None:
    """check_output_folder probed '<folder>/probe' and the error named that file, which the user never wrote."""
    (ws.root / "f").write_text("")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.run("export", "-i", ws.model, "-o", ws.root / "f" / "x"), 2, "it is not a folder")
    assert "probe" not in line and f"{ws.root / 'f' / 'x'}: " in line

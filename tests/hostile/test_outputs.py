"""Outputs never clobber an input, each other or a special file, and a failed command leaves none.

Issue 19, classes 1 and 2. Each case fails on a399be9 (the atomic rename replaced whatever the
target was, and outputs were renamed one by one as they were written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace, qtool_process

from qtool.errors import QtoolError, UsageError
from qtool.io import outputs


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _overrides_named(path: Path) -> Path:
    path.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {}}))
    return path


# (quantize arguments built from the workspace, the words the error must hold)
CLOBBERS = {
    "output-is-the-model": (lambda ws: ["-o", ws.model], ["-o", "same file as -i"]),
    "save-stats-is-the-list": (lambda ws: ["-o", ws.out, "--save_stats", ws.listing], ["--save_stats", "--input_list"]),
    "encodings-is-the-overrides": (
        lambda ws: ["-o", ws.root / "o.onnx", "--quantization_overrides", _overrides_named(ws.root / "o.encodings.json")],
        ["encodings file", "--quantization_overrides"],
    ),
    "html-is-the-output": (lambda ws: ["-o", ws.out, "--html", ws.out], ["--html", "-o"]),
    "save-stats-is-the-output": (lambda ws: ["-o", ws.out, "--save_stats", ws.out], ["--save_stats", "-o"]),
    "output-is-a-raw-sample": (lambda ws: ["-o", ws.root / "raw" / "000_x.raw"], ["same file as a file of"]),
    "hard-link-to-the-model": (
        lambda ws: (os.link(ws.model, ws.root / "hard.onnx"), ["-o", ws.root / "hard.onnx"])[1],
        ["same file as -i"],
    ),
    "symlink-to-the-list": (
        lambda ws: (os.symlink(ws.listing, ws.root / "l.onnx"), ["-o", ws.root / "l.onnx"])[1],
        ["same file as --input_list"],
    ),
    "output-is-a-fifo": (lambda ws: (os.mkfifo(ws.root / "f"), ["-o", ws.root / "f"])[1], ["-o", "a FIFO"]),
    "html-is-a-fifo": (lambda ws: (os.mkfifo(ws.root / "f"), ["-o", ws.out, "--html", ws.root / "f"])[1], ["FIFO"]),
    "stats-is-a-fifo": (
        lambda ws: (os.mkfifo(ws.root / "f"), ["-o", ws.out, "--save_stats", ws.root / "f"])[1],
        ["FIFO"],
    ),
    "output-is-a-folder": (lambda ws: (ws.out.mkdir(parents=True), ["-o", ws.out])[1], ["-o", "a folder"]),
    "encodings-is-a-folder": (
        lambda ws: (ws.out.with_suffix(".encodings.json").mkdir(parents=True), ["-o", ws.out])[1],
        ["encodings file", "a folder"],
    ),
    "output-under-a-file": (lambda ws: ["-o", ws.listing / "q.onnx"], ["not a folder"]),
    "output-is-empty": (lambda ws: ["-o", ""], ["empty path"]),
    "dangling-symlink": (
        lambda ws: (os.symlink(ws.root / "nowhere.onnx", ws.root / "d.onnx"), ["-o", ws.root / "d.onnx"])[1],
        ["dangling symlink"],
    ),
}


@pytest.mark.parametrize("case", sorted(CLOBBERS))
def test_quantize_refuses_an_output_that_would_clobber(ws: Workspace, case: str) -> None:
    build, words = CLOBBERS[case]
    args = build(ws)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize(*args), 2, *words)


def test_outputs_are_checked_before_any_input_is_read(ws: Workspace) -> None:
    """A bad -o is reported, not the missing input_list that calibration would have read first."""
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--input_list", ws.root / "missing.txt", "-o", ws.listing / "q.onnx")
    assert_refused(ws, before, result, 2, "-o", "not a folder")


def test_convert_and_inspect_refuse_to_overwrite_their_inputs(ws: Workspace) -> None:
    overrides = _overrides_named(ws.root / "ov.json")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.model), 2, "same file as -i")
    assert_refused(
        ws, before, ws.run("convert", "-i", ws.model, "-o", overrides, "--quantization_overrides", overrides), 2,
        "same file as --quantization_overrides",
    )  # fmt: skip
    assert_refused(ws, before, ws.run("inspect", ws.model, "--html", ws.model), 2, "same file as MODEL")
    result = ws.run("inspect", ws.model, "--input_list", ws.listing, "--html", ws.listing)
    assert_refused(ws, before, result, 2, "same file as --input_list")


def test_a_symlinked_output_is_written_through_and_stays_a_link(ws: Workspace) -> None:
    target = ws.root / "real.onnx"
    target.write_bytes(b"old")
    link = ws.root / "link.onnx"
    link.symlink_to(target)
    result = ws.quantize("-o", link, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes()[:3] != b"old" and target.stat().st_size > 1000


def test_a_250_byte_file_name_is_written_without_leftovers(ws: Workspace) -> None:
    name = "m" * 240 + ".onnx"  # 245 bytes; its temporary would have been 260
    out = ws.root / "out" / name
    result = ws.run("convert", "-i", ws.model, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in out.parent.iterdir()] == [name]


def test_a_failure_after_the_model_is_written_leaves_no_output(ws: Workspace, monkeypatch) -> None:
    """--html fails after the model and encodings were staged: neither lands."""
    from qtool.inspect import html

    def broken(*args, **kw):
        raise UsageError("cannot render", where="--html")

    monkeypatch.setattr(html, "render_report", broken)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--html", ws.root / "r.html"), 2, "cannot render")


def test_export_writes_every_format_or_none(ws: Workspace) -> None:
    quant = ws.root / "q.onnx"
    assert ws.quantize("-o", quant, "--evaluate_samples", "0").exit_code == 0
    before = ws.snapshot()
    result = ws.run("export", "-i", quant, "-o", ws.root / "exp", "--format", "qoperator", "--format", "fixpoint")
    assert_refused(ws, before, result, 2, "not a power of two")
    os.mkfifo(ws.root / "exp.fifo")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("export", "-i", quant, "-o", ws.root / "exp.fifo"), 2, "exp.fifo")


def test_commit_interrupted_half_way_removes_what_it_renamed(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM during the final renames: the outputs already renamed go too, and every temporary."""
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), outputs.command(outputs=[("-o", tmp_path / "a"), ("--b", tmp_path / "b")]):
        outputs.write_text(tmp_path / "a", "A")
        outputs.write_text(tmp_path / "b", "B")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_command_removes_the_folders_it_made(tmp_path: Path) -> None:
    with pytest.raises(QtoolError), outputs.command():
        outputs.write_text(tmp_path / "new" / "deeper" / "a.txt", "A")
        raise QtoolError("later step failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_outputs_are_in_place_does_not_fail_the_run(ws: Workspace, signum: str) -> None:
    """Every output renamed into place, then the signal (as a Ctrl-C a few ms late would come): the run ends with
    its own exit code, not 130 or death by SIGTERM in the interpreter's shutdown with every output written."""
    script = (
        "import os, signal, sys\n"
        "import qtool.__main__ as entry\n"
        "from qtool.io import outputs\n"
        "real = entry._hold_end_signals\n"
        "def late():\n"
        "    real()\n"
        f"    os.kill(os.getpid(), signal.{signum})\n"
        "entry._hold_end_signals = late\n"
        "sys.argv = ['qtool', *sys.argv[1:]]\n"
        "entry.main()\n"
    )
    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out]
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ws.out.exists() and ws.out.with_suffix(".encodings.json").exists() and "interrupted" not in result.stderr


def test_stdout_on_a_pipe_as_the_output_is_named_as_a_fifo(ws: Workspace) -> None:
    """/dev/stdout -> /proc/self/fd/1 -> pipe:[n]: realpath cannot follow it, stat can; it was 'a dangling symlink'."""
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, "-o", "/dev/stdout", timeout=60)
    assert result.returncode == 2 and "is a FIFO, not a regular file" in result.stderr, result.stderr

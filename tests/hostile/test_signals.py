"""SIGTERM, SIGHUP and SIGINT end a real `qtool quantize` cleanly: one line, 128 + N, nothing left.

Issue 19, class 2. On a399be9 SIGTERM and SIGHUP killed the process without clean-up (temporaries
left behind), and Ctrl-C during the imports printed a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from hostile_env import Workspace, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("signals"), samples=1)
    # one sample listed 60 000 times: histogram calibration runs for several seconds after the imports
    ws.listing.write_text(ws.listing.read_text() * 60_000)
    return ws


def _started_with(ignored: set[int]):
    # the child's start, whatever the test runner's own handlers are (a CI job started with `&` ignores SIGINT)
    def set_handlers() -> None:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    return set_handlers


def _interrupted(ws: Workspace, signum: int, after: float) -> subprocess.CompletedProcess:
    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, "--act_quantizer_calibration", "sqnr"]
    process = subprocess.Popen(
        [sys.executable, "-m", "qtool", *map(str, args), "--save_stats", str(ws.root / "s.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_started_with(set()),
    )
    time.sleep(after)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    ("signum", "after"),
    [
        (signal.SIGTERM, 0.2),  # during the imports
        (signal.SIGINT, 0.2),
        (signal.SIGTERM, 3.0),  # during calibration
        (signal.SIGHUP, 3.0),
        (signal.SIGINT, 3.0),
    ],
    ids=["term-imports", "int-imports", "term-work", "hup-work", "int-work"],
)
def test_a_signal_cleans_up_and_exits_128_plus_n(ws: Workspace, signum: int, after: float) -> None:
    before = ws.snapshot()
    result = _interrupted(ws, signum, after)
    if after < 1 and result.returncode == -signum and not result.stderr:
        # under load the signal can land while the interpreter itself starts (`import typing` in site), before any
        # line of qtool runs: the default action ends it, and nothing was written, which is what must hold
        assert ws.snapshot() == before
        return
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "qtool: interrupted; no output written", result.stderr
    snapshot = ws.snapshot()
    assert snapshot == before, sorted(set(snapshot) ^ set(before))



@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT], ids=["nohup", "background"])
def test_a_signal_the_caller_ignores_stays_ignored(ws: Workspace, signum: int) -> None:
    # `nohup qtool ...` and `qtool ... &` in a script: the run outlives the signal and writes its outputs (before,
    # qtool put its own handler in place of the ignored one: 'interrupted', exit 129 / 130)
    listing = ws.root / "short_list.txt"
    listing.write_text("".join(ws.listing.read_text().splitlines(keepends=True)[:1000]))  # a few seconds' run
    args = ["quantize", "-i", ws.model, "--input_list", listing, "-o", ws.out]
    process = subprocess.Popen(
        [sys.executable, "-m", "qtool", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_started_with({signum}),
    )
    try:
        for pause in (0.3, 0.7, 1.0, 2.0):  # during the imports, the reads and calibration, whatever the load
            time.sleep(pause)
            process.send_signal(signum)  # a no-op once the run has ended
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert ws.out.is_file()
    finally:
        listing.unlink()
        for path in (ws.out, ws.out.with_suffix(".encodings.json")):
            path.unlink(missing_ok=True)

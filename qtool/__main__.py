"""The `qtool` command's entry point: signal handling first, then the CLI.

SIGTERM (CI runners, `timeout`) and SIGHUP (a closed terminal) end a run the way Ctrl-C does:
the running command removes every temporary and partial output, and the exit code is 128 + the
signal's number (130, 143, 129). Even an interrupt during the imports is one line, not a traceback.
A signal the caller ignores stays ignored (`nohup qtool ...`, `qtool ... &` in a script).

A standard descriptor the shell closed (`>&-`, `2>&-`) is reopened on /dev/null before anything else: left
closed, the first file qtool opened took its number, and whatever writes to stdout or stderr (a library's
message) would have written into an output. A closed stdout is then refused (exit 2, nothing written: the
report has nowhere to go, and a run exiting 0 without it looked like a success that said nothing); a closed
stderr only loses the messages (it was an internal error, exit 1, nothing written).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

from qtool.errors import Interrupted


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


_pending: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)


END_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


def _hold_end_signals() -> None:
    """A finished command exits with its own code: the end signals are ignored from here on. Ignored, not
    blocked: a blocked signal goes to another thread (onnxruntime's pool), and the interpreter's shutdown
    restores the default action of every handler but SIG_IGN."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing to hold
        for signum in END_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _reopen_closed_std_fds() -> list[int]:
    """Reopen each closed descriptor of 0, 1 and 2 on /dev/null; returns the ones that were closed."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 2 in closed:  # Python set sys.stderr to None at startup
        sys.stderr = os.fdopen(2, "w", closefd=False)
    return closed


def main() -> None:
    if 1 in _reopen_closed_std_fds():
        sys.stderr.write("qtool: error: stdout is closed (>&-): the report would be lost; use >/dev/null to discard it\n")
        sys.exit(2)
    # A signal the caller set to be ignored stays ignored: `nohup qtool ...` (SIGHUP) and `qtool ... &` in a
    # script (SIGINT) ask a run to outlive the terminal or the script's Ctrl-C, as Python itself leaves SIGINT
    handled = END_SIGNALS - {s for s in END_SIGNALS if signal.getsignal(s) == signal.SIG_IGN}
    # During the imports a signal is only noted: an exception raised inside a compiled extension's
    # module init (onnx's) aborts the interpreter ("terminate called after throwing ...").
    for signum in handled:
        signal.signal(signum, _remember)
    from qtool.cli import main as cli
    from qtool.io import outputs

    outputs.on_committed = _hold_end_signals
    for signum in handled:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else _interrupt)
    if _pending:
        sys.stderr.write("qtool: interrupted; no output written\n")
        sys.exit(128 + _pending[0])
    try:
        cli()
    finally:  # the interpreter's shutdown puts the default handlers back: SIGTERM there killed a finished run
        _hold_end_signals()


if __name__ == "__main__":
    main()

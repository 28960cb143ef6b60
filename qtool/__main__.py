"""The `qtool` command's entry point: signal handling first, then the CLI.

SIGTERM (CI runners, `timeout`) and SIGHUP (a closed terminal) end a run the way Ctrl-C does:
the running command removes every temporary and partial output, and the exit code is 128 + the
signal's number (130, 143, 129). Even an interrupt during the imports is one line, not a traceback.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from qtool.errors import Interrupted


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


_pending: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)


def main() -> None:
    # During the imports a signal is only noted: an exception raised inside a compiled extension's
    # module init (onnx's) aborts the interpreter ("terminate called after throwing ...").
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _remember)
    from qtool.cli import main as cli

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    if _pending:
        sys.stderr.write("qtool: interrupted; no output written\n")
        sys.exit(128 + _pending[0])
    cli()


if __name__ == "__main__":
    main()

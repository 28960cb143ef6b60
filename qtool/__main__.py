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


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        from qtool.cli import main as cli
    except KeyboardInterrupt as e:
        sys.stderr.write("qtool: interrupted; no output written\n")
        sys.exit(Interrupted.code_of(e))
    cli()


if __name__ == "__main__":
    main()

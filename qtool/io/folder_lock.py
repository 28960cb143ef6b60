"""Exclusive locks on the folders a command renames its outputs into, held from its first rename to its last.

Two runs writing the same `-o` at once each rename a model and its `.encodings.json`: interleaved, one run's
model ended beside the other's encodings. Each run now takes an advisory `flock` on every folder it renames
into (sorted by device and inode, so two runs never wait on each other), and the second waits for the first's
renames (milliseconds) to end: whichever commits last leaves all of its outputs. The lock is on the folder
itself, opened read-only: no lock file is ever created or left behind, and a folder that cannot be opened for
reading or a filesystem without flock (some network ones) is committed without it (logged at debug level).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from qtool.errors import UsageError

logger = logging.getLogger(__name__)

WAIT_SECONDS = 60.0  # renames take milliseconds: a holder this long is stopped or stuck


def _acquire(fd: int, folder: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise UsageError(
                    f"another process has been writing its outputs into this folder for {WAIT_SECONDS:.0f} s; "
                    "nothing written", where=str(folder),
                ) from None  # fmt: skip
            time.sleep(0.01)


@contextlib.contextmanager
def folders_locked(folders: Iterable[Path]) -> Iterator[None]:
    """Hold an exclusive flock on each existing folder in `folders` (each once) until the block ends."""
    opened: dict[tuple[int, int], tuple[int, Path]] = {}
    try:
        for folder in folders:
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                logger.debug("outputs in %s committed without a lock: %s", folder, e.strerror)
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in opened:
                os.close(fd)
            else:
                opened[(st.st_dev, st.st_ino)] = (fd, folder)
        deadline = time.monotonic() + WAIT_SECONDS
        for _, (fd, folder) in sorted(opened.items()):
            try:
                _acquire(fd, folder, deadline)
            except OSError as e:  # ENOLCK, EOPNOTSUPP: no flock on this filesystem
                logger.debug("outputs in %s committed without a lock: %s", folder, e.strerror)
        yield
    finally:
        for fd, _ in opened.values():
            os.close(fd)  # closing the last descriptor releases the lock

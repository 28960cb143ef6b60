"""Exclusive locks on the folders a command renames its outputs into, held from its first rename to its last.

Two runs writing the same `-o` at once each rename a model and its `.encodings.json`: interleaved, one run's
model ended beside the other's encodings. Each run now takes an advisory `flock` for every folder it renames
into (sorted by device and inode, so two runs never wait on each other), and the second waits for the first's
renames (milliseconds) to end: whichever commits last leaves all of its outputs. The lock is a file named by
the folder's device and inode in a folder of the user's own (`$XDG_RUNTIME_DIR/qtool-locks`, else
`<tmp>/qtool-locks-<uid>`, mode 0700), not the folder itself: a `flock out/ qtool quantize -o out/m.onnx` (a
common way to serialise jobs) waited on its own parent's lock, and another user holding /tmp's stopped every
run writing there. The holder removes its lock file before releasing it. Nothing is made in the output folder. Runs of two users into one folder are not serialised;
a lock folder that cannot be made safely, or a filesystem without flock, commits without it (logged at debug).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
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


def lock_folder() -> Path | None:
    """The user's own folder of lock files, made 0700 if missing; None unless it is a real folder only the user
    can write (a name another user made first in a shared /tmp must not decide whose runs wait)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime_dir, "qtool-locks") if runtime_dir else Path(tempfile.gettempdir(), f"qtool-locks-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        st = os.lstat(folder)
    except OSError as e:
        logger.debug("no lock folder %s: %s", folder, e.strerror)
        return None
    private = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022
    return folder if private else None


def _take(name: Path, folder: Path, deadline: float) -> int | None:
    """A descriptor holding the flock on lock file `name`, or None where there can be none (logged). A holder
    removes its file before releasing it, so a lock taken on a file no longer at `name` guards nothing: retry."""
    while True:
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            logger.debug("outputs in %s committed without a lock: %s", folder, e.strerror)
            return None
        try:
            _acquire(fd, folder, deadline)
            held, now = os.fstat(fd), os.stat(name)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        except OSError as e:  # ENOLCK, EOPNOTSUPP: no flock on this filesystem
            logger.debug("outputs in %s committed without a lock: %s", folder, e.strerror)
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def folders_locked(folders: Iterable[Path]) -> Iterator[None]:
    """Hold an exclusive flock for each existing folder in `folders` (each once) until the block ends; the lock
    files are removed again (one per folder ever written piled up in the lock folder)."""
    wanted: dict[tuple[int, int], Path] = {}
    locks = lock_folder()
    for folder in folders if locks is not None else ():
        try:
            st = os.stat(folder)
        except OSError as e:
            logger.debug("outputs in %s committed without a lock: %s", folder, e.strerror)
            continue
        wanted.setdefault((st.st_dev, st.st_ino), folder)
    held: list[tuple[int, Path]] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        for (dev, ino), folder in sorted(wanted.items()):
            name = Path(locks, f"{dev}-{ino}.lock")
            if (fd := _take(name, folder, deadline)) is not None:
                held.append((fd, name))
        yield
    finally:
        for fd, name in held:
            with contextlib.suppress(OSError):
                os.unlink(name)  # before the release: a run waiting on this file then sees it is gone
            os.close(fd)  # closing the last descriptor releases the lock

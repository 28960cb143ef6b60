"""The files a command makes beside its outputs before they are in place: temporaries and backups (io/outputs.py).

Each is named `.<output name>.<8 random characters>.tmp` (a backup: `.bak`) and holds an exclusive `flock` for as
long as its run needs it, which the kernel drops when the run dies. A run killed by SIGKILL (or the OOM killer)
cannot remove its own, so the next run writing the same output removes the ones that are provably stale: a
regular file of this user, named for that output, that no live run holds locked (a run that was stopped, not
killed, still holds its locks), not changed in the last FRESH_SECONDS (a live run's file between its creation
and its lock) and not one of the command's inputs or outputs. On a filesystem without flock nothing is removed. (A qtool
from before these locks took none: a run of one writing the same output at that moment loses its temporary,
and fails with one error line, nothing written.)

A backup is a hard link to an output's previous file, made just before the temporary is renamed over it, so a
commit that fails half-way puts back the previous run's outputs it had replaced (all or nothing), not removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

SUFFIX = ".tmp"
BACKUP_SUFFIX = ".bak"
FRESH_SECONDS = 10.0  # st_ctime: link() sets it too, so a backup's age is its own, not its file's
_RANDOM = re.compile(r"[a-z0-9_]{8}\.(tmp|bak)")  # tempfile's names: 8 of "a-z0-9_"


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on `fd` without waiting; False if another holds it or the filesystem has none."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def create(folder: Path, name: str) -> tuple[int, Path, int]:
    """A new temporary for output `name` in `folder`: its descriptor, its path and a descriptor holding its lock."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=SUFFIX, dir=folder)
    lock = os.dup(fd)  # the same open file: its lock outlives the writer's handle, closed after writing
    if not try_lock(lock):
        logger.debug("%s: no flock on this filesystem; a later run will not remove it if this one is killed", tmp)
    return fd, Path(tmp), lock


def backup(target: Path, tmp: Path) -> tuple[Path, int] | None:
    """A hard link to the file at `target` (about to be replaced), locked; None if there is none or it cannot be
    made (no file, a filesystem without hard links, protected_hardlinks on another user's file)."""
    saved = tmp.with_name(tmp.name[: -len(SUFFIX)] + BACKUP_SUFFIX)
    try:
        os.link(target, saved, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.debug("%s replaced without a backup: %s", target, e.strerror)
        return None
    fd = os.open(saved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try_lock(fd)
    return saved, fd


def sweep(folder: Path, name: str, keep: set[tuple[int, int]]) -> None:
    """Remove the stale staging files of output `name` in `folder` (see the module docstring); `keep`: the
    identities (device, inode) of the command's inputs, never removed."""
    prefix = f".{name}."
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        if _RANDOM.fullmatch(entry[len(prefix) :]):
            _remove_if_stale(folder / entry, keep)


def _remove_if_stale(path: Path, keep: set[tuple[int, int]]) -> None:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or (st.st_dev, st.st_ino) in keep:
            return
        if time.time() - st.st_ctime < FRESH_SECONDS:
            return
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino) and try_lock(fd):
            os.unlink(path)
            logger.info("removed %s, left by a qtool run that was killed", path)
    except OSError:
        pass
    finally:
        os.close(fd)


def put_back(target: Path, tmp: Path, saved: tuple[Path, int] | None, lock: int) -> None:
    """Undo one output of a failed commit: a temporary not yet renamed goes (with its backup); a renamed one (the
    file at `target` is the one `lock` holds, not merely `tmp` gone: a temporary someone else removed left the
    user's file there) is replaced by the file it replaced (its backup), or removed if it replaced none."""
    try:
        ours, there = os.fstat(lock), os.lstat(target)
        renamed = (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)
    except OSError:
        renamed = False
    for path in [] if renamed else [tmp, *(saved[:1] if saved else [])]:
        with contextlib.suppress(OSError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        if renamed and saved is not None:
            os.replace(saved[0], target)
        elif renamed:
            os.unlink(target)
    if saved is not None:
        release(saved[1])


def drop(backups: Iterable[tuple[Path, int]]) -> None:
    """Remove the backups of a commit that succeeded."""
    for saved, fd in backups:
        with contextlib.suppress(OSError):
            os.unlink(saved)
        release(fd)


def release(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)

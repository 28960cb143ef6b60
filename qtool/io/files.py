"""Atomic output files: written to a temporary file in the same folder, then renamed into place.

A run that fails half-way leaves no partial output and never touches the files it read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from qtool.errors import DataError, UsageError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file object; on success it replaces `path`, on any error it vanishes."""
    target = Path(path)
    if target.is_dir():
        raise UsageError("is a folder, expected a file path", where=str(target))
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UsageError(f"cannot write: {e.strerror}", where=str(target)) from e
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def read_bytes(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """Read a whole file; a missing or unreadable one is a DataError naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{what} not found", where=str(path)) from e
    except IsADirectoryError as e:
        raise DataError(f"{what} is a folder, expected a file", where=str(path)) from e
    except OSError as e:
        raise DataError(f"cannot read {what}: {e.strerror}", where=str(path)) from e


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8-sig")  # Windows editors start UTF-8 files with a byte-order mark
    except UnicodeDecodeError as e:
        raise DataError(f"{what} is not UTF-8 text (byte {e.start})", where=str(path)) from e

"""The files one command writes: checked before any work starts, committed together or not at all.

The rules (README, "Bad input"):
- an output that is the same file as an input, or as another output of the command, is a usage
  error naming both flags (hard links and symlinks included: files are compared by device and inode);
- an existing output must be a regular file: a folder, device, FIFO or socket is refused;
- an output that is a symlink is written through to the file it points at, which must exist and obey
  the rules above (the link stays a link); a dangling link is refused;
- every output is written to a temporary file beside its target (io/staging.py); the renames happen only when
  every output is written, and any failure (an error, SIGINT, SIGTERM, SIGHUP) removes every temporary and every
  folder it created, and puts back the file each renamed output replaced (or removes it, if it replaced none).

`atomic_write` is the one way qtool writes a file: inside `command()` it stages into that command's
transaction, outside it the file is a transaction of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import signal
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from qtool.errors import UsageError
from qtool.io import staging
from qtool.io.folder_lock import folders_locked

NAME_MAX = 255  # bytes in one path component on every filesystem qtool targets
_TEMP_NAME_BYTES = NAME_MAX - 1 - 1 - 8 - len(staging.SUFFIX)  # "." + name + "." + mkstemp's 8 + ".tmp"

_current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("qtool_outputs", default=None)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message: a folder, a FIFO, a socket, a device."""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]  # fmt: skip
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def resolve_output(path: str | os.PathLike[str], flag: str) -> Path:
    """The real file `path` will write (symlinks followed), refused unless it is or can be a regular file."""
    if not str(path):
        raise UsageError(f"{flag}: empty path")
    _refuse_unexpanded(Path(path), flag)
    try:  # Python 3.11's is_symlink/exists raise ENAMETOOLONG (a 300-byte name), ELOOP...: an internal error
        return _resolve_output(Path(path), flag)
    except OSError as e:
        raise UsageError(f"{flag}: cannot write it: {e.strerror or e}", where=str(path)[:160]) from None


def _refuse_unexpanded(given: Path, flag: str, folder: bool = False) -> None:
    """A path whose first folder would be made as '~' or '=...': '~/out/q.onnx' from a config, or after '=' on the
    command line, which no shell expands, wrote ./~/out/q.onnx (one 'rm -rf ~' from the user's home), and click
    reads '-o=q.onnx' as '=q.onnx'. Such a folder that exists already is the user's to write in; so is a '~name'
    that names no user's home ('~draft.onnx'), which a shell leaves as it is too."""
    first = given.parts[0] if given.parts else ""
    if first[:1] not in ("~", "=") or os.path.lexists(first) or (first[0] == "~" and os.path.expanduser(first) == first):
        return
    if first.startswith("~"):
        made = "folder" if folder or len(given.parts) > 1 else "file"
        raise UsageError(f"{flag}: starts with {first!r}, which only a shell expands (at the start of a word, not after "
                         f"'=' nor in a config): qtool would make a {made} named {first!r} here", where=str(given),
                         hint=f"give {os.path.expanduser(given)}")  # fmt: skip
    raise UsageError(f"{flag}: starts with '=', which would be part of its name (a one-letter flag takes '-o PATH', not "
                     "'-o=PATH')", where=str(given), hint=f"give {str(given)[1:]}")  # fmt: skip


def _resolve_output(given: Path, flag: str) -> Path:
    target = Path(os.path.realpath(given))
    if given.is_symlink() and not target.exists():
        try:  # a /proc link (/dev/stdout on a pipe) resolves for stat, not for realpath
            mode = os.stat(given).st_mode
        except OSError as e:
            what = "a symlink loop" if e.errno == errno.ELOOP else f"a dangling symlink (to {target})"
            raise UsageError(f"{flag}: is {what}; qtool writes through links", where=str(given)) from None
        raise UsageError(f"{flag}: is {file_kind(mode)}, not a regular file; refusing to write it", where=str(given))
    if target.exists():
        mode = os.stat(target).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{flag}: is {file_kind(mode)}, not a regular file; refusing to write it", where=str(given))
        if not mode & 0o222 or not os.access(target, os.W_OK):  # chmod a-w, a read-only checkout: the rename would not ask
            raise UsageError(f"{flag}: is read-only (mode {stat.S_IMODE(mode):o}); refusing to replace it",
                             where=str(given), hint="make it writable, or remove it, first")  # fmt: skip
    if len(os.fsencode(target.name)) > NAME_MAX:
        raise UsageError(f"{flag}: file name longer than {NAME_MAX} bytes", where=str(given))
    ancestor = target.parent
    while not _exists(ancestor, flag, given):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag}: cannot write under {ancestor}: it is not a folder", where=str(given))
    _check_writable(ancestor, flag, str(given))
    return target


def _exists(folder: Path, flag: str, given: Path) -> bool:
    """Path.exists() is False for a symlink loop too: such a folder was taken for one to make, and failed at the write."""
    try:
        os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise UsageError(f"{flag}: cannot write under {folder}: {e.strerror}", where=str(given)) from None
    return True


def _check_writable(folder: Path, flag: str, where: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "a read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "permission denied"
        raise UsageError(f"{flag}: cannot write in {folder}: {why}", where=where)
    if os.geteuid() == 0:  # root passes os.access in /proc and /sys too: create there, or fail only at the write
        try:
            fd, probe = tempfile.mkstemp(prefix=".qtool-probe.", dir=folder)
        except OSError as e:
            raise UsageError(f"{flag}: cannot write in {folder}: {e.strerror}", where=where) from None
        os.close(fd)
        try:  # a folder that takes a new file but refuses its removal (sticky, append-only) leaves the probe behind
            os.unlink(probe)
        except OSError as e:
            raise UsageError(f"{flag}: cannot write in {folder}: it keeps files once made ({e.strerror})",
                             where=where) from None  # fmt: skip


def check_output_folder(path: str | os.PathLike[str], flag: str = "-o") -> None:
    """An output folder must be a folder, or be creatable (its nearest existing ancestor a writable folder)."""
    _refuse_unexpanded(Path(path), flag, folder=True)
    folder = Path(os.path.realpath(path))
    try:
        is_file = folder.exists() and not folder.is_dir()
    except OSError as e:  # ENAMETOOLONG
        raise UsageError(f"{flag}: cannot write it: {e.strerror or e}", where=str(path)[:160]) from None
    if is_file:
        raise UsageError(f"{flag}: is a file, expected a folder", where=str(path))
    try:  # the same ancestor and permission checks as a file in it
        resolve_output(folder / "probe", flag)
    except UsageError as e:  # named as given: the user never wrote 'out/probe'
        raise UsageError(e.message, where=str(path)[:160], hint=e.hint) from None


class Transaction:
    """Inputs (to protect) and outputs (staged as temporaries) of one command."""

    def __init__(self) -> None:
        self._inputs: dict[tuple[int, int], str] = {}  # file identity -> the flag that named it
        self._outputs: dict[Path, str] = {}  # real target path -> the flag that named it
        self._existing: dict[tuple[int, int], tuple[Path, str]] = {}  # identity of an output that exists -> it
        self._staged: dict[Path, Path] = {}  # real target -> its written temporary
        self._created: list[Path] = []  # folders this command made, outermost first
        self._locks: dict[Path, int] = {}  # temporary -> the descriptor holding its flock (io/staging.py)
        self._backups: dict[Path, tuple[Path, int]] = {}  # real target -> its previous file's link, locked

    def add_input(self, flag: str, path: str | os.PathLike[str] | None) -> None:
        """Protect `path` (if it exists) from every output of this command."""
        if path is None or not str(path):
            return
        try:
            identity = _identity(os.stat(path))
        except (OSError, ValueError):  # ValueError: a NUL byte in the name
            return  # a missing input is reported by whoever reads it
        self._inputs.setdefault(identity, flag)
        if identity in self._existing:  # an input_list can name thousands of files: one lookup each
            target, out_flag = self._existing[identity]
            raise UsageError(f"{out_flag} {target} is the same file as {flag} {path}; refusing to overwrite it")

    def add_inputs(self, flag: str, paths: Iterable[str | os.PathLike[str]]) -> None:
        for path in paths:
            self.add_input(flag, path)

    def add_output(self, flag: str, path: str | os.PathLike[str] | None, implicit: bool = False) -> Path | None:
        """Check `path` as an output of this command now, before any work; returns its real target.
        `implicit`: a file written without a flag of its own (an export format's file) may be one declared."""
        if path is None:
            return None
        target = resolve_output(path, flag)
        self._refuse_nesting(target, flag, path)
        if target in self._outputs:
            other = self._outputs[target]
            if other != flag and not implicit:
                raise UsageError(f"{flag} and {other} name the same file {path}", where=str(path))
            return target
        if target.exists():
            identity = _identity(os.stat(target))
            if identity in self._inputs:
                raise UsageError(
                    f"{' '.join(dict.fromkeys([flag, str(path)]))} is the same file as {self._inputs[identity]}; "
                    "refusing to overwrite an input"  # an export's file is its own flag: named once
                )
            if identity in self._existing:
                raise UsageError(f"{flag} and {self._existing[identity][1]} name the same file {path}", where=str(path))
            self._existing[identity] = (target, flag)
        self._outputs[target] = flag
        return target

    def _refuse_nesting(self, target: Path, flag: str, path: str | os.PathLike[str]) -> None:
        """An output under another (-o d/q.onnx --html d/q.onnx/r.html): one would need the other's file for a
        folder, and the write failed late as a bare 'Is a directory'."""
        for output, other in self._outputs.items():
            if output in target.parents or target in output.parents:
                inner, outer = (flag, path), (other, output)
                if target in output.parents:
                    inner, outer = outer, inner
                raise UsageError(f"{' '.join(map(str, inner))} lies under {' '.join(map(str, outer))}, a file this "
                                 "command writes", hint="give them separate paths")  # fmt: skip

    @contextlib.contextmanager
    def stage(self, path: str | os.PathLike[str], mode: str = "wb", flag: str | None = None) -> Iterator[IO]:
        """A file object for `path`'s temporary; it is renamed into place only by `commit`."""
        target = self.add_output(flag or str(path), path, implicit=flag is None)
        assert target is not None
        self._make_folder(target.parent, str(path))
        name = os.fsdecode(os.fsencode(target.name)[:_TEMP_NAME_BYTES]).rstrip("\udcff") or "out"
        staging.sweep(target.parent, name, {*self._inputs, *self._existing})  # a killed run's; not an input or output
        try:
            fd, tmp, lock = staging.create(target.parent, name)
        except OSError as e:
            raise UsageError(f"cannot write: {e.strerror}", where=str(path)) from e
        self._locks[tmp] = lock
        try:
            try:
                with os.fdopen(fd, mode) as handle:
                    yield handle
                os.chmod(tmp, 0o666 & ~_umask())
            except OSError as e:  # a full disk, a quota: the write (or its final flush) failed
                raise UsageError(f"cannot write: {e.strerror or e}", where=str(path)) from e
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            staging.release(self._locks.pop(tmp))
            raise
        previous = self._staged.pop(target, None)
        if previous is not None:  # written twice in one command: the last one counts
            with contextlib.suppress(OSError):
                os.unlink(previous)
            staging.release(self._locks.pop(previous))
        self._staged[target] = tmp

    def _make_folder(self, folder: Path, where: str) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise UsageError(f"cannot create folder {made}: {e.strerror}", where=where) from e
            self._created.append(made)

    def commit(self) -> None:
        """Rename every temporary onto its target, the folders locked against another run's renames (two runs
        writing one -o at once interleaved a model and the other's encodings); on any failure undo them, putting
        back the files they replaced (each kept as a hard link until every rename is done)."""
        with folders_locked(target.parent for target in self._staged):
            try:
                for target, tmp in list(self._staged.items()):
                    saved = staging.backup(target, tmp)
                    if saved is not None:
                        self._backups[target] = saved
                    os.replace(tmp, target)
            except BaseException as e:
                self.abort()  # still locked: the outputs it removes are this run's, not another's since
                if isinstance(e, OSError):  # the folder removed or replaced under the run: it was an internal error
                    raise UsageError(f"cannot write: {e.strerror or e}", where=str(target)) from e
                raise
            staging.drop(self._backups.values())
        staging.release(*self._locks.values())
        self._staged.clear()
        self._created.clear()
        self._backups.clear()
        self._locks.clear()
        on_committed()

    def abort(self) -> None:
        """Remove every temporary and every folder created; put back each file an output replaced (or remove the
        output, if it had none)."""
        with _signals_blocked():
            for target, tmp in self._staged.items():
                staging.put_back(target, tmp, self._backups.pop(target, None), self._locks[tmp])
            staging.release(*self._locks.values())
            self._locks.clear()
            self._staged.clear()
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            self._created.clear()


def _nothing() -> None:
    pass


# Called once every output of a command is in place. The command-line entry point ignores the end signals then
# (qtool/__main__.py): past that point a signal could only make a finished run exit as an interrupted one (130,
# or killed by SIGTERM in the interpreter's shutdown, every output written). A library caller keeps its signals.
on_committed: Callable[[], None] = _nothing


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    except (AttributeError, OSError, ValueError):  # not the main thread, or no pthread_sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def command(
    inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
    outputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
) -> Iterator[Transaction]:
    """The transaction of one command: every output is checked here, before any work."""
    tx = Transaction()
    for flag, path in inputs:
        tx.add_input(flag, path)
    for flag, path in outputs:
        tx.add_output(flag, path)
    token = _current.set(tx)
    try:
        yield tx
        tx.commit()
    except BaseException:
        tx.abort()
        raise
    finally:
        _current.reset(token)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file object for `path`: staged in the running command, else committed on its own."""
    tx = _current.get()
    if tx is not None:
        with tx.stage(path, mode) as handle:
            yield handle
        return
    with command() as own, own.stage(path, mode) as handle:
        yield handle


def write_text(path: str | os.PathLike[str], text: str | Iterable[str]) -> None:
    """`text`, or its pieces one after another (encodings.json_pieces: not the whole file in memory)."""
    with atomic_write(path, "w") as handle:
        handle.writelines([text] if isinstance(text, str) else text)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

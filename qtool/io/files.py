"""Bounded reads of the files a user names: regular files only, a size cap, bounded JSON nesting.

A FIFO, device or socket is "not a regular file" (reading one could block forever or never end);
a text input over `read_limit()` bytes (64 MiB, `QTOOL_MAX_READ_BYTES` raises it) is refused from
its `stat` size before a byte is read. Writes live in `qtool.io.outputs`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shlex
import stat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qtool.errors import DataError, QtoolError, UsageError
from qtool.io.outputs import atomic_write, file_kind, write_text

__all__ = [
    "atomic_write", "check_regular", "clipped", "env_bytes", "line_of", "lines", "load_json", "quoted", "read_bytes",
    "read_limit", "read_text", "write_text",
]  # fmt: skip

READ_LIMIT_ENV = "QTOOL_MAX_READ_BYTES"
DEFAULT_READ_LIMIT = 64 << 20
MAX_JSON_DEPTH = 64  # AIMET 2.0.0 nests 4 deep; nothing qtool reads needs more
QUOTE_LIMIT = 160  # characters of user text (a line, a name, a path) an error message repeats
# The line ends every editor shows: str.splitlines also breaks at \f, \v, \x1c-\x1e, \x85, \u2028 and \u2029, and
# PyYAML at the last three, so a line number in an error disagreed with the editor's after one of them.
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lines(text: str) -> list[str]:
    """`text` split at its line ends only (a final line end starts no line), as an editor numbers them."""
    parts = LINE_BREAK.split(text)
    return parts[:-1] if parts[-1] == "" else parts


def line_of(text: str, index: int) -> int:
    """The 1-based line, as an editor numbers it, of the character at `index`."""
    return len(LINE_BREAK.findall(text, 0, index)) + 1


def clipped(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to at most `limit` characters: a hostile file's line or tensor name may run to megabytes, and
    an error must stay one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clipped_path(path: str, limit: int = QUOTE_LIMIT) -> str:
    """`path` cut at its start to at most `limit` characters: its file name, what tells two files apart, is kept
    (cut at 80 from the end, the '-q' and '--config' refusals showed an 81-character path as '.../shard_acts....')."""
    return path if len(path) <= limit else "..." + path[len(path) - limit + 3 :]


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text`'s repr for a message, cut short (the repr of a cut copy: a 10 MB line is never repr'd whole)."""
    return clipped(repr(text if len(text) <= limit else text[:limit]), limit)


def env_bytes(name: str, default: int, minimum: int = 0, unit: str = "bytes") -> int:
    """A count of `unit` from the environment variable `name` (else `default`); a bad one is a usage error."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UsageError(f"{name}={text!r} must be a number of {unit}, at least {minimum}")
    return value


def read_limit() -> int:
    return env_bytes(READ_LIMIT_ENV, DEFAULT_READ_LIMIT, minimum=1)


def check_regular(
    path: str | os.PathLike[str], what: str = "file", error: type[QtoolError] = DataError, where: str | None = None
) -> os.stat_result:
    """`path`'s stat (links followed) if it is a regular file; else an error naming it and what it is."""
    where, what = clipped(str(path) if where is None else where), clipped(what)
    try:
        st = os.stat(path)
    except FileNotFoundError as e:  # '~/l.txt' from a config, or after '=', which no shell expanded; '-i=m.onnx'
        meant = os.path.expanduser(path) if str(path).startswith("~") else str(path)[1:] if str(path)[:1] == "=" else ""
        hint = ("~ is the shell's" if str(path).startswith("~") else
                "a one-letter flag's value follows a space ('-l=x' is '=x')")  # fmt: skip
        raise error(f"{what} not found", where=where, hint=f"{hint}: {meant} exists" if meant and
                    os.path.exists(meant) else _joined_by_commas(str(path), what)) from e  # fmt: skip
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", where=where) from e
    except ValueError as e:  # a NUL byte, which no file name holds
        what, where = (text.replace("\0", "\\0") for text in (what, where))  # shown, not sent to the terminal
        raise error(f"cannot read {what}: its name has a NUL byte", where=where) from e
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} is a folder, expected a file", where=where)
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} is not a regular file ({file_kind(st.st_mode)})", where=where)
    return st


def _joined_by_commas(path: str, what: str) -> str | None:
    """'-l a.txt,b.txt': files that exist, joined as some users join qairt's list files; None where they are not."""
    parts = path.split(",")
    if len(parts) < 2 or not all(os.path.isfile(p) for p in parts):
        return None
    # beside the first (its entries may resolve against it), under a name no file has: 'cat a.txt joined.txt >
    # joined.txt', the hint followed, would empty a list given as a part
    names = (os.path.join(os.path.dirname(parts[0]), f"joined{k or ''}.txt") for k in itertools.count())
    joined = next(name for name in names if not os.path.lexists(name))
    writes = [_as_joined(part, os.path.dirname(joined)) for part in parts]
    command = (f"cat {' '.join(map(shlex.quote, parts))}" if all(w.startswith("cat ") for w in writes) else
               f"{{ {'; '.join(writes)}; }}") + f" > {shlex.quote(joined)}"  # a name with a space is one word  # fmt: skip
    join = f": join them into one ({command}) and give that" if "list" in what else ""
    if "list" in what and (odd := next((p for p, w in zip(parts, writes, strict=True) if w.startswith("#")), None)):
        join = (f": join them into one list whose entries name their files from its folder ({odd}'s are relative to "
                f"{quoted(os.path.dirname(odd))}, whose {writes[parts.index(odd)][1:]} no list entry can hold: move "
                "its files, or rename the folder)")
    return f"{what} takes one file, and {', '.join(parts)} are {len(parts)} files joined by commas{join}"


def _as_joined(part: str, there: str) -> str:
    """The command writing list `part` into a joined list in folder `there`: cat, or, where its relative entries
    resolve against its own folder (not the current one, which a list's entries are tried against first), a sed
    writing them against `there` (cat made b/l.txt's 'x0.raw' the joined list's folder's x0.raw: not found)."""
    folder, cat = os.path.dirname(part), f"cat {shlex.quote(part)}"
    prefix = os.path.relpath(folder or ".", there or ".")
    if prefix == ".":
        return cat
    try:
        with open(part, "rb") as handle:  # a sample of its entries: they decide the hint only
            text = handle.read(1 << 16).decode(errors="replace")
    except OSError:
        return cat
    entries = [t.rpartition(":=")[2] for line in text.splitlines()[:1000] if not line.startswith(("#", "%"))
               for t in line.split()]  # fmt: skip
    if not any(not os.path.isabs(e) and not os.path.exists(e) and os.path.exists(os.path.join(folder, e)) for e in entries):
        return cat
    if odd := [c for c in prefix if c.isspace() or not c.isprintable() or c in "#\\&"]:  # '#': no command, why
        return "#" + ("space" if odd[0] == " " else "tab" if odd[0] == "\t" else quoted(odd[0]))
    # name:=path, then bare paths after the line's start or a space or tab, where qtool separates entries
    script = f"s#:=([^/[:blank:]])#:={prefix}/\\1#g; /:=|^[#%]/!s#(^|[[:blank:]])([^/[:blank:]])#\\1{prefix}/\\2#g"
    return f"sed -E {shlex.quote(script)} {shlex.quote(part)}"


def open_regular(path: str | os.PathLike[str], what: str = "file", error: type[QtoolError] = DataError) -> BinaryIO:
    """`path` opened to read, checked on the open descriptor to be a regular file: a file swapped for a FIFO since
    its stat must not hang the open (O_NONBLOCK) nor be read. OSError is the caller's to name."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    handle = os.fdopen(fd, "rb")
    mode = os.fstat(handle.fileno()).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        raise error(f"{what} is not a regular file ({file_kind(mode)})", where=str(path))
    return handle


def read_bytes(
    path: str | os.PathLike[str], what: str = "file", limit: int | None = None, error: type[QtoolError] = DataError
) -> bytes:
    """Read a whole regular file of at most `limit` bytes (default `read_limit()`)."""
    limit = read_limit() if limit is None else limit
    st = check_regular(path, what, error)
    hint = f"set {READ_LIMIT_ENV} to read a larger file"
    if 0 < limit < read_limit():  # a config's cap is a fraction of it (an empty input's .raw file's is 0)
        hint += f"; a {what} may be 1/{read_limit() // limit} of it, {read_limit()} bytes now"
    if st.st_size > limit:
        raise error(f"{what} is {st.st_size} bytes, over the {limit}-byte limit", where=str(path), hint=hint)
    try:
        with open_regular(path, what, error) as handle:
            data = handle.read(min(limit, st.st_size) + 1)  # read(n) allocates n first: not a 100 GB limit's
            while st.st_size < len(data) <= limit and (more := handle.read(min(1 << 20, limit + 1 - len(data)))):
                data += more  # it grew since the stat (or a /proc file, whose size says 0)
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror}", where=str(path)) from e
    if len(data) > limit:  # it grew since the stat
        raise error(f"{what} is over the {limit}-byte limit", where=str(path), hint=hint)
    return data


def read_text(
    path: str | os.PathLike[str], what: str = "file", error: type[QtoolError] = DataError, limit: int | None = None
) -> str:
    data = read_bytes(path, what, limit, error)
    try:
        return data.decode("utf-8-sig")  # Windows editors start UTF-8 files with a byte-order mark
    except UnicodeDecodeError as e:  # Notepad's 'Unicode' and PowerShell 5's '>' write UTF-16 with a byte-order mark
        utf16 = "it is UTF-16 (its byte-order mark): save it as UTF-8" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else None
        raise error(f"{what} is not UTF-8 text (byte {e.start})", where=str(Path(path)), hint=utf16) from e


def load_json(text: str, where: str, prefix: str = "", *, number_arrays: frozenset[str] = frozenset()) -> Any:
    """Decode JSON text nested at most MAX_JSON_DEPTH deep; every failure is a DataError (`prefix` + what). A named
    object's long list of finite numbers under a key of `number_arrays` is a float64 array (`_number_arrays`)."""
    hook = functools.partial(_number_arrays, number_arrays) if number_arrays else _without_duplicates
    try:
        data = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        line = line_of(text, e.pos)  # json counts \n alone: a file with \r line ends was all line 1
        column = e.pos - max(text.rfind("\n", 0, e.pos), text.rfind("\r", 0, e.pos))
        msg = e.msg.removesuffix(" at")  # "Unterminated string starting at" read "...at at line 3"
        raise DataError(f"{prefix}not valid JSON: {msg} at line {line} column {column}", where=where) from e
    except _DuplicateKey as e:
        raise DataError(f"{prefix}key {quoted(e.args[0])} is given twice in one object", where=where) from e
    except ValueError as e:  # an integer past Python's 4300-digit conversion limit
        raise DataError(f"{prefix}not valid JSON: {str(e)[:80]}", where=where) from e
    except RecursionError as e:
        raise DataError(f"{prefix}JSON nested more than {MAX_JSON_DEPTH} levels deep", where=where) from e
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise DataError(f"{prefix}JSON nested more than {MAX_JSON_DEPTH} levels deep", where=where)
    return data


class _DuplicateKey(Exception):
    pass


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys silently; in an encodings file that hides an entry. The dict is
    made in C, and the pairs looked through only where it came out short."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key in (k for k, _ in pairs if k in seen or seen.add(k)):  # type: ignore[func-returns-value]
            raise _DuplicateKey(key)
    return found


NUMBER_ARRAY_FROM = 4096  # numbers in a list made an array: fewer cost less as Python floats than the check


def _number_arrays(keys: frozenset[str], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a "name" (an encodings entry) whose lists of finite numbers (floats and ints, no bools) under
    `keys` are float64 arrays, made as the decoder finishes the object, so that their Python floats go at once: a
    2.35 GB decoder's W4 B32 encodings (18 M block scales and offsets, 478 MB) took 2.5 GB as Python objects."""
    found = _without_duplicates(pairs)
    for key in keys & found.keys() if "name" in found else ():
        value = found[key]
        if type(value) is list and len(value) >= NUMBER_ARRAY_FROM and set(map(type, value)) <= {float, int}:
            with contextlib.suppress(OverflowError), np.errstate(over="ignore"):  # an int past float's: kept a list
                numbers = np.array(value, np.float64)
                if np.isfinite(numbers).all():
                    found[key] = numbers
    return found


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether `data` nests more than `limit` containers deep, walked a level at a time (a stack of (value, depth)
    pairs took 5 s of an encodings file of 10^6 entries)."""
    level = [data] if isinstance(data, dict | list) else []
    for _ in range(limit):  # a list of numbers alone is passed over by its types' set, made in C (18 M block scales)
        level = [c for v in level for items in [v.values() if isinstance(v, dict) else v]
                 if not set(map(type, items)) <= _SCALARS for c in items if isinstance(c, dict | list)]  # fmt: skip
    return bool(level)


_SCALARS = frozenset((float, int, str, bool, type(None)))

"""The QAIRT/QNN `input_list` file (FORMATS.md b.1).

    [#<output_layer_name>[ <output_layer_name>...]]     output directive, must come first
    [%<output_tensor_name>[ <output_tensor_name>...]]   output directive
    <path>[ <path>...]                                  one inference, inputs in model order
    <name>:=<path>[ <name>:=<path>...]                  one inference, inputs by name

`#` and `%` lines are output requests, not comments. A relative path resolves against the
current directory when the file exists there (as qairt does), else against the list's folder.

A list may name millions of samples (64 MiB of `calib/calib_NNN.raw` lines is 3 million): each
line is kept as its resolved path string, shared by the lines naming one file, and its line
number, about 12 bytes a line; `Sample`s and their `Path`s are built when a line is read.
"""

from __future__ import annotations

import os
import re
import unicodedata
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import overload

import numpy as np

from qtool.errors import DataError
from qtool.io.files import lines, quoted, read_text

RESOLVED_CACHE_LIMIT = 1 << 16  # distinct paths whose resolution is remembered (a list repeats a few files)
LINES_A_CHUNK = 1 << 16  # lines split at once: splitlines() of the whole text held 3 million strings at a time
SEPARATORS = " \t\v\f"  # C's isspace, as qnn-net-run splits a line: str.split() also cut at U+00A0, U+3000...
_ENTRY = re.compile(f"[^{SEPARATORS}]+")
_OTHER_SPACE = re.compile(f"[^\\S{SEPARATORS}]")  # whitespace to str.split(), a path's character to qairt


@dataclass(frozen=True, slots=True)
class Sample:
    """One inference: input files keyed by input name, or by position for positional lines."""

    source: str  # the list's path, for messages
    line: int
    paths: tuple[str, ...]  # resolved, in line order
    names: tuple[str, ...] = ()  # the input names of a <name>:=<path> line; () for bare paths

    @property
    def where(self) -> str:
        """The line for error messages: "input_list.txt:7"."""
        return f"{self.source}:{self.line}"

    @property
    def named(self) -> dict[str, Path]:
        if not self.names:
            return {}
        return {name: Path(p) for name, p in zip(self.names, self.paths, strict=True)}

    @property
    def positional(self) -> tuple[Path, ...]:
        return () if self.names else tuple(Path(p) for p in self.paths)


class SampleLines(Sequence[Sample]):
    """The samples of one list, stored lean: a line naming one bare path keeps only that path (a shared string)
    and its line number; any other line keeps its whole `Sample`."""

    __slots__ = ("_entries", "_lines", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._lines = array("Q")
        self._entries: list[str | Sample] = []

    def append(self, sample: Sample) -> None:
        single = not sample.names and len(sample.paths) == 1
        self._entries.append(sample.paths[0] if single else sample)
        self._lines.append(sample.line)

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Sample, ...]: ...
    def __getitem__(self, index: int | slice) -> Sample | tuple[Sample, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        entry = self._entries[index]
        return entry if isinstance(entry, Sample) else Sample(self._source, self._lines[index], (entry,))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def keys(self) -> Iterator[object]:
        """Each line's files (and input names): equal for two lines naming the same inputs."""
        return (entry if isinstance(entry, str) else (entry.paths, entry.names) for entry in self._entries)

    def path_strings(self) -> Iterator[str]:
        for entry in self._entries:
            yield from (entry.paths if isinstance(entry, Sample) else (entry,))


@dataclass(frozen=True)
class InputList:
    path: Path
    samples: Sequence[Sample]
    output_layers: tuple[str, ...] = ()
    output_tensors: tuple[str, ...] = ()
    # "#name" / "%name" -> the line that asked for it, for the model check (api/common.check_output_names)
    directive_lines: dict[str, int] = field(default_factory=dict, compare=False)
    # the files a float64-looking warning named: once per run, however many passes (auto's trials, bc) read them;
    # a subset of the list (dataclasses.replace) shares it
    warned: set[str] = field(default_factory=set, compare=False, repr=False)
    identities: dict[str, object] = field(default_factory=dict, compare=False, repr=False)  # path -> `_identity`

    def files(self) -> list[Path]:
        """Every data file the list names, once each."""
        samples = self.samples
        named = samples.path_strings() if isinstance(samples, SampleLines) else (p for s in samples for p in s.paths)
        return [Path(p) for p in dict.fromkeys(named)]

    def _identity(self, path: str) -> object:
        """One file however the list spells it ('x.raw', './x.raw', '/data/x.raw', a symlink or a hard link to it):
        its device and inode, else its absolute path. Strings told them apart: repeats went unwarned, auto's
        held-out half held the calibration half's files, and an --eval_list of absolute paths passed as held out."""
        found = self.identities.get(path)
        if found is None:
            try:
                ino, dev = os.stat(path)[1:3]
            except (OSError, ValueError):  # missing, or a NUL byte in it: reading it says so, naming the line
                ino = dev = 0
            # an inode of 0 is none (os.stat: 'if non-zero, uniquely identifies the file'): a filesystem giving every
            # file 0 made every line one sample, and auto held out nothing
            found = (ino, dev) if ino else os.path.abspath(path)
            if len(self.identities) < RESOLVED_CACHE_LIMIT:  # a list of a million files is stat'ed, not held twice
                self.identities[path] = found
        return found

    def sample_key(self, sample: Sample) -> frozenset:
        """The files a sample reads, by `_identity`, in any order ('a.raw b.raw' and 'y:=b.raw x:=a.raw' alike)."""
        return frozenset(map(self._identity, sample.paths))

    @cached_property  # once for `distinct` and `repeats`: each line's files are stat'ed (200,000 lines: 1.6 s a time)
    def _hashes(self) -> np.ndarray:
        """Each line's files (and input names), hashed: a list may have millions of lines."""
        samples = self.samples
        keys = samples.keys() if isinstance(samples, SampleLines) else ((s.paths, s.names) for s in samples)
        ids = ((self._identity(k),) if isinstance(k, str) else (tuple(map(self._identity, k[0])), k[1]) for k in keys)
        return np.fromiter(map(hash, ids), np.int64, len(samples))

    @cached_property
    def distinct(self) -> list[int]:
        """The index of each line that names files no line before it named, in order."""
        return sorted(np.unique(self._hashes, return_index=True)[1].tolist())

    def repeats(self) -> tuple[int, int, int]:
        """How many lines name the files an earlier line named, the first such line and the line it repeats; (0, 0, 0)
        for none. Hashes sorted, not a set of the lines."""
        samples, hashes = self.samples, self._hashes
        order = np.argsort(hashes, kind="stable")
        later = order[1:][hashes[order][1:] == hashes[order][:-1]]  # stable: each repeat after the line it repeats
        if not len(later):
            return 0, 0, 0
        first = int(later.min())
        return len(later), samples[first].line, samples[int(np.argmax(hashes == hashes[first]))].line


class _Resolver:
    """Relative paths resolved against the current directory or the list's folder, each distinct one once; a
    symlinked list's entries written against its target's folder are found there (they were 'not found')."""

    def __init__(self, folder: Path, target: Path | None = None) -> None:
        self.folder, self.target = folder, target
        self.known: dict[str, str] = {}

    def __call__(self, token: str) -> str:
        resolved = self.known.get(token)
        if resolved is None:
            resolved = str(self._resolve(token))
            if len(self.known) < RESOLVED_CACHE_LIMIT:
                self.known[token] = resolved
        return resolved

    def _resolve(self, token: str) -> Path:
        path = Path(token)
        try:
            here = path.is_absolute() or path.exists()
        except OSError:  # a name too long for the filesystem: reading it reports that, naming the line
            here = True
        if here:
            return path
        beside = self.folder / path
        there = self.target / path if self.target is not None and not os.path.lexists(beside) else None
        return there if there is not None and os.path.lexists(there) else beside


def _parse_sample(text: str, source: str, line: int, resolve: _Resolver) -> Sample:
    where = f"{source}:{line}"
    tokens = _ENTRY.findall(text)
    if space := _OTHER_SPACE.search(text):
        _check_spaced(text, space.start(), resolve, where)
    named: dict[str, str] = {}
    positional: list[str] = []
    for token in tokens:
        name, sep, path = token.partition(":=")
        if (path if sep else token).endswith(("/", "/.")):  # Path() drops it: 'a.raw/' read the file a.raw
            raise DataError(f"{quoted(path if sep else token)} ends with {token[token.rindex('/'):]!r}, a folder's path; "
                            "give a file's", where=where)  # fmt: skip
        if not sep:
            positional.append(resolve(token))
            continue
        if not name or not path:
            raise DataError(f"malformed entry {quoted(token)}, expected <input_name>:=<path>", where=where)
        if name in named:
            raise DataError(f"input {quoted(name)} given twice on one line", where=where)
        named[name] = resolve(path)
    if named and positional:
        raise DataError("mixes <name>:=<path> entries with bare paths; use one style per line", where=where,
                        hint=_spaced_entry(tokens, resolve) or _spaced_name(tokens, resolve))  # fmt: skip
    if named:
        return Sample(source, line, tuple(named.values()), tuple(named))
    return Sample(source, line, tuple(positional))


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) at \n, \r\n and \r as an editor numbers them (`files.lines`; other characters
    str.splitlines breaks at, \f or \u2028, are whitespace inside a line), a chunk of lines at a time: cutting
    the text just after a newline cuts it where the whole text's split would too."""
    lineno, start = 0, 0
    while start < len(text):
        end = start
        for _ in range(LINES_A_CHUNK):
            end = text.find("\n", end) + 1
            if end == 0:
                end = len(text)
                break
        for line in lines(text[start:end]):
            lineno += 1
            yield lineno, line
        start = end


def parse_input_list(text: str, path: Path) -> InputList:
    """Parse the text of an input_list file; `path` is used for messages and relative paths."""
    target = Path(os.path.realpath(path)).parent  # a symlinked list's own folder
    source, resolve = str(path), _Resolver(path.parent, target if target != Path(os.path.realpath(path.parent)) else None)
    layers: list[str] = []
    tensors: list[str] = []
    lines: dict[str, int] = {}
    samples = SampleLines(source)
    for lineno, line in _numbered_lines(text):
        stripped = line.strip(SEPARATORS)
        if not stripped:
            continue
        if stripped[0] in "#%":
            _check_directive_place(stripped[0], bool(samples), bool(tensors), f"{source}:{lineno}")
            words = _ENTRY.findall(stripped, 1)
            (layers if stripped[0] == "#" else tensors).extend(words)
            for word in words:
                lines.setdefault(stripped[0] + word, lineno)
            continue
        samples.append(_parse_sample(line, source, lineno, resolve))
    if not samples:
        raise DataError("no samples: the input_list has no input lines", where=source)
    return InputList(path, samples, tuple(layers), tuple(tensors), lines)


def _check_spaced(text: str, at: int, resolve: _Resolver, where: str) -> None:
    """A U+00A0 (or another character str.split() cuts at) is part of a path, as in qairt's lists: refused, naming
    its column, when the entry holding it names no file (a pasted list's non-breaking space between two entries)."""
    entry = _ENTRY.findall(text, max(text.rfind(c, 0, at) for c in SEPARATORS) + 1)[0]
    if not os.path.exists(resolve(entry.partition(":=")[2] or entry)):
        name = unicodedata.name(text[at], "")
        char = f"U+{ord(text[at]):04X}" + (f" ({name.lower()})" if name else "")
        raise DataError(f"column {at + 1}: {quoted(entry)} holds {char} and names no file; entries are "
                        "separated by ASCII spaces or tabs", where=where)  # fmt: skip


def _spaced_entry(tokens: list[str], resolve: _Resolver) -> str | None:
    """'x:=my file.raw' cut at its space: a named entry's path and the bare words after it naming one file."""
    for k, token in enumerate(tokens[:8]):
        words = [token.partition(":=")[2]] if ":=" in token else []
        for word in tokens[k + 1 : 8] if words else ():
            if ":=" in word:
                break
            words.append(word)
            if os.path.isfile(joined := resolve(" ".join(words))):
                return spaced_hint(joined)
    return None


def _spaced_name(tokens: list[str], resolve: _Resolver) -> str | None:
    """'in put:0:=a.raw' cut at its space: a bare word (no file) before a named entry may start an input name
    holding a space, which no entry can name (it was told to use one style per line)."""
    k = next((k for k, t in enumerate(tokens) if ":=" in t), 0)
    if k == 0 or ":=" in tokens[k - 1] or os.path.isfile(resolve(tokens[k - 1])):
        return None
    name = " ".join([tokens[k - 1], tokens[k].partition(":=")[0]])
    return (f"if {quoted(name)} is one input's name, it holds a space, and the list separates entries at spaces, as "
            "qairt's does: give the line's files as bare paths, in the model's input order")  # fmt: skip


def spaced_hint(path: str) -> str:
    return (f"{quoted(path)} is one file whose name holds a space, and the list separates entries at spaces, as "
            "qairt's does: rename it, or link it under a name without one")  # fmt: skip


def spaced_file(sample: Sample) -> str | None:
    """A file whose name holds a space, which the line's entries cut at it: run ones joined again name it (a
    positional line; the entries after the first keep the list's folder their resolving prefixed)."""
    folder = str(Path(sample.source).parent) + os.sep
    paths = sample.paths[:8]  # a mismatch's message: a few entries are enough to look at
    for start in range(len(paths)):
        for end in range(start + 2, len(paths) + 1):
            joined = " ".join([paths[start], *(p.removeprefix(folder) for p in paths[start + 1 : end])])
            if os.path.isfile(joined):
                return joined
    return None


def _check_directive_place(kind: str, after_samples: bool, after_tensors: bool, where: str) -> None:
    if after_samples:
        raise DataError(
            f"output directive {kind!r} after sample lines; it must come first",
            where=where,
            hint="'#' and '%' request outputs in input_list files, they are not comments",
        )
    if kind == "#" and after_tensors:
        raise DataError("'#' output-layer line must come before the '%' line", where=where)


def read_input_list(path: str | os.PathLike[str], what: str = "input_list") -> InputList:
    """`what`: the file's role in errors about the file itself (--eval_list's is no input_list to the user)."""
    try:
        text = read_text(path, what)
    except DataError as e:  # a folder of samples, or one sample, given where the list of them goes
        folder, sample = os.path.isdir(path), "UTF-8" in e.message and str(path).endswith((".raw", ".npy", ".bin"))
        if e.hint is None and (folder or sample):
            e.hint = (f"{what} is a text file naming one sample's files a line: for the .raw files in that folder, "
                      f"ls {path}/*.raw > list.txt" if folder else f"{what} is a text file naming one sample's files "
                      "a line: write this file's path into one")  # fmt: skip
        raise
    return parse_input_list(text, Path(path))

"""The QAIRT/QNN `input_list` file (FORMATS.md b.1).

    [#<output_layer_name>[ <output_layer_name>...]]     output directive, must come first
    [%<output_tensor_name>[ <output_tensor_name>...]]   output directive
    <path>[ <path>...]                                  one inference, inputs in model order
    <name>:=<path>[ <name>:=<path>...]                  one inference, inputs by name

`#` and `%` lines are output requests, not comments. A relative path resolves against the
current directory when the file exists there (as qairt does), else against the list's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qtool.errors import DataError
from qtool.io.files import read_text


@dataclass(frozen=True)
class Sample:
    """One inference: input files keyed by input name, or by position for positional lines."""

    where: str  # "input_list.txt:7", for error messages
    named: dict[str, Path] = field(default_factory=dict)
    positional: tuple[Path, ...] = ()


@dataclass(frozen=True)
class InputList:
    path: Path
    samples: tuple[Sample, ...]
    output_layers: tuple[str, ...] = ()
    output_tensors: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        """Every data file the list names, once each."""
        return list(dict.fromkeys(p for s in self.samples for p in (*s.positional, *s.named.values())))


def _resolve(token: str, folder: Path) -> Path:
    path = Path(token)
    try:
        here = path.is_absolute() or path.exists()
    except OSError:  # a name too long for the filesystem: reading it reports that, naming the line
        here = True
    return path if here else folder / path


def _parse_sample(tokens: list[str], where: str, folder: Path) -> Sample:
    named: dict[str, Path] = {}
    positional: list[Path] = []
    for token in tokens:
        name, sep, path = token.partition(":=")
        if not sep:
            positional.append(_resolve(token, folder))
            continue
        if not name or not path:
            raise DataError(f"malformed entry {token!r}, expected <input_name>:=<path>", where=where)
        if name in named:
            raise DataError(f"input {name!r} given twice on one line", where=where)
        named[name] = _resolve(path, folder)
    if named and positional:
        raise DataError("mixes <name>:=<path> entries with bare paths; use one style per line", where=where)
    return Sample(where=where, named=named, positional=tuple(positional))


def parse_input_list(text: str, path: Path) -> InputList:
    """Parse the text of an input_list file; `path` is used for messages and relative paths."""
    folder = path.parent
    layers: list[str] = []
    tensors: list[str] = []
    samples: list[Sample] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] in "#%":
            if samples:
                raise DataError(
                    f"output directive {stripped[0]!r} after sample lines; it must come first",
                    where=where,
                    hint="'#' and '%' request outputs in input_list files, they are not comments",
                )
            if stripped[0] == "#" and tensors:
                raise DataError("'#' output-layer line must come before the '%' line", where=where)
            (layers if stripped[0] == "#" else tensors).extend(stripped[1:].split())
            continue
        samples.append(_parse_sample(stripped.split(), where, folder))
    if not samples:
        raise DataError("no samples: the input_list has no input lines", where=str(path))
    return InputList(path, tuple(samples), tuple(layers), tuple(tensors))


def read_input_list(path: str | os.PathLike[str]) -> InputList:
    return parse_input_list(read_text(path, "input_list"), Path(path))

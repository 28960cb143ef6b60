"""Bind an input_list's samples to a model's inputs: yields one feed dict per line, lazily.

Only one sample's tensors exist at a time, so memory does not grow with the list's length.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from qtool.errors import DataError, an_input
from qtool.io.files import quoted
from qtool.io.input_list import InputList, Sample, spaced_file, spaced_hint
from qtool.io.raw import InputSpec, check_file, load_tensor

CHECKED_FILES = 1 << 16  # distinct files check_bindings remembers having checked (a list repeats a few files)


def _check(sample: Sample, specs: list[InputSpec], pinned: Collection[str] = (), defaults: Collection[str] = ()) -> None:
    """The line's files against the model's inputs, by count or by name (no Path built: a list may hold millions);
    `pinned`: the inputs --input_value folds into the model, which a list written for it as given still feeds;
    `defaults`: those a default value (an initializer) makes constants, which it may feed too."""
    by_name = {s.name: s for s in specs}
    if not specs:  # it said "1 file(s) for 0 model input(s) ()" (helper-41)
        raise DataError("the model takes no input data: each of its graph inputs has a default value (an initializer), "
                        "which qtool keeps as a constant", where=sample.where,
                        hint="drop the initializer of an input to feed it from the list")  # fmt: skip
    if not sample.names:
        if len(sample.paths) != len(specs):
            names = ", ".join(by_name)
            extra = pinned and len(sample.paths) == len(specs) + len(pinned)  # a list written for the model as given
            spaced = None if extra else spaced_file(sample)
            raise DataError(
                f"{len(sample.paths)} file(s) for {len(specs)} model input(s) ({names})",
                where=sample.where,
                hint=f"--input_value pins {', '.join(pinned)}: drop its file from each line" if extra else
                spaced_hint(spaced) if spaced else
                "give one file per input, or name them with <input>:=<path>",
            )  # fmt: skip
        return
    for name in sample.names:
        if name in pinned and name not in by_name:
            raise DataError(f"feeds input {quoted(name)}, which --input_value pins: a pinned input is folded into the "
                            "model as a constant", where=sample.where, hint=f"drop {name}:=... from the list")  # fmt: skip
        if name in defaults and name not in by_name:  # it was 'unknown input name' of an input the model declares
            raise DataError(f"feeds input {quoted(name)}, whose default value (an initializer) qtool keeps as a constant",
                            where=sample.where, hint=f"drop {name}:=... from the list, or give it another value with "
                            f"convert's or quantize's --input_value {name} VALUES")  # fmt: skip
        if name not in by_name:
            raise DataError(f"unknown input name {quoted(name)}", where=sample.where, hint=an_input(name, by_name))
    given = set(sample.names)  # a line of 10^4 names searched for each input was quadratic
    missing = [n for n in by_name if n not in given]
    if missing:
        raise DataError(f"no file for model input {missing[0]!r}", where=sample.where)


def _bind(sample: Sample, specs: list[InputSpec]) -> list[tuple[InputSpec, Path]]:
    _check(sample, specs)
    if not sample.names:
        return list(zip(specs, sample.positional, strict=True))
    named = sample.named
    return [(spec, named[spec.name]) for spec in specs]


def check_bindings(input_list: InputList, specs: list[InputSpec], native: bool = False, pinned: Collection[str] = (),
                   *, defaults: Collection[str] = ()) -> None:  # fmt: skip
    """Fail fast, before any inference runs, on a line's name or count mistakes, then on a file a line names that
    is missing or (a .raw) of the wrong size: a typo on line 10^5 was found after calibrating the lines before it.
    Each distinct file is stat'ed once (CHECKED_FILES of them remembered), none is read."""
    for sample in input_list.samples:
        _check(sample, specs, pinned, defaults)
    checked: set[tuple[str, str]] = set()
    for sample in input_list.samples:  # then the files: a name mistake anywhere is reported first
        by_name = {s.name: s for s in specs} if sample.names else {}
        for spec, path in zip([by_name[n] for n in sample.names] or specs, sample.paths, strict=True):
            if (spec.name, path) not in checked:
                try:
                    check_file(Path(path), spec, sample.where, native)
                except DataError as e:  # 'calib\000.raw not found': a list written on Windows
                    if "\\" in path and e.message.endswith("not found") and e.hint is None:
                        fixed = path.replace("\\", "/")
                        e.hint = ("'\\' separates folders on Windows, not here: write the list's paths with '/'"
                                  + (f": {quoted(fixed)} exists" if os.path.isfile(fixed) else ""))  # fmt: skip
                    raise
                if len(checked) < CHECKED_FILES:
                    checked.add((spec.name, path))


def iter_samples(
    input_list: InputList, specs: list[InputSpec], native: bool = False
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(where, feed) per input_list line; `where` ("list.txt:7") names the line in errors."""
    for sample in input_list.samples:
        feed = {spec.name: load_tensor(path, spec, sample.where, native, input_list.warned) for spec, path in _bind(sample, specs)}  # type: ignore[arg-type]
        yield sample.where, feed


def iter_feeds(input_list: InputList, specs: list[InputSpec], native: bool = False) -> Iterator[dict[str, np.ndarray]]:
    return (feed for _, feed in iter_samples(input_list, specs, native))

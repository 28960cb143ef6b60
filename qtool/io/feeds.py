"""Bind an input_list's samples to a model's inputs: yields one feed dict per line, lazily.

Only one sample's tensors exist at a time, so memory does not grow with the list's length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from qtool.errors import DataError, did_you_mean
from qtool.io.input_list import InputList, Sample
from qtool.io.raw import InputSpec, load_tensor


def _bind(sample: Sample, specs: list[InputSpec]) -> list[tuple[InputSpec, object]]:
    by_name = {s.name: s for s in specs}
    if sample.positional:
        if len(sample.positional) != len(specs):
            names = ", ".join(by_name)
            raise DataError(
                f"{len(sample.positional)} file(s) for {len(specs)} model input(s) ({names})",
                where=sample.where,
                hint="give one file per input, or name them with <input>:=<path>",
            )
        return list(zip(specs, sample.positional, strict=True))
    for name in sample.named:
        if name not in by_name:
            raise DataError(f"unknown input name {name!r}", where=sample.where, hint=did_you_mean(name, by_name))
    missing = [n for n in by_name if n not in sample.named]
    if missing:
        raise DataError(f"no file for model input {missing[0]!r}", where=sample.where)
    return [(by_name[n], sample.named[n]) for n in by_name]


def check_bindings(input_list: InputList, specs: list[InputSpec]) -> None:
    """Fail fast on name/count mistakes in any line before any inference runs."""
    for sample in input_list.samples:
        _bind(sample, specs)


def iter_samples(
    input_list: InputList, specs: list[InputSpec], native: bool = False
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(where, feed) per input_list line; `where` ("list.txt:7") names the line in errors."""
    for sample in input_list.samples:
        feed = {spec.name: load_tensor(path, spec, sample.where, native) for spec, path in _bind(sample, specs)}  # type: ignore[arg-type]
        yield sample.where, feed


def iter_feeds(input_list: InputList, specs: list[InputSpec], native: bool = False) -> Iterator[dict[str, np.ndarray]]:
    return (feed for _, feed in iter_samples(input_list, specs, native))

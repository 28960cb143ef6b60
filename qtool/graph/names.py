"""Deterministic fresh names for nodes and tensors a writer adds to a graph."""

from __future__ import annotations

from collections.abc import Iterable


class FreshNames:
    """`fresh("x")` is "x" if the graph does not use it, else "x_1", "x_2"...; always reserved."""

    def __init__(self, taken: Iterable[str]):
        self.taken = set(taken)

    def __call__(self, name: str) -> str:
        candidate, i = name, 0
        while candidate in self.taken:
            i += 1
            candidate = f"{name}_{i}"
        self.taken.add(candidate)
        return candidate


def unused_namespace(names: Iterable[str], base: str = "qtool") -> str:
    """A prefix for the tensors and nodes a probe adds (`ns.flat`, `t.ns_min`) that no name in `names`
    contains: "qtool", else "qtool1", "qtool2"... A valid model may name its own tensors `qtool.flat`."""
    names = list(names)
    namespace, i = base, 0
    while any(f"{namespace}." in n or f".{namespace}_" in n for n in names):
        i += 1
        namespace = f"{base}{i}"
    return namespace

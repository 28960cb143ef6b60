"""Streaming range observers: each folds a batch in and drops it, keeping O(1) state per tensor.

Observers never compute scale or offset (that is `encoding.py`); they only report a range.
`a.merge(b)` equals having observed both streams, so calibration can be split and joined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from qtool.errors import DataError


class Observer(Protocol):
    def update(self, x: np.ndarray) -> None: ...
    def merge(self, other: Observer) -> None: ...
    def range(self) -> tuple[float, float]: ...
    @property
    def count(self) -> int: ...


class MinMax:
    """True range of everything seen (the seed's "tf": "finds the smallest and largest values")."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(
                "NaN or Inf in calibration output",
                where=f"tensor {self.name!r}",
                hint="check the model and the calibration data",
            )
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += 1

    def merge(self, other: MinMax) -> None:  # type: ignore[override]
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.count += other.count

    def range(self) -> tuple[float, float]:
        if not self.count:
            return 0.0, 0.0
        return self.lo, self.hi


OBSERVERS: dict[str, Callable[[str], Observer]] = {
    "min-max": MinMax,
}

"""Results of pure functions of a model's protos, remembered inside `remembered()` and keyed by the protos'
identity (each entry holds its protos, so no id is reused while it lives). Mixed precision writes and loads a
model per trial, all from one float model that does not change during the search: upgrading its opset for the
16-bit Q/DQ, converting its weights to numpy, looking for mask sentinels in them and quantizing them again took
110 of a 422 s search on ddddocr's CTC recogniser.

Arrays come back read-only: a caller that changed one in place would change every later trial's weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")
MEMO_BYTES = 1 << 30  # arrays held at once; the oldest go first (a copy of the model per trial would pile up)
_SCOPES: list[_Memo] = []


class _Memo:
    def __init__(self, budget: int) -> None:
        self.budget, self.held = budget, 0
        self.entries: dict[tuple, tuple[tuple, object, int]] = {}  # key -> (protos held, value, bytes)

    def get(self, kind: str, protos: tuple, compute: Callable[[], T], extra: tuple, latest_only: bool) -> T:
        key = (kind, *map(id, protos), *extra)
        if key in self.entries:
            return self.entries[key][1]  # type: ignore[return-value]
        value = compute()
        if latest_only:
            for old in [k for k in self.entries if k[0] == kind]:
                self._drop(old)
        size = _frozen(value)
        self.entries[key] = (protos, value, size)
        self.held += size
        while self.held > self.budget and len(self.entries) > 1:
            self._drop(next(iter(self.entries)))
        return value

    def _drop(self, key: tuple) -> None:
        self.held -= self.entries.pop(key)[2]


def _frozen(value: object) -> int:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
        return value.nbytes
    return 0


@contextlib.contextmanager
def remembered(budget: int = MEMO_BYTES) -> Iterator[None]:
    """Inside: `remember` keeps what it computes. The protos it is given must not change inside."""
    _SCOPES.append(_Memo(budget))
    try:
        yield
    finally:
        _SCOPES.pop()


def remember(kind: str, protos: tuple, compute: Callable[[], T], *extra: Hashable, latest_only: bool = False) -> T:
    """compute(), or inside `remembered()` what it gave before for the same protos (by identity) and `extra`.
    `latest_only`: one entry of this kind is kept (a whole model, say)."""
    if not _SCOPES:
        return compute()
    return _SCOPES[-1].get(kind, protos, compute, extra, latest_only)

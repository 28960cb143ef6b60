"""The one exception family for mistakes a user can make, and the exit codes they map to.

Exit codes (DESIGN.md): 0 ok, 1 internal error, 2 usage/bad input, 3 model problem, 4 data problem,
5 `qtool inspect` lint findings at or above --fail-on (printed first; the run itself succeeded),
6 `qtool quantize --min_sqnr`: the written model's output SQNR is below the gate (the model is kept),
128 + N ended by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), with no output left behind.
Core modules raise these and never import click; cli.py turns them into one line on stderr.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import ClassVar


class QtoolError(Exception):
    """A problem the user can fix: says where it is and, when we know, how to fix it."""

    exit_code: ClassVar[int] = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(QtoolError):
    exit_code = 2


class ModelError(QtoolError):
    exit_code = 3


class DataError(QtoolError):
    exit_code = 4


class QualityError(QtoolError):
    """`quantize --min_sqnr`: the model was written, but its output SQNR is below the gate (CI)."""

    exit_code = 6


class FindingsError(QtoolError):
    """`inspect --fail-on`: the report was printed; its findings fail the gate (CI)."""

    exit_code = 5


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so every clean-up runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @staticmethod
    def code_of(interrupt: KeyboardInterrupt) -> int:
        """The shell's exit code for a run ended by this signal: 128 + its number (Ctrl-C: 130)."""
        return 128 + (interrupt.signum if isinstance(interrupt, Interrupted) else 2)


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A hint naming the closest known names, as click does for a misspelt option."""
    names = sorted(set(known))
    same_letters = [k for k in names if k.lower() == name.lower()]  # 'X' for 'x': difflib's ratio is 0
    close = same_letters or difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def an_input(name: str, inputs: Iterable[str]) -> str | None:
    """did_you_mean among a model's inputs, else the inputs themselves: '--input_dim input 1,3,224,224' for an
    input called 'image' had no hint at all."""
    names = sorted(set(inputs))
    listed = ", ".join(map(repr, names[:8])) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return did_you_mean(name, names) or (f"the model's inputs: {listed}" if names else None)

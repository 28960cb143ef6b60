"""Lint findings, what a lint sees (`LintContext`), and the report `qtool inspect` returns.

A finding says where (a node or tensor), why it will hurt quantization and what to do; its
severity is one of SEVERITIES. `--fail-on LEVEL` turns findings at or above LEVEL into exit code
5 (`FindingsError`) after the report has been printed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from qtool.errors import FindingsError
from qtool.graph.constant_size import constant_value
from qtool.io.encodings import Encodings
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import Observer
from qtool.report import Report, printable

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    lint: str
    severity: str
    where: str
    why: str
    fix: str


@dataclass
class LintContext:
    """What every lint reads. `model` is the float view: a quantized model's Q/DQ are stripped
    (weights dequantized, `encodings` holds what was removed). `stats` holds a histogram per
    float tensor when calibration data was given (`--input_list`), else it is None."""

    model: onnx.ModelProto
    facts: GraphFacts
    target: str | None = None
    preset: dict[str, Any] = field(default_factory=dict)
    encodings: Encodings | None = None
    stats: dict[str, Observer] | None = None
    wrong_shapes: dict[str, tuple[list, list]] = field(default_factory=dict)  # declared vs computed, by tensor
    written: onnx.ModelProto | None = None  # a quantized model as written (its Q/DQ), which `model` strips

    def constant(self, name: str) -> Any:
        """The value of an initializer or Constant-node output, else None."""
        if name in self.facts.initializers:
            return self.facts.array(name)
        producer = self.facts.producers.get(name)
        return constant_value(producer) if producer is not None else None


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def ordered(findings: list[Finding]) -> list[Finding]:
    """Worst first; the lint registry's order and graph order otherwise (stable sort)."""
    return sorted(findings, key=lambda f: -rank(f.severity))


def _finite(value: Any) -> Any:
    """JSON has no Infinity/NaN: such floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@dataclass
class InspectReport(Report):
    """A Report that also carries lint findings: listed first in text, a `findings` list in JSON."""

    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> str:
        count = Counter(f.severity for f in self.findings)
        return ", ".join(f"{count[s]} {s}" for s in reversed(SEVERITIES))

    def to_dict(self) -> dict[str, Any]:
        return _finite({**super().to_dict(), "findings": [asdict(f) for f in self.findings]})

    def to_text(self) -> str:
        """The verdict first: the findings (a far-from-float warning among them), the outputs' drift and the layer
        ranking, then the facts and the long tables: after a real model's encodings, the drift was line 248 of 303."""
        lines = [self.title, f"lint findings ({self.counts()})" if self.findings else "lint findings: none"]
        for f in self.findings:
            said = [f"  {f.severity:<7}  {f.lint}  {f.where}", f"           why: {f.why}", f"           fix: {f.fix}"]
            lines += map(printable, said)  # names from the model: no terminal escapes
        verdict = [t for t in self.tables if t.title.startswith(("outputs", "layers"))]
        rest = Report("facts", self.facts, [t for t in self.tables if t not in verdict])
        return "\n".join(lines) + Report("", {}, verdict).to_text() + "\n\n" + rest.to_text()

    def check(self, fail_on: str | None) -> None:
        """Raise FindingsError (exit 5) when a finding is at or above `fail_on`."""
        if fail_on is None:
            return
        failing = [f for f in self.findings if rank(f.severity) >= rank(fail_on)]
        if failing:
            raise FindingsError(f"{len(failing)} lint finding(s) at or above {fail_on!r} (--fail-on {fail_on})")

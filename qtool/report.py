"""The Report every command returns: printed as a short text screen, or as one JSON object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def printable(text: str) -> str:
    """`text` with control and format characters escaped (ESC as \\x1b, a newline as \\n, U+202E as \\u202e):
    tensor names, node names and paths come from the model's or the list's author, and a terminal runs the
    escape sequences it prints (a title change, a cleared screen) and shows bidi overrides reversed."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(value: Any) -> str:
    if value is None:  # nothing to measure (JSON's null)
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(str(value))


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Report:
    title: str
    facts: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        tables = {t.title: [dict(zip(t.headers, row, strict=True)) for row in t.rows] for t in self.tables}
        return {"command": self.title, **self.facts, **tables}

    def to_text(self) -> str:
        width = max((len(k) for k in self.facts), default=0)
        lines = [self.title]
        lines += [f"  {k.ljust(width)}  {_cell(v)}" for k, v in self.facts.items()]
        for table in self.tables:
            lines += ["", table.title, format_table(table.headers, table.rows)]
        return "\n".join(lines)

    def render(self, as_json: bool) -> str:
        if as_json:
            return json.dumps(self.to_dict(), sort_keys=False, default=_cell)
        return self.to_text()

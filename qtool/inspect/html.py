"""`inspect --html`: the whole report as ONE self-contained HTML page.

Inline CSS and an inline SVG bar chart (accumulated SQNR per layer in graph order; the worst
ranked layers highlighted), then the lint findings and every table of the report. No script,
no external reference of any kind (the SVG is inline HTML5, so it needs no xmlns URL), so the
file opens anywhere and can be archived as a CI artefact.
"""

from __future__ import annotations

import math
from typing import Any

from qtool.inspect.findings import InspectReport
from qtool.inspect.layers import CLEAN_DB, LayerRow
from qtool.report import Table

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.error td:first-child{background:#f8d0d0}tr.warning td:first-child{background:#fbe6c2}
tr.info td:first-child{background:#e3ecf7}tr.worst td{background:#fde2e2}
.muted{color:#777}svg text{font:11px system-ui,sans-serif}p.warn{background:#fbe6c2;padding:6px 10px}
"""

_ROW_H, _LABEL_W, _BAR_W = 18, 320, 520

_COLORS = {1: "#d62728", 2: "#ff7f0e", 3: "#ff7f0e"}


def escape(text: str) -> str:
    """html.escape, imported when a page is written: the html package loads html.entities' tables (1 MB of a
    quantize's peak RSS, which imports this module for --html alone)."""
    from html import escape as html_escape

    return html_escape(text)


def _cell(value: Any) -> str:
    if value is None:  # nothing to measure
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    return escape(str(value))


def _table(table: Table, worst: str | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        cls = ' class="worst"' if worst is not None and worst in row else ""
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if isinstance(v, int | float) else f"<td>{_cell(v)}</td>" for v in row
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<h2>{escape(table.title)}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _findings(report: InspectReport) -> str:
    if not report.findings:
        return '<h2>lint findings</h2><p class="muted">none</p>'
    rows = "".join(
        f'<tr class="{f.severity}"><td>{f.severity}</td><td>{escape(f.lint)}</td><td>{escape(f.where)}</td>'
        f"<td>{escape(f.why)}</td><td>{escape(f.fix)}</td></tr>"
        for f in report.findings
    )
    head = "<tr><th>severity</th><th>lint</th><th>where</th><th>why</th><th>fix</th></tr>"
    return f"<h2>lint findings ({escape(report.counts())})</h2><table>{head}{rows}</table>"


def _scale_max(rows: list[LayerRow]) -> float:
    finite = [r.accumulated_db for r in rows if math.isfinite(r.accumulated_db)]
    return float(min(max(60, math.ceil(max(finite, default=0) / 10) * 10), 120))


def _bar(row: LayerRow, y: int, top: float) -> str:
    db = row.accumulated_db if math.isfinite(row.accumulated_db) else (top if row.accumulated_db > 0 else 0.0)
    width = max(0.0, min(db, top)) / top * _BAR_W
    color = _COLORS.get(row.rank, "#e6a23c" if row.added_db < CLEAN_DB else "#4c78a8")
    label = row.tensor if len(row.tensor) <= 48 else "..." + row.tensor[-45:]
    tip = f"#{row.rank} {row.tensor} ({row.op}): accumulated {_cell(row.accumulated_db)} dB, added {_cell(row.added_db)} dB"
    return (
        f'<g><title>{escape(tip)}</title><text x="{_LABEL_W - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
        f'<rect x="{_LABEL_W}" y="{y + 3}" width="{width:.1f}" height="{_ROW_H - 5}" fill="{color}"/>'
        f'<text x="{_LABEL_W + width + 4:.1f}" y="{y + 13}">{_cell(row.accumulated_db)} dB'
        f"{' (#' + str(row.rank) + ')' if row.rank <= 3 else ''}</text></g>"
    )


def chart(rows: list[LayerRow]) -> str:
    """Horizontal bars, one per probed tensor in graph order; the three worst-ranked in red/orange."""
    top = _scale_max(rows)
    ordered = sorted(rows, key=lambda r: r.order)
    height = _ROW_H * len(ordered) + 24
    grid = "".join(
        f'<line x1="{_LABEL_W + t / top * _BAR_W:.1f}" y1="0" x2="{_LABEL_W + t / top * _BAR_W:.1f}" '
        f'y2="{height - 20}" stroke="#ddd"/><text x="{_LABEL_W + t / top * _BAR_W:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{t} dB</text>'
        for t in range(0, int(top) + 1, 10)
    )
    bars = "".join(_bar(row, i * _ROW_H, top) for i, row in enumerate(ordered))
    width = _LABEL_W + _BAR_W + 120
    return (
        "<h2>accumulated SQNR per layer (graph order; higher is better)</h2>"
        f'<p class="muted">red: the worst layer by added error (#1); orange: #2 and #3; amber: adds noise '
        f"less than {CLEAN_DB:g} dB below its signal; blue: fine. Hover a bar for details.</p>"
        f'<svg width="{width}" height="{height}" role="img" aria-label="per-layer SQNR">{grid}{bars}</svg>'
    )


def render(report: InspectReport, rows: list[LayerRow] | None = None) -> str:
    facts = "".join(f"<tr><th>{escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in report.facts.items())
    worst = rows[0].tensor if rows else None
    parts = [
        f"<h1>{escape(report.title)}: {escape(str(report.facts.get('model', '')))}</h1>",
        f"<table>{facts}</table>",
    ]
    # the verdict first: after the facts tables, a real model's encodings (hundreds of rows) buried it
    drift = [t for t in report.tables if t.title.startswith("outputs")]
    parts += [_table(t) for t in drift]
    parts.append(_findings(report))
    if rows:
        parts.append(chart(rows))
    parts += [_table(t, worst if t.title.startswith("layers") else None) for t in report.tables if t not in drift]
    body = "\n".join(parts)
    title = escape(f"{report.title} {report.facts.get('model', '')}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def pareto_chart(points: list[dict]) -> str:
    """`quantize --mixed_precision auto --html`: cost factor (x) against output SQNR (y), one dot
    per evaluated choice of 16-bit layers, joined in order of cost."""
    if not points:
        return ""
    width, height, pad = 640, 320, 48
    xs = [p["cost_factor"] for p in points]
    ys = [p["sqnr_db"] for p in points if math.isfinite(p["sqnr_db"])] or [0.0]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)

    def at(p: dict) -> tuple[float, float]:
        y = p["sqnr_db"] if math.isfinite(p["sqnr_db"]) else y1
        return pad + (p["cost_factor"] - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (y - y0) / (y1 - y0) * (
            height - 2 * pad
        )

    ordered = sorted(points, key=lambda p: p["cost_factor"])
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(at, ordered))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f77b4"><title>{p["layers_16bit"]} layers, '
        f'{p["macs_16bit_pct"]}% MACs 16-bit</title></circle><text x="{x + 6:.1f}" y="{y - 6:.1f}">{p["layers_16bit"]}</text>'
        for p, (x, y) in zip(ordered, map(at, ordered), strict=True)
    )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>'
        f'<text x="{width / 2 - 60}" y="{height - 12}">cost factor ({x0:.3g} - {x1:.3g})</text>'
        f'<text x="4" y="{pad - 12}">SQNR dB ({y0:.3g} - {y1:.3g})</text>'
    )
    return (
        f'<h2>pareto: cost vs accuracy</h2><svg width="{width}" height="{height}">{axes}'
        f'<polyline points="{line}" fill="none" stroke="#1f77b4"/>{dots}</svg>'
    )


def render_report(report: Any, svg: str = "") -> str:
    """Any command's Report as one self-contained page, with an optional inline SVG; the verdict first, as `render`
    has it: quantize's quality warning and output drift came after 16 facts and a paragraph of algorithms."""
    quality = report.facts.get("quality")
    facts = "".join(f"<tr><th>{escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in report.facts.items()
                    if k != "quality")  # fmt: skip
    drift = [t for t in report.tables if t.title.startswith("outputs")]
    output = f": {report.facts['output']}" if "output" in report.facts else ""
    body = "\n".join([f"<h1>{escape(report.title + output)}</h1>", f'<p class="warn">{escape(quality)}</p>' if quality
                      else "", *(_table(t) for t in drift), f"<table>{facts}</table>", svg,
                      *(_table(t) for t in report.tables if t not in drift)])  # fmt: skip
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(report.title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )

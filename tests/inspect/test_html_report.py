"""quantize --html: the verdict first. The page put the quality warning (a row of the facts) and the outputs' drift
after 16 facts and a paragraph of algorithms, below the fold of a screen."""

from __future__ import annotations

from qtool.inspect.html import render_report
from qtool.report import Report, Table


def _report(quality: str | None) -> Report:
    facts = {"input": "m.conv.onnx", "algorithms": "calibration auto: min-max ...", "output": "q/m.onnx", "seconds": 4.3}
    if quality:
        facts["quality"] = quality
    return Report("qtool quantize", facts, [Table("outputs (float vs quantized)", ["output", "sqnr_db"], [["y", 2.04]]),
                                            Table("16-bit layers", ["tensor"], [["t"]])])  # fmt: skip


def test_the_quality_warning_and_the_drift_come_before_the_facts() -> None:
    page = render_report(_report("the quantized model is far from the float one (output SQNR 2.04 dB)"))
    order = [page.index(s) for s in ("<h1>qtool quantize: q/m.onnx</h1>", '<p class="warn">the quantized model is far',
                                     "<h2>outputs (float vs quantized)</h2>", "<th>input</th>", "<h2>16-bit layers</h2>")]
    assert order == sorted(order), order
    assert "<th>quality</th>" not in page  # said once, at the top


def test_without_a_warning_the_drift_leads() -> None:
    page = render_report(_report(None))
    assert 'class="warn"' not in page and page.index("<h2>outputs") < page.index("<th>input</th>")

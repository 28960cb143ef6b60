"""The whole ONNX backend node suite through `qtool quantize` (issue 21): counts of each outcome.

    .venv/bin/python bench/node_suite.py            # ~1 min on 2 cores; prints a table, writes bench/node_suite.json

`make test` runs a fixed sample of the same cases (tests/cli/test_node_suite.py); tests/node_cases.py
says what each outcome means.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from node_cases import float_cases, run_case, runs_in_onnxruntime  # noqa: E402


def main() -> None:
    logging.disable(logging.CRITICAL)
    started = time.perf_counter()
    cases = float_cases()
    runnable = [c for c in cases if runs_in_onnxruntime(c)]
    outcomes = [run_case(c) for c in runnable]
    counts = collections.Counter(o.kind for o in outcomes)
    seconds = time.perf_counter() - started
    print(f"{len(cases)} float-input cases, {len(runnable)} run in onnxruntime as float; {seconds:.0f} s")
    for kind in ("ok", "refused", "internal", "invalid"):
        print(f"  {kind:9s} {counts.get(kind, 0)}")
    for o in outcomes:
        if o.kind != "ok":
            print(f"  {o.kind}: {o.name}: {o.detail[:160]}")
    doc = {"cases": len(cases), "runnable": len(runnable), "counts": dict(counts), "seconds": round(seconds, 1),
           "not_ok": [o.__dict__ for o in outcomes if o.kind != "ok"]}  # fmt: skip
    (BENCH / "node_suite.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()

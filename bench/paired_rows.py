"""Two zoo rows of one model compared page by page, from the per-sample energies results.json keeps.

    .venv/bin/python bench/paired_rows.py uvdoc qtool:w8a8 ort:pre [--first 24] [--results bench/results.json]

A pooled SQNR is one number over the validation list, and one input can hold most of a row's noise (UVDoc's page 7,
hey_jarvis's window 724). This prints, for the output that decides each row's SQNR (the worst pooled one), both rows'
pooled SQNR, the median of the per-sample differences (A minus B, dB), on how many samples each leads, the sample
holding the largest share of each row's noise, and zoo_suite.delta_interval's 95% paired bootstrap of A minus B.
--first N scores the list's first N samples only (a list extended by one generator keeps its old one as a prefix).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_suite import delta_interval


def _row(rows: list[dict], model: str, kind: str, first: int | None) -> SimpleNamespace:
    found = [r for r in rows if r.get("model") == model and r.get("kind") == kind]
    if not found or not any(o.get("samples") for o in (found[0].get("metrics", {}).get("outputs") or {}).values()):
        sys.exit(f"{model} {kind}: no row with per-sample energies in the results file")
    outputs = {
        n: {"samples": o["samples"][:first]} for n, o in found[0]["metrics"]["outputs"].items() if o.get("samples")
    }
    return SimpleNamespace(metrics={"outputs": outputs}, variant=found[0]["variant"], commit=found[0].get("commit"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("a", help="row kind, e.g. qtool:w8a8")
    parser.add_argument("b", help="row kind, e.g. ort:pre")
    parser.add_argument("--first", type=int, help="only the first N validation samples")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent / "results.json"))
    args = parser.parse_args()
    if args.first is not None and args.first < 1:  # 0 scored no sample: a division by zero, -1 all but the last
        sys.exit(f"paired_rows.py: --first {args.first}: the number of samples to score, 1 or more")
    try:
        rows = json.loads(Path(args.results).read_text())["suites"]["zoo"]
    except (OSError, ValueError, KeyError, TypeError) as e:  # a wrong path or file: one line, not a traceback
        sys.exit(f"paired_rows.py: {args.results}: no zoo results read ({type(e).__name__}: {e})")
    a, b = (_row(rows, args.model, kind, args.first) for kind in (args.a, args.b))
    energy = {
        k: {n: np.array(o["samples"], np.float64) for n, o in r.metrics["outputs"].items()}
        for k, r in (("a", a), ("b", b))
    }

    def pooled(e: np.ndarray) -> float:
        return float(10 * np.log10(e[:, 0].sum() / e[:, 1].sum()))

    worst = {k: min(e, key=lambda n: pooled(e[n])) for k, e in energy.items()}
    for k, r in (("a", a), ("b", b)):
        e = energy[k][worst[k]]
        print(f"{k}: {r.variant} ({r.commit}): {len(e)} samples, output {worst[k]} pooled {pooled(e):.2f} dB, "
              f"sample {int(np.argmax(e[:, 1]))} holds {100 * e[:, 1].max() / e[:, 1].sum():.0f} % of its noise")  # fmt: skip
    name = worst["a"]
    ea, eb = energy["a"][name], energy["b"][name]
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = 10 * np.log10(eb[:, 1] / ea[:, 1])  # same signal both rows: per-sample SQNR of A minus B
    exact = np.isnan(diff)  # no noise in either row (hey_jarvis: windows scored 0): a tie, not a median of nan
    interval = delta_interval(a, b)
    ci = f"{interval[0]:+.2f} to {interval[1]:+.2f}" if interval else "none"
    print(f"{name}, a - b per sample: median {np.median(diff[~exact]) if (~exact).any() else 0:+.2f} dB, a leads on "
          f"{int((diff > 0).sum())}, b on {int((diff < 0).sum())} of {len(diff)} ({int(exact.sum())} exact in both); "
          f"pooled a - b {pooled(ea) - pooled(eb):+.2f} dB, 95% paired bootstrap (worst output) {ci}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

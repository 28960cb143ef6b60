"""Automatic mixed precision from the command line: which layers to raise from 8 to 16 bits.

1. Sensitivity: for each candidate (an activation group sharing one encoding, plus the weights
   of the ops producing it), either (exact) the model-output SQNR when only it is 16-bit, one
   evaluation per candidate (the default), or (proxy) the noise power the candidate adds in one
   streamed float-vs-8-bit pass (inspect's per-layer "added" error): one pass for all, but blind
   to damage that shows only downstream (a layer whose small channels a big one drowns).
2. Order candidates by SQNR gain per unit of added cost (`cost.py`), most useful first.
3. Prefixes of that order form the Pareto curve (cost factor vs SQNR). Under an accuracy target
   the shortest prefix that meets it is found by binary search (SQNR grows with the prefix in
   practice; each probe is one evaluation); under a cost budget the longest prefix within it.
Evaluations stream samples through onnxruntime: memory stays flat in the number of samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from qtool.io.encodings import Encodings
from qtool.quant import cost
from qtool.quant.encoding import Encoding
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import QuantPlan, activation_groups, activation_tensors
from qtool.quant.rules import rule_for

logger = logging.getLogger(__name__)

Metrics = dict[str, float]  # {"sqnr_db": ..., "cosine": ...}


@dataclass(frozen=True)
class Target:
    sqnr_db: float | None = None
    max_cosine_drop: float | None = None
    factor: float | None = None  # cost budget: mixed / all-8-bit

    def met(self, m: Metrics) -> bool:
        ok = True
        if self.sqnr_db is not None:
            ok &= m["sqnr_db"] >= self.sqnr_db
        if self.max_cosine_drop is not None:
            ok &= 1 - m["cosine"] <= self.max_cosine_drop
        return ok


@dataclass
class Candidate:
    name: str
    tensors: list[str]
    weights: list[str]
    macs: int
    elems: int
    gain: float = 0.0

    def cost8(self) -> float:
        return cost.layer_cost(self.macs, self.elems, 8, 8)

    def cost16(self) -> float:
        return cost.layer_cost(self.macs, self.elems, 16, 16 if self.weights else 8)


@dataclass
class Result:
    chosen: list[Candidate]
    overrides: Encodings
    curve: list[dict] = field(default_factory=list)
    met: bool = True


def candidates(facts: GraphFacts, plan: QuantPlan) -> list[Candidate]:
    found = []
    for group in activation_groups(facts, activation_tensors(facts)):
        if not all(t in plan.activations and not plan.activations[t].is_float for t in group):
            continue
        producers = [facts.producers[t] for t in group if t in facts.producers]
        producers += [
            facts.producers[i]
            for p in producers
            for i in p.input
            if p.op_type in ("Relu", "Clip") and i in facts.producers
        ]
        weights = sorted(
            {
                i
                for p in producers
                for idx, i in enumerate(p.input)
                if idx in rule_for(p).weights and i in plan.params and not plan.params[i].is_float
            }
        )
        macs = sum(cost.node_macs(facts, p) for p in producers)
        found.append(Candidate(group[0], group, weights, macs, sum(cost.elements(facts, t) for t in group)))
    return found


def raise_to_16(base: Encodings, chosen: list[Candidate]) -> Encodings:
    out = Encodings(dict(base.activations), dict(base.params))
    for c in chosen:
        for t in c.tensors:
            out.activations.setdefault(t, Encoding(bitwidth=16))
        for w in c.weights:
            out.params.setdefault(w, Encoding(bitwidth=16, is_symmetric=True))
    return out


def factor(all_candidates: list[Candidate], chosen: list[Candidate]) -> float:
    base = sum(c.cost8() for c in all_candidates) or 1.0
    return (base + sum(c.cost16() - c.cost8() for c in chosen)) / base


def _point(cands: list[Candidate], prefix: list[Candidate], m: Metrics) -> dict:
    total = sum(c.macs for c in cands) or 1
    return {
        "layers_16bit": len(prefix),
        "macs_16bit_pct": round(100 * sum(c.macs for c in prefix) / total, 2),
        "cost_factor": round(factor(cands, prefix), 4),
        "sqnr_db": round(m["sqnr_db"], 3),
        "cosine": round(m["cosine"], 6),
    }


def search(
    cands: list[Candidate],
    base: Encodings,
    evaluate: Callable[[Encodings], Metrics],
    target: Target,
    proxy: dict[str, float] | None = None,
) -> Result:
    """`proxy` (tensor -> noise it adds, from one float-vs-8-bit pass) replaces the per-candidate
    evaluations as the sensitivity; the search itself always evaluates for real."""
    baseline = evaluate(base)
    for c in cands:
        if proxy is not None:
            c.gain = max((proxy.get(t, 0.0) for t in c.tensors), default=0.0)
        else:
            c.gain = evaluate(raise_to_16(base, [c]))["sqnr_db"] - baseline["sqnr_db"]
    order = sorted(cands, key=lambda c: (-(c.gain / max(c.cost16() - c.cost8(), 1.0)), c.name))
    order = [c for c in order if c.gain > 0] + [c for c in order if c.gain <= 0]
    curve = [_point(cands, [], baseline)]
    if target.factor is not None:
        prefix = [c for i, c in enumerate(order) if factor(cands, order[: i + 1]) <= target.factor]
        metrics = evaluate(raise_to_16(base, prefix))
        curve.append(_point(cands, prefix, metrics))
        return Result(prefix, raise_to_16(base, prefix), curve, met=True)
    if target.met(baseline):
        return Result([], base, curve)
    lo, hi, best = 1, len(order), None
    while lo <= hi:  # shortest prefix that meets the target
        mid = (lo + hi) // 2
        metrics = evaluate(raise_to_16(base, order[:mid]))
        curve.append(_point(cands, order[:mid], metrics))
        if target.met(metrics):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    chosen = order[:best] if best is not None else order
    curve.sort(key=lambda p: p["layers_16bit"])
    logger.info("mixed precision: %d of %d candidates raised to 16 bits", len(chosen), len(cands))
    return Result(chosen, raise_to_16(base, chosen), curve, met=best is not None)


def overall(drift: dict) -> Metrics:
    """All outputs pooled: SQNR over the summed signal and noise, mean cosine."""
    signal = sum(d.signal for d in drift.values())
    noise = sum(d.noise for d in drift.values())
    samples = max(1, sum(d.samples for d in drift.values()))
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    return {"sqnr_db": sqnr, "cosine": sum(d.cosine_sum for d in drift.values()) / samples}

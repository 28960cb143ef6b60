"""Automatic mixed precision from the command line: which layers to raise from 8 to 16 bits.

1. Sensitivity: for each candidate (an activation group sharing one encoding, or the weights of
   one MAC layer), either (exact) the model-output SQNR when only it is 16-bit, one
   evaluation per candidate (the default), or (proxy) the noise power the candidate adds in one
   streamed float-vs-8-bit pass (inspect's per-layer "added" error): one pass for all, but blind
   to damage that shows only downstream (a layer whose small channels a big one drowns).
2. Order candidates greedily by SQNR gain per unit of the cost each adds on top of those before
   it (`cost.py`; a 16-bit activation costs the MACs of every layer reading it), most useful first.
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

import onnx

from qtool.graph.model import tensor_shapes
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
    """One thing to raise to 16 bits: an activation group (every MAC layer reading it becomes
    A16), the weights of one MAC layer (it becomes W16), or a group with its producer's weights.
    Apart, the search can raise a depthwise conv's weights alone, or a cheap tensor; together
    they catch a layer that only both fix (an outlier row that flattens the others' weights)."""

    name: str
    tensors: list[str]
    weights: list[str]
    act_layers: list[str]  # MAC layers (by output tensor) that read `tensors`
    weight_layers: list[str]  # MAC layers whose `weights` these are
    elems: int
    gain: float = 0.0

    def covered_by(self, tensors: set[str], weights: set[str]) -> bool:
        return set(self.tensors) <= tensors and set(self.weights) <= weights


@dataclass
class CostModel:
    """MACs per MAC layer and the `cost.layer_cost` proxy of a set of raised candidates."""

    macs: dict[str, int]
    elems: int  # all quantized activation elements (the all-8-bit byte traffic)

    def _wide(self, chosen: list[Candidate]) -> tuple[set[str], set[str]]:
        return {x for c in chosen for x in c.act_layers}, {x for c in chosen for x in c.weight_layers}

    def factor(self, chosen: list[Candidate]) -> float:
        """Latency proxy of the mixed model over the all-8-bit one (TIDL's mixed_precision_factor)."""
        acts, weights = self._wide(chosen)
        base = sum(self.macs.values()) + self.elems or 1.0
        mixed = sum(
            cost.layer_cost(m, 0, 16 if name in acts else 8, 16 if name in weights else 8)
            for name, m in self.macs.items()
        )
        return (mixed + self.elems + sum(c.elems for c in chosen)) / base

    def macs_16bit_pct(self, chosen: list[Candidate]) -> float:
        """Share of MACs in layers with a 16-bit input or weight."""
        acts, weights = self._wide(chosen)
        return 100 * sum(self.macs[name] for name in acts | weights) / (sum(self.macs.values()) or 1)


@dataclass
class Result:
    chosen: list[Candidate]
    overrides: Encodings
    curve: list[dict] = field(default_factory=list)
    met: bool = True


def _weights(node: onnx.NodeProto, plan: QuantPlan) -> list[str]:
    """The node's quantized weights still below 16 bits."""
    found = [
        i
        for idx, i in enumerate(node.input)
        if idx in rule_for(node).weights and i in plan.params and not plan.params[i].is_float
    ]
    return found if found and all(plan.params[w].bitwidth < 16 for w in found) else []


def candidates(facts: GraphFacts, plan: QuantPlan) -> tuple[list[Candidate], CostModel]:
    mac_nodes = [n for n in facts.model.graph.node if n.op_type in cost.MAC_OPS]
    shapes = tensor_shapes(facts.model)
    found = []
    for group in activation_groups(facts, activation_tensors(facts)):
        if not all(t in plan.activations and not plan.activations[t].is_float for t in group):
            continue
        readers = sorted({n.output[0] for t in group for n in facts.consumers.get(t, []) if n.op_type in cost.MAC_OPS})
        elems = sum(cost.elements(shapes, t) for t in group)
        found.append(Candidate(group[0], group, [], readers, [], elems))
        producers = [p for t in group if (p := _mac_producer(facts, t)) is not None]
        weights = [w for p in producers for w in _weights(p, plan)]
        if weights:
            layers = [p.output[0] for p in producers]
            found.append(Candidate(f"{group[0]}+weights", group, weights, readers, layers, elems))
    for node in mac_nodes:
        if weights := _weights(node, plan):
            found.append(Candidate(f"{node.output[0]}:weights", [], weights, [], [node.output[0]], 0))
    macs = {n.output[0]: cost.node_macs(n, shapes) or 0 for n in mac_nodes}
    model = CostModel(macs, sum(c.elems for c in found))
    return found, model


def _mac_producer(facts: GraphFacts, tensor: str) -> onnx.NodeProto | None:
    """The MAC layer writing `tensor`, or the one whose output is squashed into it (ReLU squashing)."""
    producer = facts.producers.get(tensor)
    if producer is not None and producer.input and facts.squashed_into(producer.input[0]) == tensor:
        producer = facts.producers[producer.input[0]]
    return producer if producer is not None and producer.op_type in cost.MAC_OPS else None


def raise_to_16(base: Encodings, chosen: list[Candidate], replaceable: frozenset[str] = frozenset()) -> Encodings:
    """`base` with the chosen tensors at 16 bits; an encoding already in `base` is kept (the user's
    overrides win) unless it is `replaceable` (one an algorithm froze, as adaround does its 8-bit grid)."""
    out = Encodings(dict(base.activations), dict(base.params))
    for c in chosen:
        for t in c.tensors:
            out.activations.setdefault(t, Encoding(bitwidth=16))
        for w in c.weights:
            if w in replaceable or w not in out.params:
                out.params[w] = Encoding(bitwidth=16, is_symmetric=True)
    return out


def greedy_order(cands: list[Candidate], model: CostModel) -> list[Candidate]:
    """Most SQNR gain per unit of added cost first, the cost of each counted on top of those
    already taken (raising an activation a raised weight's layer already reads costs less)."""
    useful = sorted((c for c in cands if c.gain > 0), key=lambda c: c.name)
    order: list[Candidate] = []
    tensors: set[str] = set()
    weights: set[str] = set()
    current = model.factor(order)
    while useful := [c for c in useful if not c.covered_by(tensors, weights)]:
        added = [max(model.factor([*order, c]) - current, 1e-9) for c in useful]
        best = max(range(len(useful)), key=lambda k: (useful[k].gain / added[k], -k))
        order.append(useful.pop(best))
        tensors.update(order[-1].tensors)
        weights.update(order[-1].weights)
        current += added[best]
    rest = [c for c in cands if c.gain <= 0 and not c.covered_by(tensors, weights)]
    return order + sorted(rest, key=lambda c: (-c.gain, c.name))


def _point(model: CostModel, prefix: list[Candidate], m: Metrics) -> dict:
    return {
        "layers_16bit": len(prefix),
        "macs_16bit_pct": round(model.macs_16bit_pct(prefix), 2),
        "cost_factor": round(model.factor(prefix), 4),
        "sqnr_db": round(m["sqnr_db"], 3),
        "cosine": round(m["cosine"], 6),
    }


def _sensitivity(
    cands: list[Candidate],
    raised: Callable[[list[Candidate]], Encodings],
    evaluate: Callable[[Encodings], Metrics],
    baseline: Metrics,
    proxy,
) -> None:
    for c in cands:
        if proxy is not None:  # a weight candidate is credited with its layer's added noise
            c.gain = max((proxy.get(t, 0.0) for t in c.tensors or c.weight_layers), default=0.0)
        else:
            c.gain = evaluate(raised([c]))["sqnr_db"] - baseline["sqnr_db"]


def search(
    cands: list[Candidate],
    model: CostModel,
    base: Encodings,
    evaluate: Callable[[Encodings], Metrics],
    target: Target,
    proxy: dict[str, float] | None = None,
    replaceable: frozenset[str] = frozenset(),
) -> Result:
    """`proxy` (tensor -> noise it adds, from one float-vs-8-bit pass) replaces the per-candidate
    evaluations as the sensitivity; the search itself always evaluates for real. `replaceable`:
    see raise_to_16."""

    def raised(prefix: list[Candidate]) -> Encodings:
        return raise_to_16(base, prefix, replaceable)

    baseline = evaluate(base)
    curve = [_point(model, [], baseline)]
    if target.factor is None and target.met(baseline):
        return Result([], base, curve)
    _sensitivity(cands, raised, evaluate, baseline, proxy)
    order = greedy_order(cands, model)
    if target.factor is not None:
        prefix = [c for i, c in enumerate(order) if model.factor(order[: i + 1]) <= target.factor]
        metrics = evaluate(raised(prefix))
        curve.append(_point(model, prefix, metrics))
        return Result(prefix, raised(prefix), curve, met=True)
    lo, hi, best = 1, len(order), None
    while lo <= hi:  # shortest prefix that meets the target
        mid = (lo + hi) // 2
        metrics = evaluate(raised(order[:mid]))
        curve.append(_point(model, order[:mid], metrics))
        if target.met(metrics):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    chosen = order[:best] if best is not None else order
    curve.sort(key=lambda p: p["layers_16bit"])
    logger.info("mixed precision: %d of %d candidates raised to 16 bits", len(chosen), len(cands))
    return Result(chosen, raised(chosen), curve, met=best is not None)


def overall(drift: dict) -> Metrics:
    """All outputs pooled: SQNR over the summed signal and noise, mean cosine."""
    signal = sum(d.signal for d in drift.values())
    noise = sum(d.noise for d in drift.values())
    samples = max(1, sum(d.samples for d in drift.values()))
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    return {"sqnr_db": sqnr, "cosine": sum(d.cosine_sum for d in drift.values()) / samples}

"""Automatic mixed precision from the command line: which tensors to raise from 8 bits to 16 bits
or to float.

1. Sensitivity: for each candidate (an activation group sharing one encoding at 16 bits or in
   float, or the weights of one MAC layer at 16 bits), either (exact) the model-output SQNR when only it is 16-bit, one
   evaluation per candidate (the default), or (proxy) the noise power the candidate adds in one
   streamed float-vs-8-bit pass (inspect's per-layer "added" error): one pass for all, but blind
   to damage that shows only downstream (a layer whose small channels a big one drowns).
2. Order candidates greedily by SQNR gain per unit of the cost each adds on top of those before
   it (`cost.py`; a 16-bit activation costs the MACs of every layer reading it), most useful first.
3. Prefixes of that order form the Pareto curve (cost factor vs SQNR). Under an accuracy target
   the shortest prefix that meets it is found by binary search (SQNR grows with the prefix in
   practice; each probe is one evaluation); under a cost budget the longest prefix within it.
4. Under a target, the cheap groups left at 8 bits are raised too (`_complete`): a grid clips inputs past calibration.
Evaluations stream samples through onnxruntime: memory stays flat in the number of samples.
Each evaluation runs the whole model over the samples, so the search's time is the number of
evaluations times that (a CTC recogniser: ~150 sensitivity evaluations, 57% of every run in its float
LSTM). Hence `Evaluator`: the sensitivity pass only ranks candidates and runs on a spread subset of the
samples; every decision about the target (the binary search, `_prefer_integers`) runs on all of them,
and a trial that can no longer meet the target stops early (`best_possible`), which decides the same.

Float is a candidate for every activation group because some tensors hold a dynamic range that no
linear grid does (a power spectrum spans 100 dB and more, past 16 bits): the sensitivity pass finds
them by what float buys over 16 bits, not by op type. Each group has a float16 candidate (unless its
calibrated range passes float16's largest value) and a float32 one, which measures like float16
against an 8-bit rest and is there for the last dB (a float16 LSTM is ~34 dB from float32). `cost.py`
charges float16 above 16-bit integers and float32 above float16, and a chosen float chain is tried
back at 16 bits, or shortened, before it is kept (`_prefer_integers`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from qtool.encoding import Encoding, float_encoding
from qtool.graph.float16 import FLOAT16_MAX
from qtool.graph.model import tensor_shapes
from qtool.io.encodings import Encodings
from qtool.quant import cost
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import RAISED_HEADROOM
from qtool.quant.plan import QuantPlan, activation_groups, activation_tensors
from qtool.quant.rules import rule_for

logger = logging.getLogger(__name__)

Metrics = dict[str, float]  # {"sqnr_db": ..., "cosine": ...}
MAX_PARTS = 8  # downstream parts of a float chain tried in float alone (one evaluation each)


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
class Evaluator:
    """How the search measures encodings. `full`: every evaluation sample. `screen`: a spread subset,
    enough to rank candidates (defaults to `full`). `meets`: every sample, but None as soon as the
    target can no longer be met (defaults to `full`, never stopping). `held_out`: scored on samples whose
    ranges came from others (None: the search scores samples no range was fitted to, --eval_list's)."""

    full: Callable[[Encodings], Metrics]
    screen: Callable[[Encodings], Metrics] | None = None
    meets: Callable[[Encodings, Target], Metrics | None] | None = None
    held_out: Callable[[Encodings], Metrics] | None = None

    def screened(self, encodings: Encodings) -> Metrics:
        return (self.screen or self.full)(encodings)

    def if_met(self, encodings: Encodings, target: Target) -> Metrics | None:
        """The metrics when the target is met; when not, the metrics or None (stopped early)."""
        return self.meets(encodings, target) if self.meets is not None else self.full(encodings)


@dataclass(eq=False)  # one object per candidate: `in` compares identity, not the chains and parts
class Candidate:
    """One thing to raise: an activation group to 16 bits (every MAC layer reading it becomes A16) or to
    float (`float_bits`, with its chain), the weights of one MAC layer to 16 bits (it becomes W16), or a
    group with its producer's weights.
    Apart, the search can raise a depthwise conv's weights alone, or a cheap tensor; together
    they catch a layer that only both fix (an outlier row that flattens the others' weights)."""

    name: str
    tensors: list[str]
    weights: list[str]
    act_layers: list[str]  # MAC layers (by output tensor) that read `tensors`
    weight_layers: list[str]  # MAC layers whose `weights` these are
    elems: int
    gain: float = 0.0
    float_bits: int = 0  # 16 or 32: the tensors stay float at this width instead of 16-bit integers
    # a float chain's shortest downstream parts, smallest first (see _prefer_integers)
    parts: list[Candidate] = field(default_factory=list)
    biases: list[str] = field(default_factory=list)  # the 8-bit biases of the `weight_layers`: int32 when raised

    def covered_by(self, tensors: set[str], weights: set[str], floats: dict[str, int] | None = None) -> bool:
        """Already raised as far by those chosen: 16-bit `tensors`, 16-bit `weights`, float `floats` (bits)."""
        floats = floats or {}
        if self.float_bits:
            return all(floats.get(t, 0) >= self.float_bits for t in self.tensors)
        return all(t in tensors or t in floats for t in self.tensors) and set(self.weights) <= weights

    @property
    def precision(self) -> str:
        return f"float{self.float_bits}" if self.float_bits else "int16"


@dataclass
class CostModel:
    """MACs per MAC layer and the `cost.layer_cost` proxy of a set of raised candidates."""

    macs: dict[str, int]
    elems: int  # all quantized activation elements (the all-8-bit byte traffic)
    unknown: int = 0  # MAC layers whose shapes inference could not tell (after a contrib or custom op): counted 0

    def _wide(self, chosen: list[Candidate]) -> tuple[set[str], set[str]]:
        return {x for c in chosen for x in c.act_layers}, {x for c in chosen for x in c.weight_layers}

    @staticmethod
    def _float_layers(chosen: list[Candidate]) -> dict[str, int]:
        """MAC layer -> the widest float its inputs were raised to (the layer then runs in float)."""
        found: dict[str, int] = {}
        for c in chosen:
            for layer in c.act_layers if c.float_bits else ():
                found[layer] = max(found.get(layer, 0), c.float_bits)
        return found

    def factor(self, chosen: list[Candidate]) -> float:
        """Latency proxy of the mixed model over the all-8-bit one (TIDL's mixed_precision_factor)."""
        acts, weights = self._wide(chosen)
        floats = self._float_layers(chosen)
        base = sum(self.macs.values()) + self.elems or 1.0
        mixed = sum(
            cost.layer_cost(m, 0, 16 if name in acts else 8, 16 if name in weights else 8, floats.get(name, 0))
            for name, m in self.macs.items()
        )
        widest: dict[str, Candidate] = {}  # each group's traffic counted once, at its widest precision
        for c in sorted((c for c in chosen if c.tensors), key=lambda c: c.float_bits):
            widest[c.tensors[0]] = c
        traffic = sum(c.elems * cost.extra_traffic(c.float_bits) for c in widest.values())
        return (mixed + self.elems + traffic) / base

    def float_tensors(self, chosen: list[Candidate]) -> int:
        return len({t for c in chosen if c.float_bits for t in c.tensors})

    def macs_16bit_pct(self, chosen: list[Candidate]) -> float:
        """Share of MACs in layers with a 16-bit input or weight."""
        acts, weights = self._wide(chosen)
        return 100 * sum(self.macs[name] for name in acts | weights) / (sum(self.macs.values()) or 1)


class RunningCost:
    """CostModel.factor of a growing set, kept up to date per candidate taken: greedy_order asks for the
    cost every remaining candidate adds at every step, and recomputing the factor over the whole set
    for each made it cubic (a YOLOX detector's 841 candidates: 5 minutes). Same sums, taken apart."""

    def __init__(self, model: CostModel):
        self.macs = model.macs
        self.base = sum(model.macs.values()) + model.elems or 1.0
        self.acts: set[str] = set()
        self.weights: set[str] = set()
        self.floats: dict[str, int] = {}  # MAC layer -> widest float input
        self.widest: dict[str, Candidate] = {}  # group -> the candidate whose traffic counts (as factor)

    def _layer(self, name: str, act: bool, weight: bool, float_bits: int) -> float:
        return cost.layer_cost(self.macs[name], 0, 16 if act else 8, 16 if weight else 8, float_bits)

    def _changes(self, c: Candidate):
        """(layer, its cost now, its cost with c raised too) for each MAC layer c touches."""
        acts, weights = set(c.act_layers), set(c.weight_layers)
        for name in (acts | weights) & self.macs.keys():
            now = self.floats.get(name, 0)
            after = max(now, c.float_bits) if c.float_bits and name in acts else now
            yield (
                self._layer(name, name in self.acts, name in self.weights, now),
                self._layer(name, name in self.acts or name in acts, name in self.weights or name in weights, after),
            )

    def _traffic(self, c: Candidate | None) -> float:
        return c.elems * cost.extra_traffic(c.float_bits) if c is not None else 0.0

    def _wider(self, c: Candidate) -> Candidate | None:
        """The candidate whose traffic counts for c's group once c is taken (the widest; the later of equals)."""
        old = self.widest.get(c.tensors[0]) if c.tensors else None
        return c if old is None or c.float_bits >= old.float_bits else old

    def added(self, c: Candidate) -> float:
        """factor(taken + [c]) - factor(taken)."""
        delta = sum(after - now for now, after in self._changes(c))
        if c.tensors:
            delta += self._traffic(self._wider(c)) - self._traffic(self.widest.get(c.tensors[0]))
        return delta / self.base

    def add(self, c: Candidate) -> None:
        if c.tensors:
            self.widest[c.tensors[0]] = self._wider(c)  # type: ignore[assignment]
        for name in c.act_layers if c.float_bits else ():
            self.floats[name] = max(self.floats.get(name, 0), c.float_bits)
        self.acts.update(c.act_layers)
        self.weights.update(c.weight_layers)


@dataclass
class Result:
    chosen: list[Candidate]
    overrides: Encodings
    curve: list[dict] = field(default_factory=list)
    met: bool = True
    sensitivity: str = ""  # how candidates were ranked (exact, proxy), for the report
    order: str = ""  # which order's prefix was chosen (gain per cost, or graph order: _front_first), for the report


def _weights(node: onnx.NodeProto, plan: QuantPlan) -> list[str]:
    """The node's quantized weights still below 16 bits."""
    found = [
        i
        for idx, i in enumerate(node.input)
        if idx in rule_for(node).weights and i in plan.params and not plan.params[i].is_float
    ]
    return found if found and all(plan.params[w].bitwidth < 16 for w in found) else []


def _narrow_bias(facts: GraphFacts, node: onnx.NodeProto, plan: QuantPlan) -> str:
    """The layer's bias (its own input, or the Add a MatMul's bias is: GraphFacts.bias_add) when it is
    quantized below 32 bits, else ''."""
    index = rule_for(node).bias
    bias = node.input[index] if index is not None and index < len(node.input) else ""
    for reader in facts.consumers.get(node.output[0], []) if node.op_type == "MatMul" else []:
        if (fused := facts.bias_add(reader)) is not None and fused[0] is node:
            bias = fused[1]
    e = plan.params.get(bias)
    return bias if e is not None and not e.is_float and e.bitwidth < 32 else ""


def _fits_float16(tensors: list[str], plan: QuantPlan) -> bool:
    """The calibrated range stays within float16's largest finite value."""
    top = max((abs(v) for t in tensors for v in (*plan.activations[t].min, *plan.activations[t].max)), default=0.0)
    return top <= FLOAT16_MAX


# Ops through which a float tensor stays float: they keep (or widen) its range, so quantizing their
# output right after would undo the float. Log, Exp, Sigmoid, Softmax and the like bring the range
# back to what a grid holds and end the chain.
RANGE_KEEPING = frozenset(
    {"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Abs", "Neg", "Sqrt", "Pow", "Reciprocal", "Relu",
     "ReduceSum", "ReduceMean", "ReduceMax", *cost.MAC_OPS}
)  # fmt: skip


def float_chain(
    facts: GraphFacts, group: list[str], quantized: set[str], group_of: dict[str, list[str]] | None = None
) -> list[str]:
    """`group` and the quantized tensors computed from it by RANGE_KEEPING ops whose other inputs are
    constants or the chain itself (x², x + eps, a mel filterbank MatMul): a power spectrum kept in float
    is no use if `power + eps` is quantized to 8 bits on the next line. A tensor joins with every tensor
    of its encoding group (`group_of`), one after the other: a group half float and half not gave the plan
    two overrides for one encoding (YOLOv8's box decoding: "overrides ... differ")."""
    chain = list(group)
    frontier = list(group)
    while frontier:
        for node in facts.consumers.get(frontier.pop(), []):
            inputs_known = all(i in facts.initializers or i in chain or not i for i in node.input)
            if node.op_type in RANGE_KEEPING and inputs_known:
                new: list[str] = []
                for out in (o for o in node.output if o in quantized and o not in chain):
                    new += [t for t in (group_of or {}).get(out, [out]) if t not in chain and t not in new]
                chain += new
                frontier += new
    return chain


def candidates(facts: GraphFacts, plan: QuantPlan) -> tuple[list[Candidate], CostModel]:
    """The candidates, the activation groups' in graph order (by each group's first tensor: _front_first reads them
    so), and the model's costs."""
    mac_nodes = [n for n in facts.model.graph.node if n.op_type in cost.MAC_OPS]
    shapes = tensor_shapes(facts.model)
    found = []
    total_elems = 0  # every quantized activation element: the all-8-bit traffic
    quantized = {t for t, e in plan.activations.items() if not e.is_float}
    # a Concat the plan splits (ranges too far apart, plan.wide_concats) leaves its inputs their own groups
    groups = activation_groups(facts, activation_tensors(facts), plan.split_concats, sliced=plan.split_sources)
    group_of = {t: g for g in groups for t in g}
    index = {t: k for k, g in enumerate(groups) for t in g}
    for group in groups:
        if not all(t in plan.activations and not plan.activations[t].is_float for t in group):
            continue
        readers = _mac_readers(facts, group)
        elems = sum(cost.elements(shapes, t) for t in group)
        total_elems += elems
        found.append(Candidate(group[0], group, [], readers, [], elems))
        chain = float_chain(facts, group, quantized, group_of)
        # downstream parts start where a group does; only the shortest MAX_PARTS are ever tried
        key = [index.get(t, ("alone", k)) for k, t in enumerate(chain)]
        starts = [k for k in range(1, len(chain)) if key[k] != key[k - 1]]
        for bits in (16, 32) if _fits_float16(chain, plan) else (32,):
            name = f"{group[0]}:float{bits}"
            found.append(_float_candidate(name, chain, bits, facts, shapes))
            found[-1].parts = [_float_candidate(name, chain[k:], bits, facts, shapes) for k in starts[::-1][:MAX_PARTS]]
        producers = [p for t in group if (p := _mac_producer(facts, t)) is not None]
        weights = [w for p in producers for w in _weights(p, plan)]
        if weights:
            layers = [p.output[0] for p in producers]
            biases = [b for p in producers if (b := _narrow_bias(facts, p, plan))]
            found.append(Candidate(f"{group[0]}+weights", group, weights, readers, layers, elems, biases=biases))
    for node in mac_nodes:
        if weights := _weights(node, plan):
            biases = [b] if (b := _narrow_bias(facts, node, plan)) else []
            found.append(Candidate(f"{node.output[0]}:weights", [], weights, [], [node.output[0]], 0, biases=biases))
    macs = {n.output[0]: cost.node_macs(n, shapes) for n in mac_nodes}
    model = CostModel({k: m or 0 for k, m in macs.items()}, total_elems, sum(m is None for m in macs.values()))
    return found, model


def _float_candidate(name: str, chain: list[str], bits: int, facts: GraphFacts, shapes) -> Candidate:
    elems = sum(cost.elements(shapes, t) for t in chain)
    return Candidate(name, chain, [], _mac_readers(facts, chain), [], elems, float_bits=bits)


def _mac_readers(facts: GraphFacts, tensors: list[str]) -> list[str]:
    return sorted({n.output[0] for t in tensors for n in facts.consumers.get(t, []) if n.op_type in cost.MAC_OPS})


def _mac_producer(facts: GraphFacts, tensor: str) -> onnx.NodeProto | None:
    """The MAC layer writing `tensor`, or the one whose output is squashed into it (ReLU squashing)."""
    producer = facts.producers.get(tensor)
    if producer is not None and producer.input and facts.squashed_into(producer.input[0]) == tensor:
        producer = facts.producers[producer.input[0]]
    return producer if producer is not None and producer.op_type in cost.MAC_OPS else None


def raise_precision(base: Encodings, chosen: list[Candidate], replaceable: frozenset[str] = frozenset()) -> Encodings:
    """`base` with the chosen tensors at 16 bits or in float (float wins where both were chosen); an
    encoding already in `base` is kept (the user's overrides win) unless it is `replaceable` (one an
    algorithm froze, as adaround does its 8-bit grid)."""
    out = Encodings(dict(base.activations), dict(base.params))
    for c in sorted(chosen, key=lambda c: -c.float_bits):
        for t in c.tensors:
            raised = float_encoding(c.float_bits) if c.float_bits else Encoding(bitwidth=16, headroom=RAISED_HEADROOM)
            out.activations.setdefault(t, raised)
        for w in c.weights:
            if w in replaceable or w not in out.params:
                out.params[w] = Encoding(bitwidth=16, is_symmetric=True)
        for b in c.biases:  # a 16-bit layer's bias on an 8-bit grid would cap it (--bias_bitwidth 8, QNN's default)
            if b in replaceable or b not in out.params:
                out.params[b] = Encoding(bitwidth=32, is_symmetric=True)
    return out


def greedy_order(cands: list[Candidate], model: CostModel) -> list[Candidate]:
    """Most SQNR gain per unit of added cost first, the cost of each counted on top of those
    already taken (raising an activation a raised weight's layer already reads costs less)."""
    useful = sorted((c for c in cands if c.gain > 0), key=lambda c: c.name)
    order: list[Candidate] = []
    tensors: set[str] = set()
    weights: set[str] = set()
    floats: dict[str, int] = {}
    running = RunningCost(model)
    while useful := [c for c in useful if not c.covered_by(tensors, weights, floats)]:
        added = [max(running.added(c), 1e-9) for c in useful]
        best = max(range(len(useful)), key=lambda k: (useful[k].gain / added[k], -k))
        order.append(useful.pop(best))
        running.add(order[-1])
        if order[-1].float_bits:
            floats.update({t: max(floats.get(t, 0), order[-1].float_bits) for t in order[-1].tensors})
        else:
            tensors.update(order[-1].tensors)
        weights.update(order[-1].weights)
    rest = [c for c in cands if c.gain <= 0 and not c.covered_by(tensors, weights, floats)]
    return order + sorted(rest, key=lambda c: (-c.gain, c.name))


def _point(model: CostModel, prefix: list[Candidate], m: Metrics) -> dict:
    return {
        "layers_16bit": len(prefix),
        "macs_16bit_pct": round(model.macs_16bit_pct(prefix), 2),
        "cost_factor": round(model.factor(prefix), 4),
        "float_tensors": model.float_tensors(prefix),
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
    """Each candidate's gain over `baseline`, the all-8-bit model measured as `evaluate` measures."""
    gains: dict[str, float] = {}
    for c in cands:
        if proxy is not None:  # a weight candidate is credited with its layer's added noise
            c.gain = max((proxy.get(t, 0.0) for t in c.tensors or c.weight_layers), default=0.0)
        elif c.float_bits == 32 and c.name.replace(":float32", ":float16") in gains:
            # against an 8-bit rest float32 measures as float16 does; it is there for the last few dB
            c.gain = gains[c.name.replace(":float32", ":float16")]
        else:
            c.gain = evaluate(raised([c]))["sqnr_db"] - baseline["sqnr_db"]
        gains[c.name] = c.gain


def search(
    cands: list[Candidate],
    model: CostModel,
    base: Encodings,
    evaluator: Evaluator,
    target: Target,
    proxy: dict[str, float] | None = None,
    replaceable: frozenset[str] = frozenset(),
) -> Result:
    """`proxy` (tensor -> noise it adds, from one float-vs-8-bit pass) replaces the per-candidate
    evaluations as the sensitivity; the search itself always evaluates for real. `replaceable`:
    see raise_to_16."""

    def raised(prefix: list[Candidate]) -> Encodings:
        return raise_precision(base, prefix, replaceable)

    evaluate = evaluator.full
    baseline = evaluate(base)
    curve = [_point(model, [], baseline)]
    if target.factor is None and target.met(baseline):
        return Result([], base, curve)
    # the gains are differences: the baseline is measured on the samples the candidates are
    screened = baseline if evaluator.screen is None or proxy is not None else evaluator.screen(base)
    _sensitivity(cands, raised, evaluator.screened, screened, proxy)
    order = greedy_order(cands, model)
    if target.factor is not None:
        prefix = [c for i, c in enumerate(order) if model.factor(order[: i + 1]) <= target.factor]
        metrics, how = evaluate(raised(prefix)), "gain per cost"
        curve.append(_point(model, prefix, metrics))
        front, costs = _graph_order(cands, model)  # or the longest prefix in graph order within it (_front_first)
        if (early := front[: sum(f <= target.factor for f in costs)]) and set(early) != set(prefix):
            measured = evaluate(raised(early))
            curve.append(_point(model, early, measured))
            if measured["sqnr_db"] > metrics["sqnr_db"]:
                prefix, how = early, f"graph order: the first {len(early)} activation groups, better than gain per cost"
        return Result(prefix, raised(prefix), curve, met=True, order=how)
    lo, hi, best = 1, len(order), None
    while lo <= hi:  # shortest prefix that meets the target
        mid = (lo + hi) // 2
        metrics = evaluate(raised(order[:mid]))
        curve.append(_point(model, order[:mid], metrics))
        if target.met(metrics):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    chosen, how = (order[:best] if best is not None else order), "gain per cost"
    if best is not None:
        def record(p: list[Candidate], m: Metrics) -> None:
            curve.append(_point(model, p, m))

        chosen = _prefer_integers(chosen, cands, raised, evaluator.if_met, target, record)
        early, completed = _front_first(chosen, cands, model, raised, evaluator.if_met, target, record), False
        if early is not chosen:  # graph order's cheaper answer, completed, stands where held-out samples confirm it
            first, early = len(early), _complete(early, cands, model, raised, evaluator.if_met, target, record)
            chosen, how = _confirmed(early, first, chosen, model, raised, evaluator.held_out, target)
            completed = chosen is early
        chosen = chosen if completed else _complete(chosen, cands, model, raised, evaluator.if_met, target, record)
    logger.info("mixed precision: %d of %d candidates raised (16 bits or float)", len(chosen), len(cands))
    front = pareto_front(curve, (len(chosen), round(model.factor(chosen), 4)))
    return Result(chosen, raised(chosen), front, met=best is not None, order=how)


def pareto_front(points: list[dict], chosen: tuple[int, float]) -> list[dict]:
    """The evaluated points no other beats at the same or a lower cost, and the chosen one, by layers raised.
    A trial of the float chains at 16 bits that missed the target (a higher cost, a lower SQNR than a
    point before it) is no choice anyone would make."""
    front: list[dict] = []
    for p in sorted(points, key=lambda p: (p["cost_factor"], -p["sqnr_db"])):
        if (p["layers_16bit"], p["cost_factor"]) == chosen or not front or p["sqnr_db"] > max(q["sqnr_db"] for q in front):
            front.append(p)
    return sorted(front, key=lambda p: p["layers_16bit"])


def _graph_order(cands: list[Candidate], model: CostModel) -> tuple[list[Candidate], list[float]]:
    """The activation groups at 16 bits in graph order (`candidates` makes them so), and each prefix's cost factor."""
    front = [c for c in cands if c.tensors and not c.weights and not c.float_bits]
    running, factor, costs = RunningCost(model), 1.0, []
    for c in front:
        factor += running.added(c)
        running.add(c)
        costs.append(factor)
    return front, costs


def _front_first(chosen: list[Candidate], cands: list[Candidate], model: CostModel, raised, if_met, target: Target,
                 record) -> list[Candidate]:  # fmt: skip
    """A cheaper answer where the error is many small ones that add up early in the graph: the activation groups raised
    in graph order (`candidates` makes them so), the shortest prefix that meets the target, binary-searched among the
    prefixes that cost less than `chosen` (at most log2 of their count trials, each stopped once hopeless). Scored one
    at a time, none of them shows: nudenet's first 22 activations (8.5% of its MACs) at 16 bits take its class scores
    from 12.6 to 20.3 dB held out, each alone at most 1.1 dB, and gain per cost raised 93.9% of its MACs for 20 dB."""
    front, costs = _graph_order(cands, model)
    lo, hi, best = 1, sum(f < model.factor(chosen) for f in costs), None
    while lo <= hi:
        mid = (lo + hi) // 2
        metrics = if_met(raised(front[:mid]), target)
        if metrics is not None:
            record(front[:mid], metrics)
        if metrics is not None and target.met(metrics):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    if best is None:
        return chosen
    logger.info("mixed precision: the first %d activation groups in graph order meet the target at cost %.4f, "
                "gain per cost at %.4f", best, costs[best - 1], model.factor(chosen))  # fmt: skip
    return front[:best]


def _confirmed(early: list[Candidate], first: int, chosen: list[Candidate], model: CostModel, raised, held_out,
               target: Target) -> tuple[list[Candidate], str]:  # fmt: skip
    """Graph order's cheaper answer where it meets the target on samples whose ranges came from others (`held_out`),
    else gain per cost's (`chosen`), with the report's words (`first`: its graph-order prefix, before _complete).
    The binary search keeps the cheapest prefix that meets the target on the samples it scores, which also set its
    ranges: the least margin it can find, and no grid clips there (tests/cli/test_mixed_held_out_halves.py: 46.9 dB
    there, 32.7 on the halves, 28.2 on new inputs). Not ddddocr's CTC recogniser: 32.7 on its halves, 29.3 held out."""
    words = f"graph order: the first {first} activation groups, cheaper than gain per cost's {len(chosen)}"
    if held_out is None:
        return early, words
    metrics = held_out(raised(early))
    figure = f"{metrics['sqnr_db']:.1f} dB on held-out halves of the list"
    if target.met(metrics):
        return early, f"{words} ({figure})"
    logger.info("mixed precision: graph order's answer (cost %.4f) misses the target on held-out halves (%.1f dB): "
                "gain per cost's (%.4f) stays", model.factor(early), metrics["sqnr_db"], model.factor(chosen))  # fmt: skip
    return chosen, (f"gain per cost (graph order's first {first} activation groups, cost {model.factor(early):.3f},"
                    f" met the target on the samples it scored and missed it on held-out halves: {figure})")  # fmt: skip


COMPLETION_BUDGET = 0.01  # _complete's: at most this share of the chosen set's cost factor


def _complete(chosen: list[Candidate], cands: list[Candidate], model: CostModel, raised, if_met, target: Target,
              record) -> list[Candidate]:  # fmt: skip
    """`chosen` with the activation groups it left at 8 bits raised too, cheapest first while together they add at most
    COMPLETION_BUDGET, where the target still holds (one trial). The trials run on the samples that set the ranges,
    which no grid clips, so a group's gain there is its rounding alone and a small one is not bought; on a new input
    past its calibrated range an 8-bit grid clips where a raised one has RAISED_HEADROOM. nudenet's class-head SiLU
    output, calibrated to 11.3, reached 21.3 on one held-out photo: 79% of the scores' noise (25.2 dB held out), for
    0.01% of the MACs."""
    tensors, weights = {t for c in chosen for t in c.tensors}, {w for c in chosen for w in c.weights}
    running, budget, extra = RunningCost(model), COMPLETION_BUDGET * model.factor(chosen), []
    for c in chosen:
        running.add(c)
    left = [c for c in cands if c.tensors and not c.weights and not c.float_bits and not c.covered_by(tensors, weights)]
    for added, c in sorted(((running.added(c), c) for c in left), key=lambda x: (x[0], x[1].name)):
        if added <= budget and not c.covered_by(tensors, weights):
            budget -= added
            extra.append(c)
            tensors.update(c.tensors)
    metrics = if_met(raised(chosen + extra), target) if extra else None
    if metrics is None or not target.met(metrics):
        return chosen
    record(chosen + extra, metrics)
    logger.info("mixed precision: %d more activation groups at 16 bits for %.4f of cost", len(extra),
                model.factor(chosen + extra) - model.factor(chosen))  # fmt: skip
    return chosen + extra


def _prefer_integers(
    chosen: list[Candidate],
    cands: list[Candidate],
    raised: Callable[[list[Candidate]], Encodings],
    if_met: Callable[[Encodings, Target], Metrics | None],
    target: Target,
    record: Callable[[list[Candidate], Metrics], None],
) -> list[Candidate]:
    """Each chosen float chain made cheaper where the target still holds: all of it at 16 bits (alone,
    then with the producers' weights), else only a downstream part of it in float (the power spectrum
    rather than the audio that feeds the STFT), the rest at 16 bits; first all chains at 16 bits at once,
    which ends it in one trial where that holds. Gain per cost can rank a whole chain first when a part
    would do, and float is dearer on a device."""
    by_name = {c.name: c for c in cands}

    def at_16(tensors: list[str], suffix: str = "") -> list[Candidate]:
        found = [by_name.get(f"{t}{suffix}") or by_name.get(t) for t in tensors]
        return list({x.name: x for x in found if x is not None and x not in chosen}.values())

    tried: set[frozenset[str]] = set()  # a chain with no "+weights" candidates offers one trial twice

    def holds(trial: list[Candidate]) -> bool:
        if (key := frozenset(x.name for x in trial)) in tried:  # the same encodings: it missed already
            return False
        tried.add(key)
        metrics = if_met(raised(trial), target)
        if metrics is None:  # stopped early: certain to miss the target, and no point of the curve
            return False
        record(trial, metrics)
        return target.met(metrics)

    floats = [c for c in chosen if c.float_bits]
    # every chain at 16 bits at once first: one by one, czann's chains ran past 100 trials and 35 minutes
    if len(floats) > 1:
        integers = [x for x in chosen if not x.float_bits]
        for suffix in ("", "+weights"):
            trial = list({x.name: x for x in integers + at_16([t for c in floats for t in c.tensors], suffix)}.values())
            if holds(trial):
                return trial
    for c in reversed(floats):
        rest = [x for x in chosen if x is not c]
        options = [rest + at_16(c.tensors), rest + at_16(c.tensors, "+weights")]
        options += [[*rest, p, *at_16([t for t in c.tensors if t not in p.tensors])] for p in c.parts]
        chosen = next((trial for trial in options if holds(trial)), chosen)
    return chosen


def quieter_half(signals: list[float]) -> list[int]:
    """The indices of the samples with the least float output energy, half of them (at least one)."""
    return sorted(range(len(signals)), key=signals.__getitem__)[: max(1, len(signals) // 2)]


def sqnr_db(signal: float, noise: float) -> float | None:
    """None when the float values are all zero (nothing to measure)."""
    if not math.isfinite(noise):  # a float16 tensor that overflowed: inf or NaN outputs
        return -math.inf
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else None


def _quiet_sqnr(d) -> float | None:
    """The SQNR pooled over the quieter half of the samples: the pooled SQNR weights each sample by its
    energy, so it holds for inputs like the loudest calibration samples, while a deployment stream of quiet
    ones (speech with no wake word, a page with little text) sees their noise: openWakeWord's hey_mycroft met
    30 dB pooled over its calibration windows (38.4, two wake words) and gave 22.9 on held-out windows."""
    quiet = [d.per_sample[k] for k in quieter_half([s for s, _ in d.per_sample])]
    return sqnr_db(sum(s for s, _ in quiet), sum(n for _, n in quiet))


def best_possible(drift: dict, signal_left: dict[str, float], samples_left: int, quiet: dict | None = None) -> Metrics:
    """The best `judged` (`overall` without `quiet`: per output, the quieter half's samples and their float
    signal) the finished evaluation can still give after a part of its samples: the noise only grows, the rest
    of the float outputs' signal (`signal_left`, known from the cached float outputs) is the most SQNR it can
    still add, and each remaining sample at most cosine 1."""
    sqnrs, cosines = [], []
    slack = 1 + 1e-9  # keeps a trial that would meet the target exactly from stopping on rounding
    for name, d in judged_outputs(drift).items():
        best = sqnr_db((d.signal + max(signal_left.get(name, 0.0), 0.0)) * slack, d.noise)
        if best is None:  # overall skips an output whose float values are all zero
            continue
        sqnrs.append(best)
        if quiet is not None and name in quiet:
            indices, quiet_signal = quiet[name]
            noise = sum(n for k, (_, n) in enumerate(d.per_sample) if k in indices)
            if (x := sqnr_db(quiet_signal * slack, noise)) is not None:  # an overflow's inf or NaN noise: -inf
                sqnrs.append(x)
        # a one-value output's cosine is over the samples: no bound before the last one
        cosines.append(1.0 if d.elements == 1 else (d.cosine_sum + samples_left) / max(d.samples + samples_left, 1))
    return {"sqnr_db": min(sqnrs, default=-math.inf), "cosine": min(cosines, default=0.0)}


def judged_outputs(drift: dict) -> dict:
    """The outputs a model is judged by: all but the integer ones (a detector's class ids are no signal to measure
    rounding against: 1.9 dB of "labels" was named the worst output), unless every output is one."""
    return {name: d for name, d in drift.items() if not getattr(d, "integer", False)} or drift


def overall(drift: dict) -> Metrics:
    """The worst output's SQNR and mean cosine: pooled over outputs, a small one (MTCNN's box regression
    next to its class scores) hid behind the large ones, and the search met its target on the sum."""
    measured = list(judged_outputs(drift).values())
    per_output = [x for d in measured if (x := sqnr_db(d.signal, d.noise)) is not None]
    sqnr = min(per_output) if per_output else -math.inf
    cosines = [d.cosine for d in measured if d.signal > 0]
    cosine = min(cosines, default=1.0 if all(d.noise == 0 for d in measured) else 0.0)  # all-zero and equal: no drift
    return {"sqnr_db": sqnr, "cosine": cosine if math.isfinite(cosine) else 0.0}


def judged(drift: dict) -> Metrics:
    """What the search holds to its target: `overall`, with each output's SQNR the worse of the one pooled
    over all samples and the one pooled over their quieter half (`_quiet_sqnr`). A part of an output (a
    detection head's class scores) is held to its pooled SQNR: its quieter half is the inputs where nothing
    was found, whose scores near 0 a relative measure magnifies."""
    metrics = overall(drift)
    quiet = [x for d in judged_outputs(drift).values() if not getattr(d, "part", False) and (x := _quiet_sqnr(d)) is not None]
    return {**metrics, "sqnr_db": min([metrics["sqnr_db"], *quiet])}

"""Activation ranges by model output error (`--apply_algorithms actsearch`).

The calibration methods choose each tensor's range by that tensor alone: min-max keeps every
value, sqnr/mse/percentile clip the tail where the tensor's own rounding noise says so. Neither
knows what the model's output feels: clipping a ReLU's rare large values can cost nothing or
everything downstream (a wake-word head lost 4.4 dB to sqnr calibration where a detector's
backbone gained 3). actsearch asks the model. For every activation group with a calibrated
range it builds the ranges sqnr, mse and the 99.99th, 99.9th and 99th percentiles give from the group's
histogram (`num_batches` samples, default 64; the rules of group_range.py still apply, so model
outputs, probabilities and Softmax inputs keep theirs), and scores the whole quantized model with
only that group changed: output SQNR against the float model on `trial_samples` calibration
samples (default 16). The changes that gain are then tried together, most useful first, on every
calibration sample: all of them, else the longest of halving prefixes that gains at least 0.02 dB
there, else none, so the model is never worse on the calibration set than without actsearch. The
cost is one model pass over `trial_samples` per candidate range (`max_trials`, default 400, bounds
them, spent on the groups whose own noise falls most first) and a few over all samples.
"""

from __future__ import annotations

import copy
import itertools
import logging

import numpy as np

from qtool.quant import range_search
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.calibrate import calibrate
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import group_encoding
from qtool.quant.observers import Histogram, MinMax
from qtool.quant.plan import activation_groups, activation_tensors

STAGE = "quantized"
logger = logging.getLogger(__name__)

# the ranges tried: the calibration methods' own, and percentiles that clip further than any local criterion
# would (a rare spike on a channel the next layer all but ignores costs nothing clipped; only the output says so)
METHODS = (("sqnr", 0.0), ("mse", 0.0), ("percentile", 99.99), ("percentile", 99.9), ("percentile", 99.0))
MIN_GAIN_DB = 0.02  # below this a change is measurement noise on a few samples


def _schema(e) -> str:
    if not e.is_symmetric:
        return "asymmetric"
    return "unsignedsymmetric" if min(e.min) >= 0 and e.qmin == 0 else "symmetric"


def _with_select(h: Histogram, method: str, q: float) -> Histogram:
    out = copy.copy(h)  # counts are shared, never changed by range()
    out.select, out.q = method, q or h.q
    return out


def _candidates(ctx: AlgorithmContext, facts: GraphFacts, plan, hists: dict) -> list[tuple[float, list[str], dict]]:
    """(local noise ratio, group, {tensor: histogram observer}) per changed range, the largest ratio first."""
    found = []
    for group in activation_groups(facts, activation_tensors(facts)):
        e = plan.activations.get(group[0])
        observers = [ctx.observers.get(t) for t in group]
        if (
            e is None
            or e.is_float
            or len(e.scale) != 1
            or any(t in ctx.overrides.activations for t in group)
            or any(type(o) not in (MinMax, Histogram) or o.stays_float for o in observers)
            or not all(t in hists and hists[t].count for t in group)
        ):
            continue
        schema, scale = _schema(e), float(e.scale[0])
        merged = copy.deepcopy(hists[group[0]])
        for t in group[1:]:
            merged.merge(hists[t])
        edges = merged._edges()
        centers, counts = (edges[:-1] + edges[1:]) / 2, merged.counts.astype(np.float64)
        seen = {(e.min[0], e.max[0])}
        for method, q in METHODS:
            chosen = {t: _with_select(hists[t], method, q) for t in group}
            cand = group_encoding(facts, group, chosen, ctx.overrides, bitwidth=e.bitwidth, schema=schema)
            lo, hi = cand.min[0], cand.max[0]
            if any(abs(lo - a) < scale / 2 and abs(hi - b) < scale / 2 for a, b in seen):
                continue
            seen.add((lo, hi))
            noise = range_search.expected_noise(
                centers, counts, np.array([e.min[0], lo]), np.array([e.max[0], hi]), e.bitwidth, schema, gamma=1.0
            )
            found.append((float(noise[0] / max(noise[1], 1e-30)), group, chosen))
    return sorted(found, key=lambda c: -c[0])


def run(ctx: AlgorithmContext) -> list[str]:
    config = check_config("actsearch", ctx.config, {"num_batches", "trial_samples", "max_trials"})
    if ctx.score is None or not ctx.observers:
        return ["actsearch: no calibrated activation ranges to search"]
    facts = GraphFacts.of(ctx.model)
    qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
    tensors = [t for t in activation_tensors(facts) if type(ctx.observers.get(t)) in (MinMax, Histogram)]
    hists, _ = calibrate(
        ctx.model, tensors, itertools.islice(ctx.samples(), int(config.get("num_batches", 64))),
        observer="sqnr", threads=ctx.threads,
    )  # fmt: skip
    for t, h in hists.items():
        if isinstance(h, Histogram) and h.count:
            h.widen(*MinMax.range(ctx.observers[t]))  # every sample's extremes, as the plan's range has
    trial_samples = int(config.get("trial_samples", 16))
    base = ctx.score(qdq, trial_samples)
    cands = _candidates(ctx, facts, plan, hists)[: int(config.get("max_trials", 400))]
    gains: dict[str, tuple[float, list[str], dict]] = {}  # group head -> best (gain, group, observers)
    for _, group, chosen in cands:
        saved = {t: ctx.observers[t] for t in group}
        ctx.observers.update(chosen)
        gain = ctx.score(ctx.quantize(ctx.model, ctx.overrides)[0], trial_samples) - base
        ctx.observers.update(saved)
        if gain > max(MIN_GAIN_DB, gains.get(group[0], (0.0,))[0]):
            gains[group[0]] = (gain, group, chosen)
    order = sorted(gains.values(), key=lambda g: -g[0])
    # what is kept is judged on every calibration sample, not the few that ranked the changes (mixed precision
    # does the same): a change that only fits those samples does not survive
    start = best = ctx.score(qdq, 0) if order else base
    kept, length = 0, len(order)
    while length:
        saved = {t: ctx.observers[t] for _, group, _ in order[:length] for t in group}
        for _, _, chosen in order[:length]:
            ctx.observers.update(chosen)
        score = ctx.score(ctx.quantize(ctx.model, ctx.overrides)[0], 0)
        ctx.observers.update(saved)
        if score > best + MIN_GAIN_DB:
            best, kept = score, length
        if length == len(order) and kept:
            break  # all of them together gain: keep them all
        length //= 2
    for _, _, chosen in order[:kept]:
        ctx.observers.update(chosen)
    logger.info("actsearch: %d candidate ranges, %d gained alone, %d kept", len(cands), len(order), kept)
    return [
        f"actsearch: {kept} of {len(cands)} tried activation ranges changed by output error "
        f"(output SQNR on the calibration samples {start:.2f} -> {best:.2f} dB)"
    ]

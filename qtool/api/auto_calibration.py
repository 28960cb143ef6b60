"""`--act_quantizer_calibration auto`: which activation range method a model gets, chosen by what it does to
the model's output on calibration samples it was not calibrated on.

No one method wins everywhere. On the zoo's 23 models with both rows, sqnr ranges with bias correction beat
min-max by a median 3.2 dB, yet cost hey_mycroft's wake-word head 7.7 dB and nudenet's detector 3.2; mse ranges
gained 10.3 dB on hey_jarvis and lost 8.7 on hey_mycroft. A tensor's own quantization noise, which each method
minimises, is not the output's: clipping a logit's tail that a Sigmoid reads costs more than its noise says.
So each candidate is scored the way float-stage changes are (api/quantize.trial_folds): calibrated on one half
of up to 32 samples spread over the list, scored on the other half, and the halves swapped, with the
algorithms that follow the ranges (bc, adaround) run in each trial. min-max, qairt's default, stays unless
another method beats it by AUTO_MARGIN_DB, more than two folds of 16 samples resolve, both pooled over the
checked samples and on the median sample (each sample's SQNR against min-max's on it). Pooled over 16 samples,
one or two loud ones decide: Open-NSFW's two-class output scored sqnr 52.0 dB against min-max 44.4 while every
method's median sample stood at 65.8, and held out sqnr lost 4.3 dB. The report gives each fold's figure after
their mean, and says where the method chosen lost to min-max on one: two folds resolve less than they seem to.
ddddocr's YOLOX detector: min-max 18.0 | 13.6 dB, sqnr 16.6 | 19.6. Its min-max ranges from 16 samples score
4.6-18.0 dB on 16 others, from 40 of its 48 11.0-15.3 held out (all 48: 17.3), sqnr's 14.7-18.6 (16.1): sqnr is
the better choice on the draws' mean (+1.8 dB), and the all-48 row's -1.3 was that draw's.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qtool.encoding import Encoding
from qtool.inspect.compare import picked_rows
from qtool.io.kept_outputs import KeptOutputs
from qtool.quant.graph_facts import FLOATING_TYPES, GraphFacts
from qtool.quant.mixed_precision import judged_outputs, sqnr_db
from qtool.quant.observers import Observer, read_as
from qtool.quant.plan import activation_tensors

logger = logging.getLogger(__name__)

AUTO_CALIBRATIONS = ("min-max", "sqnr", "mse")  # percentile's 99.99 and entropy's KL are one clip rule each
AUTO_MARGIN_DB = 0.3
SCORED_TYPES = FLOATING_TYPES
SAMPLE_DB_CAP = 200.0  # a sample with no error at all: its SQNR is no number to subtract


def sample_sqnrs(drift: dict) -> list[float]:
    """Each sample's SQNR (dB) on the output the model is judged by (the worst pooled one, as `overall`)."""
    measured = [d for d in judged_outputs(drift).values() if d.per_sample]
    if not measured:
        return []
    worst = min(measured, key=lambda d: _capped_db(d.signal, d.noise))
    return [_capped_db(s, n) for s, n in worst.per_sample]


def output_sqnrs(drift: dict) -> dict[str, float]:
    """Each judged output's SQNR (dB) pooled over the samples: what one output lost where the worst one gained."""
    return {name: _capped_db(d.signal, d.noise) for name, d in judged_outputs(drift).items()}


def _capped_db(signal: float, noise: float) -> float:
    """sqnr_db within ±SAMPLE_DB_CAP; nothing to measure (a zero signal) counts as the floor."""
    value = sqnr_db(signal, noise)
    return -SAMPLE_DB_CAP if value is None else min(max(value, -SAMPLE_DB_CAP), SAMPLE_DB_CAP)


def nothing_to_score(facts: GraphFacts, overrides: dict[str, Encoding], op_types: tuple[str, ...] = ()) -> str:
    """The report's line where no output is float (MatMul -> Cast int32, class ids): each method's trials scored
    the integers, most often equal ('min-max inf, sqnr inf, mse inf dB'), for nothing; min-max stays untried.
    Any floating output scores, not only one QuantizeLinear takes (facts.is_float): platedet's float16 outputs at
    opset 17 read as 'not float', and its methods went untried (min-max 14.7, sqnr 17.0, mse 17.8 dB before).
    Nor where the overrides give every activation its range, or keep it float (an AIMET file ported whole): each
    method's trials quantized with the same ranges ('min-max 31.8, sqnr 31.8, mse 31.8 dB'), nor where
    --op_types_to_quantize names no op of the model (its trials quantized nothing: 'min-max inf, sqnr inf')."""
    if op_types and not set(op_types) & {node.op_type for node in facts.model.graph.node}:
        return "calibration auto: min-max (--op_types_to_quantize names no op of the model; none was tried)"
    outputs = sorted(facts.graph_outputs)
    tensors = activation_tensors(facts)
    if tensors and all((e := overrides.get(t)) is not None and (e.is_float or e.scale) for t in tensors):
        return f"calibration auto: min-max (the overrides set all {len(tensors)} activation ranges; none was tried)"
    scored = [t for t in outputs if facts.elem_types.get(t) in SCORED_TYPES]
    picked = picked_rows(facts.model)
    if scored and all(t in picked for t in scored):  # an end-to-end YOLO's [1, 300, 6]: rows a swap reorders
        # isbnx's: every method and bc scored -1.7 dB on the halves, 11 of its 16 minutes spent for no choice
        take = "take" if len(scored) > 1 else "takes"
        return (f"calibration auto: min-max ({_named(scored)} {take} rows by a TopK's indices, where a swap of two near"
                " scores reads as noise: no SQNR to score methods by; none was tried)")
    if scored:
        return ""
    return f"calibration auto: min-max (no float output to score methods by: {_named(outputs)} not float; none was tried)"


def _named(names: list[str]) -> str:
    return ", ".join(map(repr, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def median(values: np.ndarray) -> float:
    """np.median of a non-empty 1-D array, to the bit (the mean of the middle two of an even count; NaN if any is),
    in Python floats: np.median imports numpy.ma for its NaN check (1.3 MB of modules in a ~96 MB process), and
    numpy's partition or sort code is 250-430 KB more of its library paged in, for a few dozen values."""
    ordered = sorted(values.tolist())
    if any(math.isnan(v) for v in ordered):
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class HeldOutGain:
    """One change (bc, per-channel weights) scored on the same held-out halves as without it: the mean of the
    folds' output SQNR without and with it, each fold's pair, the median sample's gain, and the outputs that lost
    more than AUTO_MARGIN_DB in a fold. It gains as a range method must beat min-max: pooled and on the median."""

    pooled: float
    pooled_after: float
    each: str
    median_sample: float
    lost: list[str]

    @property
    def gains(self) -> bool:
        return self.pooled_after >= self.pooled + AUTO_MARGIN_DB and self.median_sample >= AUTO_MARGIN_DB

    @property
    def lost_words(self) -> str:
        return f"output {', '.join(map(repr, self.lost[:3]))} lost more than {AUTO_MARGIN_DB:g} dB in a fold"


def held_out_gain(before: tuple[list, list, list], after: tuple[list, list, list]) -> HeldOutGain:
    """From each checked sample's output SQNR, each fold's, and each fold's per output, without and with the change
    (at least one fold each); a median gain of 0 where the samples do not pair."""
    (samples, folds, outputs), (samples_after, folds_after, outputs_after) = before, after
    paired = samples and len(samples) == len(samples_after)
    lost = sorted({name for was, now in zip(outputs, outputs_after, strict=False) for name, db in now.items()
                   if name in was and db < was[name] - AUTO_MARGIN_DB})  # fmt: skip
    return HeldOutGain(
        sum(folds) / len(folds), sum(folds_after) / len(folds_after),
        " | ".join(f"{a:.1f} -> {b:.1f}" for a, b in zip(folds, folds_after, strict=False)),
        median(np.array(samples_after) - np.array(samples)) if paired else 0.0, lost,
    )


class GiveUp:
    """Whether a method's trial can stop: its median sample must beat min-max's on it by AUTO_MARGIN_DB, so once
    more than half of the checked samples fall short it cannot be chosen, whatever the rest score. Called after
    each sample with the SQNRs of the folds done (`earlier`) and the drift of the fold being scored, whose judged
    output is its worst pooled one once the fold ends: the stop waits until every output's samples fall short.
    A trial is 6 of a detector's 8 runs at 928x928 (PicoDet: 25 s each, 2 cores): one that loses stops early."""

    def __init__(self, base: list[float]) -> None:
        self.base, self.at = base, 0  # min-max's samples; how many were scored when it stopped (0: it did not)

    def __call__(self, earlier: list[float], drift: dict) -> bool:
        outputs = [earlier + [_capped_db(s, n) for s, n in d.per_sample] for d in judged_outputs(drift).values()]
        short = [sum(not (m - b >= AUTO_MARGIN_DB) for m, b in zip(mine, self.base, strict=False)) for mine in outputs]
        # NaN counts short, as median() gives NaN then; at the last sample nothing is left to save
        if outputs and len(outputs[0]) < len(self.base) and min(short) > len(self.base) // 2:
            self.at = len(outputs[0])
        return self.at > 0


def choose_calibration(trial: Callable[[str, list, list, GiveUp | None], float]) -> tuple[str, str]:
    """(the method, the report's line): `trial(method, per_sample, per_fold, give_up)` is the output SQNR (dB) out
    of sample, and adds each checked sample's SQNR to `per_sample` and each fold's to `per_fold` (in the same order
    for every method); it may stop where `give_up` says (not for min-max, scored first)."""
    samples: dict[str, list[float]] = {method: [] for method in AUTO_CALIBRATIONS}
    folds: dict[str, list[float]] = {method: [] for method in AUTO_CALIBRATIONS}
    default = AUTO_CALIBRATIONS[0]
    give_up = {m: GiveUp(samples[default]) for m in AUTO_CALIBRATIONS if m != default}
    scores = {method: trial(method, samples[method], folds[method], give_up.get(method)) for method in AUTO_CALIBRATIONS}
    stopped = {m for m, g in give_up.items() if g.at}
    scores = {m: s for m, s in scores.items() if m not in stopped}
    if all(s == math.inf for s in scores.values()):  # an output zero (or empty) on every sample: 'min-max inf, ...'
        line = "every method's outputs on the held-out halves equal the float model's: no error to choose by"
        logger.info("calibration auto: %s (%s)", default, line)
        return default, f"calibration auto: {default} ({line})"

    def median_gain(method: str) -> float:
        mine, base = np.array(samples[method]), np.array(samples[default])
        return median(mine - base) if mine.size and mine.size == base.size else math.inf

    gains = {m: median_gain(m) for m in scores if m != default}
    eligible = [m for m in gains if scores[m] >= scores[default] + AUTO_MARGIN_DB and gains[m] >= AUTO_MARGIN_DB]
    chosen = max(eligible, key=lambda m: scores[m]) if eligible else default
    tried = ", ".join(f"{m} {s:.1f}" + _each(folds[m]) for m, s in scores.items())
    medians = ", ".join(f"{m} {g:+.1f}" for m, g in gains.items() if math.isfinite(g))
    medians = f"; median sample against {default}: {medians} dB" if medians else ""
    medians += "".join(f"; {m} stopped after {give_up[m].at} of {len(samples[default])} samples, most not "
                       f"{AUTO_MARGIN_DB:g} dB over {default}: its median sample could not be" for m in AUTO_CALIBRATIONS if m in stopped)  # fmt: skip
    kept = ""
    if chosen == default and max(scores, key=lambda m: (scores[m], m == default)) != default:
        kept = f"; {default} stays unless another wins by {AUTO_MARGIN_DB:g} dB pooled and on the median sample"
    kept += _lost_on_a_half(folds[chosen], folds[default], default) if chosen != default else ""
    line = f"output SQNR on held-out halves of the list: {tried} dB{medians}{kept}"
    logger.info("calibration auto: %s (%s)", chosen, line)
    return chosen, f"calibration auto: {chosen} ({line})"


def _each(folds: list[float]) -> str:
    """Each fold's SQNR, as the report shows them after their mean: ' (18.0 | 13.6)'; nothing for one fold."""
    return f" ({' | '.join(f'{f:.1f}' for f in folds)})" if len(folds) > 1 else ""


def _lost_on_a_half(mine: list[float], default: list[float], name: str) -> str:
    """The report's words where the method chosen lost to `name` on a fold: its lead rests on the other half."""
    lost = [(m, d) for m, d in zip(mine, default, strict=False) if m < d]
    if not lost or len(mine) != len(default):
        return ""
    return (f"; it lost to {name} on one half ({lost[0][0]:.1f} against {lost[0][1]:.1f} dB): the halves disagree, "
            "and which samples set the ranges decides as much as the method")  # fmt: skip


def min_max_of_halves(halves: dict[tuple[int, ...], tuple[object, dict]], model: object, total: int) -> dict | None:
    """The min-max observers a pass over all `total` samples of the list gives, from the histogram passes auto's
    folds ran on its two halves (`halves`: samples -> (model, observers)), when they ran `model` on every sample
    of the list: a histogram keeps the true extremes, and min and max merge exactly, so the run's own calibration
    pass repeats nothing (a list of up to 2·TRIAL_SAMPLES). None where the pass would differ: a half without
    them, or a tensor left float (a min-max pass skips an unbounded sample, a histogram's bins take it as 0)."""
    together = sorted(k for key in halves for k in key)
    if len(halves) != 2 or together != list(range(total)) or any(m is not model for m, _ in halves.values()):
        return None
    first, second = halves.values()
    found: dict[str, Observer] = {}
    shared: dict[int, Observer] = {}  # a Softmax chain's members share one observer: merged once
    for name, observer in first[1].items():
        if getattr(observer, "unbounded", False):
            return None
        mine = read_as(observer, "min-max")  # a histogram as min-max (a new one); a Softmax input's as it is
        found[name] = shared.setdefault(id(observer), copy.deepcopy(mine) if mine is observer else mine)
    done: set[int] = set()
    for name, observer in second[1].items():
        if getattr(observer, "unbounded", False) or name not in found:
            return None
        if id(observer) not in done:
            done.add(id(observer))
            found[name].merge(read_as(observer, "min-max"))
    return found if len(found) == len(second[1]) else None


@dataclass
class FloatRuns:
    """The float model's outputs on the sample sets auto's folds scored on (samples -> outputs, None where too
    large to keep), and the sets whose outputs a calibration pass kept (its instrumented session) rather than
    compare.reference_outputs (the float model's own): the evaluation's float pass reads them where they cover
    its samples and come from the session it would have run. Each was a second float pass over the list."""

    outputs: dict[tuple[int, ...], KeptOutputs | None] = field(default_factory=dict)
    calibrated: set[tuple[int, ...]] = field(default_factory=set)

    def first(self, count: int, calibrated: bool) -> Sequence | None:
        """The outputs on samples 0..count-1 of the list, in order; None unless the sets cover them and each
        came from a calibration pass (`calibrated`) or each from the float model's own session."""
        found = {k: (values, at) for key, values in self.outputs.items()
                 if values is not None and (key in self.calibrated) == calibrated for at, k in enumerate(key)}  # fmt: skip
        if count == 0 or any(k not in found for k in range(count)):
            return None
        return _Gathered([found[k] for k in range(count)])


class _Gathered(Sequence):
    """Outputs per sample read from the stores that hold them (values, position)."""

    def __init__(self, places: list[tuple[KeptOutputs, int]]) -> None:
        self.places = places

    def __len__(self) -> int:
        return len(self.places)

    def __getitem__(self, index: int):  # type: ignore[override]  # compare_outputs reads one sample at a time
        values, at = self.places[index]
        return values[at]

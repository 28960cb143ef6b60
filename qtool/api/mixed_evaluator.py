"""How `--mixed_precision auto` measures a trial (quant/mixed_precision.Evaluator): the quantized model
against the float outputs, computed once, over the evaluation samples.

The search's time is its number of trials times one pass over the samples, so: the sensitivity pass
(one trial per candidate, ~150 on a CTC recogniser) runs on SCREEN_SAMPLES samples spread over the list,
since it only ranks candidates; a trial that only has to say whether the target is met stops as soon as
the float signal still to come cannot make up for the noise already measured.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import onnx

from qtool.graph.output_parts import Part, output_parts
from qtool.inspect import compare
from qtool.io.encodings import Encodings
from qtool.io.feeds import iter_feeds
from qtool.io.input_list import InputList
from qtool.io.raw import InputSpec
from qtool.quant import mixed_precision as mp

# Enough samples to rank candidates by gain (a sample is a whole image, utterance or sentence, and a gain
# of a few tenths of a dB ranks alike on 16 or 64 of them); the target itself is always judged on all.
SCREEN_SAMPLES = 16


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices evenly over range(count) (lists are often in source order: photo by photo)."""
    if count <= wanted:
        return list(range(count))
    return sorted({int(k) for k in np.linspace(0, count - 1, wanted).round()})


def halves(listing: InputList) -> tuple[list[int], list[int]]:
    """The list's distinct samples in two halves by a seeded shuffle, not by position: a list that alternates kinds
    of sample (a matcher's pairs) or goes photo by photo gave one half only one kind."""
    order = np.random.default_rng(0).permutation(listing.distinct).tolist()
    return sorted(order[::2]), sorted(order[1::2])


def _signals(cached: list[list[np.ndarray]], names: list[str], parts: list[Part]) -> dict[str, list[float]]:
    """Σ ref² per output (and part of one, as compare.compare_outputs measures them) and sample."""
    per_sample: dict[str, list[float]] = {key: [] for key in [*names, *(p.name for p in parts)]}
    for outputs in cached:
        for name, ref in zip(names, outputs, strict=True):
            for key, values in [(name, ref), *((p.name, p.of(ref)) for p in parts if p.output == name)]:
                if values is not None:
                    r = values.astype(np.float64).ravel()
                    per_sample[key].append(compare.dot(r, r))
    return per_sample


def evaluator(
    reference: onnx.ModelProto,
    listing: InputList,
    specs: list[InputSpec],
    native: bool,
    threads: int,
    build: Callable[[Encodings], onnx.ModelProto],
    integer_kernels: bool = True,
    fitted: Callable[[Encodings, list[int]], onnx.ModelProto] | None = None,
) -> mp.Evaluator:
    """`build` turns a trial's encodings into its QDQ model; `integer_kernels`: see compare.compare_outputs;
    `fitted(encodings, samples)` into the QDQ model with ranges calibrated on those samples of the list alone
    (None: the list's ranges came from other samples, --eval_list's)."""
    count = len(listing.samples)
    picked = spread(count, SCREEN_SAMPLES)
    subset = dataclasses.replace(listing, samples=tuple(listing.samples[k] for k in picked))
    cached = compare.reference_outputs(reference, iter_feeds(listing, specs, native), threads)
    parts = output_parts(reference)  # once: every trial measures them

    def measure(encodings: Encodings, samples: InputList, kept, stop=None) -> dict[str, compare.Drift]:
        feeds = iter_feeds(samples, specs, native)
        return compare.compare_outputs(
            reference, build(encodings), feeds, threads=threads, cached=kept, stop=stop,
            integer_kernels=integer_kernels, parts=parts,
        )  # fmt: skip

    def full(encodings: Encodings) -> mp.Metrics:
        return mp.judged(measure(encodings, listing, cached))

    def screen(encodings: Encodings) -> mp.Metrics:
        # ranks by the pooled SQNR: the quieter half of 16 samples or fewer is a few samples, and gains on them
        # ranked a whole float chain (the STFT's input with it) before the spectrum alone (cost 7.7 for 2.1)
        return mp.overall(measure(encodings, subset, None if cached is None else [cached[k] for k in picked]))

    def held_out(encodings: Encodings) -> mp.Metrics:
        """Each half scored with ranges fitted to the other (the search's samples set the ranges it is scored with):
        the folds' mean SQNR and worse cosine, as auto's calibration choice scores its methods."""
        folds = []
        for fit, check in itertools.permutations(halves(listing)):
            samples = dataclasses.replace(listing, samples=tuple(listing.samples[k] for k in check))
            feeds = iter_feeds(samples, specs, native)
            kept = None if cached is None else [cached[k] for k in check]
            folds.append(mp.judged(compare.compare_outputs(
                reference, fitted(encodings, fit), feeds, threads=threads, cached=kept, integer_kernels=integer_kernels,
                parts=parts)))  # fmt: skip
        return {"sqnr_db": sum(f["sqnr_db"] for f in folds) / 2, "cosine": min(f["cosine"] for f in folds)}

    confirm = held_out if fitted is not None and len(listing.distinct) >= 4 else None
    if cached is None:  # float outputs too large to keep: no totals to bound a trial with
        return mp.Evaluator(full, screen, held_out=confirm)
    signals = _signals(cached, [o.name for o in reference.graph.output], parts)
    totals = {name: sum(values) for name, values in signals.items()}
    whole = {o.name for o in reference.graph.output}  # parts are held to their pooled SQNR (mp.judged)
    quiet = {name: (set(k := mp.quieter_half(v)), sum(v[i] for i in k)) for name, v in signals.items() if name in whole}

    def meets(encodings: Encodings, target: mp.Target) -> mp.Metrics | None:
        hopeless = False

        def stop(drift: dict[str, compare.Drift], done: int) -> bool:
            nonlocal hopeless
            left = {name: totals.get(name, 0.0) - d.signal for name, d in drift.items()}
            hopeless = done < count and not target.met(mp.best_possible(drift, left, count - done, quiet))
            return hopeless

        drift = measure(encodings, listing, cached, stop)
        return None if hopeless else mp.judged(drift)

    return mp.Evaluator(full, screen, meets, confirm)

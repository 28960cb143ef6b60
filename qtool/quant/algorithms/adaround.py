"""Adaptive weight rounding: choose each weight's rounding to minimise the layer's output error
(Nagel et al. 2020, "Up or Down? Adaptive Rounding"; AIMET's name), layer by layer.

With x̃ = [x; 1] over the layer's input rows (im2col patches for Conv) and H = E[x̃ x̃ᵀ], the
output error of a row θ = [w b] replaced by θ̂ = [ŵ b̂] is (θ̂ − θ)ᵀ H (θ̂ − θ). We minimise it
GPTQ-style: round one weight column at a time and push its error onto the columns not yet rounded
through the Cholesky factor of (H + λI)⁻¹, then move single weights one grid step while that
lowers the error (the local optimum AdaRound's relaxation also ends in). The bias column stays
continuous (it is stored in int32), so it absorbs the mean output shift of the rounding as bias
correction would. Per row, the result is kept only if its error is below round-to-nearest's (with
its best bias), so adaround never does worse than plain rounding on the data it saw. λ grows with
the weights per input row (`_ridge`): with few rows a layer fits the calibration samples' noise.

`sequential: true` instead rounds the layers in graph order on the inputs x̂ each layer really gets
in the QDQ model holding the layers already rounded, against the float layer's output on its float
input t (asymmetric reconstruction, as AdaRound's paper does): the target rows minimise
E‖θ* x̂ − θ t‖² and so also undo the error the earlier layers left (slower: a pass over the
samples per layer, each from where the last stopped: `frontier`), with a ridge towards θ that
each layer picks by two-fold cross-validation.
The default, `auto`, does so when a weight is 4-bit or narrower.
Per-block weights (GPTQ with groups, scales fixed first): every weight has its own block's scale
and zero point (`scale`, `zp` are per element of the rows), chosen by the plan before rounding;
the error feedback then runs across the whole row, over the block boundaries. Deterministic: rows are sampled
with fixed seeds. The chosen grid points replace the float weights and the weight encodings are
frozen in the overrides, so writing the QDQ model reproduces exactly these integers.
YAML (`adaround:`): num_batches (samples, default 32), sequential (true/false/auto, default auto),
default_param_bw, ignore_quant_ops_list.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import onnx

from qtool import encoding as enc
from qtool import runtime
from qtool.errors import UsageError
from qtool.graph import external_data
from qtool.graph.model import copy
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.frontier import Frontier
from qtool.quant.algorithms.layers import Layer, augmented_moments, weighted_layers
from qtool.quant.graph_facts import GraphFacts

logger = logging.getLogger(__name__)
STAGE = "quantized"
SETTINGS = frozenset({"num_batches", "sequential", "default_param_bw", "ignore_quant_ops_list"})  # --config keys
ROWS_PER_SAMPLE = 2048
DAMP = 0.01  # λ = DAMP · mean(diag G): GPTQ's dampening, and the ridge towards the float weights
OVERFIT = 3.0  # extra λ per weight per input row (see _ridge)
FIT_RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # target-fit ridges tried per layer (see _fit_ridge)
# Σ x̃x̃ᵀ is (d+1)² float64 a layer, twice a square layer's float32 weights: past this many bytes for all
# layers together they are collected in passes over the samples, a few layers a pass (issue 22)
MOMENTS_BYTES = 256 << 20
# rows are solved this many weights at a time: each row's solution is its own, and a large layer's
# (rows, d) float64 temporaries (a dozen) would otherwise cost several times its weights
CHUNK_WEIGHTS = 1 << 20
T = TypeVar("T")
Pair = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (values in the model, float targets)


def _grid_values(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    return (np.clip(np.rint(w / scale) + zp, *grid) - zp) * scale


def _upper(h: np.ndarray) -> np.ndarray | None:
    """Upper Cholesky factor of h⁻¹ (h carries its ridge), or None when h is not positive definite."""
    shifted = h + 0.0  # h + 1e-12·I to the bit, without two more (d, d) temporaries
    shifted[np.diag_indices_from(shifted)] += 1e-12
    try:
        inverse = np.linalg.inv(shifted)
        del shifted
        return np.linalg.cholesky(inverse).T
    except np.linalg.LinAlgError:
        return None


def _gptq(target: np.ndarray, scale: np.ndarray, zp: np.ndarray, upper: np.ndarray, grid, rounded: int) -> np.ndarray:
    """The first `rounded` columns put on the grid in order (each on its own block's grid), each
    one's error pushed onto the later ones through `upper`; the continuous columns come back updated."""
    work = target.astype(np.float64).copy()
    for j in range(rounded):
        value = _grid_values(work[:, j : j + 1], scale[:, j : j + 1], zp[:, j : j + 1], grid)[:, 0]
        err = (work[:, j] - value) / upper[j, j]
        work[:, j] = value
        work[:, j + 1 :] -= np.outer(err, upper[j, j + 1 :])
    return work


def _with_free(target: np.ndarray, weights: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`weights` followed by the continuous columns that minimise the error given them."""
    d = weights.shape[1]
    if d == target.shape[1]:
        return weights
    shift = np.linalg.solve(h[d:, d:], h[d:, :d] @ (weights - target[:, :d]).T).T
    return np.hstack([weights, target[:, d:] - shift])


def _row_errors(target: np.ndarray, values: np.ndarray, h: np.ndarray) -> np.ndarray:
    diff = values - target
    return np.sum((diff @ h) * diff, axis=1)  # BLAS: einsum's loop was 35x slower on 1153-wide rows


def _schur(h: np.ndarray, free: int) -> np.ndarray:
    """h's Schur complement on the weights: the error of the weights with the free columns re-solved."""
    d = len(h) - free
    return h[:d, :d] - h[:d, d:] @ np.linalg.solve(h[d:, d:], h[d:, :d]) if free else h


def _refine(target, values, scale, zp, h, grid, free: int, sweeps: int = 8, hs: np.ndarray | None = None) -> np.ndarray:
    """Local search from `values`: move single weights one grid step while that lowers the error
    (the free columns re-solved, through the Schur complement of h, `hs` when the caller has it),
    sweep by sweep, vectorised over rows. The greedy column order of GPTQ leaves such steps; each
    taken one lowers the error."""
    d = target.shape[1] - free
    hs = _schur(h, free) if hs is None else hs
    scale, zp = np.broadcast_to(scale, (len(target), d)), np.broadcast_to(zp, (len(target), d))
    codes = np.rint(values[:, :d] / scale) + zp
    err = values[:, :d] - target[:, :d]
    for _ in range(sweeps):
        moved = 0
        for j in range(d):
            step = scale[:, j]
            g = err @ hs[:, j]
            curvature = step * step * hs[j, j]
            up = np.where(codes[:, j] < grid[1], 2 * step * g + curvature, np.inf)
            down = np.where(codes[:, j] > grid[0], -2 * step * g + curvature, np.inf)
            delta = np.where((up < 0) & (up <= down), 1.0, np.where(down < 0, -1.0, 0.0))
            codes[:, j] += delta
            err[:, j] += delta * step
            moved += int(np.count_nonzero(delta))
        if not moved:
            break
    return _with_free(target, (codes - zp) * scale, h)


def solve_rows(target, scale, zp, h, grid, free: int = 0) -> np.ndarray:
    """Rows [ŵ b̂]: ŵ on the grid (`scale`, `zp` per row, or per weight for blocks), the last `free`
    columns continuous, minimising (θ − target)ᵀ h (θ − target) per row; never worse than rounding
    to nearest."""
    d = target.shape[1] - free
    scale = np.broadcast_to(scale.reshape(len(target), -1), (len(target), d))
    zp = np.broadcast_to(zp.reshape(len(target), -1), (len(target), d))
    upper, hs = _upper(h), _schur(h, free)
    step = max(64, CHUNK_WEIGHTS // target.shape[1] // 64 * 64)  # whole blocks of BLAS's rows: the same bits
    if len(target) <= step:
        return _solve_chunk(target, scale, zp, h, upper, hs, grid, free)
    out = np.empty_like(target)
    for start in range(0, len(target), step):
        rows = slice(start, start + step)
        out[rows] = _solve_chunk(target[rows], scale[rows], zp[rows], h, upper, hs, grid, free)
    return out


def _solve_chunk(target, scale, zp, h, upper, hs, grid, free: int) -> np.ndarray:
    d = target.shape[1] - free
    best = _with_free(target, _grid_values(target[:, :d], scale, zp, grid), h)
    if upper is not None:
        found = _with_free(target, _gptq(target, scale, zp, upper, grid, d)[:, :d], h)
        better = _row_errors(target, found, h) < _row_errors(target, best, h)
        best = np.where(better[:, None], found, best)
    return _refine(target, best, scale, zp, h, grid, free, hs=hs)


def _reader(qdq: onnx.ModelProto, layer: Layer) -> onnx.NodeProto | None:
    """The layer's node in the QDQ model (its input there is a DequantizeLinear output)."""
    for node in qdq.graph.node:
        if (layer.node.name and node.name == layer.node.name) or node.output[0] in (
            layer.node.output[0],
            f"{layer.node.output[0]}_prequant",
        ):
            return node
    return None


def _prefetched(items: Iterable[T], run: Callable[[T], Pair]) -> Iterator[Pair]:
    """run(item) for each item, the next one on a worker thread (onnxruntime releases the GIL) while
    the caller turns this one into moments; in the caller's context (the sessions it builds register the
    command's custom-op libraries, runtime.custom_ops)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for item in items:
            done, pending = pending, pool.submit(contextvars.copy_context().run, run, item)
            if done is not None:
                yield done.result()
        if pending is not None:
            yield pending.result()


def _accumulate(layers: list[Layer], names: dict[str, str], pairs: Iterable[Pair], folds: bool, first: int = 0) -> dict:
    """Σ x̃ x̃ᵀ per layer (groups, d+1, d+1) over the values x each layer reads (`names`); with
    `folds`, stacked with Σ x̃ t̃ᵀ against the float input t, and summed over the even and the odd
    samples apart: (2 folds, 2, groups, ...), for the cross-validated target fit. `first`: the index
    of layers[0] among all the layers rounded (it seeds the rows sampled)."""
    sums: dict[str, np.ndarray] = {}
    for count, (values, targets) in enumerate(pairs):
        for k, layer in enumerate(layers, first):
            if layer.weight in names:
                x = values[names[layer.weight]]
                moments = augmented_moments(layer, x, ROWS_PER_SAMPLE, (count, k), targets.get(layer.input))
                if layer.weight not in sums:
                    sums[layer.weight] = np.zeros((2, *moments.shape) if folds else moments.shape)
                total = sums[layer.weight][count % 2] if folds else sums[layer.weight]
                total += moments  # in place: a view of the running sum
    return sums


def _feeds(ctx: AlgorithmContext, samples: int, algorithm: str = "adaround") -> Iterator[dict[str, np.ndarray]]:
    """The first `samples` calibration samples; a warning, naming the algorithm whose num_batches asked, when the
    list has fewer (clipsearch's was told as adaround's, an algorithm the run did not ask for)."""
    count = 0
    for _, feed in itertools.islice(ctx.samples(), samples):
        count += 1
        yield feed
    if count < samples:
        logger.warning("%s: num_batches %d, but the input_list has %d samples", algorithm, samples, count)


def collect(
    ctx: AlgorithmContext, model: onnx.ModelProto, layers: list[Layer], samples: int, first: int = 0,
    algorithm: str = "adaround",
) -> dict[str, np.ndarray]:
    """Σ x̃ x̃ᵀ per layer over the inputs each layer reads in `model`, all layers from one run a sample."""
    names = {layer.weight: node.input[0] for layer in layers if (node := _reader(model, layer)) is not None}
    run_model = runtime.runner(model, sorted(set(names.values())), ctx.threads)
    feeds = _feeds(ctx, samples, algorithm)
    return _accumulate(layers, names, _prefetched(feeds, lambda f: (run_model(f), {})), False, first)


def _passes(model: onnx.ModelProto, layers: list[Layer]) -> list[tuple[int, list[Layer]]]:
    """The layers in runs of consecutive ones whose moments take MOMENTS_BYTES at most (one layer at
    least), each with the index of its first layer; one run when all fit."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    passes: list[tuple[int, list[Layer]]] = []
    held = MOMENTS_BYTES
    for k, layer in enumerate(layers):
        size = 8 * layer.groups * (layer.fan_in(dims[layer.weight]) + 1) ** 2
        if held + size > MOMENTS_BYTES:
            passes.append((k, []))
            held = 0
        passes[-1][1].append(layer)
        held += size
    return passes


def _pair(x_name: str, x_at: Callable, t_name: str, t_at: Callable) -> Callable[[int], Pair]:
    return lambda i: ({x_name: x_at(i)}, {t_name: t_at(i)})


def _sequential(ctx: AlgorithmContext, ref: Originals, layers: list[Layer], encodings: dict, samples: int) -> None:
    """Round the layers in graph order, each on the inputs the QDQ model with the layers before it
    rounded really gives it, against the float layer's output on its float input. Both models run
    forward one layer at a time from each sample's frontier (`Frontier`)."""
    reference = copy(ctx.model)  # the float inputs sequential rounding aims at
    feeds = list(_feeds(ctx, samples))
    quantized, floats = Frontier(feeds, ctx.threads), Frontier(feeds, ctx.threads)
    float_nodes = {node.output[0]: node for node in reference.graph.node if node.output}
    for layer in layers:
        qdq, _ = ctx.quantize(ctx.model, ctx.overrides)
        node = _reader(qdq, layer)
        if node is None:
            continue
        x_at = quantized.advance(qdq, node, node.input[0])
        t_at = floats.advance(reference, float_nodes[layer.node.output[0]], layer.input)
        pairs = _prefetched(range(len(feeds)), _pair(node.input[0], x_at, layer.input, t_at))
        sums = _accumulate([layer], {layer.weight: node.input[0]}, pairs, True)
        _round_layers(ctx, ref, [layer], encodings, sums)


def _bias(layer: Layer) -> str | None:
    node = layer.node
    return node.input[2] if len(node.input) > 2 and node.input[2] else None


def _ridge(moments: np.ndarray, d: int, diag: float) -> float:
    """λ = (DAMP + OVERFIT · d / rows) · mean(diag H): more shrinkage towards the float weights the
    fewer input rows each weight is fitted on. Late EfficientNet layers see 49 positions a sample,
    so 32 samples give 1568 rows for 1153 weights a row; fitted with DAMP alone, their validation
    error was up to 1.5x round-to-nearest's while their calibration error fell 10x."""
    return (DAMP + OVERFIT * d / max(float(moments[-1, -1]), 1.0)) * diag + 1e-12


def _fitted(theta: np.ndarray, h: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """The continuous rows θ* minimising Σ ‖θ* x̂ − θ t‖² + ridge·‖θ* − θ‖² over the quantized
    inputs x̂ and float inputs t: the rows that also undo the error earlier layers left in x̂."""
    d = theta.shape[1]
    return np.linalg.solve(h + ridge * np.eye(d), (theta @ cross[:d, :d].T + ridge * theta).T).T


def _fit_ridge(theta: np.ndarray, folds: np.ndarray, floor: float, diag: float) -> float:
    """The target-fit ridge (FIT_RIDGES · diag, at least `floor`) whose fit on one fold of samples
    best predicts the other fold, both ways: the full fit has d weights a row to fit on often only a
    few thousand rows, and how much of it generalises differs from layer to layer."""
    d, count = theta.shape[1], folds[0, 0][-1, -1] + folds[1, 0][-1, -1]

    def held_out_error(ridge: float) -> float:
        total = 0.0
        for fit, held in ((folds[0], folds[1]), (folds[1], folds[0])):
            rows = _fitted(theta, fit[0][:d, :d], fit[1], ridge * fit[0][-1, -1] / count)
            total += float(np.sum((rows @ held[0][:d, :d]) * rows))
            total -= 2 * float(np.sum((rows @ held[1][:d, :d]) * theta))
        return total

    return min((max(floor, f * diag) for f in FIT_RIDGES), key=held_out_error)


class Originals:
    """The float weights as adaround finds them, read as float64 when a layer is rounded (each layer reads
    its own before it changes them): converting every initializer up front held twice the model's size."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._inits = {i.name: i for i in model.graph.initializer}

    def __getitem__(self, name: str) -> np.ndarray:
        return external_data.array(self._inits[name]).astype(np.float64)

    def stored(self, name: str) -> np.ndarray:
        """As stored, as float32: a lazy weight's view of its file, no copy (read before it changes)."""
        return np.asarray(external_data.array(self._inits[name]), dtype=np.float32)


def _per_row(values: np.ndarray) -> np.ndarray:
    """A matrix constant along its rows as one column (per-channel scales: the full one costs 2x the weights)."""
    return values[:, :1].copy() if np.array_equal(values, np.broadcast_to(values[:, :1], values.shape)) else values


def _adaround_layer(ctx: AlgorithmContext, ref: Originals, layer: Layer, e: enc.Encoding, gram: np.ndarray) -> None:
    w = ref[layer.weight]
    rows = layer.weight_rows(w)
    if e.blocks is None and len(e.scale) not in (1, rows.shape[0]):
        return
    scale = _per_row(layer.weight_rows(e.expand(e.scale_array(), w.shape)))  # per weight: blocks differ along a row
    zp = _per_row(layer.weight_rows(e.expand(e.zero_point().astype(np.float64), w.shape)))
    bias = _bias(layer)
    originals = {layer.weight: w, **({bias: ref[bias]} if bias else {})}
    stored = {name: ref.stored(name) for name in originals}
    free = int(bias is not None and originals[bias].shape == (rows.shape[0],))
    theta = np.hstack([rows, originals[bias][:, None]]) if free else rows
    folds = gram if gram.ndim == 5 else None
    gram = gram.sum(0) if folds is not None else gram
    grams, crosses = (gram[0], gram[1]) if gram.ndim == 4 else (gram, None)
    d, per_group = theta.shape[1], rows.shape[0] // len(grams)
    values = np.empty_like(theta)
    for g, moments in enumerate(grams):
        sl = slice(g * per_group, (g + 1) * per_group)
        diag = float(np.mean(np.diag(moments)[: rows.shape[1]]))
        ridge = _ridge(moments, rows.shape[1], diag)
        h = moments[:d, :d] + 0.0  # + ridge·I to the bit, without two more (d, d) temporaries
        h[np.diag_indices_from(h)] += ridge
        if crosses is None:
            target = theta[sl]
        else:
            fit_ridge = _fit_ridge(theta[sl], folds[:, :, g], ridge, diag)
            target = _fitted(theta[sl], moments[:d, :d], crosses[g], fit_ridge)
        values[sl] = solve_rows(target, scale[sl], zp[sl], h, (e.qmin, e.qmax), free)
    ctx.set_array(layer.weight, layer.weight_from_rows(values[:, : rows.shape[1]], w.shape).astype(np.float32))
    if free:
        ctx.set_array(bias, values[:, -1].astype(np.float32))
    ctx.overrides.params[layer.weight] = e
    ctx.frozen.setdefault(layer.weight, stored)


def _weight_encoding(e: enc.Encoding, bitwidth) -> enc.Encoding:
    if bitwidth is None or int(bitwidth) == e.bitwidth:
        return e
    if e.blocks is not None:
        raise UsageError("adaround: default_param_bw cannot change per-block weights; use --weights_bitwidth",
                         where="--config")  # fmt: skip
    schema = "symmetric" if e.is_symmetric else "asymmetric"
    return dataclasses.replace(enc.with_schema(schema, e.min, e.max, int(bitwidth), e.axis), axis=e.axis)


def _round_layers(ctx: AlgorithmContext, ref: Originals, layers: list[Layer], encodings: dict, moments: dict) -> None:
    for layer in layers:
        if layer.weight in moments:  # popped: each layer's moments go once it is rounded
            _adaround_layer(ctx, ref, layer, encodings[layer.weight], moments.pop(layer.weight))


def check_settings(config: dict, where: str = "--config") -> dict:
    """default_param_bw a weight bitwidth (3 or 99 failed deep in the QDQ writer, an internal error) and
    ignore_quant_ops_list a list of op types or node names (5 was an internal error; 'Conv', a string, skipped the
    ops named 'C', 'o' and 'n'); check_sections runs it before any work."""
    if "default_param_bw" in config and config["default_param_bw"] not in enc.WEIGHT_BITWIDTHS:
        raise UsageError(f"adaround: default_param_bw must be one of {', '.join(map(str, enc.WEIGHT_BITWIDTHS))} (as "
                         f"--weights_bitwidth), not {config['default_param_bw']!r}", where=where)  # fmt: skip
    skip = config.get("ignore_quant_ops_list", [])
    if not isinstance(skip, list) or not all(isinstance(name, str) for name in skip):
        raise UsageError(f"adaround: ignore_quant_ops_list must be a list of op types or node names, not {str(skip)[:60]}",
                         where=where)  # fmt: skip
    return config


def run(ctx: AlgorithmContext) -> list[str]:
    config = check_settings(check_config("adaround", ctx.config, SETTINGS))
    plan = ctx.quantize(ctx.model, ctx.overrides)[1]  # not the QDQ model: a quarter of the model's size, kept to the end
    skip = set(config.get("ignore_quant_ops_list", []))
    candidates = weighted_layers(GraphFacts.of(ctx.model), skip)
    layers = [layer for layer in candidates if layer.weight in plan.params and not plan.params[layer.weight].is_float]
    bitwidth = config.get("default_param_bw")
    encodings = {layer.weight: _weight_encoding(plan.params[layer.weight], bitwidth) for layer in layers}
    ref = Originals(ctx.model)
    samples, sequential = int(config.get("num_batches", 32)), config.get("sequential", "auto")
    if sequential not in (True, False, "auto"):
        raise UsageError(f"adaround: sequential must be true, false or auto, not {sequential!r}", where="--config")
    if sequential == "auto":
        sequential = any(e.bitwidth <= 4 for e in encodings.values())
    if not sequential:
        passes = _passes(ctx.model, layers)
        source = ctx.model if len(passes) == 1 else copy(ctx.model)  # every pass reads the float inputs
        for first, run_layers in passes:
            _round_layers(ctx, ref, run_layers, encodings, collect(ctx, source, run_layers, samples, first))
        return [f"adaround: {len(layers)} layers rounded to minimise their output error"]
    # Layer k's quantized input depends only on the layers before it (the activation encodings come
    # from the float calibration): each layer is rounded once, in graph order, its weight encodings
    # frozen from the start so that re-planning never searches them again.
    ctx.overrides.params.update(encodings)
    _sequential(ctx, ref, layers, encodings, samples)
    return [f"adaround: {len(layers)} layers rounded to minimise their output error (sequential)"]

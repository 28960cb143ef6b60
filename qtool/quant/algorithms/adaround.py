"""Adaptive weight rounding: choose each weight's rounding to minimise the layer's output error
(Nagel et al. 2020, "Up or Down? Adaptive Rounding"; AIMET's name), layer by layer.

With H = E[x xᵀ] over the layer's input rows (im2col patches for Conv), the output error of a
weight row w rounded to ŵ is (ŵ − w)ᵀ H (ŵ − w). We minimise it GPTQ-style: round one column at
a time and push its error onto the columns not yet rounded through the Cholesky factor of H⁻¹.
Per row, the result is kept only if its error is below round-to-nearest's, so adaround never
does worse than plain rounding.

Later passes (`passes`, default 2) see the inputs the layer really gets: x_q from the QDQ model
holding the previous pass's rounding and 8-bit activations, paired with the float model's x_f on
the same rows. The weights and bias then minimise E‖W x_f + b − (Ŵ x_q + b̂)‖², i.e. each layer
absorbs the error of the layers before it: with x̃ = [x; 1], G = E[x̃_q x̃_qᵀ], C = E[x̃_f x̃_qᵀ],
the continuous optimum is Θ* = [W b] (C + λI)(G + λI)⁻¹ (ridge towards [W b]) and Θ is rounded
against G + λI with the bias column left continuous (it is stored in int32), which also
corrects the mean output shift as bias correction does. Deterministic: rows are sampled with
fixed seeds. The chosen grid points replace the float weights and the weight encodings are frozen
in the overrides, so writing the QDQ model reproduces exactly these integers.
YAML (`adaround:`): num_batches (samples, default 64), passes (default 2), default_param_bw,
ignore_quant_ops_list.
"""

from __future__ import annotations

import dataclasses
import os
import logging

import numpy as np
import onnx
from onnx import numpy_helper

from qtool import runtime
from qtool.quant import encoding as enc
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.layers import Layer, paired_moments, weighted_layers
from qtool.quant.graph_facts import GraphFacts

logger = logging.getLogger(__name__)
STAGE = "quantized"
ROWS_PER_SAMPLE = 2048
RIDGE: float | None = None
DAMP = 0.01  # λ = DAMP · mean(diag G): GPTQ's dampening, and the ridge towards the float weights


def _round(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(w / scale) + zp, lo, hi)


def _grid_values(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    return (_round(w, scale, zp, *grid) - zp) * scale


def _upper(h: np.ndarray, damp: float) -> np.ndarray | None:
    """Upper Cholesky factor of (h + λI)⁻¹, or None when h is not positive definite."""
    extra = damp * float(np.mean(np.diag(h))) + 1e-12
    try:
        return np.linalg.cholesky(np.linalg.inv(h + extra * np.eye(len(h)))).T
    except np.linalg.LinAlgError:
        return None


def _gptq(target: np.ndarray, scale: np.ndarray, zp: np.ndarray, upper: np.ndarray, grid, rounded: int) -> np.ndarray:
    """The first `rounded` columns put on the grid in order, each one's error pushed onto the
    later ones through `upper`; the remaining (continuous) columns come back updated."""
    work = target.astype(np.float64).copy()
    for j in range(rounded):
        value = _grid_values(work[:, j : j + 1], scale, zp, grid)[:, 0]
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
    return np.einsum("rd,de,re->r", diff, h, diff)


def solve_rows(target, scale, zp, h, grid, free: int = 0, damp: float = 0.0) -> np.ndarray:
    """Rows [ŵ b̂]: ŵ on the grid (per-row `scale`, `zp`), the last `free` columns continuous,
    minimising (θ − target)ᵀ h (θ − target) per row; never worse than rounding to nearest."""
    scale, zp = scale.reshape(-1, 1), zp.reshape(-1, 1)
    d = target.shape[1] - free
    best = _with_free(target, _grid_values(target[:, :d], scale, zp, grid), h)
    upper = _upper(h, damp)
    if upper is None:
        return best
    found = _with_free(target, _gptq(target, scale, zp, upper, grid, d)[:, :d], h)
    better = _row_errors(target, found, h) < _row_errors(target, best, h)
    return np.where(better[:, None], found, best)


def round_rows(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, h: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Integer rows for weight rows `w` (rows, d) with per-row `scale`, `zp` and moments `h`."""
    values = solve_rows(w, scale, zp, h, grid, damp=DAMP)
    return np.rint(values / scale.reshape(-1, 1)) + zp.reshape(-1, 1)


@dataclasses.dataclass
class Moments:
    gram: np.ndarray  # (groups, d+1, d+1): Σ x̃_q x̃_qᵀ
    cross: np.ndarray  # Σ x̃_f x̃_qᵀ


def _quantized_inputs(qdq: onnx.ModelProto, layers: list[Layer]) -> dict[str, str]:
    """The tensor each layer reads in the QDQ model (its input's DequantizeLinear output)."""
    by_name = {n.name: n for n in qdq.graph.node if n.name}
    by_output = {n.output[0]: n for n in qdq.graph.node if n.output}
    found = {}
    for layer in layers:
        node = by_name.get(layer.node.name) if layer.node.name else None
        node = node or by_output.get(layer.node.output[0]) or by_output.get(f"{layer.node.output[0]}_prequant")
        if node is not None:
            found[layer.weight] = node.input[0]
    return found


def _pruned(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` returning only `names`, with only the nodes they depend on."""
    copy = runtime.with_outputs(model, names)
    producers = {out: i for i, node in enumerate(copy.graph.node) for out in node.output}
    needed, stack = set(), list(names)
    while stack:
        index = producers.get(stack.pop())
        if index is not None and index not in needed:
            needed.add(index)
            stack.extend(copy.graph.node[index].input)
    nodes = [node for i, node in enumerate(copy.graph.node) if i in needed]
    outputs = [o for o in copy.graph.output if o.name in set(names)]
    del copy.graph.node[:], copy.graph.output[:]
    copy.graph.node.extend(nodes)
    copy.graph.output.extend(outputs)
    return copy


def _session_outputs(ctx: AlgorithmContext, model: onnx.ModelProto, names: list[str]):
    sess = runtime.session(_pruned(model, names), ctx.threads)
    inputs = {i.name for i in sess.get_inputs()}
    return lambda feed: dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in inputs}), strict=True))


def collect(ctx, reference, qdq, layers: list[Layer], samples: int) -> dict[str, Moments]:
    """Moments per layer over `samples` calibration samples; float-only when `qdq` is None."""
    run_float = _session_outputs(ctx, reference, sorted({layer.input for layer in layers}))
    qnames = _quantized_inputs(qdq, layers) if qdq is not None else {}
    run_quant = _session_outputs(ctx, qdq, sorted(set(qnames.values()))) if qdq is not None else None
    sums: dict[str, Moments] = {}
    for count, (_, feed) in enumerate(ctx.samples()):
        if count >= samples:
            break
        xf = run_float(feed)
        xq = run_quant(feed) if run_quant is not None else {}
        for k, layer in enumerate(layers):
            quant = xq[qnames[layer.weight]].astype(np.float64) if layer.weight in qnames else None
            gram, cross = paired_moments(layer, xf[layer.input].astype(np.float64), quant, ROWS_PER_SAMPLE, (count, k))
            if layer.weight in sums:
                sums[layer.weight].gram += gram
                sums[layer.weight].cross += cross
            else:
                sums[layer.weight] = Moments(gram, cross.copy())
    return sums


def _bias(layer: Layer) -> str | None:
    node = layer.node
    return node.input[2] if len(node.input) > 2 and node.input[2] else None


def _targets(theta: np.ndarray, gram: np.ndarray, cross: np.ndarray, weights: int) -> tuple[np.ndarray, np.ndarray]:
    """Θ* = Θ (C + λ'I)(G + λ'I)⁻¹ (λ' = RIDGE · mean diag G; with RIDGE None only the bias moves,
    by W (E[x_f] − E[x_q])) and the damped G + λI, λ from G's weight (not bias) diagonal."""
    mean_diag = float(np.mean(np.diag(gram)[:weights]))
    h = gram + np.eye(len(gram)) * (DAMP * mean_diag + 1e-12)
    if RIDGE is not None:
        ridge = np.eye(len(gram)) * (RIDGE * mean_diag + 1e-12)
        return np.linalg.solve(gram + ridge, (cross + ridge).T @ theta.T).T, h
    target = theta.copy()
    if theta.shape[1] > weights and not os.environ.get('NOCOMP'):
        target[:, weights] += theta[:, :weights] @ (cross[:weights, -1] - gram[:weights, -1]) / gram[-1, -1]
    return target, h


def _adaround_layer(ctx: AlgorithmContext, ref: dict, layer: Layer, e: enc.Encoding, m: Moments) -> None:
    w = ref[layer.weight]
    rows = layer.weight_rows(w)
    if len(e.scale) not in (1, rows.shape[0]):
        return
    scale = np.broadcast_to(e.scale_array(), (rows.shape[0],))
    zp = np.broadcast_to(e.zero_point().astype(np.float64), (rows.shape[0],))
    bias = _bias(layer)
    free = int(bias is not None and ref[bias].shape == (rows.shape[0],))
    theta = np.hstack([rows, ref[bias][:, None]]) if free else rows
    d, per_group = theta.shape[1], rows.shape[0] // len(m.gram)
    values = np.empty_like(theta)
    for g in range(len(m.gram)):
        sl = slice(g * per_group, (g + 1) * per_group)
        target, h = _targets(theta[sl], m.gram[g][:d, :d], m.cross[g][:d, :d], rows.shape[1])
        values[sl] = solve_rows(target, scale[sl], zp[sl], h, (e.qmin, e.qmax), free)
    ctx.set_array(layer.weight, layer.weight_from_rows(values[:, : rows.shape[1]], w.shape).astype(np.float32))
    if free:
        ctx.set_array(bias, values[:, -1].astype(np.float32))
    ctx.overrides.params[layer.weight] = e


def _weight_encoding(e: enc.Encoding, bitwidth) -> enc.Encoding:
    if bitwidth is None or int(bitwidth) == e.bitwidth:
        return e
    schema = "symmetric" if e.is_symmetric else "asymmetric"
    return dataclasses.replace(enc.with_schema(schema, e.min, e.max, int(bitwidth), e.axis), axis=e.axis)


def run(ctx: AlgorithmContext) -> list[str]:
    known = {"num_batches", "passes", "default_param_bw", "ignore_quant_ops_list"}
    config = check_config("adaround", ctx.config, known)
    _, plan = ctx.quantize(ctx.model, ctx.overrides)
    skip = set(config.get("ignore_quant_ops_list", []))
    candidates = weighted_layers(GraphFacts.of(ctx.model), skip)
    layers = [layer for layer in candidates if layer.weight in plan.params and not plan.params[layer.weight].is_float]
    encodings = {
        layer.weight: _weight_encoding(plan.params[layer.weight], config.get("default_param_bw")) for layer in layers
    }
    reference = onnx.ModelProto()
    reference.CopyFrom(ctx.model)
    ref = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in reference.graph.initializer}
    samples, passes = int(config.get("num_batches", 32)), max(1, int(config.get("passes", 2)))
    moments = collect(ctx, reference, None, layers, samples)
    for layer in layers:
        if layer.weight in moments:
            _adaround_layer(ctx, ref, layer, encodings[layer.weight], moments[layer.weight])
    for _ in range(passes - 1):
        for layer in layers:
            qdq, _ = ctx.quantize(ctx.model, ctx.overrides)
            moments = collect(ctx, reference, qdq, [layer], samples)
            if layer.weight in moments:
                _adaround_layer(ctx, ref, layer, encodings[layer.weight], moments[layer.weight])
    logger.info("adaround: %d layers, %d passes", len(layers), passes)
    return [f"adaround: {len(layers)} layers rounded to minimise their output error ({passes} passes)"]

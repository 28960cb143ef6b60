"""Adaptive weight rounding: choose each weight's rounding to minimise the layer's output error
(Nagel et al. 2020, "Up or Down? Adaptive Rounding"; AIMET's name), layer by layer.

With H = E[x xᵀ] over the layer's input rows (im2col patches for Conv), the output error of a
weight row w rounded to ŵ is (ŵ − w)ᵀ H (ŵ − w). We minimise it GPTQ-style: round one column at
a time and push its error onto the columns not yet rounded through the Cholesky factor of H⁻¹.
Per row, the result is kept only if its error is below round-to-nearest's, so adaround never
does worse than plain rounding. Deterministic: the input rows are sampled with a fixed seed.
The chosen grid points replace the float weights and the weight encodings are frozen in the
overrides, so writing the QDQ model reproduces exactly these integers.
YAML (`adaround:`): num_batches (samples, default 32), default_param_bw, ignore_quant_ops_list.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from qtool import runtime
from qtool.quant import encoding as enc
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.layers import Layer, weighted_layers
from qtool.quant.graph_facts import GraphFacts

logger = logging.getLogger(__name__)
STAGE = "quantized"
ROWS_PER_SAMPLE = 2048


def second_moments(ctx: AlgorithmContext, layers: list[Layer], samples: int) -> dict[str, list[np.ndarray]]:
    """Σ xᵀx per layer and group over the float model's inputs to each layer."""
    names = sorted({layer.input for layer in layers})
    sess = runtime.session(runtime.with_outputs(ctx.model, names), ctx.threads)
    inputs = {i.name for i in sess.get_inputs()}
    rng = np.random.default_rng(0)
    sums: dict[str, list[np.ndarray]] = {}
    for count, (_, feed) in enumerate(ctx.samples()):
        if count >= samples:
            break
        values = dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in inputs}), strict=True))
        for layer in layers:
            groups = layer.input_rows(values[layer.input].astype(np.float64), ROWS_PER_SAMPLE, rng)
            moments = [rows.T @ rows for rows in groups]
            previous = sums.get(layer.weight)
            sums[layer.weight] = (
                moments if previous is None else [a + b for a, b in zip(previous, moments, strict=True)]
            )
    return sums


def _round(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(w / scale) + zp, lo, hi)


def _errors(w: np.ndarray, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, h: np.ndarray) -> np.ndarray:
    diff = (q - zp) * scale - w
    return np.einsum("rd,de,re->r", diff, h, diff)


def round_rows(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, h: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Integer rows for weight rows `w` (rows, d) with per-row `scale`, `zp` and moments `h`."""
    scale, zp = scale.reshape(-1, 1), zp.reshape(-1, 1)
    nearest = _round(w, scale, zp, *grid)
    damp = 0.01 * float(np.mean(np.diag(h))) + 1e-12
    try:
        upper = np.linalg.cholesky(np.linalg.inv(h + damp * np.eye(len(h)))).T
    except np.linalg.LinAlgError:
        return nearest
    work, q = w.astype(np.float64).copy(), np.empty_like(nearest)
    for j in range(w.shape[1]):
        q[:, j : j + 1] = _round(work[:, j : j + 1], scale, zp, *grid)
        err = (work[:, j] - (q[:, j] - zp[:, 0]) * scale[:, 0]) / upper[j, j]
        work[:, j + 1 :] -= np.outer(err, upper[j, j + 1 :])
    better = _errors(w, q, scale, zp, h) < _errors(w, nearest, scale, zp, h)
    return np.where(better[:, None], q, nearest)


def _adaround_layer(ctx: AlgorithmContext, layer: Layer, e: enc.Encoding, moments: list[np.ndarray]) -> None:
    w = ctx.array(layer.weight).astype(np.float64)
    rows = layer.weight_rows(w)
    scale = np.broadcast_to(e.scale_array(), (rows.shape[0],)) if len(e.scale) in (1, rows.shape[0]) else None
    if scale is None:
        return
    zp = np.broadcast_to(e.zero_point().astype(np.float64), (rows.shape[0],))
    per_group = rows.shape[0] // len(moments)
    q = np.empty_like(rows)
    for g, h in enumerate(moments):
        sl = slice(g * per_group, (g + 1) * per_group)
        q[sl] = round_rows(rows[sl], scale[sl], zp[sl], h, (e.qmin, e.qmax))
    grid_values = (q - zp[:, None]) * scale[:, None]
    ctx.set_array(layer.weight, layer.weight_from_rows(grid_values, w.shape).astype(np.float32))
    ctx.overrides.params[layer.weight] = e


def run(ctx: AlgorithmContext) -> list[str]:
    config = check_config("adaround", ctx.config, {"num_batches", "default_param_bw", "ignore_quant_ops_list"})
    _, plan = ctx.quantize(ctx.model, ctx.overrides)
    skip = set(config.get("ignore_quant_ops_list", []))
    candidates = weighted_layers(GraphFacts.of(ctx.model), skip)
    layers = [layer for layer in candidates if layer.weight in plan.params and not plan.params[layer.weight].is_float]
    moments = second_moments(ctx, layers, int(config.get("num_batches", 32)))
    bitwidth = config.get("default_param_bw")
    for layer in layers:
        e = plan.params[layer.weight]
        if bitwidth is not None and int(bitwidth) != e.bitwidth:
            schema = "symmetric" if e.is_symmetric else "asymmetric"
            e = dataclasses.replace(enc.with_schema(schema, e.min, e.max, int(bitwidth), e.axis), axis=e.axis)
        if layer.weight in moments:
            _adaround_layer(ctx, layer, e, moments[layer.weight])
    logger.info("adaround: %d layers", len(layers))
    return [f"adaround: {len(layers)} layers rounded to minimise their output error"]

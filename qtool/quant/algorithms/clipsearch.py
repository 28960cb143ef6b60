"""Weight ranges by output error (`--apply_algorithms clipsearch`): AWQ's per-group clip search.

The plan picks each weight's clipped range by its own rounding error ‖w − q(w)‖² (`mse`). What the
model feels is the layer's output error E‖x·(w − q(w))‖² = eᵀ G e with G = E[xxᵀ] of the layer's
input: a weight that meets a large input channel (a transformer's outlier channels) matters more
than one that meets a small one. clipsearch runs the float model once over `num_batches`
calibration samples (default 32) to gather G for every 2-D Gemm/MatMul weight whose plan encoding
is symmetric per-channel, per-block (or asymmetric: each block's min and max shrunk by the pair of the
weight-error search's factors) or LPBQ, then chooses every channel's (or block's) clipped
range among the same candidates as the weight-error search (0.4–1.0 × absmax), by the row's
output error eᵀ G e: per channel exactly, per block by coordinate descent over the row's blocks
(`blocks.SWEEPS` passes); LPBQ integers likewise. The ranges are frozen in the overrides, so
adaround, when it follows, rounds on them. Weights given in --quantization_overrides keep theirs.
"""

from __future__ import annotations

import numpy as np

from qtool.quant import blocks
from qtool.quant.algorithms import AlgorithmContext, adaround, check_config
from qtool.quant.algorithms.layers import weighted_layers
from qtool.quant.graph_facts import GraphFacts

STAGE = "quantized"
SETTINGS = frozenset({"num_batches"})  # --config keys


def _output_error(rows: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, e, gram: np.ndarray) -> float:
    """tr(Eᵀ G E) of rows rounded to nearest on per-element scales and zero points."""
    err = (np.clip(np.rint(rows / scale) + zero_point, e.qmin, e.qmax) - zero_point) * scale - rows
    return float(np.einsum("nk,nk->", err @ gram, err))


def run(ctx: AlgorithmContext) -> list[str]:
    config = check_config("clipsearch", ctx.config, SETTINGS)
    _, plan = ctx.quantize(ctx.model, ctx.overrides)
    layers = []
    for layer in weighted_layers(GraphFacts.of(ctx.model)):
        e = plan.params.get(layer.weight)
        if (
            layer.node.op_type in ("Gemm", "MatMul")
            and layer.weight not in ctx.overrides.params
            and e is not None
            and not e.is_float
            and (e.is_symmetric or e.blocks is not None)
            and e.axis is not None
            and len(ctx.array(layer.weight).shape) == 2
        ):
            layers.append(layer)
    if not layers:
        return ["clipsearch: no per-channel or per-block 2-D weight to search"]
    moments = adaround.collect(ctx, ctx.model, layers, int(config.get("num_batches", 32)), algorithm="clipsearch")
    before = after = 0.0
    for layer in layers:
        if layer.weight not in moments:
            continue
        w = ctx.array(layer.weight).astype(np.float64)
        rows = layer.weight_rows(w)
        gram = moments[layer.weight][0, : rows.shape[1], : rows.shape[1]]
        old = plan.params[layer.weight]
        new = blocks.output_encoding(old, rows, gram, w.shape)
        old_error, new_error = (_output_error(rows, *(layer.weight_rows(e.expand(v, w.shape))
                                                      for v in (e.scale_array(), e.zero_point())), e, gram)
                                for e in (old, new))  # fmt: skip
        before, after = before + old_error, after + new_error
        ctx.overrides.params[layer.weight] = new
    gain = 10 * np.log10(before / after) if after > 0 else 0.0
    return [f"clipsearch: {len(layers)} weights' ranges chosen by output error (calibration output error -{gain:.2f} dB)"]


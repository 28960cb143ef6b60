"""Empirical bias correction (legacy QNN `--algorithms bc`, TIDL accuracy_level 1): per layer,
shift the float bias by E[y_float] − E[y_quant] per output channel, measured over calibration
frames, so the quantized layer's mean output matches the float one. Repeated `iterations` times
(each pass sees the corrections before it). YAML (`bc:`): calibration_frames (default 32),
calibration_iterations (sweeps, default 1) — TIDL's advanced_options names.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qtool import runtime
from qtool.graph import external_data
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.layers import Layer, weighted_layers
from qtool.quant.graph_facts import GraphFacts

STAGE = "quantized"


def _channel_means(
    model: onnx.ModelProto, names: list[str], ctx: AlgorithmContext, frames: int, axes: dict[str, int]
) -> dict[str, np.ndarray]:
    run = runtime.runner(model, names, ctx.threads)
    sums: dict[str, np.ndarray] = {}
    count = 0
    for count, (_, feed) in enumerate(ctx.samples(), start=1):
        for name, value in run(feed).items():
            axis = axes[name] % value.ndim
            mean = value.astype(np.float64).mean(axis=tuple(i for i in range(value.ndim) if i != axis))
            sums[name] = sums.get(name, 0.0) + mean
        if count >= frames:
            break
    return {name: total / max(count, 1) for name, total in sums.items()}


def _bias_name(ctx: AlgorithmContext, layer: Layer, channels: int) -> str | None:
    node = layer.node
    if len(node.input) > 2 and node.input[2]:
        return node.input[2]
    if node.op_type == "MatMul":
        return None
    name = f"{layer.weight}_bc_bias"
    del node.input[2:]
    node.input.append(name)
    ctx.set_array(name, np.zeros(channels, np.float32))
    return name


def _set_quantized_bias(qdq: onnx.ModelProto, bias: str, values: np.ndarray, plan) -> bool:
    """Write the corrected bias straight into the QDQ model's integer initializer."""
    e = plan.params.get(bias)
    target = f"{bias}_quantized"
    for init in qdq.graph.initializer:
        if init.name == target and e is not None and not e.is_float:
            dtype = external_data.array(init).dtype
            init.CopyFrom(numpy_helper.from_array(e.quantize(values).astype(dtype), target))
            return True
    return False


def run(ctx: AlgorithmContext) -> list[str]:
    """Layer by layer in graph order, so each correction sees the ones before it (as AIMET's
    empirical bias correction does); a whole sweep repeats `calibration_iterations` times."""
    config = check_config("bc", ctx.config, {"calibration_frames", "calibration_iterations"})
    frames, iterations = int(config.get("calibration_frames", 32)), int(config.get("calibration_iterations", 1))
    layers = weighted_layers(GraphFacts.of(ctx.model))
    if not layers:
        return ["bc: no Conv/Gemm/MatMul layer with a constant weight to correct"]
    axes = {layer.node.output[0]: 1 if layer.node.op_type == "Conv" else -1 for layer in layers}
    float_means = _channel_means(ctx.model, sorted(axes), ctx, frames, axes)
    graph_outputs = {o.name for o in ctx.model.graph.output}
    corrected: set[str] = set()
    for _ in range(iterations):
        qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
        for layer in layers:
            out = layer.node.output[0]
            if layer.weight not in plan.params or plan.params[layer.weight].is_float:
                continue
            name = f"{out}_prequant" if out in graph_outputs else out
            delta = float_means[out] - _channel_means(qdq, [name], ctx, frames, {name: axes[out]})[name]
            bias = _bias_name(ctx, layer, len(delta))
            if bias is None or ctx.array(bias).shape != delta.shape:
                continue
            ctx.set_array(bias, ctx.array(bias) + delta)
            if not _set_quantized_bias(qdq, bias, ctx.array(bias), plan):
                qdq, plan = ctx.quantize(ctx.model, ctx.overrides)  # the bias was new or float
            corrected.add(out)
    return [f"bc: corrected {len(corrected)} layer biases over {frames} frames x {iterations} sweep(s)"]

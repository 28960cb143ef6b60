"""cle through a HardSwish into a depthwise Conv: Conv1 -> HardSwish -> DW on a single branch.

HardSwish is not positively homogeneous, so cle's rescaling cannot pass it as it passes ReLU. It can
with the activation written as its definition, HardSwish(x) = x · HardSigmoid(x): for s_i > 0 per channel,

    s · HardSwish(x) = u · HardSigmoid(u / s),    u = s · x,

so Conv1 (output channel i times s_i) writes u, Mul(u, 1/s) -> HardSigmoid gives the gate, Mul(u, gate)
writes the HardSwish's tensor times s_i, and the depthwise Conv reads it with channel i's weights over s_i:
the float model is unchanged, and the gate's input is read by HardSigmoid alone (its grid is [-3, 3] whatever
s is). A depthwise Conv's per-channel weight grid does not see the scale.

Why: PP-LCNet (PaddleOCR's detectors and recognisers, SLANet, PicoDet) has HardSwish channels that span 0.05
beside others at 20, read by a depthwise Conv whose folded BatchNorm multiplies them by hundreds. On the
tensor's one 8-bit grid such a channel is a step or two, and SLANet's first depthwise Conv got 0.3 dB from
its input's rounding alone (99 % of it one channel of 16). The scales come from the calibration samples:
each channel widened toward the tensor's widest, at Conv1's output and at the HardSwish's, so no grid grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool import runtime
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.model import default_opset
from qtool.graph.names import FreshNames, unused_namespace
from qtool.quant.algorithms import AlgorithmContext
from qtool.quant.graph_facts import GraphFacts

MAX_SCALE = 1000.0  # a channel that is all but silent is widened this much at most
MIN_GAIN = 1.5  # a pair whose channels would all widen less than this is left as it is (two more ops for little)
# quantize's default (no cle asked) takes a pair only where the depthwise Conv's noise from its input grid falls 4x
DEFAULT_GAIN_DB = 6.0
HARDSWISH_ALPHA, HARDSWISH_BETA = 1 / 6, 0.5  # HardSwish(x) = x · max(0, min(1, x/6 + 1/2))


@dataclass
class Pair:
    first: onnx.NodeProto  # Conv1
    act: onnx.NodeProto  # the HardSwish
    affine: list[onnx.NodeProto]  # Mul/Add by constants between it and the depthwise Conv (PP-LCNetV3's a·x + b)
    second: onnx.NodeProto  # the depthwise Conv

    @property
    def tensors(self) -> list[str]:  # every tensor the scales pass through: Conv1's output, the HardSwish's...
        return [self.first.output[0], self.act.output[0], *(n.output[0] for n in self.affine)]


def _only_reader(facts: GraphFacts, name: str) -> onnx.NodeProto | None:
    readers = facts.consumers.get(name, [])
    return readers[0] if len(readers) == 1 and name not in facts.graph_outputs else None


def _own_weights(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    """Its weight (and bias) are initializers no other node reads: rescaling them changes this node only."""
    params = [n for n in node.input[1:3] if n]
    return bool(params) and all(n in facts.initializers and len(facts.consumers.get(n, [])) == 1 for n in params)


def find_pairs(facts: GraphFacts, pinned: set[str]) -> list[Pair]:
    """Conv1 -> HardSwish -> depthwise Conv, each tensor read once; `pinned`: tensors an override gives a range
    (rescaled, that range would be wrong)."""
    pairs = []
    for first in facts.model.graph.node:
        if first.op_type != "Conv" or not _own_weights(facts, first):
            continue
        act = _only_reader(facts, first.output[0])
        if act is None or act.op_type != "HardSwish":
            continue
        channels = facts.initializers[first.input[1]].dims[0]
        affine, second = [], _only_reader(facts, act.output[0])
        while second is not None and _constant_operand(facts, second, channels) is not None:
            affine.append(second)
            second = _only_reader(facts, second.output[0])
        last = affine[-1].output[0] if affine else act.output[0]
        if second is None or second.op_type != "Conv" or second.input[0] != last or not _own_weights(facts, second):
            continue
        w2 = facts.initializers[second.input[1]].dims
        group = next((a.i for a in second.attribute if a.name == "group"), 1)
        pair = Pair(first, act, affine, second)
        if group == w2[0] == channels and w2[1] == 1 and not pinned & set(pair.tensors):
            pairs.append(pair)
    return pairs


def _constant_operand(facts: GraphFacts, node: onnx.NodeProto, channels: int) -> str | None:
    """The constant a Mul or Add applies, where it is one number or one per channel (axis 1)."""
    if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
        return None
    constant = next((i for i in node.input if i in facts.initializers), None)
    if constant is None or all(i in facts.initializers for i in node.input):
        return None
    dims = list(facts.initializers[constant].dims)
    per_channel = [d for d in dims if d != 1]
    if per_channel and (per_channel != [channels] or len(dims) < 3 or dims[-3] != channels):
        return None  # only [.., C, 1, 1] broadcasts along the channel axis of an NCHW tensor
    return constant


def channel_spans(ctx: AlgorithmContext, pairs: list[Pair]) -> dict[str, np.ndarray]:
    """Per tensor, each channel's span (max(hi, 0) - min(lo, 0), what an encoding of it must cover) over the
    calibration samples, channels on axis 1: ReduceMin/ReduceMax right after each producer, so that onnxruntime
    hands back vectors and frees each map when its readers are done (fetching the maps held 67 MB more than the
    whole calibration of the orientation classifier)."""
    dims = {i.name: len(i.dims) for i in ctx.model.graph.initializer}
    ranks = {t: dims[p.first.input[1]] for p in pairs for t in p.tensors}  # a Conv's output has its weight's rank
    copy, weights = external_data.weightless(ctx.model, runtime.WEIGHT_BYTES)
    ns = unused_namespace(gm.tensor_names(copy) | {n.name for n in copy.graph.node})  # no clash with the model's
    axes_as_input = default_opset(copy) >= 18
    probes: dict[str, list[onnx.NodeProto]] = {}
    outputs = []
    for t, rank in ranks.items():
        axes, axes_name = [0, *range(2, rank)], f"{t}.{ns}_axes"
        if axes_as_input:
            copy.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), axes_name))
        probes[t] = []
        for op in ("ReduceMin", "ReduceMax"):
            out = f"{t}.{ns}_{op}"
            inputs, attrs = ([t, axes_name], {}) if axes_as_input else ([t], {"axes": axes})
            probes[t].append(helper.make_node(op, inputs, [out], name=out, keepdims=0, **attrs))
            outputs.append(out)
    nodes = [p for node in copy.graph.node for p in [node, *(q for o in node.output for q in probes.get(o, []))]]
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    # no NCHWc layout, as calibration's: each probed output lived blocked and reordered (layout_cdla: 447 MB, 151 without)
    probed = runtime.with_outputs(copy, outputs)
    session = runtime.session(probed, ctx.threads, "cle", optimized=True, weights=weights, layout=False)
    inputs = {i.name for i in session.get_inputs()}
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for _, feed in ctx.samples():
        values = session.run(outputs, {k: v for k, v in feed.items() if k in inputs})
        for k, t in enumerate(ranks):
            lo[t] = np.minimum(lo.get(t, 0.0), np.asarray(values[2 * k], np.float64))
            hi[t] = np.maximum(hi.get(t, 0.0), np.asarray(values[2 * k + 1], np.float64))
    return {t: hi[t] - lo[t] for t in lo}


def scales(spans: dict[str, np.ndarray], pair: Pair) -> np.ndarray:
    """s_i: channel i widened toward the widest channel's span at every tensor it passes, within [1, MAX_SCALE];
    a channel silent at any of them keeps 1."""
    room = np.min([np.where(s > 0, s.max() / np.where(s > 0, s, 1.0), np.inf) for s in (spans[t] for t in pair.tensors)], axis=0)
    return np.where(np.isfinite(room), np.clip(room, 1.0, MAX_SCALE), 1.0)


def _rename_scaled(ctx: AlgorithmContext, pair: Pair, extra: list[onnx.NodeProto], fresh: FreshNames) -> None:
    """The tensors whose channels now hold s_i times their values take new names: a per-layer comparison with
    the float model as given (quantize's quality warning, inspect --reference) matches tensors by name, and
    found them all 'off' by their scales (SLANet's warning blamed a Conv at -19 dB)."""
    nodes = [pair.first, pair.act, *pair.affine, pair.second, *extra]
    for old in pair.tensors:
        new = fresh(f"{old}_equalized")
        ctx.declare(new, like=old)
        for node in nodes:
            for field in (node.input, node.output):
                for k, name in enumerate(field):
                    if name == old:
                        field[k] = new


def predicted_gain_db(ctx: AlgorithmContext, pair: Pair, scale: np.ndarray) -> float:
    """How much less noise the depthwise Conv's output takes from its input's grid, Σ‖w_i‖² / Σ‖w_i / s_i‖²:
    the grid keeps its step (no channel passes the widest), and channel i's rounding reaches the output
    through w_i / s_i."""
    energy = (ctx.array(pair.second.input[1]).astype(np.float64).reshape(scale.size, -1) ** 2).sum(axis=1)
    after = (energy / scale**2).sum()
    return 10 * math.log10(energy.sum() / after) if after > 0 else 0.0


def equalize(ctx: AlgorithmContext, pairs: list[Pair], min_gain_db: float = 0.0) -> list[str]:
    """Rescale and rewrite every pair whose channels gain from it (by `min_gain_db` or more, predicted); the
    report's line (empty when none did)."""
    spans = channel_spans(ctx, pairs)
    facts = GraphFacts.of(ctx.model)
    graph = ctx.model.graph
    fresh = FreshNames({o for n in graph.node for o in [*n.output, n.name]} | {i.name for i in graph.initializer})
    gates: dict[int, list[onnx.NodeProto]] = {}
    widened, unread = [], set()
    for pair in pairs:
        scale = scales(spans, pair)
        if scale.max() < MIN_GAIN or (gain := predicted_gain_db(ctx, pair, scale)) < min_gain_db:
            continue
        w1, w2 = ctx.array(pair.first.input[1]), ctx.array(pair.second.input[1])
        ctx.set_array(pair.first.input[1], w1 * scale.reshape(-1, *[1] * (w1.ndim - 1)))
        if len(pair.first.input) > 2 and pair.first.input[2]:
            ctx.set_array(pair.first.input[2], ctx.array(pair.first.input[2]) * scale)
        ctx.set_array(pair.second.input[1], w2 / scale.reshape(-1, *[1] * (w2.ndim - 1)))
        for node in pair.affine:  # s·(a·h + b) = a·(s·h) + s·b: an Add's constant takes the scales
            if node.op_type == "Add":
                constant = _constant_operand(facts, node, scale.size)
                scaled = fresh(f"{constant}_cle")
                ctx.set_array(scaled, ctx.array(constant) * scale.reshape(1, -1, *[1] * (w1.ndim - 2)))
                node.input[list(node.input).index(constant)] = scaled
                unread |= {constant} if len(facts.consumers.get(constant, [])) == 1 else set()
        u, y = pair.tensors[:2]
        inverse, gate_in, gate = fresh(f"{y}_cle_inverse"), fresh(f"{y}_cle_gate_in"), fresh(f"{y}_cle_gate")
        ctx.set_array(inverse, (1.0 / scale).reshape(1, -1, *[1] * (w1.ndim - 2)))
        unscale = helper.make_node("Mul", [u, inverse], [gate_in], name=fresh(f"{pair.act.name}_cle_unscale"))
        sigmoid = helper.make_node(
            "HardSigmoid", [gate_in], [gate], name=fresh(f"{pair.act.name}_cle_gate"), alpha=HARDSWISH_ALPHA, beta=HARDSWISH_BETA
        )
        gates[id(pair.act)] = [unscale, sigmoid]
        pair.act.CopyFrom(helper.make_node("Mul", [u, gate], [y], name=pair.act.name or fresh(f"{y}_cle_product")))
        ctx.declare(gate_in, like=u)
        ctx.declare(gate, like=y)
        _rename_scaled(ctx, pair, [unscale], fresh)
        widened.append(f"{pair.act.name} ({int((scale >= MIN_GAIN).sum())} of {scale.size} channels, up to "
                       f"{scale.max():.0f}x, input noise -{gain:.1f} dB)")  # fmt: skip
    if not gates:
        return []
    nodes = []
    for node in ctx.model.graph.node:
        nodes += [*gates.get(id(node), []), node]
    del ctx.model.graph.node[:]
    ctx.model.graph.node.extend(nodes)
    for k in reversed([k for k, init in enumerate(graph.initializer) if init.name in unread]):
        del graph.initializer[k]  # by index: rebuilding the list would copy every weight
    return [f"{len(widened)} HardSwish -> depthwise pairs equalized as x * HardSigmoid(x): {', '.join(widened)}"]

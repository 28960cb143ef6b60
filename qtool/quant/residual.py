"""Per-channel activation encodings for a transformer's residual stream (`--use_per_channel_residual`).

A post-LN encoder's residual sums (the LayerNormalization inputs) and the branch outputs added into
them carry a few hidden channels 20-100x larger than the rest: one 8-bit grid over a sum that spans
[-9, 223] leaves most channels a handful of levels before the LayerNorm rescales them (all-MiniLM-L6-v2:
cosine 0.80 at W8A8). Bondarenko et al. 2021 ("Understanding and Overcoming the Challenges of Efficient
Transformer Quantization", per-embedding-group quantization) give these tensors one grid per group
of hidden channels; here each hidden channel (the last axis) gets its own, still 8 bits.

Only tensors no reader reduces over that axis with weights get it: the inputs of a LayerNormalization over
the last axis, the operands of the Add that produces one when every reader of the operand is an Add, Sub
or such a LayerNormalization (and, when an operand is itself a sum read only by Adds, its operands: an
MLP split by `outlier_split`), and the Gemm output behind such an operand's bias (a MatMul's has no grid of its
own there: GraphFacts.bias_add). A per-channel
scale there is an elementwise rescale an integer kernel applies on requantization (a MatMul's output per
column, like per-channel weights); a MatMul *input* (a LayerNorm output read by the next block) would need
its scales folded into the weights, so it keeps one grid. onnxruntime runs these as QDQ with `axis`;
per-channel activations are not a QNN HTP encoding, so the qnn-htp preset does not turn this on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool import encoding as enc
from qtool import runtime
from qtool.encoding import Encoding
from qtool.errors import ModelError
from qtool.graph.constant_size import constant_value
from qtool.graph.model import default_opset, tensor_names
from qtool.graph.names import unused_namespace
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.normalization import normalization_statistics
from qtool.quant.observers import MinMax

ELEMENTWISE_READERS = frozenset({"Add", "Sub"})
MATMUL_OPS = frozenset({"MatMul", "Gemm"})
NORMS = frozenset({"LayerNormalization"})


def _normalizes_last_axis(node: onnx.NodeProto | None) -> bool:
    if node is None or node.op_type not in NORMS:
        return False
    return next((a.i for a in node.attribute if a.name == "axis"), -1) == -1


def _last_axis_only(node: onnx.NodeProto, facts: GraphFacts) -> bool:
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    given = node.input[1] if axes is None and len(node.input) > 1 else ""
    source = facts.producers.get(given)
    value = facts.array(given) if given in facts.initializers else constant_value(source) if source else None
    return (axes if value is None else [int(v) for v in np.ravel(value)]) == [-1]


def rms_readers(facts: GraphFacts) -> dict[str, set[int]]:
    """x -> (ids of) the nodes of an RMSNorm written op by op over x's last axis that read x (T5, and Llama
    exported below opset 23, have no LayerNormalization): the square its mean reads, and the join of x with
    the statistic (x / √(mean + ε), x · rsqrt). normalization.py keeps the statistics float."""
    stats = normalization_statistics(facts)
    found: dict[str, set[int]] = {}
    for mean in facts.model.graph.node:
        square = facts.producers.get(mean.input[0]) if mean.op_type == "ReduceMean" and mean.input else None
        if square is None or mean.input[0] not in stats or not _last_axis_only(mean, facts):
            continue
        data = {i for i in square.input if i and i not in facts.initializers}
        if len(data) != 1:
            continue
        (x,) = data
        joins = {id(r) for r in facts.consumers.get(x, []) if r.op_type in ("Mul", "Div") and any(i in stats for i in r.input)}
        if joins:
            found.setdefault(x, set()).update({id(square), *joins})
    return found


def _channel_safe(facts: GraphFacts, name: str, rms: dict[str, set[int]]) -> bool:
    readers = facts.consumers.get(name, [])
    return bool(readers) and all(
        r.op_type in ELEMENTWISE_READERS or (_normalizes_last_axis(r) and r.input[0] == name)
        or id(r) in rms.get(name, ())
        for r in readers
    )  # fmt: skip


def _dynamic(facts: GraphFacts, name: str) -> bool:
    return name not in facts.initializers and facts.is_float(name)


def residual_stream(facts: GraphFacts, rms: dict[str, set[int]] | None = None) -> list[str]:
    """The residual-stream tensors (module docstring), in graph order; `rms`: rms_readers(facts), if known."""
    found: list[str] = []

    def add(name: str) -> None:
        if name not in found:
            found.append(name)

    rms = rms_readers(facts) if rms is None else rms
    normalized = [n.input[0] for n in facts.model.graph.node if _normalizes_last_axis(n)]
    for summed in dict.fromkeys([*normalized, *rms]):
        if not _dynamic(facts, summed) or not _channel_safe(facts, summed, rms):
            continue
        add(summed)
        producer = facts.producers.get(summed)
        if producer is None or producer.op_type != "Add":
            continue
        operands, seen = list(producer.input), set()
        while operands:
            operand = operands.pop(0)
            if operand in seen or not _dynamic(facts, operand) or not _channel_safe(facts, operand, rms):
                continue
            seen.add(operand)
            add(operand)
            source = facts.producers.get(operand)
            if source is None or source.op_type != "Add":
                continue
            if not any(i in facts.initializers for i in source.input):  # a branch that is itself a sum
                operands += [i for i in source.input if all(r.op_type in ELEMENTWISE_READERS for r in facts.consumers.get(i, []))]
                continue
            for product in source.input:
                matmul = facts.producers.get(product)
                readers = facts.consumers.get(product, [])
                if matmul is not None and matmul.op_type in MATMUL_OPS and [r.name for r in readers] == [source.name]:
                    add(product)
    return found


def on_residual_stream(facts: GraphFacts, tensor: str) -> bool:
    """Is `tensor` on the residual stream, or the output of a LayerNorm that reads it (the layer a per-layer
    ranking blames for a residual sum's noise)?"""
    stream = residual_stream(facts, rms := rms_readers(facts))
    producer = facts.producers.get(tensor)
    if tensor in stream or producer is None:
        return tensor in stream
    # an RMSNorm's statistic (1 / rms), which the per-layer ranking blames for the stream's noise it magnifies
    if any(id(c) in rms.get(x, ()) for c in facts.consumers.get(tensor, []) for x in c.input if x in stream):
        return True
    if _normalizes_last_axis(producer):
        return producer.input[0] in stream
    # an RMSNorm's output is its join (x / rms, which reads no constant) through its constant scale and shift (· γ + β)
    while producer is not None and producer.op_type in ("Mul", "Add") and any(i in facts.initializers for i in producer.input):
        producer = facts.producers.get(next((i for i in producer.input if i not in facts.initializers), ""))
    return producer is not None and any(i in stream and id(producer) in rms.get(i, ()) for i in producer.input)


def post_ln_sums(facts: GraphFacts) -> list[str]:
    """The residual sums only a LayerNorm reads that add an earlier LayerNorm's output: a post-LN block (BERT),
    where trained encoders carry their outlier channels. A pre-LN ViT or Llama adds the previous sum; where it
    adds a LayerNorm's output once (Swin's patch embedding), the sum is read past its LayerNorm too, by the next
    residual Add: the stream goes on around the LayerNorm, not through it."""
    found = []
    for t in residual_stream(facts):
        producer, readers = facts.producers.get(t), facts.consumers.get(t, [])
        if not readers or not all(_normalizes_last_axis(c) for c in readers) or producer is None:
            continue
        if producer.op_type == "Add" and any(_normalizes_last_axis(facts.producers.get(i)) for i in producer.input):
            found.append(t)
    return found


class ChannelMinMax(MinMax):
    """Min-max per channel of the last axis, and over all of them (what MinMax reports)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.channel_lo: np.ndarray | None = None
        self.channel_hi: np.ndarray | None = None

    def observe_channels(self, lo: np.ndarray, hi: np.ndarray) -> None:
        lo, hi = np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel()
        if self.channel_lo is not None and self.channel_lo.size != lo.size:
            raise ModelError(f"tensor {self.name!r} changed its channel count between samples ({self.channel_lo.size} "
                             f"then {lo.size}); per-channel residual encodings need a fixed hidden size")  # fmt: skip
        self.channel_lo = lo if self.channel_lo is None else np.minimum(self.channel_lo, lo)
        self.channel_hi = hi if self.channel_hi is None else np.maximum(self.channel_hi, hi)
        self.observe(float(lo.min()), float(hi.max()), None)

    def encoding(self, bitwidth: int, schema: str) -> Encoding:
        assert self.channel_lo is not None and self.channel_hi is not None
        return enc.with_schema(schema, self.channel_lo, self.channel_hi, bitwidth, enc.ACTIVATION_CHANNEL_AXIS)


def _probes(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` returning each tensor's per-channel minimum and maximum over its last axis:
    Reshape to [-1, C] (C read from the tensor's own shape at run time, so no declared shape or rank is
    trusted), then ReduceMin/ReduceMax over rows."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    axes_as_input = default_opset(model) >= 18
    ns = unused_namespace(tensor_names(model) | {n.name for n in model.graph.node})
    last, end, rows, axis0 = f"{ns}.ch_last", f"{ns}.ch_end", f"{ns}.ch_rows", f"{ns}.ch_axis0"
    nodes, outputs = [], []
    for t in tensors:
        p = f"{t}.{ns}_ch_"
        nodes += [
            helper.make_node("Shape", [t], [p + "shape"], name=p + "shape"),
            helper.make_node("Slice", [p + "shape", last, end], [p + "width"], name=p + "width"),
            helper.make_node("Concat", [rows, p + "width"], [p + "rows_shape"], name=p + "rows_shape", axis=0),
            helper.make_node("Reshape", [t, p + "rows_shape"], [p + "rows"], name=p + "rows"),
        ]
        for op, kind in (("ReduceMin", "lo"), ("ReduceMax", "hi")):
            inputs, attrs = ([p + "rows", axis0], {}) if axes_as_input else ([p + "rows"], {"axes": [0]})
            nodes.append(helper.make_node(op, inputs, [p + kind], name=p + kind, keepdims=0, **attrs))
            outputs.append(p + kind)
    constants = {last: [-1], end: [2**62], rows: [-1], axis0: [0]}
    copy.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in constants.items())
    copy.graph.node.extend(nodes)
    return runtime.with_outputs(copy, outputs), outputs


def observe_channels(
    model: onnx.ModelProto, tensors: list[str], feeds: Iterable[tuple[str, dict[str, np.ndarray]]], threads: int = 0
) -> dict[str, ChannelMinMax]:
    """Per-channel ranges of `tensors` over the calibration samples: one float pass."""
    if not tensors:
        return {}
    probed, outputs = _probes(model, tensors)
    session = runtime.session(probed, threads)
    inputs = {i.name for i in session.get_inputs()}
    observers = {t: ChannelMinMax(t) for t in tensors}
    for where, feed in feeds:
        try:
            values = session.run(outputs, {k: v for k, v in feed.items() if k in inputs})
        except Exception as e:  # ORT's own error types; the message names the failing node
            raise ModelError(f"inference failed: {runtime.ort_reason(e)}", where=where) from e
        for k, t in enumerate(tensors):
            lo, hi = values[2 * k], values[2 * k + 1]
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                observers[t].unbounded = True  # a mask's values reached it: it stays per-tensor (plan)
                continue
            observers[t].observe_channels(lo, hi)
    return {t: o for t, o in observers.items() if o.count and not o.unbounded}

"""`qoperator`: the QDQ model in onnxruntime's QOperator form (QLinearConv, QLinearMatMul, QGemm,
QLinearAdd, QLinearConcat...), each op computing on integers as a deployed model does.

Built from the stripped float graph and its encodings (`qgraph.py`, converters in `qlinear.py`):
QuantizeLinear where float data enters the integer domain (graph inputs, outputs of ops without
a QOperator form), DequantizeLinear where integers leave it (graph outputs, float ops). Every
QLinear op writes the encoding the QDQ model quantized that tensor to, so the two models agree
within rounding: one quantization step of the output on small models and the sample
(tests/export). Clamps squashed into their producer (Relu, Clip, Min/Max with a constant;
FORMATS.md "relu squashing") are folded into the QLinear op, as an integer Clip when the output
grid's saturation does not already apply their bounds.

Not converted (stay float, as in the QDQ model): 16-bit and 4-bit activations, per-channel B of
a MatMul with more than 2 dimensions, int8 activations against uint8 weights (no ORT kernel),
fp16 Cast pairs and int32 islands. If/Loop bodies read the float value of an outer tensor, not
its quantized one. The result is checked by loading it in onnxruntime.
"""

from __future__ import annotations

import logging

import onnx

from qtool import runtime
from qtool.errors import ModelError
from qtool.export.job import ExportJob, Files
from qtool.export.qgraph import MS_DOMAIN, QGraph, body_reads
from qtool.export.qlinear import QLINEAR
from qtool.graph import model as gm
from qtool.graph.names import FreshNames
from qtool.io.encodings import Encodings
from qtool.io.files import quoted

logger = logging.getLogger(__name__)


def _convert_nodes(g: QGraph, graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if node.output and node.output[0] in g.skipped:
            continue
        convert = QLINEAR.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if convert is None or not convert(g, node):
            g.float_node(node)
    for out in graph.output:  # an input returned as it is given ('return x, y') stays the input
        name = out.name if out.name in g.facts.graph_inputs else g.dequantized(out.name)
        if name != out.name:
            g.node("Identity", [name], out.name)


def _assemble(model: onnx.ModelProto, g: QGraph) -> None:
    graph = model.graph
    included = {i.name for i in g.inits}
    produced = {o for n in g.nodes for o in n.output}
    needed = body_reads(g.nodes) - included - produced  # a weight only a body reads stays float, as it was read
    g.inits.extend(i for i in graph.initializer if i.name in needed)
    kept_info = [v for v in graph.value_info if v.name in produced]
    kept_inputs = [v for v in graph.input if v.name not in g.facts.initializers]
    for field, items in ((graph.node, g.nodes), (graph.initializer, g.inits)):
        del field[:]
        field.extend(items)
    for field, items in ((graph.value_info, kept_info), (graph.input, kept_inputs)):
        del field[:]
        field.extend(items)
    if any(n.domain == MS_DOMAIN for n in g.nodes) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))


def _float_tensors(graph: onnx.GraphProto, found: Encodings) -> Encodings:
    """The float tensors as the QDQ model computes them, which the stripped graph does not: a float16 one is rounded
    by a Cast pair (read_qdq drops it), and integer readers take a float tensor on a convert grid of their own: a copy,
    Identity(t), that they read and that grid quantizes. Read back as float alone, the QOperator model fed them the
    float values (a float16-overridden ReLU into an 8-bit Conv: 14 dB from the QDQ model, exit 0)."""
    activations, outputs = dict(found.activations), {o.name for o in graph.output}
    outputs -= {v.name for v in graph.input}  # an input that is an output stays the input, as in qdq.py: no producer
    fresh = FreshNames({v.name for v in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output})
    half = {t for t, e in found.activations.items() if e.is_float and e.bitwidth == 16 and t not in found.params}
    targets = sorted(half | set(found.converts))
    first = [next(iter(n.output), "") for n in graph.node]  # each node's first output, as the QDQ model names readers
    readers: dict[str, list[int]] = {t: [] for t in targets}
    for k, node in enumerate(graph.node):
        for name in dict.fromkeys(i for i in node.input if i in readers):
            readers[name].append(k)
    raw, made, reads = {}, {}, {}  # reads: t -> (a float reader's t, the integer readers', those readers)
    for t in targets:  # one pass each over the nodes for every tensor took 47 s with 500 in 4000 nodes
        raw[t] = fresh(f"{t}_prequant") if t in half and t in outputs else t  # an output's pair writes it
        converted = found.converts.get(t, (None, frozenset()))[1]
        made[t], floated, copy = [], t, t
        if t in half and (t in outputs or any(first[k] not in converted for k in readers[t])):
            floated, fp16 = t if t in outputs else fresh(f"{t}_dequantized"), fresh(f"{t}_fp16")
            made[t] = [onnx.helper.make_node("Cast", [raw[t]], [fp16], to=onnx.TensorProto.FLOAT16),
                       onnx.helper.make_node("Cast", [fp16], [floated], to=onnx.TensorProto.FLOAT)]  # fmt: skip
        if converted:  # its Q reads t: the raw value, or the rounded one of a graph output (qdq.py)
            copy = fresh(f"{t}_converted")
            made[t].append(onnx.helper.make_node("Identity", [t], [copy], name=copy))
            activations[copy] = found.converts[t][0]
        reads[t] = (floated, copy, converted)
    producers = {o: k for k, n in reversed(list(enumerate(graph.node))) for o in n.output if o in raw}
    after: dict[int, list[onnx.NodeProto]] = {}  # a node's index (-1: a graph input's) -> what follows it
    for t in targets:  # the last tensor's nodes first, as inserting each right after its producer placed them
        after[producers.get(t, -1)] = [*made[t], *after.get(producers.get(t, -1), [])]
    nodes = list(after.get(-1, []))
    for k, node in enumerate(graph.node):
        node.input[:] = [(reads[i][1] if first[k] in reads[i][2] else reads[i][0]) if i in reads else i for i in node.input]
        node.output[:] = [raw.get(o, o) for o in node.output]
        nodes += [node, *after.get(k, [])]
    del graph.node[:]
    graph.node.extend(nodes)
    return Encodings(activations, found.params)


def to_qoperator(stripped: onnx.ModelProto, found: Encodings, where: str | None = None) -> onnx.ModelProto:
    """A new QOperator model; `stripped` is not modified."""
    model = onnx.ModelProto()
    model.CopyFrom(stripped)
    found = _float_tensors(model.graph, found)
    g = QGraph(model, found, gm.default_opset(model))
    half = sorted(t for t in g.enc if g.facts.elem_types.get(t) == onnx.TensorProto.FLOAT16)
    if half:  # onnxruntime's load error said it in C++ type-parameter terms
        raise ModelError(f"qoperator: {quoted(half[0])} is a float16 tensor on an integer grid, and QLinear ops take "
                         "float32 scales: export qdq or stripped", where=where)  # fmt: skip
    _convert_nodes(g, model.graph)
    logger.info("qoperator: %d QLinear ops among %d nodes", g.qlinear_count, len(g.nodes))
    _assemble(model, g)
    return model


def export(job: ExportJob) -> Files:
    model = to_qoperator(job.stripped, job.found, job.where)
    runtime.session(model, 1, f"{job.where} (qoperator export)")
    return {job.file(".qoperator.onnx"): model}

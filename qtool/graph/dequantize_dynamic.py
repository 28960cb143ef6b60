"""Float layers back from onnxruntime's dynamic quantization (`quantize_dynamic`).

A model shipped quantized that way computes each Conv, MatMul and LSTM in integers and scales back in
float around them: DynamicQuantizeLinear(x) → ConvInteger / MatMulInteger (int8 weights) [+ an int32 bias
computed as Floor(bias / (x_scale·w_scale))] → Cast → Mul(x_scale·w_scale), and DynamicQuantizeLSTM with
int8 W and R. Quantizing that scale arithmetic again as float layers gives a model right only by chance, so
each chain is rewritten as the float layer it stands for, with the weights its integers encode,
(w − zero_point)·scale (per tensor or per output channel), and the float bias the chain quantizes at run
time. The result is the float model those weights define: its outputs differ from the shipped model's by
the run-time activation rounding the shipped model does and the float one does not. A chain that does not
match exactly is left as it is (and the integer-op refusal names it).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from qtool.graph import external_data
from qtool.graph.lazy_weights import scratch_file
from qtool.io.digest import blake2b  # not hashlib: its import loads OpenSSL's libcrypto (3.5 MB resident)

INTEGER_LAYERS = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}
BIAS_CHAIN = frozenset({"Reshape", "Cast", "Floor", "Round", "Div", "Unsqueeze"})
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})  # values kept as they are


class _Graph:
    def __init__(self, model: onnx.ModelProto, initializers: Iterable[onnx.TensorProto]) -> None:
        graph = model.graph
        self.model = model
        self.inits = {i.name: i for i in initializers}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                if name:
                    self.readers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self.added: list[tuple[str, np.ndarray]] = []  # written into the model at the end, one at a time
        self.tables: dict[str, str] = {}  # an 8-bit embedding table -> its dequantized copy
        self.made: dict[tuple, str] = {}  # (the weight it comes from, its float values' digest) -> its name
        self.names = set(self.inits) | set(self.producer) | {i.name for i in graph.input}

    def array(self, name: str) -> np.ndarray | None:
        return external_data.array(self.inits[name]) if name in self.inits else None  # lazy weights too

    def only_reader(self, name: str, op: str) -> onnx.NodeProto | None:
        readers = self.readers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == op and name not in self.outputs:
            return readers[0]
        return None

    def constant(self, value: np.ndarray, like: str) -> str:
        """A float weight named after `like`, made once for the layers that share it: Kokoro's ALBERT runs one
        layer 12 times, and a copy for each reader of its weights made the model 568 MB instead of 326."""
        value = np.asarray(value, dtype=np.float32, order="C")  # no copy of a float32 one; hashed in place, not tobytes()
        key = (like, value.shape, blake2b(value.data).digest())
        if (made := self.made.get(key)) is not None:
            return made
        name = like.removesuffix("_quantized")
        while name in self.names:
            name += "_float"
        self.names.add(name)
        self.added.append((name, value))
        self.made[key] = name
        return name


def _dequantized(q: np.ndarray, zero: np.ndarray | None, scale: np.ndarray, axis: int) -> np.ndarray:
    """(q − zero)·scale with a scalar or one value per slice along `axis` of q."""

    def along(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float32)
        if v.size == 1:
            return v.reshape(())
        shape = [1] * q.ndim
        shape[axis] = v.size
        return v.reshape(shape)

    zero_f = along(zero) if zero is not None else np.float32(0)
    return (q.astype(np.float32) - zero_f) * along(scale)


def _float_bias(g: _Graph, name: str) -> np.ndarray | None:
    """The float constant an int32 bias is computed from (walking back through Reshape/Cast/Floor/Div)."""
    for _ in range(8):
        if name in g.inits:
            value = g.array(name)
            return value.reshape(-1) if value is not None and value.dtype.kind == "f" else None
        node = g.producer.get(name)
        if node is None or node.op_type not in BIAS_CHAIN or not node.input:
            return None
        name = node.input[0]
    return None


def _layer(g: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, list[onnx.NodeProto]] | None:
    """The float layer for a ConvInteger/MatMulInteger chain, and the nodes it replaces."""
    source = g.producer.get(node.input[0])
    if source is None or source.op_type != "DynamicQuantizeLinear" or node.input[1] not in g.inits:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] != source.output[2]:
        return None
    chain, tensor, bias = [node], node.output[0], None
    add = g.only_reader(tensor, "Add")
    if add is not None:
        other = add.input[1] if add.input[0] == tensor else add.input[0]
        bias = _float_bias(g, other)
        if bias is None:
            return None
        chain.append(add)
        tensor = add.output[0]
    cast = g.only_reader(tensor, "Cast")
    mul = g.only_reader(cast.output[0], "Mul") if cast is not None else None
    if cast is None or mul is None:
        return None
    scale_name = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    scales = g.producer.get(scale_name)
    if scales is None or scales.op_type != "Mul" or source.output[1] not in scales.input:
        return None
    others = [i for i in scales.input if i != source.output[1]]
    w_scale = g.array(others[0]) if len(others) == 1 else None
    weight_zero = node.input[3] if len(node.input) > 3 and node.input[3] else None
    if w_scale is None or (weight_zero is not None and weight_zero not in g.inits):
        return None
    conv = node.op_type == "ConvInteger"
    q = g.array(node.input[1])
    weight = _dequantized(q, g.array(weight_zero) if weight_zero else None, w_scale, 0 if conv else q.ndim - 1)
    inputs = [source.input[0], g.constant(weight, node.input[1])]
    if bias is not None:
        if conv and bias.size == weight.shape[0]:
            inputs.append(g.constant(bias, f"{node.input[1].removesuffix('_quantized')}_bias"))
        else:  # a MatMul's bias stays an Add, in float
            return None
    output, chain = mul.output[0], [*chain, cast, mul]
    after = g.only_reader(output, "Add") if conv and bias is None else None
    if after is not None:  # newer onnxruntime adds a Conv's bias in float, after the scale
        later = _float_bias(g, after.input[1] if after.input[0] == output else after.input[0])
        if later is not None and later.size == weight.shape[0]:
            inputs.append(g.constant(later, f"{node.input[1].removesuffix('_quantized')}_bias"))
            output, chain = after.output[0], [*chain, after]
    layer = helper.make_node(INTEGER_LAYERS[node.op_type], inputs, [output], name=node.name.removesuffix("_quant"))
    layer.attribute.extend(node.attribute if conv else [])
    return layer, chain


def _lstm(g: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, list[onnx.NodeProto]] | None:
    """DynamicQuantizeLSTM → LSTM: W [D, I, 4H] and R [D, H, 4H] dequantized and transposed to ONNX's layout."""
    names = list(node.input) + [""] * (12 - len(node.input))
    w_q, r_q, w_s, w_z, r_s, r_z = (g.array(names[k]) if names[k] else None for k in (1, 2, 8, 9, 10, 11))
    if w_q is None or r_q is None or w_s is None or r_s is None:
        return None

    def weights(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
        directions = q.shape[0]
        scale, zero = np.asarray(scale).reshape(directions, 1, -1), None if zero is None else np.asarray(zero).reshape(directions, 1, -1)
        floats = (q.astype(np.float32) - (0 if zero is None else zero.astype(np.float32))) * scale.astype(np.float32)
        return floats.transpose(0, 2, 1)

    inputs = [names[0], g.constant(weights(w_q, w_s, w_z), names[1]), g.constant(weights(r_q, r_s, r_z), names[2]), *names[3:8]]
    while inputs and not inputs[-1]:
        inputs.pop()
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name.removesuffix("_quant"))
    lstm.attribute.extend(node.attribute)
    return lstm, [node]


def _dequantizers(g: _Graph, gathered: str) -> list[onnx.NodeProto] | None:
    """The DequantizeLinears what an 8-bit Gather gathers reaches through layout ops alone (Shape may read it
    too); None where another op reads it, or it is an output."""
    found, stack = [], [gathered]
    while stack:
        name = stack.pop()
        if name in g.outputs:
            return None
        for reader in g.readers.get(name, []):
            if reader.op_type in LAYOUT_OPS and reader.input[0] == name:
                stack.append(reader.output[0])
            elif reader.op_type == "DequantizeLinear" and reader.input[0] == name:
                found.append(reader)
            elif reader.op_type != "Shape":
                return None
    return found


def _embeddings(g: _Graph) -> int:
    """Each Gather of an 8-bit table (quantize_dynamic's embedding) whose values reach DequantizeLinears of one
    scalar scale and zero point reads the table dequantized instead, and those become Identities. How many."""
    count = 0
    for node in g.model.graph.node:
        table = g.inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        if table is None or table.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        dequantizers = _dequantizers(g, node.output[0])
        grids = {tuple(d.input[1:]) for d in dequantizers or []}
        if len(grids) != 1 or any(g.array(n) is None or g.array(n).size != 1 for n in next(iter(grids))):
            continue
        if any(a.name != "axis" for d in dequantizers or [] for a in d.attribute):  # output_dtype: not float32
            continue
        scale, *zero = next(iter(grids))
        if node.input[0] not in g.tables:
            floats = _dequantized(g.array(node.input[0]), g.array(zero[0]) if zero else None, g.array(scale), 0)
            g.tables[node.input[0]] = g.constant(floats, node.input[0])
        node.input[0] = g.tables[node.input[0]]
        for d in dequantizers or []:
            d.op_type = "Identity"
            del d.input[1:]
            del d.attribute[:]  # a scalar grid's axis, which an Identity refuses ('Unrecognized attribute: axis')
        count += 1
    return count


def _prune(model: onnx.ModelProto, initializers: Iterable[onnx.TensorProto], added: list[tuple[str, np.ndarray]]) -> None:
    """Drop nodes no output depends on any more (the dynamic quantizers, scale and bias arithmetic), and give
    `model` (which has none) the `initializers` and `added` weights the rest read, each copied into it once:
    copied whole and then filtered, the 8-bit weights and each float one's first copy stayed in its arena
    (PicoDet's 98 MB of int8 weights, 389 MB as float: restore peaked at 1.35 GB, now 0.61)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    needed.update(n for sub in attr.g.node for n in sub.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for tensor in initializers:
        if tensor.name in needed:
            graph.initializer.add().CopyFrom(tensor)
    while added:  # each array let go once written: a layer's to a scratch file, which sessions map and saves stream
        name, value = added.pop(0)  # (held, PicoDet's 389 MB of float weights met onnxruntime's copy in convert's check)
        if name in needed:
            graph.initializer.append(external_data.weight_tensor(value, name, scratch_file("restored-weights.data")))


def restore(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Counter]:
    """`model` with each dynamically quantized layer it holds back in float (module docstring); the count
    restored of each op. The model is returned as it is when it has none."""
    if not any(n.op_type in (*INTEGER_LAYERS, "DynamicQuantizeLSTM", "DequantizeLinear") for n in model.graph.node):
        return model, Counter()
    restored = external_data.without_initializers(model)
    g = _Graph(restored, model.graph.initializer)
    replaced: dict[str, onnx.NodeProto | None] = {}  # by first output: protobuf hands out new wrappers
    counts: Counter = Counter()
    for node in restored.graph.node:
        try:
            found = _lstm(g, node) if node.op_type == "DynamicQuantizeLSTM" else _layer(g, node) if node.op_type in INTEGER_LAYERS else None
        except (ValueError, IndexError, TypeError):  # scales or zero points whose shapes do not fit: left to the refusal
            found = None
        if found is None:
            continue
        layer, chain = found
        replaced.update({n.output[0]: None for n in chain})
        replaced[chain[-1].output[0]] = layer
        counts[node.op_type] += 1
    if gathers := _embeddings(g):
        counts["Gather"] = gathers
    if not counts:
        return model, counts
    nodes = [replaced.get(n.output[0], n) if n.output else n for n in restored.graph.node]
    del restored.graph.node[:]
    restored.graph.node.extend(n for n in nodes if n is not None)
    _prune(restored, model.graph.initializer, g.added)
    if not any(n.domain == "com.microsoft" for n in restored.graph.node):
        kept = [o for o in restored.opset_import if o.domain != "com.microsoft"]
        del restored.opset_import[:]
        restored.opset_import.extend(kept)
    return restored, counts

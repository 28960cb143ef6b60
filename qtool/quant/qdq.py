"""Write a QDQ ONNX model from a QuantPlan: QuantizeLinear/DequantizeLinear on each encoded
activation, integer initializers behind DequantizeLinear for each encoded parameter.

Names are deterministic and keep the float graph's: a weight `W` becomes `W_quantized` behind a
DequantizeLinear whose output is still `W`; an activation `T` is followed by `T_quantized` and
`T_dequantized`, which its consumers read. A graph output keeps its name on the dequantized
value; the float value feeding its quantizer is renamed `T_prequant`.

Float16 encodings are simulated the same way with a Cast(float16) -> Cast(float) pair, and fp16
weights are stored as float16 initializers behind a Cast. 4-bit weights are INT4/UINT4
initializers (two a byte, low nibble first) with --pack_4_bit_weights, else int8/uint8 holding
4-bit values (QNN's unpacked 4-bit).

Per-block weights are a blocked DequantizeLinear (`axis` = the block axis, `block_size`, opset 21)
holding their exact per-block scales; LPBQ weights are named in the model's metadata
(LPBQ_METADATA: name -> [bitwidth, decompressed bitwidth]) so that reading the model back
(`qdq_read`) gives their compressed form again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from qtool import runtime
from qtool.encoding import Encoding
from qtool.errors import ModelError
from qtool.graph import external_data, trial_memo
from qtool.graph.model import default_opset, upgrade_opset_weightless
from qtool.graph.names import FreshNames
from qtool.quant import blocks
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import QuantPlan

# numpy storage types; onnx's numpy_helper packs ml_dtypes' int4/uint4 two a byte, low nibble first
_INT_TYPES = {
    (4, True): ml_dtypes.int4,
    (4, False): ml_dtypes.uint4,
    (7, True): np.int8,  # onnxruntime's reduce_range: [-64, 63] in int8 (runtime.integer_kernels)
    (7, False): np.uint8,
    (8, True): np.int8,
    (8, False): np.uint8,
    (16, True): np.int16,
    (16, False): np.uint16,
    (32, True): np.int32,
    (32, False): np.int32,
}
logger = logging.getLogger(__name__)
WIDE_OPSET = 21  # int4/uint4 and int16/uint16 QuantizeLinear/DequantizeLinear; blocked DequantizeLinear
LPBQ_METADATA = "qtool.lpbq"
NARROW_METADATA = "qtool.narrow_bitwidths"  # weight -> its bitwidth where narrower than its storage (7, unpacked 4 in int8)
# tensor -> float bitwidth, for what the plan keeps float: no Q/DQ says so, and an encodings file that leaves a
# tensor out has qairt quantize it (a float mask or LayerNorm statistic at 8 bits)
FLOAT_METADATA = "qtool.float_tensors"


def storage_type(e: Encoding, packed: bool = True) -> type:
    bitwidth = 8 if e.bitwidth == 4 and not packed else e.bitwidth
    return _INT_TYPES[(bitwidth, e.signed or bitwidth == 32)]


def _needs_wide_opset(plan: QuantPlan, packed: bool) -> bool:
    """A 4-bit activation is always uint4/int4 (storage_type): only weights have an 8-bit container to stay in."""
    if any(not e.is_float and e.bitwidth == 4 for e in plan.activations.values()):
        return True
    encodings = [*plan.activations.values(), *plan.params.values()]
    return any(
        not e.is_float and (e.bitwidth == 16 or (e.bitwidth == 4 and packed) or e.blocks is not None) for e in encodings
    )


def _is_fp16(e: Encoding) -> bool:
    return e.is_float and e.bitwidth == 16


class _Writer:
    def __init__(self, model: onnx.ModelProto, packed: bool):
        self.packed = packed
        facts = GraphFacts.of(model)
        self.fresh = FreshNames(set(facts.elem_types) | set(facts.producers) | {n.name for n in model.graph.node})
        self.half = {name for name, kind in facts.elem_types.items() if kind == TensorProto.FLOAT16}
        self.initializers: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def node(self, op: str, inputs: list[str], output: str, **attrs: int) -> None:
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.fresh(f"{output}_{op}"), **attrs))

    def qparams(
        self, name: str, e: Encoding, int_type: type, weight_shape: tuple[int, ...] = (), half: bool = False
    ) -> tuple[str, str]:
        """`half`: the scale of a float16 tensor is float16 (Q/DQ take and give the scale's type)."""
        scale_name, zp_name = self.fresh(f"{name}_scale"), self.fresh(f"{name}_zero_point")
        scale, zp = e.scale_array().astype(np.float16 if half else np.float32), e.zero_point().astype(int_type)
        if e.blocks is not None:
            scale, zp = blocks.onnx_array(scale, e, weight_shape), blocks.onnx_array(zp, e, weight_shape)
        else:
            shape = (len(e.scale),) if e.axis is not None else ()
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        self.initializers.append(numpy_helper.from_array(scale, scale_name))
        self.initializers.append(numpy_helper.from_array(zp, zp_name))
        return scale_name, zp_name

    def param(self, init: onnx.TensorProto, e: Encoding) -> None:
        values = external_data.array(init)
        if _is_fp16(e):
            half = self.fresh(f"{init.name}_fp16")
            self.initializers.append(numpy_helper.from_array(values.astype(np.float16), half))
            self.node("Cast", [half], init.name, to=TensorProto.FLOAT)
            return
        int_type = storage_type(e, self.packed)
        q_name = self.fresh(f"{init.name}_quantized")
        quantized = trial_memo.remember("quantized", (init,), lambda: _quantized(e, values, int_type), e, int_type)
        self.initializers.append(numpy_helper.from_array(quantized, q_name))
        scale, zp = self.qparams(init.name, e, int_type, values.shape)
        self.node("DequantizeLinear", [q_name, scale, zp], init.name, **_axis(e))
        external_data.release(init)  # a lazy weight's pages: read once, not needed again

    def activation(self, prequant: str, dequant: str, e: Encoding, base: str) -> None:
        """`prequant` -> Q -> DQ -> `dequant`; new names start with `base`."""
        if _is_fp16(e) and (prequant in self.half or base in self.half):
            self.node("Identity", [prequant], dequant)  # float16 already
            return
        if _is_fp16(e):
            half = self.fresh(f"{base}_fp16")
            self.node("Cast", [prequant], half, to=TensorProto.FLOAT16)
            self.node("Cast", [half], dequant, to=TensorProto.FLOAT)
            return
        int_type = storage_type(e)
        scale, zp = self.qparams(base, e, int_type, half=prequant in self.half or base in self.half)
        q_name = self.fresh(f"{base}_quantized")
        self.node("QuantizeLinear", [prequant, scale, zp], q_name, **_axis(e))
        self.node("DequantizeLinear", [q_name, scale, zp], dequant, **_axis(e))

    def int32_node(self, node: onnx.NodeProto, activations: set[str]) -> None:
        """Dequantize -> Cast(int32) -> op -> Cast(float) -> Quantize (QNN seed, INT32 overrides)."""
        casts: dict[str, str] = {}
        for i, name in enumerate(node.input):
            if name in activations:
                if name not in casts:
                    casts[name] = self.fresh(f"{name}_int32")
                    self.node("Cast", [name], casts[name], to=TensorProto.INT32)
                node.input[i] = casts[name]
        self.nodes.append(node)
        for i, name in enumerate(node.output):
            wide = self.fresh(f"{name}_int32")
            node.output[i] = wide
            self.node("Cast", [wide], name, to=TensorProto.FLOAT)


# elements quantized at a time: e.quantize's float64 and int64 temporaries are 16x an int8 weight. At 1M elements
# they were 16 MB, MTCNN ONet's and openWakeWord's peak (a 1152 x 256 Dense: 4.7 MB over a ~96 MB process);
# 64K elements (1 MB) run as fast or faster (numpy's passes stay in cache)
QUANTIZE_CHUNK = 1 << 16


def _quantized(e: Encoding, values: np.ndarray, int_type: type) -> np.ndarray:
    return sliced("quantize", e, values, int_type)


def sliced(method: str, e: Encoding, values: np.ndarray, dtype: type) -> np.ndarray:
    """e.quantize or e.dequantize (`method`) of values as `dtype`, in slices along an axis `e` does not vary
    on, or per block along its channel axis, each slice with its channels' blocks (an embedding table at
    once cost 500 MB of temporaries: MiniLM's B32 peak was 2.5x its per-channel one)."""
    if e.blocks is not None:  # along its channels, which a Gather table read back names by its block axis: it was
        # sliced across its blocks, 'cannot reshape' (internal error) exporting a decoder's weight-only W4 model
        axis = blocks.channel_of(e.axis, e.blocks.axis, values.ndim) if e.axis is not None and e.blocks.shape else values.ndim
    else:
        axis = 0 if e.axis is None or e.axis % values.ndim != 0 else 1
    if values.ndim <= axis or values.size <= QUANTIZE_CHUNK:
        return getattr(e, method)(values).astype(dtype)
    out = np.empty(values.shape, dtype)
    step = max(1, QUANTIZE_CHUNK * values.shape[axis] // values.size)
    per_block = _per_channel_blocks(e, axis) if e.blocks is not None else None
    for start in range(0, values.shape[axis], step):
        index = (slice(None),) * axis + (slice(start, start + step),)
        part = per_block(index) if per_block else e
        out[index] = getattr(part, method)(values[index]).astype(dtype)
    return out


def _per_channel_blocks(e: Encoding, axis: int) -> Callable[[tuple], Encoding]:
    """The block encoding of the channels `index` picks on `axis` (its scale and offset arrays built once)."""
    shape = e.blocks.shape  # type: ignore[union-attr]
    scale, offset = np.asarray(e.scale).reshape(shape), np.asarray(e.offset).reshape(shape)

    def part(index: tuple) -> Encoding:
        picked = scale[index]
        blocks = dataclasses.replace(e.blocks, shape=picked.shape, channel_scale=(), int_scale=())  # type: ignore[arg-type]
        return dataclasses.replace(e, scale=picked.ravel(), offset=offset[index].ravel(), min=(), max=(), blocks=blocks)

    return part


def _axis(e: Encoding) -> dict[str, int]:
    if e.blocks is not None and e.blocks.axis is not None:
        return {"axis": e.blocks.axis, "block_size": e.blocks.size}
    return {"axis": e.axis} if e.axis is not None else {}


def _mark_metadata(model: onnx.ModelProto, plan: QuantPlan, packed: bool) -> None:
    """LPBQ, 7-bit and unpacked 4-bit weights, and the tensors kept float, marked in the metadata, which their ONNX
    storage cannot say (qdq_read reads them back; an unpacked 4-bit weight was exported as 8 bits on its 4-bit scale)."""
    lpbq = {n: [e.bitwidth, e.blocks.decompressed_bw] for n, e in sorted(plan.params.items()) if e.blocks and e.blocks.is_lpbq}
    narrow = {n: e.bitwidth for n, e in sorted(plan.params.items())
              if not e.is_float and n not in lpbq and (e.bitwidth == 7 or (e.bitwidth == 4 and not packed))}
    floats = {part: {n: e.bitwidth for n, e in sorted(table.items()) if e.is_float}
              for part, table in (("activations", plan.activations), ("params", plan.params))}  # fmt: skip
    kept = [p for p in model.metadata_props if p.key not in (LPBQ_METADATA, NARROW_METADATA, FLOAT_METADATA)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if any(floats.values()):
        model.metadata_props.add(key=FLOAT_METADATA, value=json.dumps(floats, sort_keys=True))
    if lpbq:
        model.metadata_props.add(key=LPBQ_METADATA, value=json.dumps(lpbq, sort_keys=True))
    if narrow:
        model.metadata_props.add(key=NARROW_METADATA, value=json.dumps(narrow, sort_keys=True))


def _simulated(plan: QuantPlan) -> dict[str, Encoding]:
    return {t: e for t, e in plan.activations.items() if not e.is_float or _is_fp16(e)}


def _within_qdq_kernels(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """A model of an opset newer than onnxruntime's QuantizeLinear kernels (opset 28 on onnxruntime
    1.32) is converted down to the newest opset they have, where onnx's converter can."""
    current = default_opset(model)
    supported = runtime.max_qdq_opset(current)
    if supported >= current:
        return model
    try:
        down = version_converter.convert_version(model, supported)
    except Exception as e:  # the converter has no down-adapter for some op
        raise ModelError(
            f"opset {current} is newer than onnxruntime's QuantizeLinear (opset {supported}), and the model "
            f"cannot be converted down: {str(e).splitlines()[0][:120]}",
            where=where,
        ) from e
    logger.info("opset %d -> %d: onnxruntime's Q/DQ kernels stop at %d", current, supported, supported)
    return down


def write_qdq(model: onnx.ModelProto, plan: QuantPlan, where: str = "model", packed: bool = False) -> onnx.ModelProto:
    """A new model with the plan's Q/DQ (and Cast) nodes; `model` is not modified."""
    weights: dict[str, onnx.TensorProto] = {}  # the upgraded model's weights, read from `model` where they are
    if _needs_wide_opset(plan, packed):
        model, weights = upgrade_opset_weightless(model, WIDE_OPSET, where)
    model = _within_qdq_kernels(model, where)
    out = external_data.without_initializers(model)
    graph = out.graph
    writer = _Writer(model, packed)
    acts = _simulated(plan)
    # a graph input that is also a graph output stays the input itself: its name is taken
    outputs = {o.name for o in graph.output} - {v.name for v in graph.input}
    prequant = {t: writer.fresh(f"{t}_prequant") if t in outputs else t for t in acts}
    dequant = {t: t if t in outputs else writer.fresh(f"{t}_dequantized") for t in acts}
    for init in model.graph.initializer:
        init = weights.get(init.name, init)
        e = plan.params.get(init.name)
        if e is not None and (not e.is_float or _is_fp16(e)):
            writer.param(init, e)
        else:
            writer.initializers.append(init)
    for name in [v.name for v in graph.input if v.name in acts]:
        writer.activation(name, dequant[name], acts[name], name)
    int32 = set(plan.int32_nodes)
    float_acts = {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
    converted = {t: writer.fresh(f"{t}_converted") for t in plan.converts}
    for name in [v.name for v in graph.input if v.name in converted]:  # a float input read by quantized ops
        writer.activation(name, converted[name], plan.converts[name], converted[name])
    for node in graph.node:
        reads = dequant if plan.is_float_node(node) else {**dequant, **converted}
        node.input[:] = [reads.get(i, i) for i in node.input]
        produced = [o for o in node.output if o in acts or o in converted]
        node.output[:] = [prequant.get(o, o) for o in node.output]
        if node.name in int32:
            writer.int32_node(node, {dequant.get(a, a) for a in float_acts})
        else:
            writer.nodes.append(node)
        for t in produced:
            if t in converted:
                writer.activation(t, converted[t], plan.converts[t], converted[t])
            if t in acts:
                writer.activation(prequant[t], dequant[t], acts[t], t)
    source = {id(n) for n in graph.node}, {i.name for i in model.graph.initializer}
    nodes, initializers = _read_only(writer.nodes, writer.initializers, {o.name for o in graph.output}, source)
    _replace(graph.node, nodes)
    _replace(graph.initializer, initializers)
    _mark_metadata(out, plan, packed)
    return out


def _read_only(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], outputs: set[str], source: tuple[set, set]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The writer's nodes that something reads, and its initializers they need. A tensor whose every reader
    takes its converted copy (a float16 tensor into an 8-bit op) left its own simulation unread: SLANet's mixed
    model carried 36 such nodes. The source graph's nodes and initializers all stay."""
    nodes_before, inits_before = source
    while True:
        read = outputs | {i for n in nodes for i in runtime.reads(n)}
        kept = [n for n in nodes if id(n) in nodes_before or any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return nodes, [i for i in initializers if i.name in inits_before or i.name in read]
        nodes = kept


def _replace(field, items: list) -> None:
    del field[:]
    field.extend(items)

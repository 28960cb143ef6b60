"""Write a QDQ ONNX model from a QuantPlan: QuantizeLinear/DequantizeLinear on each encoded
activation, integer initializers behind DequantizeLinear for each encoded parameter.

Names are deterministic and keep the float graph's: a weight `W` becomes `W_quantized` behind a
DequantizeLinear whose output is still `W`; an activation `T` is followed by `T_quantized` and
`T_dequantized`, which its consumers read. A graph output keeps its name on the dequantized
value; the float value feeding its quantizer is renamed `T_prequant`.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import upgrade_opset
from qtool.quant.encoding import Encoding
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import QuantPlan

_INT_TYPES = {
    (4, True): TensorProto.INT4,
    (4, False): TensorProto.UINT4,
    (8, True): TensorProto.INT8,
    (8, False): TensorProto.UINT8,
    (16, True): TensorProto.INT16,
    (16, False): TensorProto.UINT16,
    (32, True): TensorProto.INT32,
    (32, False): TensorProto.INT32,
}
WIDE_OPSET = 21  # int4/uint4 and int16/uint16 QuantizeLinear/DequantizeLinear


def onnx_int_type(e: Encoding) -> int:
    return _INT_TYPES[(e.bitwidth, e.signed or e.bitwidth == 32)]


def _needs_wide_opset(plan: QuantPlan) -> bool:
    encodings = [*plan.activations.values(), *plan.params.values()]
    return any(not e.is_float and e.bitwidth in (4, 16) for e in encodings)


def _int_tensor(name: str, values, elem_type: int, dims) -> onnx.TensorProto:
    return helper.make_tensor(name, elem_type, list(dims), values.flatten().tolist())


class _Writer:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        facts = GraphFacts.of(model)
        self.taken = set(facts.elem_types) | set(facts.producers) | {n.name for n in model.graph.node}
        self.initializers: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def fresh(self, name: str) -> str:
        candidate, i = name, 0
        while candidate in self.taken:
            i += 1
            candidate = f"{name}_{i}"
        self.taken.add(candidate)
        return candidate

    def qparams(self, name: str, e: Encoding) -> tuple[str, str]:
        scale_name, zp_name = self.fresh(f"{name}_scale"), self.fresh(f"{name}_zero_point")
        scale = e.scale_array().astype("float32")
        zp = e.zero_point()
        dims = [len(scale)] if e.axis is not None else []
        self.initializers.append(helper.make_tensor(scale_name, TensorProto.FLOAT, dims, scale.tolist()))
        self.initializers.append(_int_tensor(zp_name, zp, onnx_int_type(e), dims))
        return scale_name, zp_name

    def dequantize(self, source: str, target: str, e: Encoding, scale: str, zp: str) -> None:
        attrs = {"axis": e.axis} if e.axis is not None else {}
        self.nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [source, scale, zp],
                [target],
                name=self.fresh(f"{target}_DequantizeLinear"),
                **attrs,
            )
        )

    def param(self, init: onnx.TensorProto, e: Encoding) -> None:
        values = numpy_helper.to_array(init)
        q = e.quantize(values)
        q_name = self.fresh(f"{init.name}_quantized")
        self.initializers.append(_int_tensor(q_name, q, onnx_int_type(e), values.shape))
        scale, zp = self.qparams(init.name, e)
        self.dequantize(q_name, init.name, e, scale, zp)

    def activation(self, prequant: str, dequant: str, e: Encoding) -> None:
        scale, zp = self.qparams(dequant if dequant != prequant else prequant, e)
        q_name = self.fresh(f"{dequant}_quantized")
        attrs = {"axis": e.axis} if e.axis is not None else {}
        self.nodes.append(
            helper.make_node(
                "QuantizeLinear", [prequant, scale, zp], [q_name], name=self.fresh(f"{dequant}_QuantizeLinear"), **attrs
            )
        )
        self.dequantize(q_name, dequant, e, scale, zp)


def write_qdq(model: onnx.ModelProto, plan: QuantPlan, where: str = "model") -> onnx.ModelProto:
    """A new model with the plan's Q/DQ nodes; `model` is not modified."""
    if _needs_wide_opset(plan):
        model = upgrade_opset(model, WIDE_OPSET, where)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    writer = _Writer(out)
    int_acts = {t: e for t, e in plan.activations.items() if not e.is_float}
    outputs = {o.name for o in graph.output}
    prequant = {t: writer.fresh(f"{t}_prequant") if t in outputs else t for t in int_acts}
    dequant = {t: t if t in outputs else writer.fresh(f"{t}_dequantized") for t in int_acts}
    for init in graph.initializer:
        e = plan.params.get(init.name)
        if e is not None and not e.is_float:
            writer.param(init, e)
        else:
            writer.initializers.append(init)
    for name in [v.name for v in graph.input if v.name in int_acts]:
        writer.activation(name, dequant[name], int_acts[name])
    for node in graph.node:
        node.input[:] = [dequant.get(i, i) for i in node.input]
        writer.nodes.append(node)
        for t in [o for o in node.output if o in int_acts]:
            writer.activation(prequant[t], dequant[t], int_acts[t])
        node.output[:] = [prequant.get(o, o) for o in node.output]
    del graph.node[:]
    graph.node.extend(writer.nodes)
    del graph.initializer[:]
    graph.initializer.extend(writer.initializers)
    _drop_stale_value_info(graph, set(prequant.values()) | set(dequant.values()))
    return out


def _drop_stale_value_info(graph: onnx.GraphProto, renamed: set[str]) -> None:
    kept = [v for v in graph.value_info if v.name not in renamed]
    del graph.value_info[:]
    graph.value_info.extend(kept)

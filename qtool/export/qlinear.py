"""QLINEAR: op_type -> converter to onnxruntime's integer (QOperator) form, as a table (STYLE.md Do 3).

A converter checks its node against what onnxruntime's CPU kernels accept and returns False,
touching nothing, when it cannot convert it; the op then stays float between DequantizeLinear and
QuantizeLinear exactly as in the QDQ model.
- QLinearConv, QLinearMatMul (ONNX), QGemm (com.microsoft): inputs u8/u8, u8/s8 or s8/s8, output
  of the first input's type; int32 bias on scale x_scale·w_scale (QGemm: alpha/beta·a_scale·b_scale,
  ORT contrib-op spec), zero point 0.
- QLinearAdd, QLinearMul, QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool,
  QLinearSigmoid, QLinearLeakyRelu (com.microsoft): every operand and the output on one 8-bit type.
- Data-movement ops whose output keeps the input's encoding (Reshape, Transpose, MaxPool...) run
  on the integers themselves: monotone or copying ops commute with quantization.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from qtool.encoding import Encoding
from qtool.export.qgraph import MS_DOMAIN, QGraph, Target
from qtool.graph.attributes import attribute

Converter = Callable[[QGraph, onnx.NodeProto], bool]
INT32_MAX = 2**31 - 1


def _kernel_types(x: Encoding, w: Encoding, y: Encoding) -> bool:
    """onnxruntime's CPU kernels: u8/u8, u8/s8 or s8/s8 inputs; the output has the first input's type."""
    return not (x.signed and not w.signed) and x.signed == y.signed


def _input(g: QGraph, t: str) -> list[str]:
    return [g.integer(t), *g.qparams(t)]


def _bias(g: QGraph, name: str, scale: np.ndarray, factor: float = 1.0) -> np.ndarray | None:
    """`name`'s values as int32 on `scale` (zero point 0); None if not constant or past int32."""
    if not name:
        return np.zeros(0, np.int32)
    if name not in g.facts.initializers:
        return None
    q = np.rint(g.facts.array(name).astype(np.float64) * factor / scale)
    return q.astype(np.int32) if np.abs(q).max(initial=0) <= INT32_MAX else None


def conv(g: QGraph, node: onnx.NodeProto) -> bool:
    x, w = node.input[0], node.input[1]
    ex, ew, out = g.operand(x), g.operand(w), g.target(node)
    if ex is None or ew is None or out is None or w not in g.facts.initializers or ew.axis not in (None, 0):
        return False
    bias = _bias(g, node.input[2] if len(node.input) > 2 else "", ex.scale[0] * ew.scale_array())
    if bias is None or not _kernel_types(ex, ew, out.encoding):
        return False
    inputs = [*_input(g, x), *_input(g, w), *g.qparams(out.name)]
    if bias.size:
        inputs.append(g.const(f"{node.input[2]}_int32", bias))
    g.emit(node, "QLinearConv", inputs, out, attrs=list(node.attribute))
    return True


def _per_column(g: QGraph, b: str, e: Encoding, axis: int) -> bool:
    """Per-channel B is accepted per output column of a 2-D constant only."""
    return e.axis is None or (b in g.facts.initializers and g.facts.array(b).ndim == 2 and e.axis % 2 == axis)


def matmul(g: QGraph, node: onnx.NodeProto) -> bool:
    a, b = node.input
    users = g.facts.consumers.get(node.output[0], [])
    if len(users) == 1 and (fused := g.facts.bias_add(users[0])) is not None:
        return _matmul_bias(g, node, users[0], fused[1])
    ea, eb, out = g.operand(a), g.operand(b), g.target(node)
    if ea is None or eb is None or out is None or not _kernel_types(ea, eb, out.encoding):
        return False
    if ea.axis is not None or not _per_column(g, b, eb, 1):  # onnxruntime's kernel takes one scale for A: a
        return False  # constant A's per-row grids (C @ x) failed at run time ('input zero point must be a scalar')
    g.emit(node, "QLinearMatMul", [*_input(g, a), *_input(g, b), *g.qparams(out.name)], out)
    return True


def _matmul_bias(g: QGraph, node: onnx.NodeProto, add: onnx.NodeProto, bias: str) -> bool:
    """A MatMul and the bias Add it is quantized with (GraphFacts.bias_add) as one QGemm on the rows of A
    (Reshape to [-1, K] and back, on the integers), its bias int32 on a_scale·b_scale."""
    a, b = node.input
    ea, eb, out = g.operand(a), g.operand(b), g.target(add)
    if ea is None or eb is None or out is None or not _kernel_types(ea, eb, out.encoding) or not _per_column(g, b, eb, 1):
        return False
    values = _bias(g, bias, ea.scale[0] * eb.scale_array())
    if values is None:
        return False
    k, n = g.facts.initializers[b].dims
    rows = g.fresh(f"{a}_rows")
    g.node("Reshape", [g.integer(a), g.const(f"{a}_rows_shape", np.array([-1, k], np.int64))], rows)
    inputs = [rows, *g.qparams(a), *_input(g, b), g.const(f"{bias}_int32", values)]
    g.emit(add, "QGemm", [*inputs, *g.qparams(out.name)], out, domain=MS_DOMAIN)
    leading, shape, result = g.fresh(f"{a}_leading"), g.fresh(f"{out.name}_shape"), g.fresh(f"{out.name}_quantized")
    whole = g.fresh(f"{a}_shape")
    g.node("Shape", [g.integer(a)], whole)
    ends = [g.const(f"{a}_shape_{end}", np.array([i], np.int64)) for end, i in (("start", 0), ("end", -1))]
    g.node("Slice", [whole, *ends], leading)
    g.node("Concat", [leading, g.const(f"{out.name}_columns", np.array([n], np.int64))], shape, axis=0)
    g.node("Reshape", [g.integer_of[out.name], shape], result)
    g.integer_of[out.name] = result
    g.skipped.add(add.output[0])
    return True


def gemm(g: QGraph, node: onnx.NodeProto) -> bool:
    a, b = node.input[0], node.input[1]
    ea, eb, out = g.operand(a), g.operand(b), g.target(node)
    if ea is None or eb is None or out is None or not _kernel_types(ea, eb, out.encoding):
        return False
    alpha, beta, trans_b = float(attribute(node, "alpha", 1.0)), float(attribute(node, "beta", 1.0)), attribute(node, "transB", 0)
    if alpha == 0.0 or not _per_column(g, b, eb, 0 if trans_b else 1):
        return False
    c = node.input[2] if len(node.input) > 2 and beta != 0.0 else ""
    bias = _bias(g, c, alpha * ea.scale[0] * eb.scale_array(), beta)
    if bias is None:
        return False
    inputs = [*_input(g, a), *_input(g, b), g.const(f"{c}_int32", bias) if bias.size else ""]
    attrs = {"alpha": alpha, "transA": int(attribute(node, "transA", 0)), "transB": int(trans_b)}
    g.emit(node, "QGemm", [*inputs, *g.qparams(out.name)], out, domain=MS_DOMAIN, **attrs)
    return True


def _uniform(g: QGraph, node: onnx.NodeProto, operands: list[str]) -> Target | None:
    """The output target when every operand and the output share one per-tensor 8-bit type."""
    out = g.target(node)
    encodings = [g.operand(t) for t in operands]
    if out is None or any(e is None or e.axis is not None or e.signed != out.encoding.signed for e in encodings):
        return None
    return out


def binary(op: str) -> Converter:
    def convert(g: QGraph, node: onnx.NodeProto) -> bool:
        out = _uniform(g, node, list(node.input)) if len(node.input) == 2 else None
        if out is None:
            return False
        inputs = [*_input(g, node.input[0]), *_input(g, node.input[1]), *g.qparams(out.name)]
        g.emit(node, op, inputs, out, domain=MS_DOMAIN)
        return True

    return convert


def concat(g: QGraph, node: onnx.NodeProto) -> bool:
    out = _uniform(g, node, list(node.input))
    if out is None:
        return False
    inputs = [*g.qparams(out.name), *(name for t in node.input for name in _input(g, t))]
    g.emit(node, "QLinearConcat", inputs, out, domain=MS_DOMAIN, axis=int(attribute(node, "axis", 0)))
    return True


def unary(op: str, keep: tuple[str, ...] = (), nchw: bool = False) -> Converter:
    """`nchw`: the contrib op takes a `channels_last` attribute; ONNX pooling is channels-first."""

    def convert(g: QGraph, node: onnx.NodeProto) -> bool:
        x, out = node.input[0], _uniform(g, node, node.input[:1])
        if out is None or any(d != 1 for d in attribute(node, "dilations", [])):
            return False
        extra = {"channels_last": 0} if nchw else {}
        attrs = [a for a in node.attribute if a.name in keep]
        g.emit(node, op, [*_input(g, x), *g.qparams(out.name)], out, domain=MS_DOMAIN, attrs=attrs, **extra)
        return True

    return convert


def shared(g: QGraph, node: onnx.NodeProto) -> bool:
    """A data-movement op on the integer tensor; its outputs keep input 0's grid."""
    x = node.input[0]
    e = g.operand(x)
    if e is None or e.axis is not None or any(o in g.enc and g.enc[o] != e for o in node.output if o):
        return False
    if node.op_type == "MaxPool" and (g.opset < 12 or len(node.output) > 1):
        return False
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.name = g.fresh(f"{node.name or node.output[0]}_int")
    new.input[:] = [g.integer(x), *(g.dequantized(i) for i in node.input[1:])]
    for i, out in enumerate(node.output):
        new.output[i] = g.fresh(f"{out}_quantized")
        g.alias(out, new.output[i], e)
    g.nodes.append(new)
    return True


_POOL = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")
SHARED_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool", "Slice", "Gather")

QLINEAR: dict[str, Converter] = {
    "Conv": conv,
    "MatMul": matmul,
    "Gemm": gemm,
    "Add": binary("QLinearAdd"),
    "Mul": binary("QLinearMul"),
    "Concat": concat,
    "GlobalAveragePool": unary("QLinearGlobalAveragePool", nchw=True),
    "AveragePool": unary("QLinearAveragePool", _POOL, nchw=True),
    "Sigmoid": unary("QLinearSigmoid"),
    "LeakyRelu": unary("QLinearLeakyRelu", ("alpha",)),
    **dict.fromkeys(SHARED_OPS, shared),
}

"""A model in onnxruntime's integer (QOperator) form read as the float ops it computes, for shapes and MACs.

onnx's shape inference knows QLinearConv but not onnxruntime's com.microsoft ops (QGemm, QLinearAdd,
QLinearConcat, QLinearGlobalAveragePool...), and no MAC op was counted in either: inspect read 'MACs 0' of the
digits CNN's `export --format qoperator`. Each integer op becomes its float op on its data inputs (onnxruntime's
contrib op schemas: X, W, B of QLinearConv at 0, 3, 8; A, B, C of QGemm at 0, 3, 6), attributes kept, in a
shape probe (weights stubbed): non-strict inference takes a Conv of uint8 as it takes one of float.
"""

from __future__ import annotations

import onnx

from qtool.graph import external_data

# op -> (the float op it computes, its data inputs; None: QLinearConcat's, every third from 2)
FLOAT_FORMS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "QLinearConv": ("Conv", (0, 3, 8)), "QLinearMatMul": ("MatMul", (0, 3)), "QGemm": ("Gemm", (0, 3, 6)),
    "QLinearAdd": ("Add", (0, 3)), "QLinearMul": ("Mul", (0, 3)), "QLinearConcat": ("Concat", None),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,)), "QLinearAveragePool": ("AveragePool", (0,)),
    "QLinearSigmoid": ("Sigmoid", (0,)), "QLinearLeakyRelu": ("LeakyRelu", (0,)), "QLinearSoftmax": ("Softmax", (0,)),
    "ConvInteger": ("Conv", (0, 1)), "MatMulInteger": ("MatMul", (0, 1)), "MatMulIntegerToFloat": ("MatMul", (0, 1)),
    "DynamicQuantizeMatMul": ("MatMul", (0, 1)),
}  # fmt: skip
DROPPED_ATTRIBUTES = frozenset({"opset"})  # QLinearSoftmax's: the float Softmax takes the model's opset


def integer_ops(model: onnx.ModelProto) -> list[str]:
    """The op types of `model` that FLOAT_FORMS reads (MatMulNBits, beside QDQ in an ort-cpu model, is not one)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in FLOAT_FORMS})


def _float_node(node: onnx.NodeProto) -> onnx.NodeProto:
    op, data = FLOAT_FORMS.get(node.op_type, (None, None))
    if op is None or any(a.name == "channels_last" and a.i for a in node.attribute):  # NHWC: not the float op's shape
        return node
    picked = range(2, len(node.input), 3) if data is None else [k for k in data if k < len(node.input)]
    attributes = [a for a in node.attribute if a.name not in DROPPED_ATTRIBUTES | {"channels_last"}]
    out = onnx.helper.make_node(op, [node.input[k] for k in picked if node.input[k]], node.output, name=node.name)
    out.attribute.extend(attributes)
    return out


def float_form(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A shape probe of `model` with each integer op as its float op; None when it has none."""
    if not integer_ops(model):
        return None
    with external_data.on_disk(model):
        probe = external_data.shape_probe(model)
    nodes = [_float_node(n) for n in probe.graph.node]
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    return probe

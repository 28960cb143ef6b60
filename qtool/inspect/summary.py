"""Facts about any model (float, converted or quantized): IO, ops, parameters, encodings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper

from qtool.graph import model as gm
from qtool.quant.qdq_read import read_qdq
from qtool.report import Report, Table


def _value_row(value: onnx.ValueInfoProto) -> list[str]:
    tensor_type = value.type.tensor_type
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "?"
    return [value.name, dtype, "[" + ",".join(dims) + "]"]


def kind(model: onnx.ModelProto) -> str:
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"} or any(op.startswith("QLinear") for op in ops):
        return "quantized"
    return "converted" if gm.metadata(model).get(gm.METADATA_CONVERTED) == "1" else "float"


def summarise(model: onnx.ModelProto, where: str) -> Report:
    inits = gm.initializer_names(model)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    param_bytes = sum(len(i.raw_data) or onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    model_kind = kind(model)
    report = Report(
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
    io_rows = [["input", *_value_row(v)] for v in model.graph.input if v.name not in inits]
    io_rows += [["output", *_value_row(v)] for v in model.graph.output]
    report.tables.append(Table("inputs and outputs", ["kind", "name", "dtype", "shape"], io_rows))
    ops = Counter(n.op_type for n in model.graph.node)
    report.tables.append(
        Table("ops", ["op", "count"], [[op, n] for op, n in sorted(ops.items(), key=lambda x: (-x[1], x[0]))])
    )
    if model_kind == "quantized":
        _, found = read_qdq(model)
        rows = [
            [
                kind_,
                name,
                e.bitwidth,
                "sym" if e.is_symmetric else "asym",
                len(e.scale),
                min(e.min),
                max(e.max),
                e.scale[0],
                e.offset[0],
            ]
            for kind_, table in (("act", found.activations), ("param", found.params))
            for name, e in sorted(table.items())
        ]
        report.tables.append(
            Table("encodings", ["kind", "tensor", "bw", "schema", "channels", "min", "max", "scale", "offset"], rows)
        )
    return report

"""`qdq`: the QDQ model itself, re-serialised deterministically (the same model gives the same bytes).

ONNX allows int4/uint4 and int16/uint16 in QuantizeLinear/DequantizeLinear only from opset 21,
so a model holding such tensors at an older opset is upgraded to 21 (onnx's version converter).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from qtool.export.job import ExportJob, Files
from qtool.graph import model as gm
from qtool.graph.model import upgrade_opset
from qtool.quant.qdq import WIDE_OPSET

WIDE_TYPES = frozenset({TensorProto.INT4, TensorProto.UINT4, TensorProto.INT16, TensorProto.UINT16})


def wide_types(model: onnx.ModelProto) -> bool:
    """True when a Q/DQ node reads or writes a 4- or 16-bit integer tensor."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in ("", "ai.onnx"):
            continue
        if any(inits.get(name) in WIDE_TYPES for name in node.input):
            return True
        if any(a.name == "output_dtype" and a.i in WIDE_TYPES for a in node.attribute):
            return True
    return False


def export(job: ExportJob) -> Files:
    model = onnx.ModelProto()
    model.CopyFrom(job.model)
    if wide_types(model):
        model = upgrade_opset(model, WIDE_OPSET, job.where)
    gm.check(model, job.where)
    return {job.file(".qdq.onnx"): model}

"""Whole-model float16 (qairt's `--float_bitwidth 16`, export's `fp16`): every float32 weight and
activation becomes float16; the graph's inputs and outputs stay float32 behind Cast nodes, so
callers feed and read the same arrays as before.

Inputs that ONNX requires in float32 (Resize's roi/scales) are left alone; onnxruntime inserts
casts itself around ops that have no float16 CPU kernel.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.graph import external_data

KEEP_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
_FP32 = TensorProto.FLOAT


def _kept_names(graph: onnx.GraphProto) -> set[str]:
    return {
        node.input[i] for node in graph.node for i in KEEP_FLOAT32_INPUTS.get(node.op_type, ()) if i < len(node.input)
    }


def _retype(values, kept: set[str]) -> None:
    for value in values:
        if value.type.tensor_type.elem_type == _FP32 and value.name not in kept:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16


def _convert_attributes(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _FP32:
            attribute.i = TensorProto.FLOAT16
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == _FP32:
            half = numpy_helper.to_array(attribute.t).astype(np.float16)
            attribute.t.CopyFrom(numpy_helper.from_array(half, attribute.t.name))


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    out = external_data.without_initializers(model)  # a copy would keep the float32 bytes in its arena
    graph = out.graph
    kept = _kept_names(graph)
    inits = []
    for init in model.graph.initializer:
        if init.data_type == _FP32 and init.name not in kept:
            init = numpy_helper.from_array(external_data.array(init).astype(np.float16), init.name)
        inits.append(init)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    for node in graph.node:
        _convert_attributes(node)
    _retype(graph.value_info, kept)
    boundary_in, boundary_out = [], []
    float_inputs = [v.name for v in graph.input if v.type.tensor_type.elem_type == _FP32]
    float_outputs = [v.name for v in graph.output if v.type.tensor_type.elem_type == _FP32]
    rename = {name: f"{name}_fp16" for name in float_inputs + float_outputs}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for name in float_inputs:
        boundary_in.append(
            helper.make_node("Cast", [name], [rename[name]], name=f"{name}_to_fp16", to=TensorProto.FLOAT16)
        )
    for name in float_outputs:
        boundary_out.append(helper.make_node("Cast", [rename[name]], [name], name=f"{name}_to_fp32", to=_FP32))
    nodes = boundary_in + list(graph.node) + boundary_out
    del graph.node[:]
    graph.node.extend(nodes)
    return out

"""Float weights no model can be computed or quantized with: NaN anywhere, an infinity in a Conv's, Gemm's or
MatMul's weight. convert and quantize refuse them; inspect lints them."""

from __future__ import annotations

import numpy as np
import onnx

from qtool.graph import external_data
from qtool.io.files import quoted
from qtool.quant.overrides import FLOAT_FORCING_OPS
from qtool.quant.rules import rule_for

NAN_CHECKED = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


def unusable_weight(model: onnx.ModelProto) -> tuple[str, str] | None:
    """(weight name, why) of the first such weight, or None. A float weight holding NaN makes what it touches NaN;
    an infinity is a value (a mask constant holds -inf), but not in a layer's weight, whose grid it would be.
    One weight is read at a time, and min() carries a NaN through without a mask the weight's size."""
    layers = {n.input[i]: n for n in model.graph.node if n.op_type in FLOAT_FORCING_OPS  # Conv, Gemm, MatMul
              for i in rule_for(n).weights if i < len(n.input)}  # fmt: skip
    for last, init in zip([None, *model.graph.initializer], model.graph.initializer, strict=False):
        if last is not None:  # the last weight's pages: all of a lazy model's stayed resident (512 MB: +223 MB peak)
            external_data.release(last)
        values = external_data.array(init) if init.data_type in NAN_CHECKED else np.zeros(0)
        if values.size and np.isnan(values.min()):
            nan = np.count_nonzero(np.isnan(values))
            return init.name, f"weight {quoted(init.name)} holds {nan} NaN value(s): the model computes NaN from it"
        if values.size and init.name in layers and not (np.isfinite(values.min()) and np.isfinite(values.max())):
            layer = " ".join([layers[init.name].op_type, *([quoted(layers[init.name].name)] if layers[init.name].name else [])])
            return init.name, f"weight {quoted(init.name)} of {layer} holds an infinity, which no grid holds"
    if model.graph.initializer:
        external_data.release(model.graph.initializer[-1])
    return None

"""Division by a constant becomes multiplication by its reciprocal.

x / 6 (hard-swish, as Paddle and TF export it) has no integer kernel anywhere; x · (1/6) is a
QLinearMul in onnxruntime and an elementwise multiply on every NPU. Exact up to one float rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


class DivToMulPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in list(model.graph):
            divisor = node.inputs[1] if node.op_type == "Div" and node.domain == "" and len(node.inputs) == 2 else None
            value = divisor.const_value.numpy() if divisor is not None and divisor.const_value is not None else None
            if value is None or value.dtype.kind != "f" or not np.all(value != 0):
                continue
            reciprocal = ir.Value(
                name=f"{divisor.name}_reciprocal", const_value=ir.tensor((1 / value).astype(value.dtype))
            )
            if reciprocal.name not in model.graph.initializers:
                model.graph.register_initializer(reciprocal)
            else:
                reciprocal = model.graph.initializers[reciprocal.name]
            mul = ir.node("Mul", inputs=[node.inputs[0], reciprocal], name=node.name)
            output = node.outputs[0]
            ir.convenience.replace_nodes_and_values(model.graph, node, [node], [mul], [output], [mul.outputs[0]])
            mul.outputs[0].name = output.name
            changed += 1
        logger.info("div_to_mul: %d divisions by a constant", changed)
        return ir.passes.PassResult(model, modified=bool(changed))

"""A DequantizeLinear of a constant that folding computed is a float constant.

onnxscript's folding keeps every DequantizeLinear (a weight's grid is what convert imports as its encoding), and
onnx's reference evaluator has none below opset 19 anyway. But a DequantizeLinear can read a constant that no file
gave: flan-t5's relative attention bias, a quantized table whose rows a Gather picks at the position buckets, folds
to a uint8 constant once the buckets' ConstantOfShape folds, and the DequantizeLinear left reading it made the model
'quantized already' to quantize. Folded here, it is the float constant it stands for; one reading an initializer
as given stays.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnxscript.optimizer._constant_folding import FOLDED_FROM_KEY

from qtool.graph.passes.constants import new_constant

logger = logging.getLogger(__name__)
MAC_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _dequantized(node: ir.Node) -> np.ndarray | None:
    x, scale, *rest = [*node.inputs, None][:3]
    zero = rest[0] if rest else None
    values = [v.const_value if v is not None else None for v in (x, scale, zero)]
    if values[0] is None or values[1] is None or (zero is not None and values[2] is None):
        return None
    if node.attributes.get_int("block_size", 0):  # opset 21's blocks: left to convert's import
        return None
    q = values[0].numpy().astype(np.float64)
    s = values[1].numpy().astype(np.float64)
    z = values[2].numpy().astype(np.float64) if values[2] is not None else np.zeros_like(s)
    if s.ndim == 1 and q.ndim > 1:  # per axis
        axis = node.attributes.get_int("axis", 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    return ((q - z) * s).astype(np.float32)


def _feeds_a_layer(value: ir.Value) -> bool:
    """A grid a MAC layer reads is a weight's: int8 W -> Transpose -> DequantizeLinear -> MatMul, its Transpose
    folded, is a QDQ model's weight, which convert's import does not read through the Transpose. Folded, quantize
    put the weight on a grid of its own without a word; left, quantize refuses the model as quantized already."""
    return any(use.node.op_type in MAC_LAYERS for use in value.uses())


class FoldDequantizedConstantsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folded = 0
        for node in list(model.graph):
            if node.op_type != "DequantizeLinear" or node.domain != "" or not node.inputs or node.inputs[0] is None:
                continue
            out = node.outputs[0]
            if FOLDED_FROM_KEY not in node.inputs[0].meta or _feeds_a_layer(out) or (array := _dequantized(node)) is None:
                continue
            name = out.name
            value = new_constant(model.graph, f"{name}_float", array)
            out.replace_all_uses_with(value, replace_graph_outputs=True)  # kept, quantize refused the model
            model.graph.remove(node, safe=True)
            value.name = name  # the tensor keeps its name (the layer report's, an overrides file's)
            folded += 1
        logger.info("fold_dequantized_constants: %d", folded)
        return ir.passes.PassResult(model, modified=bool(folded))

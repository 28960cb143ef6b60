"""Turn an Add (or Sub) of an all-zero constant that changes neither shape nor type into Identity (RemoveIdentityPass
then removes it).

torch.onnx's dynamo exporter writes an attention without a mask as scores + zeros: a random-initialised ViT-S
(bench/prepare_transformers.py) held six [1, 1, 197, 197] zero tensors, 0.9 MB, each added to a layer's scores and
quantized as an operand. x + 0 is x, bit for bit but for -0.0, which every grid reads as 0. An Add whose zeros
broadcast x to a larger shape is left alone: it copies x out; so is one whose output overrides name (`keep`).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from qtool.graph.passes.constants import array_of, static_dims

logger = logging.getLogger(__name__)


def _all_zero(value: ir.Value | None) -> bool:
    array = array_of(value)
    return array is not None and array.size > 0 and not array.any()


def _kept_input(node: ir.Node) -> ir.Value | None:
    """The data input an Add or Sub of zeros passes through unchanged, or None."""
    if node.domain != "" or node.op_type not in ("Add", "Sub") or len(node.inputs) != 2 or None in node.inputs:
        return None
    a, b = node.inputs
    data = a if _all_zero(b) else b if node.op_type == "Add" and _all_zero(a) else None  # 0 - x is no x
    out = node.outputs[0]
    if data is None or data.dtype != out.dtype:
        return None
    dims = static_dims(data)
    return data if dims is not None and dims == static_dims(out) else None


class RemoveAddZeroPass(ir.passes.InPlacePass):
    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = keep

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in list(model.graph):
            data = _kept_input(node)
            if data is None or node.outputs[0].name in self.keep:
                continue
            replacement = ir.node("Identity", inputs=[data], name=node.name)
            replacement.outputs[0].name = node.outputs[0].name
            replacement.outputs[0].shape, replacement.outputs[0].dtype = node.outputs[0].shape, node.outputs[0].dtype
            ir.convenience.replace_nodes_and_values(
                model.graph, node, [node], [replacement], [node.outputs[0]], [replacement.outputs[0]]
            )
            changed += 1
        logger.info("remove_add_zero: %d Add/Sub of zeros", changed)
        return ir.passes.PassResult(model, modified=bool(changed))

"""onnx-ir's IdentityEliminationPass, except that an Identity returning an outer-scope value as a
subgraph output stays.

onnx-ir removes `Identity(v) -> out` where `out` is a graph output by renaming v to `out`. In an If branch
returning a main-graph tensor so (openWakeWord's else branch: Identity(score)), v is the outer tensor: it
took the branch output's name, against "tensor names are kept" (an override on it no longer matched), and
the branch was left with no node producing its output, which onnx.checker rejects.

Nor an Identity between two outputs of one graph (`return y, y.clone()`): renamed, y took the copy's name, and the
model's outputs read ['y2', 'y2'], its output 'y' gone; in a Scan body returning its state twice (the new state
and, through an Identity, the step's output), onnxruntime computed the scan outputs wrong, exit 0.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common


class RemoveIdentityPass(common.IdentityEliminationPass):
    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:  # onnx-ir's per-node step
        if _unit_resize(node):  # half of an old Resize split by its axes' rounding (old_opset_meaning), folded to 1s
            node.op_type, node.version = "Identity", None
            node.attributes.clear()
            node.resize_inputs(1)
        source = node.inputs[0] if node.op_type == "Identity" and len(node.inputs) == 1 else None
        if source is not None and node.outputs[0].is_graph_output() and (
            source.graph is not node.graph or source.is_graph_output()
        ):
            return False
        return super()._try_eliminate_identity_node(node)


def _unit_resize(node: ir.Node) -> bool:
    """A Resize by constant scales of 1 on every axis, with no sizes: its output is its input (any mode, any rounding
    of whole coordinates)."""
    scales = node.inputs[2] if node.op_type == "Resize" and node.domain == "" and len(node.inputs) in (3, 4) else None
    if scales is None or (len(node.inputs) == 4 and node.inputs[3] is not None) or scales.const_value is None:
        return False
    return bool(np.all(scales.const_value.numpy() == 1))

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

import onnx_ir as ir
from onnx_ir.passes import common


class RemoveIdentityPass(common.IdentityEliminationPass):
    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:  # onnx-ir's per-node step
        source = node.inputs[0] if node.op_type == "Identity" and len(node.inputs) == 1 else None
        if source is not None and node.outputs[0].is_graph_output() and (
            source.graph is not node.graph or source.is_graph_output()
        ):
            return False
        return super()._try_eliminate_identity_node(node)

"""onnx-ir's IdentityEliminationPass, except that an Identity returning an outer-scope value as a
subgraph output stays.

onnx-ir removes `Identity(v) -> out` where `out` is a graph output by renaming v to `out`. In an If branch
returning a main-graph tensor so (openWakeWord's else branch: Identity(score)), v is the outer tensor: it
took the branch output's name, against "tensor names are kept" (an override on it no longer matched), and
the branch was left with no node producing its output, which onnx.checker rejects.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common


class RemoveIdentityPass(common.IdentityEliminationPass):
    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:  # onnx-ir's per-node step
        source = node.inputs[0] if node.op_type == "Identity" and len(node.inputs) == 1 else None
        if source is not None and node.outputs[0].is_graph_output() and source.graph is not node.graph:
            return False
        return super()._try_eliminate_identity_node(node)

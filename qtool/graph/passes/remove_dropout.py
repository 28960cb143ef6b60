"""Turn inference-time Dropout into Identity (RemoveIdentityPass then removes it).

In inference mode (no training_mode input, or a false one) Dropout returns its input unchanged
(ONNX Dropout-13). A Dropout whose mask output is used is left alone.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)


def _is_inference(node: ir.Node) -> bool:
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return True
    training = node.inputs[2].const_value
    return training is not None and not bool(training.numpy().item())


class RemoveDropoutPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in list(model.graph):
            if node.op_type != "Dropout" or node.domain != "" or not _is_inference(node):
                continue
            if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
                continue
            replacement = ir.node("Identity", inputs=[node.inputs[0]], name=node.name)
            replacement.outputs[0].name = node.outputs[0].name
            ir.convenience.replace_nodes_and_values(
                model.graph, node, [node], [replacement], [node.outputs[0]], [replacement.outputs[0]]
            )
            changed += 1
        logger.info("remove_dropout: %d Dropout nodes", changed)
        return ir.passes.PassResult(model, modified=bool(changed))

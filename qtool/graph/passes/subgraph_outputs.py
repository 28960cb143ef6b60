"""Give every subgraph output a producer inside its subgraph again.

An If branch written as `Identity(outer_value) -> out` (openWakeWord's exported models return the
score computed outside the If this way) loses its only node to IdentityEliminationPass, which leaves
the branch returning the outer value directly: onnx.checker rejects that ("Graph output ... is not an
output of any node in graph"). This pass puts an Identity back for each such output.
"""

from __future__ import annotations

import onnx_ir as ir


def _subgraphs(graph: ir.Graph):
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield attr.value
            elif attr.type == ir.AttributeType.GRAPHS:
                yield from attr.value


class SubgraphOutputsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for sub in list(_subgraphs(model.graph)):
            for index, value in enumerate(list(sub.outputs)):
                producer = value.producer()
                if (producer is not None and producer.graph is sub) or value in sub.inputs:
                    continue
                copy = ir.node("Identity", inputs=[value], name=f"{value.name}_out")
                copy.outputs[0].name = f"{value.name}_out"
                copy.outputs[0].type, copy.outputs[0].shape = value.type, value.shape
                sub.append(copy)
                sub.outputs[index] = copy.outputs[0]
                changed = True
        return ir.passes.PassResult(model, modified=changed)

"""Fuse a written-out logistic, 1 / (1 + Exp(y)) (Reciprocal, or Div of a constant 1), into Sigmoid(-y).

DBNet's differentiable binarization, as paddle2onnx writes it (rapid_table_det's edge detector), is
Reciprocal(Exp(-50 · (P - T)) + 1): quantized op by op, the Exp's output spans e^±50 on one 8-bit grid, every
value below e^40 reads as 0 and the map comes out 1 nearly everywhere (0.04 dB). One Sigmoid needs the grid of
its input, ±50 there, and [0, 1]. -y is the constant of a Mul writing y, negated, or the input of a Neg, or else
a Neg of its own. Nothing in between may be read elsewhere or named by overrides (`keep`).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import array_of, new_constant

logger = logging.getLogger(__name__)


def _only_reader(value: ir.Value, op: str, keep: frozenset[str]) -> ir.Node | None:
    """The one node reading `value`, if it is an `op` and `value` is no output nor overrides' name."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or value.name in keep or uses[0].node.op_type != op:
        return None
    return uses[0].node if uses[0].node.domain == "" else None


def _is_one(value: ir.Value | None, of: ir.Value) -> bool:
    """A constant 1 that broadcasts to `of` without adding dims (a [1, 1, 1, 1, 1] would, which Sigmoid would not)."""
    c, rank = array_of(value), len(of.shape) if of.shape is not None else 1
    return c is not None and c.size == 1 and c.dtype.kind == "f" and float(c.ravel()[0]) == 1.0 and c.ndim <= rank


def _negated(graph: ir.Graph, y: ir.Value, keep: frozenset[str]) -> tuple[ir.Value, list[ir.Node]]:
    """-y, and the nodes it replaces: a Neg's input, a Mul by a constant with that constant negated, or a new Neg."""
    writer = y.producer()
    sole = len(list(y.uses())) == 1 and not y.is_graph_output() and y.name not in keep
    if sole and writer is not None and writer.domain == "" and writer.op_type == "Neg":
        return writer.inputs[0], [writer]
    if sole and writer is not None and writer.domain == "" and writer.op_type == "Mul":
        for k in (0, 1):
            c = array_of(writer.inputs[k])
            if c is not None and c.size == 1 and c.dtype.kind == "f":
                mul = ir.node("Mul", inputs=[writer.inputs[1 - k], _negated_constant(graph, writer.inputs[k], c)],
                              name=writer.name)  # fmt: skip
                return mul.outputs[0], [mul, writer]
    neg = ir.node("Neg", inputs=[y], name=f"{y.name}_neg")
    return neg.outputs[0], [neg]


def _negated_constant(graph: ir.Graph, given: ir.Value, c: np.ndarray) -> ir.Value:
    """-c as an initializer: the one made already for `given` (two logistics' Muls share DBNet's -50), else a new
    one under a name no other value holds (an initializer's 'k_negated' was an internal error)."""
    made = graph.initializers.get(f"{given.name}_negated")
    if made is not None and (value := array_of(made)) is not None and np.array_equal(value, -c):
        return made
    return new_constant(graph, f"{given.name}_negated", -c)


class FuseSigmoidPass(ir.passes.InPlacePass):
    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.keep = keep

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, fused = model.graph, 0
        for exp in [n for n in graph if n.op_type == "Exp" and n.domain == ""]:
            add = _only_reader(exp.outputs[0], "Add", self.keep)
            if add is None or not _is_one(add.inputs[1] if add.inputs[0] is exp.outputs[0] else add.inputs[0], exp.outputs[0]):
                continue
            last = _only_reader(add.outputs[0], "Reciprocal", self.keep) or _only_reader(add.outputs[0], "Div", self.keep)
            if last is None or (last.op_type == "Div" and (last.inputs[1] is not add.outputs[0] or not _is_one(last.inputs[0], exp.outputs[0]))):
                continue
            x, made = _negated(graph, exp.inputs[0], self.keep)
            sigmoid = ir.node("Sigmoid", inputs=[x], name=last.name)
            out, name = last.outputs[0], last.outputs[0].name
            new, old = [n for n in made if n.graph is None], [n for n in made if n.graph is not None]
            if new:
                graph.insert_before(old[-1] if old else exp, new)
            ir.convenience.replace_nodes_and_values(graph, last, [last], [sigmoid], [out], [sigmoid.outputs[0]])
            sigmoid.outputs[0].name = name
            graph.remove([add, exp, *old], safe=True)
            fused += 1
        logger.info("fuse_sigmoid: %d written-out logistics fused into Sigmoid", fused)
        return ir.passes.PassResult(model, modified=bool(fused))

"""Constants a pass writes into the graph: under a name no initializer has, or in place of the one a node reads."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def new_constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """`array` as a new initializer named `name`, or `name` with underscores added where any value of the graph holds
    it (a weight two Einsums read gave both their MatMul weight one name; a node output named so made two writers)."""
    taken = {v.name for v in (*graph.inputs, *graph.initializers.values(), *(o for n in graph for o in n.outputs))}
    while name in taken:
        name += "_"
    value = ir.Value(name=name, const_value=ir.tensor(array))
    graph.register_initializer(value)
    return value


def rewritten(graph: ir.Graph, value: ir.Value | None, array: np.ndarray, name: str) -> ir.Value:
    """`array` in the place of `value`: `value` itself, rewritten, when it is an initializer one node reads (it
    keeps its name, which overrides and reports use), else a new constant (`new_constant(graph, name, ...)`)."""
    if value is not None and value.is_initializer() and len(list(value.uses())) == 1:
        value.const_value = ir.tensor(array)
        return value
    return new_constant(graph, name, array)


def at_rank(values: np.ndarray, rank: int) -> np.ndarray:
    """A constant broadcast against a tensor of `rank` dims, with the leading 1s broadcasting gives it."""
    return values.reshape((1,) * (rank - values.ndim) + values.shape)


def sole_reader(value: ir.Value, graph: ir.Graph) -> ir.Node | None:
    """The one node reading `value`, when it has one and is not also a graph output."""
    users = [use.node for use in value.uses()]
    return users[0] if len(users) == 1 and value not in graph.outputs else None


def array_of(value: ir.Value | None) -> np.ndarray | None:
    """A constant value's array (an initializer's, or a folded value's), else None."""
    return value.const_value.numpy() if value is not None and value.const_value is not None else None


def static_dims(value: ir.Value | None) -> list[int] | None:
    """`value`'s shape when every dim of it is a number, else None."""
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return [int(d) for d in value.shape]  # type: ignore[arg-type]

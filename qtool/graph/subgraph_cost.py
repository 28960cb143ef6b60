"""How long onnx's shape inference, and qtool's passes over a model, take on its subgraphs: refused past a bound.

onnx's shape inference (every command runs it, inspect twice) infers each subgraph (an If's branch, a Loop's
body) with a copy of the types of every tensor in the scopes around it: a model of 16000 If branches beside 16000
tensors took 75 s a pass, 4000 took 3.7 s, and one of 10^6 nested If nodes ran past 10 minutes. qtool's own walks
take about 0.7 ms a subgraph besides. The work is counted from the parsed model, linearly, before any other pass.
"""

from __future__ import annotations

import onnx

from qtool.errors import ModelError
from qtool.graph.node_order import subgraphs
from qtool.io.files import env_bytes

STEPS_ENV = "QTOOL_MAX_SUBGRAPH_STEPS"
MAX_STEPS = 300_000_000  # a few minutes a pass; about 0.5 us a step
SUBGRAPH_STEPS = 1_500  # qtool's own walks over one subgraph, in the same steps


def _values(graph: onnx.GraphProto) -> int:
    return len(graph.input) + len(graph.initializer) + sum(len(node.output) for node in graph.node)


def check_subgraph_work(model: onnx.ModelProto, where: str) -> None:
    """Refuse a model whose subgraphs would take onnx's shape inference past STEPS_ENV's steps (each subgraph a
    step for every tensor in the scopes around it, and SUBGRAPH_STEPS), counted until the bound is passed."""
    limit = env_bytes(STEPS_ENV, MAX_STEPS, unit="steps")
    steps = count = 0
    stack = [(model.graph, 0)]  # a graph and the tensors in the scopes around it
    while stack:
        graph, around = stack.pop()
        scope = around + _values(graph)
        for node in graph.node:
            for inner in subgraphs(node) if node.attribute else ():
                count += 1
                steps += scope + SUBGRAPH_STEPS
                stack.append((inner, scope))
        if steps > limit:
            raise ModelError(f"at least {count} subgraphs (If branches, Loop bodies), more than qtool reads in "
                             "reasonable time: onnx's shape inference, which every command runs, reads each with the "
                             f"tensors around it, past {limit} steps here, which take minutes ({STEPS_ENV} "
                             "raises the bound)", where=where,
                             hint="export it with fewer subgraphs (If, Loop, Scan nodes): conditions fixed so the "
                             "exporter folds them away, a chain of If nodes as Where nodes, loops unrolled")  # fmt: skip

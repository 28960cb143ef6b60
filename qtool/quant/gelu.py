"""A GELU written op by op is one function: only its input and its output are quantized.

Exporters below opset 20 write GELU as its formula: `0.5·x·(1 + erf(x/√2))` (PyTorch) or the tanh
approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GPT-2's gelu_new, Flax, jax2tf). Every converter
that deploys one (QNN's, OpenVINO's, onnxruntime's transformer optimizer) fuses the chain into a single Gelu
op with one grid at each end. Quantized op by op instead, x³ spans the cube of x's range on 8 bits and the
sums around it lose what the tanh needs: Google's Magika (tanh form) added its largest error there.

Found by structure, not by constants: from a source x, the tensors computed elementwise from x and
constants alone, holding one Erf or Tanh, read x at least twice (the gate and the value it gates) and
leave through one Mul. Those inside stay float; x and the Mul's output are activations. A SiLU
(x·sigmoid(x)) is not one: QNN runs it as its two ops, each on its own grid.
"""

from __future__ import annotations

import heapq

from qtool import runtime
from qtool.quant.graph_facts import GraphFacts

CORES = frozenset({"Erf", "Tanh"})
ELEMENTWISE = frozenset({"Mul", "Div", "Add", "Sub", "Pow", *CORES})
REACH = 6  # producers walked back from the Erf or Tanh to find x (the tanh form's x is 4 away)


def gelu_interiors(facts: GraphFacts) -> set[str]:
    """The float tensors inside GELUs written op by op (module docstring)."""
    dynamic = runtime.downstream(facts.model.graph.node, facts.graph_inputs)
    order = {id(node): k for k, node in enumerate(facts.model.graph.node)}
    found: set[str] = set()
    for node in facts.model.graph.node:
        if node.op_type in CORES and node.input and node.input[0] in dynamic:
            inside = min((f for s in _sources(facts, node, dynamic) if (f := _gelu(facts, s, node, dynamic, order))),
                         key=len, default=set())  # fmt: skip
            found |= {t for t in inside if facts.is_float(t)}
    return found


def _sources(facts: GraphFacts, core, dynamic: set[str]) -> list[str]:
    """The dynamic tensors the core reads through at most REACH elementwise producers."""
    seen, frontier = [], [core.input[0]]
    for _ in range(REACH):
        ahead = []
        for name in frontier:
            if name in seen:
                continue
            seen.append(name)
            producer = facts.producers.get(name)
            if producer is not None and producer.op_type in ELEMENTWISE - CORES:
                ahead += [i for i in producer.input if i in dynamic]
        frontier = ahead
    return seen


def _gelu(facts: GraphFacts, source: str, core, dynamic: set[str], order: dict[int, int]) -> set[str] | None:
    """The inside of the largest GELU of `source` through `core`, or None when what follows `source` is no
    GELU. Largest: a constant scaling after the gate (a layer scale) belongs to the function too."""
    if len(facts.consumers.get(source, [])) < 2:  # x gates itself: read by both branches (spares a plain Tanh the walk)
        return None
    # the closure, walked forward from `source` in graph (topological) order by `order`: each core once walked the
    # whole graph, and a chain of 500 Tanhs in 2000 nodes took 49 of quantize's 63 s
    graph = facts.model.graph.node
    made, nodes, ahead, seen = {source}, [], sorted({order[id(c)] for c in facts.consumers[source]}), set()
    while ahead:
        k = heapq.heappop(ahead)
        node = graph[k]
        if k in seen or node.op_type not in ELEMENTWISE or not all(i in made for i in node.input if i in dynamic):
            continue
        seen.add(k)
        made.update(o for o in node.output if o)
        nodes.append(node)
        for reader in (c for o in node.output if o for c in facts.consumers.get(o, [])):
            heapq.heappush(ahead, order[id(reader)])
    if not any(n is core for n in nodes):
        return None
    producer = {o: n for n in nodes for o in n.output}
    best: set[str] | None = None
    for end in nodes:
        if end.op_type != "Mul":
            continue
        island = _ancestors(end, producer)
        if not any(n is core for n in island.values()) or sum(n.op_type in CORES for n in island.values()) != 1:
            continue
        if sum(i == source for n in island.values() for i in n.input) < 2:  # x gates itself: read by both branches
            continue
        inside = {o for n in island.values() for o in n.output if o} - set(end.output)
        members = {id(n) for n in island.values()}
        closed = all(
            t not in facts.graph_outputs and all(id(c) in members for c in facts.consumers.get(t, [])) for t in inside
        )
        if closed and (best is None or len(inside) > len(best)):
            best = inside
    return best


def _ancestors(end, producer: dict) -> dict[int, object]:
    """The nodes of the closure `end` reads from, itself included, by id."""
    found, stack = {}, [end]
    while stack:
        node = stack.pop()
        if id(node) in found:
            continue
        found[id(node)] = node
        stack += [producer[i] for i in node.input if i in producer]
    return found

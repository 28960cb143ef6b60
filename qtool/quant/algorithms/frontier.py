"""Layer inputs in graph order without rerunning the model up to each layer.

Sequential adaround needs, for one layer after another, the input each layer gets on every sample.
Running the model up to layer k for each k costs the prefix over and over (EfficientNet-Lite0: 50
layers, about 25 forward passes a sample). Instead each sample keeps the tensors alive at the last
layer reached (its frontier), and the next pass runs only the nodes from there to the next layer.
A pass starts at the previous layer's own node, so the weights rounded there since are used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from qtool import runtime
from qtool.io.digest import blake2b

FRONTIER_BYTES = 256 << 20  # per model; the rest run from their inputs (EfficientNet-Lite0: 4.8 MB a sample)


def _compact(name: str, producers: dict[str, onnx.NodeProto], activations: set[str]) -> str:
    """A DequantizeLinear output is kept as its integer input (4x smaller); the next pass redoes it."""
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in activations:
        return node.input[0]
    return name


def _digests(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: blake2b(t.SerializeToString(), digest_size=16).digest() for t in model.graph.initializer}


class Frontier:
    """Per sample, the activations of one model alive between two of its nodes. Samples beyond
    `budget` bytes of them keep none and run from their inputs again (a slower pass, same values)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], threads: int = 0, budget: int = FRONTIER_BYTES):
        self.feeds, self.threads, self.budget = feeds, threads, budget
        self.live: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
        self.at, self.weights = 0, {}

    def advance(self, model: onnx.ModelProto, node: onnx.NodeProto, wanted: str) -> Callable[[int], np.ndarray]:
        """sample index -> the value of `wanted` (read by `node`), moving that sample's frontier to
        `node`. Call it for every sample, in order, before the next `advance`."""
        nodes = list(model.graph.node)
        end = next(i for i, n in enumerate(nodes) if n.output[:1] == node.output[:1])
        graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        activations, weights = runtime.downstream(nodes, graph_inputs), _digests(model)
        changed = {name for name, digest in weights.items() if self.weights.get(name, digest) != digest}
        passed = {name for n in nodes[: self.at] for name in n.output}
        # back before the frontier, or a changed weight also feeds a node already passed (tied weights):
        # the kept activations are stale, so start again from the inputs
        if end < self.at or runtime.downstream(nodes, changed) & activations & passed:
            self.live = [None] * len(self.feeds)
        self.at, self.weights = end, weights
        producers = {name: n for n in nodes for name in n.output}
        before = activations & (graph_inputs | {o for n in nodes[:end] for o in n.output})
        after = {name for n in nodes[end:] for name in runtime.reads(n)}
        alive = sorted({_compact(name, producers, activations) for name in before & after})
        runners: dict[frozenset[str], runtime.Runner | None] = {}
        kept = 0

        def value(i: int) -> np.ndarray:
            nonlocal kept
            start = self.live[i] if self.live[i] is not None else self.feeds[i]
            key = frozenset(start)
            if key not in runners:
                compute = sorted({*alive, wanted} - key)
                runners[key] = runtime.runner(model, compute, self.threads, given=start) if compute else None
            run = runners[key]
            values = {**start, **(run(start) if run else {})}
            live = {name: values[name] for name in alive}
            size = sum(v.nbytes for v in live.values())
            self.live[i], kept = (live, kept + size) if kept + size <= self.budget else (None, kept)
            return values[wanted]

        return value

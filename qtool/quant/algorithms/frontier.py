"""Layer inputs in graph order without rerunning the model up to each layer.

Sequential adaround needs, for one layer after another, the input each layer gets on every sample.
Running the model up to layer k for each k costs the prefix over and over (EfficientNet-Lite0: 50
layers, about 25 forward passes a sample). Instead each sample keeps the tensors alive at the last
layer reached (its frontier), and the next pass runs only the nodes from there to the next layer.
A pass starts at the previous layer's own node, so the weights rounded there since are used.

A weight changed before the frontier (bc re-fitting the biases it corrected so far onto their new grids)
makes the kept activations stale. They restart from the activations kept at the last restart (the inputs
at first), which the biases re-fitted since do not reach: PP-OCRv4 det's 9 restarts at 8-bit biases had
rerun the backbone from the image each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx

from qtool import runtime
from qtool.graph.lazy_weights import scratch_file
from qtool.io.digest import blake2b
from qtool.io.kept_outputs import KeptOutputs

FRONTIER_BYTES = 256 << 20  # in memory per model; the rest in files (EfficientNet-Lite0: 4.8 MB a sample)


# integer types onnxruntime hands numpy no array of ('No corresponding Numpy type for Tensor Type. Int4x2')
UNFETCHABLE = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})


def _compact(name: str, producers: dict[str, onnx.NodeProto], activations: set[str], types: dict[str, int]) -> str:
    """A DequantizeLinear output is kept as its integer input (4x smaller), unless that is 4-bit (an override's
    int4 activation), which onnxruntime cannot return; the next pass redoes it."""
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in activations:
        return name if _quantized_type(node.input[0], producers, types) in UNFETCHABLE else node.input[0]
    return name


def _quantized_type(name: str, producers: dict[str, onnx.NodeProto], types: dict[str, int]) -> int | None:
    """A tensor's element type as declared, a Constant's, or a QuantizeLinear output's: its output_dtype, else its
    zero point's, else uint8 (the spec's)."""
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return next((a.t.data_type for a in node.attribute if a.name == "value"), None)
    if node is None or node.op_type != "QuantizeLinear":
        return types.get(name)
    dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return dtype or (_quantized_type(zero, producers, types) if zero else onnx.TensorProto.UINT8)


def _digests(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: blake2b(t.SerializeToString(), digest_size=16).digest() for t in model.graph.initializer}


def _changed(before: dict[str, bytes], now: dict[str, bytes], *, new: bool = False) -> set[str]:
    """The weights whose digest differs now; `new`: one that was not there before counts too (a bias bc adds
    reads nowhere before the layer it is added to)."""
    return {name for name, digest in now.items() if before.get(name, None if new else digest) != digest}


class _Graph:
    """What `advance` reads of a model's nodes, found once per model: bc and adaround change a model's weights in
    place between passes, never its nodes. Found at every pass, three scans of every node's reads (the activations,
    and what a changed weight reaches, twice) were most of bc's time on a U-Net of 311 layers in 7234 QDQ nodes."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.nodes = model, list(model.graph.node)
        self.at = {tuple(n.output[:1]): i for i, n in reversed(list(enumerate(self.nodes)))}  # the first node making it
        self.made = {name: i for i, n in enumerate(self.nodes) for name in n.output}
        self.producers = {name: n for n in self.nodes for name in n.output}
        self.inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        self.activations = runtime.downstream(self.nodes, self.inputs)
        self.readers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for name in runtime.reads(n):
                self.readers.setdefault(name, []).append(i)
        declared = [*model.graph.input, *model.graph.value_info]
        self.types = {v.name: v.type.tensor_type.elem_type for v in declared} | {t.name: t.data_type for t in model.graph.initializer}

    def reaches(self, changed: set[str], at: int) -> bool:
        """Whether a changed weight feeds a node before node `at` (tied weights, a re-fitted bias) that makes an
        activation: the activations kept there are stale. Only nodes before `at` are followed."""
        stack, seen = list(changed), set(changed)
        while stack:
            made = [name for i in self.readers.get(stack.pop(), ()) if i < at for name in self.nodes[i].output]
            if any(name in self.activations for name in made):
                return True
            stack += [name for name in made if name not in seen]
            seen.update(made)
        return False


class Replay:
    """The first `count` feeds of `source()` (a fresh iterator each call) as a sequence read again where asked
    for, not held: a Frontier reads a sample's feed only where it keeps nothing for it, sample after sample, so a
    pass reads the list once. bc held its 32 feeds through its whole run (MTCNN's P-Net: 24 MB of 157 at its peak)."""

    def __init__(self, source: Callable[[], Iterable[dict[str, np.ndarray]]], count: int):
        self.source, self.count, self.read, self.at = source, count, iter(()), count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        if i < self.at:
            self.read, self.at = iter(self.source()), 0
        for _ in range(i - self.at):  # the samples between were kept
            next(self.read)
        self.at = i + 1
        return next(self.read)


class _OnDisk:
    """A sample's kept activations in scratch files (io/kept_outputs' spill and its bounds on the disk), read back
    when the frontier next moves; the files go with the last reference."""

    def __init__(self, live: dict[str, np.ndarray]):
        self.names, self.store = list(live), KeptOutputs(0, scratch_file)

    def values(self) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.store[0], strict=True))


def _spilled(live: dict[str, np.ndarray]) -> _OnDisk | None:
    """`live` in files; None where the scratch disk has no room for it (the sample runs from its inputs again)."""
    disk = _OnDisk(live)
    return disk if disk.store.append(list(live.values())) else None


Kept = dict[str, np.ndarray] | _OnDisk | None


class Frontier:
    """Per sample, the activations of one model alive between two of its nodes: in memory up to `budget` bytes
    (the marks' included), past it in scratch files (or, where the disk refuses them, none: the sample runs from
    its inputs again, a slower pass, same values). `marks`: per sample, the activations kept at the last pass that
    restarted (`mark`: its node's output and the weight digests then), where the next restart starts while no
    change reaches them."""

    def __init__(self, feeds: list[dict[str, np.ndarray]] | Replay, threads: int = 0, budget: int = FRONTIER_BYTES):
        self.feeds, self.threads, self.budget = feeds, threads, budget
        self.live: list[Kept] = [None] * len(feeds)
        self.marks: list[Kept] = [None] * len(feeds)
        self.at, self.weights, self.mark = 0, {}, None
        self.graph: _Graph | None = None

    def held(self) -> int:
        """Bytes of activations kept in memory, live or marks (a mark that is the live set counted once)."""
        kept = {id(k): k for k in (*self.live, *self.marks) if isinstance(k, dict)}
        return sum(v.nbytes for k in kept.values() for v in k.values())

    def _drop_stale(self, graph: _Graph, end: int, weights: dict) -> bool:
        """Drop the kept activations a changed weight reaches (or that are past `end`), the marks likewise;
        True: the kept ones went, so this pass restarts (and the marks move to it)."""
        if self.mark is not None:
            at = graph.at.get((self.mark[0],))
            if at is None or end < at or graph.reaches(_changed(self.mark[1], weights, new=True), at):
                self.marks, self.mark = [None] * len(self.feeds), None
        if end >= self.at and not graph.reaches(_changed(self.weights, weights), self.at):
            return False
        self.live = [None] * len(self.feeds)
        return True

    def advance(self, model: onnx.ModelProto, node: onnx.NodeProto, wanted: str) -> Callable[[int], np.ndarray]:
        """sample index -> the value of `wanted` (read by `node`), moving that sample's frontier to
        `node`. Call it for every sample, in order, before the next `advance`."""
        if self.graph is None or self.graph.model is not model:
            self.graph = _Graph(model)
        graph, weights = self.graph, _digests(model)
        end = graph.at[tuple(node.output[:1])]
        restart = self._drop_stale(graph, end, weights)
        self.at, self.weights = end, weights
        if restart:
            self.mark = node.output[0], weights
        activations = graph.activations
        before = {name for name in activations if name in graph.inputs or graph.made.get(name, end) < end}
        after = {name for name in before if any(i >= end for i in graph.readers.get(name, ()))}
        alive = sorted({_compact(name, graph.producers, activations, graph.types) for name in after})
        runners: dict[frozenset[str], runtime.Runner | None] = {}

        def value(i: int) -> np.ndarray:
            source = next((s for s in (self.live[i], self.marks[i]) if s is not None), None)
            start = self.feeds[i] if source is None else source.values() if isinstance(source, _OnDisk) else source
            self.live[i] = None  # replaced below, and a restart's mark with it: not counted against the budget
            if restart:
                self.marks[i] = None
            key = frozenset(start)
            if key not in runners:
                compute = sorted({*alive, wanted} - key)
                runners[key] = runtime.runner(model, compute, self.threads, given=start, arena=False) if compute else None
            run = runners[key]
            values = {**start, **(run(start) if run else {})}
            live = {name: values[name] for name in alive}
            fits = self.held() + sum(v.nbytes for v in live.values()) <= self.budget
            self.live[i] = live if fits else _spilled(live)
            if restart:  # a mark is the live set until the frontier moves on
                self.marks[i] = self.live[i]
            return values[wanted]

        return value

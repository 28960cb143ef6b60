"""The per-layer comparison in stages (issue 22: a model past 2 GB compared without holding two models).

The probes (layers.probes, in the reference's graph order) are cut into stages whose reference nodes
read at most COMPARE_BYTES of weights (`QTOOL_COMPARE_BYTES`; a small model is one stage) and whose probed
values take at most FETCH_BYTES a sample, where shapes are known: a fetched value stays alive to the end
of its run, so one stage fetching every layer holds a whole sample's activations twice (SLANet: 225 MB a
model, 1.5 GB peak with onnxruntime's arenas, against 0.46 GB to calibrate it). Each stage runs only
the nodes its probes need, starting from the values kept from the stages before. Consecutive stages
within COMPARE_BYTES of weights form a sweep (`sweeps`: a small model's stages are one), whose sessions
live together: a sample goes through the sweep's stages one after another, its values passed on in
memory, then the next sample. Sweep after sweep, each model keeps per sample what later sweeps read (its
frontier), in memory up to FRONTIER_BYTES per model, beyond that in files of a scratch folder, a value
stored once when made and read back only by the sweeps that read it. So a sweep's sessions hold its
weights only, and are dropped before the next sweep's.

The quantized model's weights are dequantized once per stage, not once per sample: with
`session.disable_quant_qdq` onnxruntime's constant folding runs its own DequantizeLinear kernel on
them, and with prepacking off its MatMul/Conv/Gemm read the folded weight as they read a computed
one, so every probed value is bit-identical to the unfolded whole-graph run's (tests/inspect/test_stages.py).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from qtool import runtime
from qtool.graph.lazy_weights import is_lazy, span
from qtool.io.files import env_bytes

COMPARE_ENV = "QTOOL_COMPARE_BYTES"
COMPARE_BYTES = 256 << 20  # reference weights per stage: a 2.2 GB model runs in 9 stages
FRONTIER_BYTES = 256 << 20  # per model, all samples; more goes to files
FETCH_BYTES = 32 << 20  # probed values per stage, model and sample (SLANet: 8 stages, 0.6 GB peak)


def _weight_bytes(tensor: onnx.TensorProto) -> int:
    if is_lazy(tensor):
        return span(tensor)[2]
    return len(tensor.raw_data) if tensor.HasField("raw_data") else tensor.ByteSize()


def cut(
    reference: onnx.ModelProto,
    tensors: list[str],
    budget: int,
    values: dict[str, int] | None = None,
    fetch_budget: int = FETCH_BYTES,
) -> list[list[str]]:
    """`tensors` (graph order) in consecutive groups, each adding at most `budget` bytes of weights
    read by the nodes up to its last tensor's producer and, given `values` (bytes a sample, see
    `value_bytes`), fetching at most `fetch_budget` bytes of them (at least one tensor a group)."""
    position = _weights_before(reference)
    groups: list[list[str]] = []
    start = fetched = 0
    for name in tensors:
        at, size = position.get(name, 0), (values or {}).get(name, 0)
        if not groups or at - start > budget or (groups[-1] and fetched + size > fetch_budget):
            start = position.get(groups[-1][-1], 0) if groups else 0
            groups.append([])
            fetched = 0
        groups[-1].append(name)
        fetched += size
    return groups


def _weights_before(reference: onnx.ModelProto) -> dict[str, int]:
    """Each node output's bytes of weights read by the nodes up to and including its producer."""
    sizes = {t.name: _weight_bytes(t) for t in reference.graph.initializer}
    position, spent = {}, 0
    for node in reference.graph.node:
        spent += sum(sizes.pop(name, 0) for name in runtime.reads(node))
        position.update((out, spent) for out in node.output)
    return position


def sweeps(reference: onnx.ModelProto, groups: list[list[str]], budget: int) -> list[list[int]]:
    """Consecutive groups (their indices) whose nodes read at most `budget` bytes of weights in all, as `cut`
    counts them: a sample runs through a sweep's stages one after another, its values passed on in memory,
    and only what later sweeps read goes to the frontier. The fetch budget alone cut u2netp's per-layer ranking
    into 67 stages whose frontiers (every sample's activations, past 1 MB in files) wrote and read 21 GB for 8
    samples; one sweep keeps a single sample's values instead, its sessions' weights within the budget."""
    position = _weights_before(reference)
    found: list[list[int]] = []
    start = last = 0  # weights read before the sweep; by the last group's nodes
    for g, group in enumerate(groups):
        at = position.get(group[-1], 0) if group else last
        if not found or at - start > budget:
            start = last
            found.append([])
        found[-1].append(g)
        last = at
    return found


def value_bytes(shaped: onnx.ModelProto) -> dict[str, int]:
    """Bytes of each tensor of `shaped` (shapes inferred) whose shape is static; cut counts the others
    (a Loop's data-dependent outputs) as nothing."""
    found = {}
    for value in [*shaped.graph.input, *shaped.graph.value_info, *shaped.graph.output]:
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in kind.shape.dim]
        if not kind.HasField("shape") or not all(d > 0 for d in dims):
            continue
        try:
            found[value.name] = math.prod(dims) * helper.tensor_dtype_to_np_dtype(kind.elem_type).itemsize
        except KeyError:  # undefined or string elements
            continue
    return found


@dataclass
class _Frontier:
    """Per sample, one model's kept values, each stored once for as long as a later stage reads it: in memory
    up to `budget` bytes in all, beyond that in its own file in `folder`. Stored once, not again by every stage
    that carries it: czann's 1024x1024 U-Net carries skip tensors of 64 MB past a hundred stages, and its
    mixed-precision search rewrote them at each one (the layer pass alone ran past 30 minutes)."""

    folder: str
    budget: int
    held: int = 0
    values: dict[int, dict[str, np.ndarray | str]] = field(default_factory=dict)
    files: int = 0  # written so far: each file's name is its number

    def keep(self, index: int, names: set[str], values: dict[str, np.ndarray]) -> None:
        """Sample `index` now carries `names`: drop the others, store the new ones from `values`."""
        kept = self.values.setdefault(index, {})
        for name in [n for n in kept if n not in names]:
            self._drop(kept.pop(name))
        for name in sorted(names - kept.keys()):
            value = values[name]
            # a string input's object array stays here: np.save pickles it, and np.load refuses a pickle
            if self.held + value.nbytes <= self.budget or value.dtype.hasobject:
                self.held += value.nbytes
                kept[name] = value
                continue
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{self.files}.npy")
            self.files += 1
            np.save(path, value)
            kept[name] = path

    def load(self, index: int, names: set[str]) -> dict[str, np.ndarray]:
        kept = self.values.get(index, {})
        return {name: v if isinstance(v, np.ndarray) else np.load(v) for name, v in kept.items() if name in names}

    def _drop(self, value: np.ndarray | str) -> None:
        if isinstance(value, str):
            os.remove(value)
        else:
            self.held -= value.nbytes


class _Staged:
    """One model run stage by stage: `stage(g, example)` gives a function from a sample's start values
    (graph inputs, then what earlier stages kept) to those plus group `g`'s targets and what to keep."""

    def __init__(self, model: onnx.ModelProto, groups: list[list[str]], where: str, *, folded: bool = False) -> None:
        self.model, self.groups, self.where, self.folded = model, groups, where, folded
        self.nodes = list(model.graph.node)
        self.producer = {out: k for k, node in enumerate(self.nodes) for out in node.output}
        self.reads = [runtime.reads(node) for node in self.nodes]  # once: each stage asks of every node not run
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.inputs = {i.name for i in model.graph.input if i.name not in self.initializers}  # every stage is fed these
        self.kept = set(self.inputs)  # the values each sample carries into the next stage
        self.run: set[int] = set()  # nodes run by the stages so far
        self.fetches: dict[int, list[str]] = {}  # what each prepared stage computes and returns
        self.kept_after: dict[int, set[str]] = {}  # what a sample carries past each prepared stage
        self.constant = _constant_nodes(self.nodes, set(self.initializers))
        self.constant_values = {out for k in self.constant for out in self.nodes[k].output}

    def _needed(self, targets: list[str]) -> set[int]:
        needed, stack = set(), [t for t in targets if t not in self.kept]
        while stack:
            k = self.producer.get(stack.pop())
            if k is not None and k not in needed and (k not in self.run or k in self.constant):
                needed.add(k)
                stack.extend(name for name in self.reads[k] if name not in self.kept)
        return needed

    def prepare(self, g: int) -> set[str]:
        """Set up stage `g`; returns the values a sample must bring to it: the graph's inputs, and the kept
        values its nodes read or an earlier stage made as its targets. Stages are prepared in order; each keeps
        its own fetch list and what a sample carries past it (`kept_after`), so a sweep's runners outlive it."""
        needed = self._needed(self.groups[g])
        self.run |= needed
        before = self.kept
        made = {out for k in needed for out in self.nodes[k].output if out}
        later = {name for k, names in enumerate(self.reads) if k not in self.run for name in names}
        later.update(name for group in self.groups[g + 1 :] for name in group)
        # a constant is made again by each stage that reads it, never fed: fed, a Resize's empty `scales`
        # is an input of unknown size, and onnxruntime refuses the Resize (SLANet: "not both of them")
        self.kept = self.inputs | (((self.kept | made) & later) - self.constant_values)
        self.kept_after[g] = self.kept
        self.fetches[g] = sorted(made & (set(self.groups[g]) | self.kept))
        reads = {name for k in needed for name in self.reads[k]}
        return ((reads | set(self.groups[g])) & before) | self.inputs

    def runner(self, g: int, example: dict[str, np.ndarray], threads: int) -> runtime.Runner:
        """Prepared stage `g` as a function from a sample's brought values to those plus what it makes."""
        given = {name: value for name, value in example.items() if name not in self.inputs}
        # no arena: each stage's sessions run a few samples and go, and an arena's memory outlived them
        run: runtime.Runner | None = None
        if self.fetches[g]:
            run = runtime.runner(self.model, self.fetches[g], threads, self.where, given, folded=self.folded,
                                 arena=False, index=(self.producer, self.initializers))  # fmt: skip
        return lambda start: {**start, **(run(start) if run is not None else {})}


def _constant_nodes(nodes: list[onnx.NodeProto], initializers: set[str]) -> set[int]:
    """Indices of the nodes whose values depend on no graph input: Constant nodes and what is computed
    from them and initializers alone (random generators excepted)."""
    known, found = set(initializers), set()
    for k, node in enumerate(nodes):  # graph order: a node's producers come first
        if node.op_type.startswith("Random") or node.op_type == "Multinomial":
            continue
        if all(name in known for name in runtime.reads(node) if name):
            found.add(k)
            known.update(out for out in node.output if out)
    return found


def run_stages(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    groups: list[list[tuple[str, str]]],
    feeds: Iterable[dict[str, np.ndarray]],
    threads: int = 0,
    frontier_budget: int = FRONTIER_BYTES,
    apart: bool = False,
) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """For each group of (reference tensor, quantized tensor) pairs, sweep after sweep (`sweeps`), each sample
    in order, and each group of the sweep: (group index, the reference's values, the quantized model's values).
    Each model keeps at most `frontier_budget` bytes of frontier in memory, the rest in scratch files. `apart`:
    each sweep runs the reference over every sample before the quantized model, so that one model's sessions
    are alive at a time; the reference's values of the groups wait in a store of that budget too."""
    models = [
        _Staged(reference, [[r for r, _ in group] for group in groups], "reference model"),
        _Staged(quantized, [[q for _, q in group] for group in groups], "quantized model", folded=True),
    ]
    with tempfile.TemporaryDirectory(prefix="qtool-stages-") as scratch:
        frontiers = [_Frontier(os.path.join(scratch, str(m)), frontier_budget) for m in range(2)]
        samples = 0
        for sweep in sweeps(reference, models[0].groups, compare_bytes()):
            brought = [{g: model.prepare(g) for g in sweep} for model in models]
            source = enumerate(feeds) if sweep[0] == 0 else ((i, None) for i in range(samples))
            if apart:
                made = _Frontier(os.path.join(scratch, "made"), frontier_budget)  # the reference's values of the groups
                wanted = {g: {r for r, _ in groups[g]} for g in sweep}
                for i, g, values in _passes(models[0], sweep, frontiers[0], brought[0], source, threads, frontiers[1]):
                    made.keep(i * len(groups) + g, wanted[g], values)
                    samples = max(samples, i + 1)
                    del values  # before the next stage runs (and the quantized sessions are built)
                for i, g, values in _passes(models[1], sweep, frontiers[1], brought[1], enumerate([None] * samples), threads):
                    yield g, made.load(i * len(groups) + g, wanted[g]), values
                    made.keep(i * len(groups) + g, set(), {})  # read once: its files go
                    del values
                continue
            passes = [_Sweep(model, sweep, brought[m], threads) for m, model in enumerate(models)]
            for i, feed in source:
                for m, one in enumerate(passes):
                    one.carried = dict(feed) if feed is not None else frontiers[m].load(i, one.wanted)
                for g in sweep:
                    ref, quant = passes[0].step(g), passes[1].step(g)
                    yield g, ref, quant
                    del ref, quant  # held through the next stage's runs, they stacked two stages' values
                    runtime.give_back()  # and glibc kept their heap: 67 stages' sessions grew u2netp's peak 0.5 -> 1.1 GB
                for m, one in enumerate(passes):
                    frontiers[m].keep(i, models[m].kept_after[sweep[-1]], one.carried)
                    one.carried = {}
                samples = max(samples, i + 1)
            del passes
            runtime.give_back()  # the sweep's sessions are gone: their heap too


class _Sweep:
    """One model's prepared stages of a sweep, a sample at a time: `carried` holds the sample's values in memory
    (set to its feed or frontier values first), and each `step` runs a stage on them and keeps what later stages
    read. Each stage's runner is built on its first sample and lives as long as the sweep."""

    def __init__(self, model: _Staged, sweep: list[int], brought: dict[int, set[str]], threads: int) -> None:
        self.model, self.brought, self.threads = model, brought, threads
        self.wanted = set().union(*(brought[g] for g in sweep))  # what the frontier brings to the sweep
        self.runners: dict[int, runtime.Runner] = {}
        self.carried: dict[str, np.ndarray] = {}

    def step(self, g: int) -> dict[str, np.ndarray]:
        start = {name: self.carried[name] for name in self.brought[g]}
        if g not in self.runners:
            self.runners[g] = self.model.runner(g, start, self.threads)
        values = self.runners[g](start)
        self.carried = {name: values[name] if name in values else self.carried[name]
                        for name in self.model.kept_after[g] if name in values or name in self.carried}  # fmt: skip
        return values


def _passes(
    model: _Staged, sweep: list[int], frontier: _Frontier, brought: dict[int, set[str]],
    source: Iterable[tuple[int, dict | None]], threads: int, then: _Frontier | None = None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """One model's prepared sweep over the samples of `source` (a feed, or None: its frontier's values), each
    sample's values kept in its frontier at the sweep's end; a feed is kept in `then`, the frontier of the model
    that runs next. Yields (sample, group, values)."""
    one = _Sweep(model, sweep, brought, threads)
    for i, feed in source:
        one.carried = dict(feed) if feed is not None else frontier.load(i, one.wanted)
        if feed is not None and then is not None:
            then.keep(i, set(feed), feed)
        for g in sweep:
            values = one.step(g)
            yield i, g, values
            del values
            runtime.give_back()
        frontier.keep(i, model.kept_after[sweep[-1]], one.carried)
        one.carried = {}
    del one
    runtime.give_back()  # the sessions are gone: their heap too


def compare_bytes() -> int:
    return env_bytes(COMPARE_ENV, COMPARE_BYTES, minimum=0)

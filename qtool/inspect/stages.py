"""The per-layer comparison in stages (issue 22: a model past 2 GB compared without holding two models).

The probes (layers.probes, in the reference's graph order) are cut into stages whose reference nodes
read at most COMPARE_BYTES of weights (`QTOOL_COMPARE_BYTES`; a small model is one stage). Stage after
stage, each model runs over every sample only the nodes the stage's probes need, starting from the
values it kept from the stages before (its frontier: the tensors that nodes not yet run still read).
So a stage's sessions hold that stage's weights only, and are dropped before the next stage's.
Frontiers stay in memory up to FRONTIER_BYTES per model, beyond that in files of a scratch folder.

The quantized model's weights are dequantized once per stage, not once per sample: with
`session.disable_quant_qdq` onnxruntime's constant folding runs its own DequantizeLinear kernel on
them, and with prepacking off its MatMul/Conv/Gemm read the folded weight as they read a computed
one, so every probed value is bit-identical to the unfolded whole-graph run's (tests/inspect/test_stages.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool import runtime
from qtool.graph.lazy_weights import is_lazy, span
from qtool.io.files import env_bytes

COMPARE_ENV = "QTOOL_COMPARE_BYTES"
COMPARE_BYTES = 256 << 20  # reference weights per stage: a 2.2 GB model runs in 9 stages
FRONTIER_BYTES = 256 << 20  # per model, all samples; more goes to files


def _weight_bytes(tensor: onnx.TensorProto) -> int:
    if is_lazy(tensor):
        return span(tensor)[2]
    return len(tensor.raw_data) if tensor.HasField("raw_data") else tensor.ByteSize()


def cut(reference: onnx.ModelProto, tensors: list[str], budget: int) -> list[list[str]]:
    """`tensors` (graph order) in consecutive groups, each adding at most `budget` bytes of weights
    read by the nodes up to its last tensor's producer (at least one tensor a group)."""
    sizes = {t.name: _weight_bytes(t) for t in reference.graph.initializer}
    position, spent = {}, 0
    for node in reference.graph.node:
        spent += sum(sizes.pop(name, 0) for name in runtime.reads(node))
        position.update((out, spent) for out in node.output)
    groups: list[list[str]] = []
    start = 0
    for name in tensors:
        at = position.get(name, 0)
        if not groups or at - start > budget:
            start = position.get(groups[-1][-1], 0) if groups else 0
            groups.append([])
        groups[-1].append(name)
    return groups


@dataclass
class _Store:
    """Per sample, one model's kept values: in memory up to `budget` bytes in all, then in `folder`."""

    folder: str
    budget: int
    held: int = 0
    values: dict[int, dict[str, np.ndarray] | str] = field(default_factory=dict)

    def put(self, index: int, values: dict[str, np.ndarray]) -> None:
        size = sum(v.nbytes for v in values.values())
        if self.held + size <= self.budget:
            self.held += size
            self.values[index] = values
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{index}.npz")
        np.savez(path, **{f"v{k}": v for k, v in enumerate(values.values())}, names=np.array(list(values), dtype=str))
        self.values[index] = path

    def get(self, index: int) -> dict[str, np.ndarray]:
        kept = self.values.pop(index)
        if isinstance(kept, dict):
            return kept
        with np.load(kept) as f:
            names = [str(n) for n in f["names"]]
            values = {name: f[f"v{k}"] for k, name in enumerate(names)}
        os.remove(kept)
        return values


class _Staged:
    """One model run stage by stage: `stage(g, example)` gives a function from a sample's start values
    (graph inputs, then what earlier stages kept) to those plus group `g`'s targets and what to keep."""

    def __init__(self, model: onnx.ModelProto, groups: list[list[str]], where: str, *, folded: bool = False) -> None:
        self.model, self.groups, self.where, self.folded = model, groups, where, folded
        self.nodes = list(model.graph.node)
        self.producer = {out: k for k, node in enumerate(self.nodes) for out in node.output}
        inits = {t.name for t in model.graph.initializer}
        self.inputs = {i.name for i in model.graph.input if i.name not in inits}  # every stage is fed these
        self.kept = set(self.inputs)  # the values each sample carries into the next stage
        self.run: set[int] = set()  # nodes run by the stages so far

    def _needed(self, targets: list[str]) -> set[int]:
        needed, stack = set(), [t for t in targets if t not in self.kept]
        while stack:
            k = self.producer.get(stack.pop())
            if k is not None and k not in needed and k not in self.run:
                needed.add(k)
                stack.extend(name for name in runtime.reads(self.nodes[k]) if name not in self.kept)
        return needed

    def stage(self, g: int, example: dict[str, np.ndarray], threads: int) -> runtime.Runner:
        needed = self._needed(self.groups[g])
        self.run |= needed
        made = {out for k in needed for out in self.nodes[k].output if out}
        later = {name for k, node in enumerate(self.nodes) if k not in self.run for name in runtime.reads(node)}
        later.update(name for group in self.groups[g + 1 :] for name in group)
        self.kept = self.inputs | ((self.kept | made) & later)
        fetch = sorted(made & (set(self.groups[g]) | self.kept))
        given = {name: value for name, value in example.items() if name not in self.inputs}
        run = runtime.runner(self.model, fetch, threads, self.where, given, folded=self.folded) if fetch else None
        return lambda start: {**start, **(run(start) if run is not None else {})}


def run_stages(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    groups: list[list[tuple[str, str]]],
    feeds: Iterable[dict[str, np.ndarray]],
    threads: int = 0,
) -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """For each group of (reference tensor, quantized tensor) pairs, stage after stage, and each
    sample in order: (group index, the reference's values, the quantized model's values)."""
    models = [
        _Staged(reference, [[r for r, _ in group] for group in groups], "reference model"),
        _Staged(quantized, [[q for _, q in group] for group in groups], "quantized model", folded=True),
    ]
    with tempfile.TemporaryDirectory(prefix="qtool-stages-") as scratch:
        stores: list[_Store] = []
        samples = 0
        for g in range(len(groups)):
            previous, stores = stores, [_Store(os.path.join(scratch, f"{g}-{m}"), FRONTIER_BYTES) for m in range(2)]
            runners: list[runtime.Runner | None] = [None, None]
            source = enumerate(feeds) if g == 0 else ((i, None) for i in range(samples))
            for i, feed in source:
                out = []
                for m, model in enumerate(models):
                    start = feed if feed is not None else previous[m].get(i)
                    runners[m] = runners[m] or model.stage(g, start, threads)
                    values = runners[m](start)  # type: ignore[misc]
                    stores[m].put(i, {name: values[name] for name in model.kept})
                    out.append(values)
                samples = max(samples, i + 1)
                yield g, out[0], out[1]
            del runners, previous
            runtime.give_back()  # the stage's sessions are gone: their heap too


def compare_bytes() -> int:
    return env_bytes(COMPARE_ENV, COMPARE_BYTES, minimum=0)

"""Calibration: one onnxruntime session that exposes every tensor to observe, fed sample by sample
(or `batch_size` samples at a time where the model allows it).

Each output is folded into its observer and dropped at once (STYLE.md anti-pattern 2: never
keep per-sample outputs), so peak memory does not grow with the number of samples. For min-max
the session computes ReduceMin/ReduceMax itself, so only two scalars per tensor leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool import runtime
from qtool.errors import DataError, ModelError
from qtool.quant.observers import SAMPLE_CAP, Histogram, MinMax, Observer, make_observer, observe_histograms

logger = logging.getLogger(__name__)

Sample = tuple[str, dict[str, np.ndarray]]


def _instrumented(model: onnx.ModelProto, tensors: list[str], sampled: bool) -> tuple[onnx.ModelProto, list[str]]:
    """A copy that also outputs, per tensor, its min and max (`<t>.qtool_min`, `.qtool_max`) and,
    for histograms, an evenly strided sample of at most SAMPLE_CAP values (`.qtool_sample`), so only
    scalars and small samples leave onnxruntime, never whole activations.

    Each addition sits right after the node producing its tensor: onnxruntime runs nodes in list
    order, and nodes appended at the end would keep every activation alive at once.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    sizes = _sizes(copy)
    copy.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(v, np.int64), n)
            for n, v in (("qtool.flat", [-1]), ("qtool.zero", [0]), ("qtool.end", [2**62]))
        ]
    )
    steps: set[int] = set()

    def probes(name: str) -> list[onnx.NodeProto]:
        nodes = [
            helper.make_node(op, [name], [f"{name}.qtool_{s}"], name=f"{name}.qtool_{s}", keepdims=0)
            for op, s in (("ReduceMin", "min"), ("ReduceMax", "max"))
        ]
        if sampled:
            step = max(1, sizes.get(name, 0) // SAMPLE_CAP) | 1
            steps.add(step)
            nodes.append(
                helper.make_node("Reshape", [name, "qtool.flat"], [f"{name}.qtool_flat"], name=f"{name}.qtool_flat")
            )
            nodes.append(
                helper.make_node(
                    "Slice",
                    [f"{name}.qtool_flat", "qtool.zero", "qtool.end", "qtool.zero", f"qtool.step{step}"],
                    [f"{name}.qtool_sample"],
                    name=f"{name}.qtool_sample",
                )
            )
        return nodes

    wanted = set(tensors)
    nodes = [p for value in copy.graph.input if value.name in wanted for p in probes(value.name)]
    for node in copy.graph.node:
        nodes.append(node)
        nodes += [p for out in node.output if out in wanted for p in probes(out)]
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.graph.initializer.extend(
        [numpy_helper.from_array(np.array([s], np.int64), f"qtool.step{s}") for s in sorted(steps)]
    )
    kinds = ("min", "max", "sample") if sampled else ("min", "max")
    outputs = [f"{t}.qtool_{k}" for t in tensors for k in kinds]
    return runtime.with_outputs(copy, outputs), outputs


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    sizes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            sizes[value.name] = int(np.prod([d.dim_value for d in dims]))
    return sizes


def _batched(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """The model with batch `batch` on inputs whose first dim is 1; inner shapes are re-inferred."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_value = batch
    del copy.graph.value_info[:]
    for value in copy.graph.output:
        value.type.tensor_type.ClearField("shape")
    return copy


def _batches(samples: Iterable[Sample], size: int) -> Iterator[Sample]:
    group: list[Sample] = []
    for sample in samples:
        group.append(sample)
        if len(group) == size:
            yield _stack(group)
            group = []
    if group:
        yield _stack(group)


def _stack(group: list[Sample]) -> Sample:
    where = group[0][0] if len(group) == 1 else f"{group[0][0]}..{group[-1][0].rsplit(':', 1)[-1]}"
    return where, {name: np.concatenate([feed[name] for _, feed in group]) for name in group[0][1]}


class _Runner:
    """Runs one sample (or batch) and folds the outputs into the observers."""

    def __init__(self, model: onnx.ModelProto, tensors: list[str], observers: dict[str, Observer], threads: int):
        self.tensors, self.observers = tensors, observers
        self.sampled = any(type(o) is not MinMax for o in observers.values())
        self.histograms = all(isinstance(o, Histogram) for o in observers.values()) and self.sampled
        graph_model, self.outputs = _instrumented(model, tensors, self.sampled)
        self.session = runtime.session(graph_model, threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, where: str, feed: dict[str, np.ndarray]) -> None:
        try:
            values = self.session.run(self.outputs, {k: v for k, v in feed.items() if k in self.inputs})
        except Exception as e:  # ORT's own error types; the message names the failing node
            raise ModelError(f"inference failed: {str(e).splitlines()[0][:300]}", where=where) from e
        width = 3 if self.sampled else 2
        lows, highs = np.array(values[0::width], dtype=np.float64), np.array(values[1::width], dtype=np.float64)
        bad = ~(np.isfinite(lows) & np.isfinite(highs))
        if bad.any():
            raise DataError(f"tensor {self.tensors[int(np.argmax(bad))]!r} has NaN or Inf values", where=where)
        if self.histograms:
            observe_histograms([self.observers[t] for t in self.tensors], lows, highs, values[2::width])  # type: ignore[misc]
            return
        for name, lo, hi in zip(self.tensors, lows, highs, strict=True):
            self.observers[name].observe(float(lo), float(hi), None)


def _split(feed: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    rows = len(next(iter(feed.values())))
    for r in range(rows):
        yield {name: value[r : r + 1] for name, value in feed.items()}


def calibrate(
    model: onnx.ModelProto,
    tensors: list[str],
    samples: Iterable[Sample],
    *,
    observer: str = "min-max",
    percentile: float = 99.99,
    threads: int = 0,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Observer], int]:
    """Observe `tensors` over all `samples`; returns the observers and the number of samples.

    With `batch_size` > 1 samples are stacked on the batch axis; a model that cannot run batched
    (a Reshape to a fixed batch 1, say) falls back to one sample at a time, with a warning.
    """
    observers = {name: make_observer(observer, name, percentile) for name in tensors}
    if not tensors:
        return observers, 0
    single = _Runner(model, tensors, observers, threads)
    batched = None
    if batch_size > 1:
        try:
            batched = _Runner(_batched(model, batch_size), tensors, observers, threads)
        except ModelError:
            logger.warning("calibrate: the model cannot be batched; one sample at a time")
    count = 0
    for where, feed in _batches(samples, batch_size) if batched else samples:
        rows = len(next(iter(feed.values()))) if feed else 1
        if batched is not None and rows == batch_size:
            try:
                batched(where, feed)
            except ModelError:
                logger.warning("calibrate: the model does not run with batch %d; one sample at a time", batch_size)
                batched = None
        if batched is None or rows != batch_size:
            for part in _split(feed) if batch_size > 1 else [feed]:
                single(where, part)
        count += rows if batch_size > 1 else 1
        if progress is not None:
            progress(rows if batch_size > 1 else 1)
    return observers, count

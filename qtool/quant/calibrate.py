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
from onnx import helper

from qtool import runtime
from qtool.errors import DataError, ModelError
from qtool.quant.observers import MinMax, Observer, make_observer

logger = logging.getLogger(__name__)

Sample = tuple[str, dict[str, np.ndarray]]


def _reduced(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy that also outputs min and max of each tensor (names `<t>.qtool_min` / `.qtool_max`).

    Each reduction sits right after the node producing its tensor: onnxruntime runs nodes in
    list order, and reductions appended at the end would keep every activation alive at once.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    wanted = set(tensors)

    def reductions(name: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node(op, [name], [f"{name}.qtool_{s}"], name=f"{name}.qtool_{s}", keepdims=0)
            for op, s in (("ReduceMin", "min"), ("ReduceMax", "max"))
        ]

    nodes = [r for value in copy.graph.input if value.name in wanted for r in reductions(value.name)]
    for node in copy.graph.node:
        nodes.append(node)
        nodes += [r for out in node.output if out in wanted for r in reductions(out)]
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    outputs = [f"{t}.qtool_{s}" for t in tensors for s in ("min", "max")]
    return runtime.with_outputs(copy, outputs), outputs


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
        self.reduced = all(type(o) is MinMax for o in observers.values())
        graph_model, self.outputs = (
            _reduced(model, tensors) if self.reduced else (runtime.with_outputs(model, tensors), tensors)
        )
        self.session = runtime.session(graph_model, threads)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, where: str, feed: dict[str, np.ndarray]) -> None:
        try:
            values = self.session.run(self.outputs, {k: v for k, v in feed.items() if k in self.inputs})
        except Exception as e:  # ORT's own error types; the message names the failing node
            raise ModelError(f"inference failed: {str(e).splitlines()[0][:300]}", where=where) from e
        if self.reduced:
            for i, name in enumerate(self.tensors):
                lo, hi = float(values[2 * i]), float(values[2 * i + 1])
                if not (np.isfinite(lo) and np.isfinite(hi)):
                    raise DataError(f"tensor {name!r} has NaN or Inf values", where=where)
                self.observers[name].update(np.array([lo, hi], dtype=np.float32))
            return
        for name, value in zip(self.tensors, values, strict=True):
            try:
                self.observers[name].update(value)
            except DataError as e:
                raise DataError(e.message, where=f"{where}: {e.where}") from e


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

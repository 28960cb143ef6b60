"""Calibration: one onnxruntime session that exposes every tensor to observe, fed sample by sample
(or `batch_size` samples at a time where the model allows it).

Each output is folded into its observer and dropped at once (STYLE.md anti-pattern 2: never
keep per-sample outputs), so peak memory does not grow with the number of samples. For min-max
the session computes ReduceMin/ReduceMax itself, so only two scalars per tensor leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool import runtime
from qtool.errors import DataError, ModelError
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.names import unused_namespace
from qtool.io.kept_outputs import KeptOutputs
from qtool.quant.attention import softmax_chains
from qtool.quant.cost import MAC_OPS
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import (
    MASK_GAP,
    SENTINEL,
    Histogram,
    Observer,
    SoftmaxInput,
    make_observer,
    observe_histograms,
    sample_cap,
)

logger = logging.getLogger(__name__)

Sample = tuple[str, dict[str, np.ndarray]]


class _Probes:
    """Builds the instrumented copy of a model: per observed tensor a ReduceMax, a ReduceMin unless
    the tensor cannot be negative (every encoding's range includes 0, so its min says nothing),
    and for histograms an evenly strided sample of at most `cap` values, starting at an offset fed
    per run (`self.offset`): a fixed start would read the same positions of every sample, and a stride of
    hundreds can miss a transformer's few outlier channels for good. The reductions keep
    their dims and are concatenated per rank into a few outputs: on a small model, fetching two
    scalars per tensor from onnxruntime cost more than running it.

    Each probe sits right after the node producing its tensor: onnxruntime runs nodes in list
    order, and probes appended at the end would keep every activation alive at once.
    """

    def __init__(
        self, model: onnx.ModelProto, tensors: list[str], sampled: bool, cap: int, softmax: dict[str, int] | None = None
    ) -> None:
        self.model, self.tensors, self.sampled, self.cap = model, tensors, sampled, cap
        self.softmax = softmax or {}
        self.sizes = _sizes(model)  # declared: they only pace the histogram samples
        facts = GraphFacts.of(model)
        self.signed = [t for t in tensors if not _non_negative(facts, t)]
        self._signed = set(self.signed)
        self.steps: set[int] = set()
        self.ns = unused_namespace(gm.tensor_names(model) | {n.name for n in model.graph.node})
        self.offset = f"{self.ns}.offset"  # graph input: where this run's strided samples start (mod each stride)

    def nodes(self, name: str) -> list[onnx.NodeProto]:
        kinds = (("ReduceMin", "min"), ("ReduceMax", "max")) if name in self._signed else (("ReduceMax", "max"),)
        nodes = [helper.make_node(op, [name], [f"{name}.{self.ns}_{s}"], name=f"{name}.{self.ns}_{s}") for op, s in kinds]
        if self.sampled:
            step = max(1, self.sizes.get(name, 0) // self.cap) | 1
            self.steps.add(step)
            flat, sample = f"{name}.{self.ns}_flat", f"{name}.{self.ns}_sample"
            nodes.append(helper.make_node("Reshape", [name, f"{self.ns}.flat"], [flat], name=flat))
            start = f"{self.ns}.start{step}" if step > 1 else f"{self.ns}.zero"
            slice_inputs = [flat, start, f"{self.ns}.end", f"{self.ns}.zero", f"{self.ns}.step{step}"]
            nodes.append(helper.make_node("Slice", slice_inputs, [sample], name=sample))
        return nodes

    def softmax_nodes(self, name: str) -> list[onnx.NodeProto]:
        """Three scalars of a Softmax input (SoftmaxInput's observe_rows): its maximum, the minimum of its
        real values and the smallest real row maximum, rows along the Softmax axis."""
        p = f"{name}.{self.ns}_sm_"
        n = helper.make_node
        return [
            n("TopK", [name, f"{self.ns}.k1"], [p + "rowmax", p + "argmax"], name=p + "topk", axis=self.softmax[name]),
            n("ReduceMax", [name], [p + "hi"], name=p + "hi"),
            n("ReduceMin", [name], [p + "raw_min"], name=p + "raw_min"),
            n("Sub", [p + "hi", f"{self.ns}.gap"], [p + "row_floor"], name=p + "row_floor"),
            n("Greater", [p + "rowmax", p + "row_floor"], [p + "near_top"], name=p + "near_top"),
            n("Greater", [p + "rowmax", f"{self.ns}.sentinel"], [p + "finite_row"], name=p + "finite_row"),
            n("And", [p + "near_top", p + "finite_row"], [p + "real_row"], name=p + "real_row"),
            n("Sub", [p + "rowmax", f"{self.ns}.gap"], [p + "floor"], name=p + "floor"),
            n("Less", [name, p + "floor"], [p + "far"], name=p + "far"),
            n("Not", [p + "far"], [p + "near"], name=p + "near"),
            n("Greater", [name, f"{self.ns}.sentinel"], [p + "finite"], name=p + "finite"),
            n("And", [p + "near", p + "finite"], [p + "kept0"], name=p + "kept0"),
            n("And", [p + "kept0", p + "real_row"], [p + "kept"], name=p + "kept"),
            n("Where", [p + "kept", name, f"{self.ns}.posinf"], [p + "real"], name=p + "real"),
            n("ReduceMin", [p + "real"], [p + "lo"], name=p + "lo"),
            n("Where", [p + "real_row", p + "rowmax", f"{self.ns}.posinf"], [p + "rows"], name=p + "rows"),
            n("ReduceMin", [p + "rows"], [p + "rowmin"], name=p + "rowmin"),
        ]

    def softmax_outputs(self) -> list[str]:
        return [f"{t}.{self.ns}_sm_{k}" for t in self.softmax for k in SOFTMAX_PROBES]

    def gather(self, kind: str, names: list[str]) -> tuple[list[onnx.NodeProto], list[tuple[str, list[str]]]]:
        """One Concat of the `kind` reductions of `names`: (nodes, [(output, tensors)]). Each reduction
        is cast to float and flattened first, so that no declared rank or type (which models get
        wrong) decides whether the Concat is valid."""
        if not names:
            return [], []
        nodes, parts = [], []
        for name in names:
            flat, cast = f"{name}.{self.ns}_{kind}_flat", f"{name}.{self.ns}_{kind}_f"
            nodes.append(helper.make_node("Reshape", [f"{name}.{self.ns}_{kind}", f"{self.ns}.flat"], [flat], name=flat))
            nodes.append(helper.make_node("Cast", [flat], [cast], name=cast, to=onnx.TensorProto.FLOAT))
            parts.append(cast)
        out = f"{self.ns}.{kind}"
        nodes.append(helper.make_node("Concat", parts, [out], name=out, axis=0))
        return nodes, [(out, names)]

    def build(self) -> tuple[tuple[onnx.ModelProto, list], list[tuple[str, list[str]]], list[tuple[str, list[str]]], list]:
        """((model, the weights its stubs stand for), min outputs, max outputs, sample outputs); each reduction
        output lists its tensors. The probed model is a weightless copy: the session reads the model's own weights
        (a whole copy, then its serialization, held 2 more of malviz's 45 MB of weights at calibration's peak)."""
        copy, weights = external_data.weightless(self.model, runtime.WEIGHT_BYTES)
        wanted = set(self.tensors)

        def probes(name: str) -> list[onnx.NodeProto]:
            return [*(self.nodes(name) if name in wanted else []), *(self.softmax_nodes(name) if name in self.softmax else [])]

        nodes = [p for value in copy.graph.input for p in probes(value.name)]
        for node in copy.graph.node:
            nodes.append(node)
            nodes += [p for out in node.output for p in probes(out)]
        min_nodes, mins = self.gather("min", self.signed)
        max_nodes, maxs = self.gather("max", self.tensors)
        starts = [
            helper.make_node("Mod", [self.offset, f"{self.ns}.step{s}"], [f"{self.ns}.start{s}"], name=f"{self.ns}.start{s}")
            for s in sorted(self.steps)
            if s > 1
        ]
        if starts:
            copy.graph.input.append(helper.make_tensor_value_info(self.offset, onnx.TensorProto.INT64, [1]))
        del copy.graph.node[:]
        copy.graph.node.extend([*starts, *nodes, *min_nodes, *max_nodes])
        constants = [(f"{self.ns}.flat", [-1]), (f"{self.ns}.zero", [0]), (f"{self.ns}.end", [2**62])]
        constants += [(f"{self.ns}.step{s}", [s]) for s in sorted(self.steps)]
        constants += [(f"{self.ns}.k1", [1])] if self.softmax else []
        copy.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), n) for n, v in constants])
        if self.softmax:
            floats = [(f"{self.ns}.gap", MASK_GAP), (f"{self.ns}.sentinel", -SENTINEL), (f"{self.ns}.posinf", np.inf)]
            copy.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n) for n, v in floats])
        samples = [f"{t}.{self.ns}_sample" for t in self.tensors] if self.sampled else []
        names = [o for o, _ in [*mins, *maxs]] + samples + self.softmax_outputs()
        return (runtime.with_outputs(copy, names), weights), mins, maxs, samples


NON_NEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Abs", "Exp", "Sqrt"})


def _non_negative(facts: GraphFacts, name: str) -> bool:
    producer = facts.producers.get(name)
    if producer is None:
        return False
    if producer.op_type in NON_NEGATIVE_OPS:
        return True
    if producer.op_type == "Clip" and len(producer.input) > 1 and producer.input[1] in facts.initializers:
        return float(facts.array(producer.input[1])) >= 0
    return False


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Element counts of the model's values whose declared shapes are fully known."""
    sizes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim if value.type.tensor_type.HasField("shape") else []
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


def _batches(samples: Iterable[Sample], size: int) -> Iterator[tuple[str, dict[str, np.ndarray], int]]:
    """(where, feed, samples in it): `size` samples stacked on their batch axis, where each input has one of 1;
    others one at a time (a [32, 576] window has no batch axis: stacked, it was 128 rows split into 1-row
    feeds onnxruntime refused, 'cannot run it')."""
    group: list[Sample] = []
    for sample in samples:
        if not all(v.ndim and v.shape[0] == 1 for v in sample[1].values()):
            yield *sample, 1
            continue
        group.append(sample)
        if len(group) == size:
            yield *_stack(group), size
            group = []
    if group:
        yield *_stack(group), len(group)


def _stack(group: list[Sample]) -> Sample:
    where = group[0][0] if len(group) == 1 else f"{group[0][0]}..{group[-1][0].rsplit(':', 1)[-1]}"
    return where, {name: np.concatenate([feed[name] for _, feed in group]) for name in group[0][1]}


@dataclass
class FloatOutputs:
    """The model's own outputs on the first `samples` calibration samples, kept (in memory, then in scratch
    files) for the evaluation that follows so that it need not run the float model again (a third of ddddocr's
    quantize); `values` is None once they cannot be kept (the evaluation then streams both models)."""

    samples: int
    values: KeptOutputs | None

    def wants_more(self) -> bool:
        return self.values is not None and len(self.values) < self.samples

    def add(self, outputs: list) -> None:
        if self.values is not None and not self.values.append(outputs):
            self.values = None

    @property
    def complete(self) -> bool:
        return self.values is not None and len(self.values) == self.samples


def _model_fails(e: ModelError, model_where: str) -> ModelError:
    """The first sample's run failed: every sample passed the input checks, so the model is at fault (a PRelu
    slope that does not broadcast), not the line; a later failure stays the line's (a token id past the vocabulary)."""
    reason = e.message.removeprefix("inference failed: ")
    return ModelError(f"onnxruntime cannot run it (on the first sample, {e.where}): {reason}", where=model_where)


class _Runner:
    """Runs one sample (or batch) and folds the outputs into the observers."""

    def __init__(
        self,
        model: onnx.ModelProto,
        tensors: list[str],
        observers: dict[str, Observer],
        threads: int,
        cap: int,
        softmax: dict[str, int] | None = None,
        nan_allowed: frozenset[str] = frozenset(),
        unbounded: dict[str, str] | None = None,
    ) -> None:
        self.tensors, self.observers, self.softmax, self.cap = tensors, observers, softmax or {}, cap
        self.unbounded = unbounded
        self.nan_allowed = {k for k, t in enumerate(tensors) if t in nan_allowed}  # tensors whose NaN is no error
        self.mac_read = {i: n for n in model.graph.node if n.op_type in MAC_OPS for i in n.input[:2]}  # a mask is not
        self.sampled = bool(tensors) and all(isinstance(observers[t], Histogram) for t in tensors)  # one method
        probes = _Probes(model, tensors, self.sampled, cap, self.softmax)
        (graph_model, weights), mins, maxs, samples = probes.build()
        self.outputs = [o for o, _ in [*mins, *maxs]] + samples + probes.softmax_outputs()
        index = {t: i for i, t in enumerate(tensors)}
        # where each fetched reduction's values go in the per-tensor arrays, worked out once
        self.min_slots = [np.array([index[t] for t in names]) for _, names in mins]
        self.max_slots = [np.array([index[t] for t in names]) for _, names in maxs]
        # Full optimisation (fusions): onnxruntime keeps every tensor a probe reads, and the instrumented model
        # runs 1.7-2.7x faster than at the basic level. But not onnxruntime's NCHWc blocked layout: every probed
        # Conv output then lived twice, blocked and reordered back for its reductions, which held the peak. Without
        # it malviz's ResNet18 calibrated at 226 MB instead of 336 (quantize_static: 331), ddddocr's detector at
        # 188 instead of 364-390, czann's U-Net at 1027 instead of 1522, in as much time or less (bench/README.md)
        self.session = runtime.session(graph_model, threads, optimized=True, weights=weights, layout=False)
        self.offset = probes.offset
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.runs = 0
        self.graph_outputs = [o.name for o in model.graph.output]

    @staticmethod
    def _scatter(into: np.ndarray, slots: list[np.ndarray], values: list[np.ndarray]) -> None:
        for slot, value in zip(slots, values, strict=True):
            into[slot] = np.asarray(value, dtype=np.float64).reshape(-1)

    def __call__(self, where: str, feed: dict[str, np.ndarray], keep: FloatOutputs | None = None) -> None:
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        if self.offset in self.inputs:  # a large prime: consecutive runs start at unrelated positions
            feed[self.offset] = np.array([self.runs * 7919], dtype=np.int64)
        self.runs += 1
        wanted = keep is not None and keep.wants_more()
        try:
            values = self.session.run(self.outputs + self.graph_outputs if wanted else self.outputs, feed)
        except Exception as e:  # ORT's own error types; the message names the failing node
            raise ModelError(f"inference failed: {runtime.ort_reason(e)}", where=where) from e
        if wanted:
            keep.add(values[len(self.outputs) :])  # type: ignore[union-attr]
            values = values[: len(self.outputs)]
        reductions = len(self.min_slots) + len(self.max_slots)
        per = len(SOFTMAX_PROBES)
        rows = values[len(values) - per * len(self.softmax) :] if self.softmax else []
        for k, name in enumerate(self.softmax):
            hi, lo, row_max_min, raw_min = (float(np.asarray(v).reshape(-1)[0]) for v in rows[per * k : per * k + per])
            self.observers[name].observe_rows(hi, lo, row_max_min, raw_min)  # type: ignore[attr-defined]
        if not self.tensors:
            return
        lows, highs = np.zeros(len(self.tensors)), np.zeros(len(self.tensors))
        self._scatter(lows, self.min_slots, values[: len(self.min_slots)])
        self._scatter(highs, self.max_slots, values[len(self.min_slots) : reductions])
        nan = np.isnan(lows) | np.isnan(highs)
        if nan.any():
            for k in np.flatnonzero(nan).tolist():
                if k not in self.nan_allowed:
                    raise DataError(f"tensor {self.tensors[k]!r} has NaN values", where=where)
            lows[nan] = highs[nan] = np.inf  # like a mask's infinities: the tensor stays float
        # no value in this sample (boxes past an NMS that found none): the reductions of nothing, inf > -inf. One image
        # without a detection read as a mask's infinities, and left every tensor after the NMS float, silently
        empty = highs < lows
        # ±inf or ±1e30-class values: a mask (finfo.min, -inf), not data; the tensor stays float
        unbounded = set(np.flatnonzero(~empty & (np.maximum(np.abs(lows), np.abs(highs)) >= SENTINEL)).tolist())
        for k in unbounded:  # almost always empty: this runs per sample over every tensor
            name, seen = self.tensors[k], max(abs(lows[k]), abs(highs[k]))
            if self.unbounded is not None:
                self.unbounded.setdefault(name, where)
            elif (node := self.mac_read.pop(name, None)) is not None:  # once a run: the first
                self.mac_read.clear()  # a whole model left float, exit 0, said at info level (a 1e30 in one sample)
                logger.warning("%s: %r reaches %.3g, which reads as a mask's value: it stays float, as does what it "
                               "feeds, %s %r included; is this sample's data right?", where, name, seen,
                               node.op_type, node.name)  # fmt: skip
            self.observers[name].unbounded = True  # type: ignore[attr-defined]
            lows[k] = highs[k] = 0.0
        samples = values[reductions : len(values) - per * len(self.softmax)]
        if self.sampled:
            for k in unbounded:
                samples[k] = np.nan_to_num(samples[k], nan=0.0, posinf=0.0, neginf=0.0)
            kept = np.flatnonzero(~empty)
            if len(kept):
                observe_histograms([self.observers[self.tensors[k]] for k in kept], lows[kept], highs[kept],  # type: ignore[misc]
                                   [samples[k] for k in kept], self.cap)  # fmt: skip
            return
        for k, (name, lo, hi) in enumerate(zip(self.tensors, lows.tolist(), highs.tolist(), strict=True)):
            if (not unbounded or k not in unbounded) and not empty[k]:
                self.observers[name].observe(lo, hi, None)


def _where_branches(facts: GraphFacts, tensors: list[str]) -> frozenset[str]:
    """The tensors read only as a Where's values (inputs 1, 2): a NaN there is one the Where discards, as
    TensorFlow's div_no_nan does (basic-pitch's normalised log spectrum is 0/0 on a silent window), not a
    fault in the model or its input."""
    return frozenset(
        t for t in tensors
        if facts.consumers.get(t) and all(c.op_type == "Where" and t not in c.input[:1] for c in facts.consumers[t])
    )  # fmt: skip


MARKED_SAMPLES = 16  # lists this long note each range's growth by quarters (observers.growing_ranges)
SOFTMAX_PROBES = ("hi", "lo", "rowmin", "raw_min")  # the scalars SoftmaxInput.observe_rows takes


def _split(feed: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    rows = len(next(iter(feed.values())))
    for r in range(rows):
        yield {name: value[r : r + 1] for name, value in feed.items()}


@runtime.gives_back
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
    expected_samples: int | None = None,
    keep: FloatOutputs | None = None,
    any_nan: bool = False,
    model_where: str | None = None,
    unbounded: dict[str, str] | None = None,
) -> tuple[dict[str, Observer], int]:
    """Observe `tensors` over all `samples`; returns the observers and the number of samples.

    With `batch_size` > 1 samples are stacked on the batch axis; a model that cannot run batched
    (a Reshape to a fixed batch 1, say) falls back to one sample at a time, with a warning.
    `expected_samples` (the input_list's length) sizes the histograms' per-sample value samples.
    `keep` collects the model's outputs on the first samples, one at a time (not batched).
    A tensor with NaN values is an error unless a Where discards them, or `any_nan` (statistics of a
    quantized model's float view, where a value the Q/DQ would have clamped can run to inf and NaN);
    such a tensor is unbounded, as one holding a mask's infinities is. `model_where` names the model in the
    error when onnxruntime cannot run it on the first sample. `unbounded`, when given, gathers each unbounded
    tensor with the first sample where it was, in place of the warning that blames the sample: in a quantized
    model's float view the rounding may be what made it so (inspect/non_finite.py tells which).
    """
    if not tensors:
        return {}, 0
    if batch_size > 1:  # batches run the batched model: the first samples' outputs come one at a time
        keep = None
    facts = GraphFacts.of(model)
    chains = softmax_chains(facts, tensors)
    observers: dict[str, Observer] = {}
    for softmax_input, (_, members) in chains.items():
        shared = SoftmaxInput(softmax_input)
        observers.update({m: shared for m in members})
    plain = [t for t in tensors if t not in observers]
    observers.update({name: make_observer(observer, name, percentile) for name in plain})
    softmax = {t: axis for t, (axis, _) in chains.items()}
    cap = sample_cap(expected_samples)
    nan_allowed = frozenset(plain) if any_nan else _where_branches(facts, plain)
    single = _Runner(model, plain, observers, threads, cap, softmax, nan_allowed, unbounded)
    batched = None
    if batch_size > 1:
        try:
            batched = _Runner(
                _batched(model, batch_size), plain, observers, threads, cap * batch_size, softmax, nan_allowed,
                unbounded,
            )
        except ModelError:
            logger.warning("calibrate: the model cannot be batched; one sample at a time")
    count = 0
    for where, feed, rows in _batches(samples, batch_size) if batched else ((w, f, 1) for w, f in samples):
        if batched is not None and rows == batch_size:
            try:
                batched(where, feed)
            except ModelError:
                logger.warning("calibrate: the model does not run with batch %d; one sample at a time", batch_size)
                batched = None
        if batched is None or rows != batch_size:
            for part in _split(feed) if rows > 1 else [feed]:
                try:
                    single(where, part, keep)
                except ModelError as e:
                    if model_where is None or count or single.runs > 1:
                        raise
                    raise _model_fails(e, model_where) from e
        marks_before = count * 4 // max(expected_samples or 0, 1)
        count += rows
        if expected_samples and expected_samples >= MARKED_SAMPLES and count * 4 // expected_samples > marks_before < 3:
            for o in {id(o): o for o in observers.values()}.values():
                o.mark()  # type: ignore[attr-defined]
        if progress is not None:
            progress(rows)
    return observers, count

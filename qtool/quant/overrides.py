"""What an overrides file implies beyond its own entries (QNN seed, "Mixed Precision" and
"INT32 Overrides").

- For Conv, ConvTranspose, Gemm and MatMul, "even if any of the output/weights/bias are specified
  as float in the encoding file, all three of them will be overridden to float", at the float
  bitwidth of the overriding tensor; a bias without an encoding takes --float_bias_bitwidth.
- An op whose every activation input and output has an INT32 override runs in int32:
  Dequantize -> Cast(int32) -> op -> Cast(float) -> Quantize. Only ops without weights qualify;
  an INT32 override that no such op covers is an error.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx

from qtool import encoding as enc
from qtool.errors import DataError, UsageError, did_you_mean
from qtool.graph import external_data
from qtool.graph.model import inferred
from qtool.io.encodings import Encodings
from qtool.io.files import quoted
from qtool.quant import blocks
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.rules import rule_for, weight_axes

logger = logging.getLogger(__name__)

FLOAT_FORCING_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _members(node, facts: GraphFacts) -> tuple[list[str], list[str], str | None]:
    rule = rule_for(node)
    weights = [
        node.input[i] for i in sorted(rule.weights) if i < len(node.input) and node.input[i] in facts.initializers
    ]
    bias = node.input[rule.bias] if rule.bias is not None and rule.bias < len(node.input) else None
    outputs = [node.output[0]]
    squashed = facts.squashed_into(node.output[0])
    if squashed is not None:
        outputs.append(squashed)  # the ReLU fused into this op runs in the same precision
    return outputs, weights, bias if bias in facts.initializers else None


def checked_overrides(facts: GraphFacts, overrides: Encodings, as_given: onnx.ModelProto | None = None) -> Encodings:
    """`overrides` as the graph will use them. An override on a tensor that ReLU squashing removes
    (the Conv output before its Relu) moves to the squashed pair's tensor (the Relu output), as the
    QNN seed's squashing implies, unless that tensor has its own; so does a precision override on a MatMul's
    output before its bias Add (GraphFacts.bias_add), while a range there, not the layer's, is dropped; a weight's
    override whose range is empty is warned about where its values fall outside it (`empty_ranges`), one whose
    values reach far past it too (`clipped_weights`; `as_given`: the model before convert's folds). A per-block
    override on anything but a weight blocks can run along is an error."""
    acts = dict(overrides.activations)
    for name in sorted(overrides.activations):
        target = facts.squashed_into(name)
        if target is None:
            continue
        moved = acts.pop(name)
        if moved.scale and not moved.is_float and facts.bias_add(facts.consumers[name][0]) is not None:
            logger.warning("override for %r is ignored: its range is before the bias that %r adds, and a MatMul "
                           "and its bias Add are quantized as one layer", name, target)  # fmt: skip
        elif target in acts:
            logger.warning(
                "override for %r is ignored: ReLU squashing merges it into %r, which has its own override", name, target
            )
        else:
            logger.info("override for %r applies to %r (ReLU squashing)", name, target)
            acts[target] = moved
    blockable = blocks.weights_taking_blocks(facts.model, facts.initializers)
    for name, e in sorted({**acts, **overrides.params}.items()):
        if e.blocks is not None and name not in blockable:
            raise DataError("per-block encodings apply only to 2-D Gemm/MatMul and Conv weights", where=f"override {name!r}")
    weights = {w for node in facts.model.graph.node for w in _members(node, facts)[1]}
    for name in sorted(w for w in weights if _is_int32(overrides.params.get(w))):
        # onnxruntime fuses an int32 MatMul weight's DequantizeLinear into a QLinearMatMul it then refuses to load
        raise DataError("a 32-bit integer encoding on a weight: weights take 4, 8 or 16 bits (32 is for a bias)",
                        where=f"override {quoted(name)}")  # fmt: skip
    seen = {}
    for name in (n for n in overrides.params if n in facts.initializers):
        if (values := facts.array(name)).size:
            seen[name] = (float(values.min()), float(values.max()))
        external_data.release(facts.initializers[name])  # its pages: a 2.35 GB decoder's all stayed resident (+2.3 GB)
    clipped_weights(overrides.params, seen, empty_ranges(overrides.params, seen), as_given)
    _check_channel_counts(facts, acts)
    return Encodings(acts, dict(overrides.params))


def ranges_before_bias(facts: GraphFacts, activations: dict[str, enc.Encoding]) -> set[str]:
    """The activations whose range `checked_overrides` drops: a MatMul's output before the bias Add that makes it
    one layer with that bias (`GraphFacts.bias_add`), where no grid is."""
    return {name for name, e in activations.items() if e.scale and not e.is_float and facts.squashed_into(name)
            and facts.bias_add(facts.consumers[name][0]) is not None}  # fmt: skip


def empty_ranges(overrides: dict[str, enc.Encoding], seen: dict[str, tuple[float, float]]) -> set[str]:
    """Warn of an override whose range is empty (min == max, which QNN widens to 1e-4) while the tensor's values,
    `seen` (a weight's own, or an activation's calibrated range), reach outside it: they all quantize to its ends;
    or whose grid starts at 0 while they reach below a quarter of its span under it (a 1.0.0 'is_sym' weight
    written with offset 0 lost its negative half, exit 0: 1.3 dB).
    qtool writes such a range for a tensor that held one value in calibration (an all-zero mask); read back from
    its own QDQ model, that range holds every value it saw and is no mistake. Returns the names warned of."""
    warned = set()
    for name, e in sorted(overrides.items()):
        if not e.scale or e.is_float or name not in seen:
            continue
        lo, hi = float(np.min(e.min)), float(np.max(e.max))  # in numpy: a decoder's 18 M blocks as Python floats
        if hi - lo <= enc.MIN_RANGE * 1.001 and (seen[name][0] < lo - enc.MIN_RANGE or seen[name][1] > hi + enc.MIN_RANGE):
            logger.warning("override for %r has an empty range [%g, %g] but the tensor's values span [%g, %g]: they "
                           "all quantize to its ends", name, lo, hi, *seen[name])  # fmt: skip
            warned.add(name)
        elif lo == 0 and seen[name][0] < -hi / 4:  # offset 0 with is_sym: ONNX's int8 zero point, not AIMET's offset
            logger.warning("override for %r has a grid from 0 ([0, %g]: offset 0, AIMET's unsigned grid) but the "
                           "tensor's values reach %g: every negative value quantizes to 0 (a signed symmetric grid's "
                           "AIMET offset is %d, where ONNX's zero point is 0)", name, hi, seen[name][0],
                           -(2 ** (e.bitwidth - 1)))  # fmt: skip
            warned.add(name)
    return warned


def unused_bits(overrides: dict[str, enc.Encoding], seen: dict[str, tuple[float, float]], warned: set[str]) -> None:
    """Warn of an activation override whose grid is 2^(bitwidth/2) or more times as wide as the span its values
    (`seen`, calibrated) take: half its bits or more go unused, exit 0 (an encodings file for the model fed
    [0, 255] given where it is fed [0, 1]: 8 bits were 3, 11.3 dB, and no warning, the figure being over 10 dB).
    A tensor that held one value in calibration is not judged. `warned`: by empty_ranges."""
    for name, e in sorted(overrides.items()):
        if not e.scale or e.is_float or name not in seen or name in warned:
            continue
        (low, high), lo, hi = seen[name], min(e.min), max(e.max)
        if high - low <= enc.MIN_RANGE or (hi - lo) < 2 ** (e.bitwidth / 2) * (high - low):
            continue
        logger.warning("override for %r spans [%g, %g], %.0fx the span its calibration values take ([%g, %g]): %.1f "
                       "of its %d bits go unused (a range for another model, or for inputs scaled otherwise? the "
                       "calibration list's samples may not reach it)", name, lo, hi, (hi - lo) / (high - low), low,
                       high, math.log2((hi - lo) / (high - low)), e.bitwidth)  # fmt: skip


def past_grid(e: enc.Encoding, low: float, high: float) -> float:
    """How far values spanning [low, high] reach past `e`'s grid (its widest channel's), in spans of the grid."""
    lo, hi = float(np.min(e.min)), float(np.max(e.max))
    reach = max(lo - low, high - hi)
    return reach / (hi - lo) if hi > lo else (math.inf if reach > 0 else 0.0)


def clipped_weights(overrides: dict[str, enc.Encoding], seen: dict[str, tuple[float, float]], warned: set[str],
                    as_given: onnx.ModelProto | None) -> None:  # fmt: skip
    """Warn of a weight override whose grid the weight's values (`seen`) reach past by more than half its span: all
    those values quantize to its ends, exit 0. A weight's grid is of its values after convert's folds, as AIMET
    measures after folding BatchNorms, so an override written from the weight as the model gives it clipped the
    weight a BatchNorm or a constant scale was folded into (1.3 dB where the run without it made 40.4); where the
    grid fits the weight in `as_given` (the model before the folds), the warning says so. `warned`: by empty_ranges."""
    given = {t.name: t for t in as_given.graph.initializer} if as_given is not None else {}
    for name, e in sorted(overrides.items()):
        if not e.scale or e.is_float or name not in seen or name in warned:
            continue
        if past_grid(e, *seen[name]) <= 0.5:
            continue
        lo, hi = float(np.min(e.min)), float(np.max(e.max))
        before = external_data.array(given[name]) if name in given else np.zeros(0)
        why = ""
        if before.size and before.dtype.kind == "f" and past_grid(e, float(before.min()), float(before.max())) <= 1 / 64:
            why = (f"; it fits {name!r} as the model gives it ([{before.min():g}, {before.max():g}]), before convert "
                   "folded a BatchNorm or a constant scale into it: an override gives the folded weight's grid, as "
                   "AIMET's encodings do")
        logger.warning("override for %r clips the weight: its values span [%g, %g], the grid [%g, %g], and every "
                       "value past it quantizes to its ends%s", name, *seen[name], lo, hi, why)  # fmt: skip


def _check_channel_counts(facts: GraphFacts, acts: dict[str, enc.Encoding]) -> None:
    """A per-channel activation override runs along the tensor's last axis (encoding.ACTIVATION_CHANNEL_AXIS):
    its entry count must be that axis's size, where shape inference knows it."""
    per_channel = {n: len(e.scale) for n, e in acts.items() if len(e.scale) > 1}
    for name, dims in _activation_dims(facts, per_channel).items():
        if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value != per_channel[name]:
            raise DataError(f"{per_channel[name]} per-channel encodings, but the tensor's last axis has "
                            f"{dims[-1].dim_value} channels", where=f"override {quoted(name)}")  # fmt: skip


def _activation_dims(facts: GraphFacts, names) -> dict[str, list]:
    """The inferred dims of those of `names` shape inference knows (run only when there are any to look up)."""
    if not names:
        return {}
    graph = inferred(facts.model).graph
    return {v.name: list(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info, *graph.output]
            if v.name in names}  # fmt: skip


def check_stated_axes(facts: GraphFacts, stated: dict[str, int], where: str) -> None:
    """A per-channel axis a 2.0.0 file states must lie within its tensor's rank and be the axis the plan quantizes
    along (plan._weight_encoding puts a weight on its op's output-channel axis, group_range an activation on its
    last axis, whatever the file says): any other axis would be applied along another one without a word."""
    ranks = {n: len(facts.initializers[n].dims) for n in stated if n in facts.initializers}
    ranks.update({n: len(dims) for n, dims in _activation_dims(facts, stated.keys() - ranks.keys()).items() if dims})
    channels = _weight_channel_axes(facts)
    for name, axis in sorted(stated.items()):
        rank = ranks.get(name)
        if rank is None:  # shape unknown: the plan's channel count check still applies
            continue
        if not -rank <= axis < rank:
            raise DataError(f"'axis' {axis} is out of range for the tensor's {rank} dimensions",
                            where=f"{where}: {quoted(name)}")  # fmt: skip
        wanted, what = _channel_axis(facts, channels, name, rank)
        if wanted is not None and axis % rank not in wanted:
            raise DataError(f"per-channel 'axis' {axis}, but {what}", where=f"{where}: {quoted(name)}")


def check_weight_channels(facts: GraphFacts, params: dict[str, enc.Encoding], where: str) -> None:
    """A per-channel weight override needs one entry per channel on an axis its op quantizes it along: the plan
    refused any other count only after calibration (10^5 samples: 17 s), not naming the file."""
    channels = _weight_channel_axes(facts)
    for name, e in sorted(params.items()):
        if e.blocks is not None and len(readers := _weight_readers(facts, name)) == 1:  # as the plan will place it
            node, index = readers[0]
            dims = tuple(facts.initializers[name].dims)
            blocks.place(e, dims, weight_axes(node, index, dims)[0], blocks.block_axis(node, index, len(dims)),
                         f"{where}: {quoted(name)}")  # fmt: skip
        if len(e.scale) > 1 and e.blocks is None and name in channels:
            dims = tuple(facts.initializers[name].dims)
            if all(len(e.scale) != (dims[a] if 0 <= a < len(dims) else 1) for a in channels[name][0]):
                raise DataError(f"{len(e.scale)} per-channel encodings, but {channels[name][1]}, of "
                                f"{' or '.join(str(dims[a]) for a in channels[name][0])} channels",
                                where=f"{where}: {quoted(name)}")  # fmt: skip


def _channel_axis(
    facts: GraphFacts, weights: dict[str, tuple[tuple[int, ...], str]], name: str, rank: int
) -> tuple[tuple[int, ...] | None, str]:
    """The axis the plan quantizes `name` along per channel and whose it is; None for a bias or a constant
    operand, whose axis is only range-checked."""
    if name in weights:
        return weights[name]
    if name in facts.initializers:
        return None, ""
    return (rank - 1,), f"a per-channel activation is quantized along its last axis, {rank - 1}"


def _weight_readers(facts: GraphFacts, name: str) -> list[tuple]:
    """The (node, input index) pairs that read initializer `name` in a weight slot."""
    return [(node, k) for node in facts.consumers.get(name, []) for k in sorted(rule_for(node).weights)
            if k < len(node.input) and node.input[k] == name]  # fmt: skip


def _weight_channel_axes(facts: GraphFacts) -> dict[str, tuple[tuple[int, ...], str]]:
    """Weight name -> (the output-channel axis its first consumer quantizes it along, that consumer described);
    the plan encodes a weight once, for the first op that reads it."""
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, init in facts.initializers.items():
        if readers := _weight_readers(facts, name):
            node, index = readers[0]
            axes = weight_axes(node, index, tuple(init.dims))
            found[name] = (axes, f"{node.op_type} {quoted(node.name)} quantizes its weight per channel along axis "
                                 + " or ".join(map(str, axes)))  # fmt: skip
    return found


def propagate_float(
    facts: GraphFacts, overrides: Encodings, float_bias_bitwidth: int, weight_only: bool = False
) -> Encodings:
    """A copy of `overrides` where one float tensor of a weighted op makes all three float. Under weight-only
    (--act_bitwidth 32) every output is float: a float output is the mode's, not the layer's (qtool's own
    encodings of a float16 weight-only run list every activation float16, and read back made every weight float)."""
    out = Encodings(dict(overrides.activations), dict(overrides.params))
    for node in facts.model.graph.node:
        if node.op_type not in FLOAT_FORCING_OPS:
            continue
        outputs, weights, bias = _members(node, facts)
        floats = [
            e
            for e in [*(out.activations.get(t) for t in outputs if not weight_only), *(out.params.get(w) for w in weights)]
            if e and e.is_float
        ]
        if bias is not None and bias in out.params and out.params[bias].is_float:
            floats.append(out.params[bias])
        if not floats:
            continue
        bitwidth = floats[0].bitwidth
        for t in outputs:
            out.activations[t] = enc.float_encoding(bitwidth)
        for w in weights:
            out.params[w] = enc.float_encoding(bitwidth)
        if bias is not None and not (bias in out.params and out.params[bias].is_float):
            out.params[bias] = enc.float_encoding(float_bias_bitwidth if bias not in overrides.params else bitwidth)
        logger.info("overrides: %s %r runs in float%d", node.op_type, node.name, bitwidth)
    return out


def _is_int32(e: enc.Encoding | None) -> bool:
    return e is not None and not e.is_float and e.bitwidth == 32


def int32_ops(facts: GraphFacts, overrides: Encodings) -> tuple[list[str], Encodings]:
    """Names of the nodes that run in int32, and the overrides without their INT32 entries."""
    wanted = {t for t, e in overrides.activations.items() if _is_int32(e)}
    if not wanted:
        return [], overrides
    nodes, covered = [], set()
    for node in facts.model.graph.node:
        acts = [
            t
            for t in [*node.input, *node.output]
            if (t and t not in facts.initializers and facts.is_float(t)) or t in wanted
        ]
        if not acts or not all(t in wanted for t in acts):
            continue
        if any(i in facts.initializers for i in node.input if i):
            raise DataError(
                "INT32 overrides are only supported for ops without weights and bias",
                where=f"override {acts[0]!r} ({node.op_type} {node.name!r})",
            )
        nodes.append(node.name)
        covered.update(acts)
    for tensor in sorted(wanted - covered):
        raise DataError(
            "INT32 override is not matched: every activation input and output of the op needs one",
            where=f"--quantization_overrides: override {tensor!r}",
        )
    remaining = {t: e for t, e in overrides.activations.items() if t not in wanted}
    return nodes, Encodings(remaining, dict(overrides.params))


def check_sixteen_bit_names(facts: GraphFacts, acts: tuple[str, ...], params: tuple[str, ...]) -> None:
    """The 16-bit flags name tensors of the graph by a layer's output, and `params` layers with weights. Checked where
    quantize starts: refused after calibration, a mistyped name cost the whole pass (u2netp at 320x320, 32 samples:
    '--params_16bit_tensors 2258', a weight, was refused after 357 s)."""
    known = set(facts.producers) | set(facts.graph_inputs)
    for flag, names in (("--act_16bit_tensors", acts), ("--params_16bit_tensors", params)):
        for name in names:
            if name in facts.initializers:  # a weight: the flag names the layer by its output
                layer = next((n.output[0] for n in facts.consumers.get(name, []) if n.output), None)
                what = "not an activation" if flag == "--act_16bit_tensors" else "where a layer's output tensor goes"
                raise UsageError(f"{flag} names {name!r}, a weight, {what}",
                                 hint=f"--params_16bit_tensors {layer}" if layer else None)  # fmt: skip
            if name not in known:
                raise UsageError(
                    f"{flag} names {name!r}, which is not a tensor of the graph", hint=did_you_mean(name, known)
                )
    for name in params:
        producer = facts.producers.get(name)
        if producer is None or not _members(producer, facts)[1]:  # an LSTM's or GRU's were 'no weights'
            kept = producer is not None and any(i in facts.initializers and facts.is_float(i) for i in producer.input[1:])
            raise UsageError(f"--params_16bit_tensors names {name!r}, whose producer has no weights" if not kept else
                             f"--params_16bit_tensors names {name!r}, written by {producer.op_type}, whose weights qtool "
                             f"keeps float ({producer.op_type} reads them outside a slot qtool quantizes as a weight)")  # fmt: skip


def sixteen_bit_layers(
    facts: GraphFacts, overrides: Encodings, acts: tuple[str, ...], params: tuple[str, ...]
) -> Encodings:
    """TIDL's manual mixed precision: `acts` are activations raised to 16 bits; `params` name layers
    (by output tensor) whose weights go to 16 bits. An explicit override of a tensor wins.
    Data-invariant ops and Concat take the precision along with the encoding they share."""
    check_sixteen_bit_names(facts, acts, params)
    out = Encodings(dict(overrides.activations), dict(overrides.params))
    for name in acts:
        out.activations.setdefault(facts.squashed_into(name) or name, enc.Encoding(bitwidth=16))
    for name in params:
        for weight in _members(facts.producers[name], facts)[1]:
            out.params.setdefault(weight, enc.Encoding(bitwidth=16, is_symmetric=True))
    return out


def floated_by_rule(facts: GraphFacts, given: Encodings, planned: dict[str, enc.Encoding],
                    weight_only: bool = False) -> dict[str, str]:  # fmt: skip
    """The int weight and bias overrides `propagate_float` made float because the user gave their layer's output,
    weight or bias float, each with why: an int8 weight was written float without a word. Under `weight_only` an
    output floats nothing (propagate_float): the cause named is the float weight or bias."""
    found = {}
    for node in facts.model.graph.node:
        if node.op_type not in FLOAT_FORCING_OPS:
            continue
        outputs, weights, bias = _members(node, facts)
        params = [*weights, *([bias] if bias is not None else [])]
        members = [*((t, "output", given.activations.get(t)) for t in outputs if not weight_only),
                   *((w, "weight" if w in weights else "bias", given.params.get(w)) for w in params)]  # fmt: skip
        if (cause := next(((t, role, e) for t, role, e in members if e is not None and e.is_float), None)) is None:
            continue
        for w in params:
            if (e := given.params.get(w)) is not None and not e.is_float and getattr(planned.get(w), "is_float", False):
                found[w] = (f"{node.op_type} {node.name!r} runs in float{cause[2].bitwidth}, as its {cause[1]} "
                            f"{cause[0]!r} is overridden float: QNN makes a Conv, ConvTranspose, Gemm or MatMul's "
                            "output, weights and bias all float when one of them is")  # fmt: skip
    return found


def unapplied_params(facts: GraphFacts, given: dict[str, enc.Encoding], planned: dict[str, enc.Encoding],
                     op_types: tuple[str, ...] = ()) -> dict[str, str]:  # fmt: skip
    """The weight overrides the plan leaves float, each with why: an LSTM's or GRU's W (an AIMET export of a
    recurrent model carries their grids) has no slot qtool quantizes. One --op_types_to_quantize leaves out is the
    user's choice, and not named."""
    found = {}
    for name, e in sorted(given.items()):
        readers = sorted({n.op_type for n in facts.consumers.get(name, [])})
        chosen = not op_types or set(readers) <= set(op_types)
        if readers and chosen and not e.is_float and name in facts.initializers and name not in planned:
            found[name] = f"{', '.join(readers)} reads it outside a slot qtool quantizes as a weight"
    return found

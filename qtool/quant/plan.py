"""QuantPlan: the Encoding of every tensor that will be quantized, from ranges, overrides and flags.

Order of precedence for a tensor: an override (its range, or only its precision, or float),
then the calibrated range with the flags' bitwidth and schema. Tensors joined by a
data-invariant op or a Concat share one encoding (the union of their ranges, QNN seed).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from qtool.errors import DataError
from qtool.io.encodings import Encodings
from qtool.quant import encoding as enc
from qtool.quant.encoding import Encoding
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.rules import SQUASHABLE_PRODUCERS, SQUASHING_ACTIVATIONS, rule_for, weight_axis

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanOptions:
    act_bitwidth: int = 8
    weights_bitwidth: int = 8
    bias_bitwidth: int = 8
    act_schema: str = "asymmetric"
    param_schema: str = "asymmetric"
    per_channel: bool = False
    per_row: bool = False


@dataclass
class QuantPlan:
    activations: dict[str, Encoding] = field(default_factory=dict)
    params: dict[str, Encoding] = field(default_factory=dict)

    def encodings(self) -> Encodings:
        return Encodings(dict(self.activations), dict(self.params))


def _is_squashed(facts: GraphFacts, name: str) -> bool:
    producer = facts.producers.get(name)
    users = facts.consumers.get(name, [])
    return (
        producer is not None
        and producer.op_type in SQUASHABLE_PRODUCERS
        and len(users) == 1
        and users[0].op_type in SQUASHING_ACTIVATIONS
        and name not in facts.graph_outputs
    )


def activation_tensors(facts: GraphFacts) -> list[str]:
    """Float activations that get an encoding, in graph order (inputs first)."""
    names = [n for n in facts.graph_inputs if facts.is_float(n)]
    for node in facts.model.graph.node:
        names += [o for o in node.output if o and facts.is_float(o) and not _is_squashed(facts, o)]
    return names


def activation_groups(facts: GraphFacts, tensors: list[str]) -> list[list[str]]:
    """Partition `tensors` into groups that must share one encoding (union-find, ordered)."""
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
        if rule.shares_input_encoding and node.input and node.input[0] not in facts.initializers:
            for out in node.output:
                union(node.input[0], out)
        if rule.joins_inputs:
            for name in node.input:
                union(name, node.output[0])
    groups: dict[str, list[str]] = {}
    for t in tensors:
        groups.setdefault(find(t), []).append(t)
    return list(groups.values())


def _group_encoding(
    group: list[str], ranges: dict[str, tuple[float, float]], overrides: Encodings, o: PlanOptions
) -> Encoding:
    given = [overrides.activations[t] for t in group if t in overrides.activations]
    chosen = given[0] if given else None
    if chosen is not None and (chosen.is_float or chosen.scale):
        return chosen
    bitwidth = chosen.bitwidth if chosen is not None else o.act_bitwidth
    schema = "symmetric" if chosen is not None and chosen.is_symmetric else o.act_schema
    seen = [ranges[t] for t in group if t in ranges]
    if not seen:
        raise DataError(
            f"no encoding and no calibration data for tensor {group[0]!r}",
            hint="give --input_list, or an override with bitwidth, min and max for it",
        )
    lo, hi = min(r[0] for r in seen), max(r[1] for r in seen)
    return enc.with_schema(schema, lo, hi, bitwidth)


def plan_activations(
    facts: GraphFacts, ranges: dict[str, tuple[float, float]], overrides: Encodings, o: PlanOptions
) -> dict[str, Encoding]:
    tensors = activation_tensors(facts)
    planned: dict[str, Encoding] = {}
    for group in activation_groups(facts, tensors):
        if not any(t in ranges or t in overrides.activations for t in group):
            continue  # float fallback: no data, no override
        encoding = _group_encoding(group, ranges, overrides, o)
        planned.update(dict.fromkeys(group, encoding))
    return {t: planned[t] for t in tensors if t in planned}


def _channel_count(shape: tuple[int, ...], axis: int) -> int:
    return shape[axis] if 0 <= axis < len(shape) else 1


def _weight_encoding(
    name: str, values: np.ndarray, axis: int, per_channel: bool, overrides: Encodings, o: PlanOptions
) -> Encoding:
    given = overrides.params.get(name)
    channels = _channel_count(values.shape, axis)
    if given is not None and (given.is_float or given.scale):
        if len(given.scale) > 1:
            if len(given.scale) != channels:
                raise DataError(
                    f"{len(given.scale)} per-channel encodings, but the weight has {channels} channels on axis {axis}",
                    where=f"override {name!r}",
                )
            return dataclasses.replace(given, axis=axis)
        return given
    bitwidth = given.bitwidth if given is not None else o.weights_bitwidth
    if per_channel and values.ndim > 1:
        reduce = tuple(i for i in range(values.ndim) if i != axis)
        return enc.symmetric(values.min(axis=reduce), values.max(axis=reduce), bitwidth, axis=axis)
    schema = "symmetric" if (given is not None and given.is_symmetric) or bitwidth == 16 else o.param_schema
    return enc.with_schema(schema, float(values.min(initial=0.0)), float(values.max(initial=0.0)), bitwidth)


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
    if bitwidth == 32 and aligned and input_enc is not None and not input_enc.is_float and input_enc.scale:
        return enc.bias_int32(input_enc.scale[0], weight)  # type: ignore[arg-type]
    schema = "symmetric" if bitwidth == 32 else o.param_schema
    return enc.with_schema(schema, float(values.min(initial=0.0)), float(values.max(initial=0.0)), bitwidth)


def plan_params(
    facts: GraphFacts, activations: dict[str, Encoding], overrides: Encodings, o: PlanOptions
) -> dict[str, Encoding]:
    params: dict[str, Encoding] = {}
    for node in facts.model.graph.node:
        rule = rule_for(node)
        weight = None
        for index in sorted(rule.weights):
            name = node.input[index] if index < len(node.input) else ""
            if name in facts.initializers and facts.is_float(name) and name not in params:
                values = facts.array(name)
                axis = weight_axis(node, index, values.ndim)
                per_channel = o.per_row if rule.per_row else o.per_channel
                params[name] = _weight_encoding(name, values, axis, per_channel, overrides, o)
            weight = params.get(name)
        bias = node.input[rule.bias] if rule.bias is not None and rule.bias < len(node.input) else ""
        if bias in facts.initializers and facts.is_float(bias) and bias not in params:
            input_enc = activations.get(node.input[0])
            params[bias] = _bias_encoding(bias, facts.array(bias), input_enc, weight, overrides, o)
        if rule.quantize_constants:
            for name in node.input:
                if name in facts.initializers and facts.is_float(name) and name not in params:
                    params[name] = _weight_encoding(name, facts.array(name), -1, False, overrides, o)
    return params


def build_plan(
    facts: GraphFacts, ranges: dict[str, tuple[float, float]], overrides: Encodings, o: PlanOptions
) -> QuantPlan:
    activations = plan_activations(facts, ranges, overrides, o)
    return QuantPlan(activations, plan_params(facts, activations, overrides, o))

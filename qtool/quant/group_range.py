"""The range of an activation group (tensors sharing one encoding), from overrides or calibration.

Two rules on top of the calibration method's choice:
- Softmax inputs are clamped at max - 20 (a -3.4e38 attention mask must not blow up the range);
- bounded ops' outputs (gates, probabilities) and model outputs keep their observed range.
"""

from __future__ import annotations

import copy
import logging

from qtool.errors import DataError
from qtool.io.encodings import Encodings
from qtool.quant import encoding as enc
from qtool.quant.encoding import Encoding
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import MinMax, Observer

logger = logging.getLogger(__name__)


def _group_override(group: list[str], overrides: Encodings) -> Encoding | None:
    given = {t: overrides.activations[t] for t in group if t in overrides.activations}
    distinct = list(dict.fromkeys(given.values()))
    if len(distinct) > 1:
        logger.warning("overrides for %s differ; they share one encoding, using %r's", sorted(given), next(iter(given)))
    chosen = distinct[0] if distinct else None
    if chosen is not None and len(chosen.scale) > 1:
        raise DataError("per-channel encodings are only valid for weights", where=f"override {next(iter(given))!r}")
    return chosen


# Softmax(x) is unchanged, to < 2e-9 per element, by clamping x below max(x) - 20: such an input
# range needs no more, and a -3.4e38 attention-mask constant must not blow it up.
SOFTMAX_SPAN = 20.0


def _feeds_only_softmax(facts: GraphFacts, group: list[str]) -> bool:
    users = [u for t in group for u in facts.consumers.get(t, [])]
    return bool(users) and all(u.op_type == "Softmax" for u in users)


# A probability, gate or model output is read for its largest values (argmax, a channel's weight):
# clipping them (entropy, percentile) destroys what the range is for, and a bounded op's range
# costs nothing to keep whole. Such tensors keep their observed min/max under every method.
BOUNDED_OPS = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "LogSoftmax", "Tanh"})


def _keeps_whole_range(facts: GraphFacts, group: list[str]) -> bool:
    producers = [facts.producers.get(t) for t in group]
    return any(t in facts.graph_outputs for t in group) or any(
        p is not None and p.op_type in BOUNDED_OPS for p in producers
    )


def group_encoding(
    facts: GraphFacts,
    group: list[str],
    observers: dict[str, Observer],
    overrides: Encodings,
    *,
    bitwidth: int,
    schema: str,
    pow2: bool = False,
) -> Encoding:
    """The one encoding of a group of tensors that share it: an override's, or the range the
    calibration method picks over the group's merged observations (with the rules above)."""
    chosen = _group_override(group, overrides)
    if chosen is not None and (chosen.is_float or chosen.scale):
        return chosen
    bitwidth = chosen.bitwidth if chosen is not None else bitwidth
    schema = "symmetric" if chosen is not None and chosen.is_symmetric else schema
    seen = [observers[t] for t in group if t in observers and observers[t].count]
    if not seen:
        raise DataError(
            f"no encoding and no calibration data for tensor {group[0]!r}",
            hint="give --input_list, or an override with bitwidth, min and max for it",
        )
    merged = copy.deepcopy(seen[0])
    for other in seen[1:]:
        merged.merge(other)
    lo, hi = MinMax.range(merged) if _keeps_whole_range(facts, group) else merged.range(bitwidth, schema)
    if _feeds_only_softmax(facts, group):
        lo = max(lo, hi - SOFTMAX_SPAN)
    return enc.with_schema(schema, lo, hi, bitwidth, pow2=pow2)

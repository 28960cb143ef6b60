"""The range of an activation group (tensors sharing one encoding), from overrides or calibration.

Rules on top of the calibration method's choice:
- a tensor that held ±inf or ±1e30-class values (an additive attention mask: finfo.min, -inf) is a
  marker, not data: its group stays float, as QNN and onnxruntime run the mask in float;
- Softmax inputs take `SoftmaxInput`'s range: their real values' span, masked positions left out,
  clamped only where no row's Softmax can notice (observers.py);
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
from qtool.quant.observers import MinMax, Observer, SoftmaxInput

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
    if any(getattr(observers.get(t), "stays_float", False) for t in group):
        logger.info("%s held a mask's values (±inf, ±1e30, masked Softmax positions): left float", group[0])
        return enc.float_encoding(32)
    seen = [observers[t] for t in group if t in observers and observers[t].count]
    if not seen:
        raise DataError(
            f"no encoding and no calibration data for tensor {group[0]!r}",
            hint="give --input_list, or an override with bitwidth, min and max for it",
        )
    merged = copy.deepcopy(seen[0])
    for other in seen[1:]:
        merged.merge(other)
    if isinstance(merged, SoftmaxInput) or _keeps_whole_range(facts, group):
        lo, hi = (merged if isinstance(merged, SoftmaxInput) else MinMax).range(merged)
    else:
        lo, hi = merged.range(bitwidth, schema)
    return enc.with_schema(schema, lo, hi, bitwidth, pow2=pow2)

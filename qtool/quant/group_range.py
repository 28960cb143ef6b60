"""The range of an activation group (tensors sharing one encoding), from overrides or calibration.

Rules on top of the calibration method's choice:
- a tensor that held ±inf or ±1e30-class values (an additive attention mask: finfo.min, -inf) is a
  marker, not data: its group stays float, as QNN and onnxruntime run the mask in float;
- Softmax inputs take `SoftmaxInput`'s range: their real values' span, masked positions left out,
  clamped only where no row's Softmax can notice (observers.py);
- bounded ops' outputs (gates, probabilities) and model outputs keep their observed range;
- a group read only by ops that are flat outside an interval (HardSwish below −3, HardSigmoid outside
  [−β/α, (1−β)/α], Relu below 0, Clip outside [min, max]) keeps only the part of its range inside that
  interval: a value beyond it gives the reader the same output whether clamped by the grid or not, so the
  clipped range loses nothing and spends every level where the reader can see it (a MobileNetV3 Conv
  output of [−18.2, 1.1] before a HardSwish gets a grid over [−3, 1.1], 4.6× finer); a Sigmoid, Tanh or Elu
  counts as flat where its output is within half a step of its own grid's end, as read through that grid
  (nudenet's class logits, [−26.6, 1.6], are scores on a 1/255 grid only above −6.2), and a SiLU written as
  Mul(x, Sigmoid(x)) where its dip below 0 rounds to 0 on the Mul's grid (nudenet's stem: a Conv output of
  [−213, 221] whose SiLU's grid has a step of 0.87 is cut, with its Sigmoid's, to [−7.1, 221]);
- a member read only by a max (MaxPool, GlobalMaxPool, ReduceMax: data-invariant, so it shares the group)
  does not widen the group's lower end: a value below the max's own smallest output never wins a window
  it was seen in, so the group's minimum is its other members' (MTCNN's PReLU → MaxPool: [−2.45, 7.3] →
  [−1.53, 7.3]).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections.abc import Callable

import onnx

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import DataError
from qtool.io.encodings import Encodings
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import MinMax, Observer, SoftmaxInput
from qtool.quant.rules import flat_outside, rule_for, saturates_outside, silu_saturates_below

logger = logging.getLogger(__name__)


def _group_override(group: list[str], overrides: Encodings) -> Encoding | None:
    given = {t: overrides.activations[t] for t in group if t in overrides.activations}
    distinct = list(dict.fromkeys(given.values()))
    chosen = distinct[0] if distinct else None
    if len(distinct) > 1 and not any(e.scale or e.min for e in distinct):
        # precisions only: a Conv made float by its float weights (overrides.propagate_float) in a group the
        # mixed-precision search raised to 16 bits: the widest holds every member's values
        chosen = max(distinct, key=lambda e: (e.is_float, e.bitwidth))
        logger.info("overrides for %s differ in precision only; they share one encoding, the widest", sorted(given))
    elif len(distinct) > 1:
        # ops that move data (Reshape, Transpose, Slice, an If's branch) keep their input's grid: the runtime needs one
        logger.warning("overrides for %s differ, but ops that move data unchanged join them on one grid; using %r's",
                       sorted(given), next(iter(given)))  # fmt: skip
    if chosen is not None and len(chosen.scale) > 1:
        if len(group) > 1:
            raise DataError("a per-channel activation encoding needs a tensor that shares its encoding with no other",
                            where=f"override {next(iter(given))!r}", hint=f"it shares one with {sorted(group)}")  # fmt: skip
        return dataclasses.replace(chosen, axis=enc.ACTIVATION_CHANNEL_AXIS)
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
    gridded: frozenset[str] | None = None,
) -> Encoding:
    """The one encoding of a group of tensors that share it: an override's, or the range the
    calibration method picks over the group's merged observations (with the rules above)."""
    chosen = _group_override(group, overrides)
    if chosen is not None and (chosen.is_float or chosen.scale):
        if pow2 and not chosen.is_float and enc.fix_point(chosen) is None:  # the override wins; export fixpoint refuses
            logger.warning("%r keeps its override's scale %.6g, not a power of 2: export --format fixpoint refuses it "
                           "(drop the entry, or --ignore_quantization_overrides)", group[0], chosen.scale[0])
        return chosen
    bitwidth = chosen.bitwidth if chosen is not None else bitwidth
    schema = "symmetric" if chosen is not None and chosen.is_symmetric else schema
    if any(getattr(observers.get(t), "stays_float", False) for t in group):
        logger.info("%s held a mask's values (±inf, ±1e30, masked Softmax positions): left float", group[0])
        return enc.float_encoding(32)
    # A Softmax input's rule decides its group's range (its clamp only drops scores the Softmax ignores);
    # merged first, so a histogram or min-max observer of a Reshape before it joins that rule.
    seen = sorted(
        (observers[t] for t in group if t in observers and observers[t].count),
        key=lambda observer: not isinstance(observer, SoftmaxInput),
    )
    if not seen and any(t in observers for t in group):  # calibrated, empty in every sample: nothing to put on a grid
        logger.info("%s held no value in any calibration sample: left float", group[0])
        return enc.float_encoding(32)
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
    lo = max(lo, _floor_past_max_readers(facts, group, observers, lo))
    lo, hi = with_headroom(lo, hi, chosen.headroom if chosen is not None else 1.0)
    grid = _calibrated_grid(observers, overrides, bitwidth, gridded)
    live = _within_live_interval(facts, group, lo, hi, bitwidth, grid)
    return enc.with_schema(schema, *live, bitwidth, pow2=pow2)


# A grid raised to 16 bits for precision (mixed precision's choice, an LSTM cell state) is this much wider than
# its calibrated range (with_headroom): mixed precision judges a trial on the calibration samples, whose values
# the range holds by construction, so it cannot see the clipping that decides held-out accuracy; float16 never
# clips, and int16 is otherwise chosen as its equal.
RAISED_HEADROOM = 2.0


def with_headroom(lo: float, hi: float, factor: float) -> tuple[float, float]:
    """[lo, hi] made `factor` times as wide, the room split over its ends beyond 0 (a non-negative tensor stays
    so). Calibration's range is fitted to the samples that will judge it, so no measurement on them shows the
    clipping of a value past it on new inputs (MTCNN ONet's box regression: calibrated max 0.37, held-out 0.57;
    its 16-bit grid 33 dB on the calibration crops, 18.6 on held-out ones). A grid raised to 16 bits for
    precision can spend one of its 8 extra bits on room: 6 dB of rounding noise on a ~90 dB grid."""
    ends = (lo < 0) + (hi > 0)
    if factor <= 1 or not ends:
        return lo, hi
    room = (hi - lo) * (factor - 1) / ends
    return (lo - room if lo < 0 else lo), (hi + room if hi > 0 else hi)


MAX_OPS = frozenset({"MaxPool", "GlobalMaxPool", "ReduceMax"})


def _floor_past_max_readers(facts: GraphFacts, group: list[str], observers: dict[str, Observer], lo: float) -> float:
    """The smallest value seen in the members whose low values count (module docstring), or `lo`. A member
    counts unless it is read only by maxes, or by data-invariant ops whose outputs are (a Reshape before the
    pool)."""
    # not a closure calling itself: that is a reference cycle, and it kept `facts` (and its model) until the
    # cycle collector ran: a bc fold's 52 MB copy of ddddocr's CTC weights lived on beside the next fold's
    max_only = functools.partial(_read_only_by_maxes, facts, set(group), {})
    if not any(max_only(t) for t in group):
        return lo
    seen = [observers[t] for t in group if t in observers and observers[t].count and not max_only(t)]
    counted = [MinMax.range(o)[0] for o in seen]  # type: ignore[arg-type]
    return min(counted) if counted else lo


def _read_only_by_maxes(facts: GraphFacts, members: set[str], memo: dict[str, bool], t: str) -> bool:
    """Whether `t` is read only by maxes within `members`, or by data-invariant ops whose outputs are (`memo`)."""
    if t not in memo:
        readers = facts.consumers.get(t, [])
        memo[t] = t not in facts.graph_outputs and bool(readers) and all(
            members.intersection(c.output) and (c.op_type in MAX_OPS or (
                rule_for(c).shares_input_encoding and all(_read_only_by_maxes(facts, members, memo, o) for o in c.output)))
            for c in readers
        )  # fmt: skip
    return memo[t]


Grid = tuple[float, float, float]  # lo, hi, step


def live_interval(
    facts: GraphFacts, group: list[str], output_grid: Callable[[str], Grid | None] | None = None
) -> tuple[float, float] | None:
    """The interval outside which every reader of the group (none of them a graph output) is flat, or None. With
    `output_grid` (a tensor's grid, or None), a Sigmoid or Tanh is flat where its output rounds to its grid's end."""
    members = set(group)
    readers = [(c, t) for t in group for c in facts.consumers.get(t, []) if not members.intersection(c.output)]
    if not readers or members & facts.graph_outputs:
        return None

    def flat(node: onnx.NodeProto, t: str) -> tuple[float, float] | None:
        grid = output_grid(node.output[0]) if output_grid is not None else None
        if gates_itself(facts, node, t):  # x · Sigmoid(x): a SiLU, read with its Sigmoid
            below = None if grid is None else silu_saturates_below(grid[0], grid[2])
            return None if below is None else (below, math.inf)
        if node.input[0] != t:
            return None
        found = flat_outside(node, facts.initializers, facts.array)
        return found if found is not None or grid is None else saturates_outside(node, *grid)

    intervals = [flat(c, t) for c, t in readers]
    if any(i is None for i in intervals):
        return None
    return min(i[0] for i in intervals), max(i[1] for i in intervals)  # type: ignore[index]


def gates_itself(facts: GraphFacts, node: onnx.NodeProto, t: str) -> bool:
    """Is `node` a Mul of `t` and a Sigmoid of `t` (a SiLU written out: YOLOv5/v8, EfficientNet's swish)?"""
    if node.op_type != "Mul" or len(node.input) != 2 or list(node.input).count(t) != 1:
        return False
    gate = facts.producers.get(node.input[1] if node.input[0] == t else node.input[0])
    return gate is not None and gate.op_type == "Sigmoid" and gate.input[0] == t


def encoding_grid(e: Encoding) -> Grid | None:
    """A per-tensor integer encoding's grid; None for a float or per-channel one."""
    return None if e.is_float or len(e.scale) != 1 else (e.min[0], e.max[0], e.scale[0])


def _calibrated_grid(
    observers: dict[str, Observer], overrides: Encodings, bitwidth: int, gridded: frozenset[str] | None = None
) -> Callable[[str], Grid | None]:
    """A tensor's grid before its group's encoding is chosen: its override's, else its observed range (widened by
    its override's headroom: a raised grid reaches past it) at the wider of `bitwidth` and its override's (a finer
    step than its group may get cuts less, never more)."""

    def grid(tensor: str) -> Grid | None:
        if gridded is not None and tensor not in gridded:  # left float: no grid rounds its output (--target ort-cpu's Tanh)
            return None
        given = overrides.activations.get(tensor)
        if given is not None and (given.is_float or given.scale):
            return encoding_grid(given)
        observer = observers.get(tensor)
        if observer is None or not observer.count:
            return None
        lo, hi = with_headroom(*MinMax.range(observer), given.headroom if given is not None else 1.0)  # type: ignore[arg-type]
        bits = max(bitwidth, given.bitwidth if given is not None else 0)
        return lo, hi, (max(hi, 0.0) - min(lo, 0.0)) / (2**bits - 1)

    return grid


def _within_live_interval(
    facts: GraphFacts, group: list[str], lo: float, hi: float, bitwidth: int, output_grid: Callable[[str], Grid | None]
) -> tuple[float, float]:
    """[lo, hi] cut to the interval outside which every reader of the group is flat (module docstring),
    one grid step beyond each cut end other than 0 (which every grid holds exactly): the grid's end must lie
    past the bound, or every value beyond it would read as a value just inside (HardSwish(−2.98) = −0.0099,
    not 0: a bias on most of a map)."""
    live = live_interval(facts, group, output_grid)
    if live is None:
        return lo, hi
    first, last = live
    if hi < first or lo > last:  # every value in one flat part: its end reads the same
        return (first, first) if hi < first else (last, last)
    cut_lo, cut_hi = max(lo, first), min(hi, last)
    step = (cut_hi - cut_lo) / (2**bitwidth - 1)
    return (cut_lo - step * (cut_lo != 0) if lo < first else lo), (cut_hi + step * (cut_hi != 0) if hi > last else hi)

"""Outlier split: a transformer MLP's few outlier hidden units computed in a branch of their own.

In trained encoders one or a few hidden units of an MLP fire 3-5x higher than all the others (the units
that write the residual stream's outlier channels; all-MiniLM-L6-v2: one unit reaches 24.7 after GELU
where the other 1535 stay below 6). The activation output shares one 8-bit grid, so that unit sets the
step of every other unit, and the second MatMul sums their noise. The MLP

    y = act(x·W1 + b1)·W2 + b2

is rewritten, exactly in float, over the hidden units O (outliers) and N (the rest):

    y = (act(x·W1[:, N] + b1[N])·W2[N, :] + b2) + act(x·W1[:, O] + b1[O])·W2[O, :]

A gated MLP, (act(x·Wg) * x·Wu)·Wd as T5 and Llama write it, splits the same way: both ups' columns, the
elementwise nodes between (a GELU written op by op too, a bias or a PReLU slope split with them) and Wd's rows.
flan-t5's encoder: one to twelve units of 1024 in each MLP, max 7897 -> 1079 in block 6.
The original nodes keep their names and compute the N part, so overrides and reports on them still
match; the O branch's tensors are named `<tensor>_outliers`, and the sum keeps the MLP output's name.
Each branch is an ordinary MatMul + bias → activation → MatMul with per-tensor 8-bit grids, so every
integer runtime runs it; the O branch's output, like the MLP output it is added to, is a residual-stream
operand (`--use_per_channel_residual` gives it a grid per channel).

Which units: with each unit's calibrated range [lo_j, hi_j] and the 2-norm of its W2 row r_j, a per-tensor
grid over a set S has step ∝ range(S), and the noise it puts on y is ∝ range(S)² · Σ_{j∈S} r_j². The k
largest units (k ≤ `max_units`) go to O when that estimate, summed over both branches, falls to at most
half of the unsplit one (3 dB); an MLP whose units are even stays as it is.
With `keep: auto` (default) the rewrite is kept only when the quantized output SQNR improves.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.errors import UsageError
from qtool.graph.model import copy
from qtool.quant.algorithms import AlgorithmContext, check_config, kept_if_better
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.residual import observe_channels

logger = logging.getLogger(__name__)

STAGE = "float"
SETTINGS = frozenset({"num_batches", "max_units", "keep"})  # --config keys
ACTIVATIONS = frozenset({"Gelu", "FastGelu", "Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softplus"})
MAX_UNITS = 16  # the O branch's width at most; wider outlier sets are not what this addresses
MIN_GAIN = 2.0  # estimated noise at most half of the unsplit MLP's


@dataclass(frozen=True)
class Mlp:
    """MatMul → elementwise nodes → MatMul, every weight 2-D and used once: a bias and an activation (one op, or
    written op by op as T5's gelu_new is), or a gate, act(x·Wg) * x·Wu (T5's gated GELU, Llama's SwiGLU)."""

    ups: tuple[onnx.NodeProto, ...]  # the MatMuls whose output columns are the hidden units
    interior: tuple[onnx.NodeProto, ...]  # in graph order: the elementwise nodes from the ups to `hidden`
    down: onnx.NodeProto  # the MatMul that reads `hidden`
    down_bias_add: onnx.NodeProto | None  # the Add of its bias constant

    @property
    def hidden(self) -> str:
        return self.down.input[0]

    @property
    def output(self) -> str:
        return (self.down_bias_add or self.down).output[0]

    def tensors(self) -> list[str]:
        """Every tensor from the ups to `hidden`: one value per hidden unit along the last axis."""
        return [node.output[0] for node in (*self.ups, *self.interior)]


def _single_use_weight(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    weight = node.input[1] if len(node.input) > 1 else ""
    return (
        weight in facts.initializers
        and len(facts.initializers[weight].dims) == 2
        and len(facts.consumers.get(weight, [])) == 1
    )


def _bias_add_after(facts: GraphFacts, matmul: onnx.NodeProto) -> tuple[onnx.NodeProto, str] | None:
    readers = facts.consumers.get(matmul.output[0], [])
    if len(readers) != 1 or (found := facts.bias_add(readers[0])) is None or found[0] is not matmul:
        return None
    if len(facts.consumers.get(found[1], [])) != 1:
        return None
    return readers[0], found[1]


# what a hidden unit's value goes through, unit by unit, on its way to the down MatMul: a split computes the same
ELEMENTWISE = ACTIVATIONS | {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Sqrt", "Exp", "Neg", "Abs", "Clip", "PRelu",
                             "HardSigmoid", "HardSwish", "Mish", "Softsign", "Selu", "Celu", "ThresholdedRelu"}  # fmt: skip
MAX_INTERIOR = 32  # a GELU written op by op is 8; more is not an MLP's activation


def _unit_constant(facts: GraphFacts, name: str, units: int) -> bool:
    """A constant every unit reads alike (one value) or one value per unit (a bias, a PReLU slope: split too)."""
    dims = list(facts.initializers[name].dims)
    size = int(np.prod(dims)) if dims else 1
    return size == 1 or (size == units and dims[-1] == units and len(facts.consumers.get(name, [])) == 1)


def _mlp_into(facts: GraphFacts, down: onnx.NodeProto) -> Mlp | None:
    """The MLP whose last MatMul is `down`, walking back from its input to MatMuls of as many columns as it has
    rows; None unless everything between is elementwise and read by nothing else."""
    units, ups, interior, seen, stack = facts.initializers[down.input[1]].dims[0], [], [], set(), [down.input[0]]
    while stack:
        if (tensor := stack.pop()) in seen:
            continue
        seen.add(tensor)
        node = facts.producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "MatMul" and _single_use_weight(facts, node) and facts.initializers[node.input[1]].dims[1] == units:
            ups.append(node)
            continue
        if node.op_type not in ELEMENTWISE or len(interior) == MAX_INTERIOR:
            return None
        interior.append(node)
        for name in filter(None, node.input):
            if name not in facts.initializers:
                stack.append(name)
            elif not _unit_constant(facts, name, units):
                return None
    if not ups or not any(node.op_type not in ("Add", "Sub", "Mul", "Div") for node in interior):
        return None
    if any(up.input[0] in seen for up in ups):  # an up reading the units themselves: narrowed, its rows would not meet
        return None
    members = {id(node) for node in (*ups, *interior, down)}
    if any(t in facts.graph_outputs or any(id(r) not in members for r in facts.consumers.get(t, [])) for t in seen):
        return None
    bias_after = _bias_add_after(facts, down)
    if bias_after and down.output[0] in facts.graph_outputs:  # the sum takes the biased output's name, not this one's
        return None
    order = {id(node): k for k, node in enumerate(facts.model.graph.node)}
    return Mlp(tuple(ups), tuple(sorted(interior, key=lambda n: order[id(n)])), down, bias_after[0] if bias_after else None)


def find_mlps(facts: GraphFacts) -> list[Mlp]:
    found = []
    for down in facts.model.graph.node:
        if down.op_type != "MatMul" or not _single_use_weight(facts, down):
            continue
        if (mlp := _mlp_into(facts, down)) is not None:
            found.append(mlp)
    return found


def choose_units(lo: np.ndarray, hi: np.ndarray, row_norms: np.ndarray, max_units: int = MAX_UNITS) -> np.ndarray:
    """The hidden units to move to the O branch (module docstring), in increasing order; empty if none pays."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    order = np.argsort(-(hi - lo), kind="stable")
    weight = row_norms.astype(np.float64) ** 2

    def noise(units: np.ndarray) -> float:
        return float((hi[units].max() - lo[units].min()) ** 2 * weight[units].sum()) if units.size else 0.0

    unsplit = noise(order)
    best, best_k = unsplit, 0
    for k in range(1, min(max_units, hi.size - 1) + 1):
        estimate = noise(order[:k]) + noise(order[k:])
        if estimate < best:
            best, best_k = estimate, k
    if best_k == 0 or best * MIN_GAIN > unsplit:
        return np.zeros(0, np.int64)
    return np.sort(order[:best_k])


def _split(ctx: AlgorithmContext, mlp: Mlp, units: np.ndarray) -> str:
    """Rewrite `mlp` (module docstring); returns the O branch's output."""
    w2 = ctx.array(mlp.down.input[1])
    rest = np.setdiff1d(np.arange(w2.shape[0]), units)
    made = set(mlp.tensors())
    new = ctx.model.graph.initializer  # in the weights' own dtype (set_array adds float32: a float16 model's would not load)
    split: set[str] = set()

    def branch_of(constant: str) -> str:
        if constant in split:  # a node that reads it twice (b * b): split once
            return f"{constant}_outliers"
        value = ctx.array(constant)
        if value.size == 1:  # read alike by every unit: shared
            return constant
        split.add(constant)
        new.append(numpy_helper.from_array(value[..., units], f"{constant}_outliers"))
        ctx.set_array(constant, value[..., rest])
        return f"{constant}_outliers"

    nodes = []
    for up in mlp.ups:
        w1 = ctx.array(up.input[1])
        new.append(numpy_helper.from_array(w1[:, units], f"{up.input[1]}_outliers"))
        ctx.set_array(up.input[1], w1[:, rest])
        nodes.append(helper.make_node("MatMul", [up.input[0], f"{up.input[1]}_outliers"], [f"{up.output[0]}_outliers"],
                                      name=f"{up.name or up.output[0]}_outliers"))  # fmt: skip
    for node in mlp.interior:
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f"{node.name or node.output[0]}_outliers"  # an unnamed node goes by its output
        twin.input[:] = [f"{i}_outliers" if i in made else branch_of(i) if i else i for i in node.input]
        twin.output[:] = [f"{o}_outliers" for o in node.output]
        nodes.append(twin)
    y = f"{mlp.output}_outliers"
    new.append(numpy_helper.from_array(w2[units, :], f"{mlp.down.input[1]}_outliers"))
    ctx.set_array(mlp.down.input[1], w2[rest, :])
    down = mlp.down.name or mlp.down.output[0]
    nodes.append(helper.make_node("MatMul", [f"{mlp.hidden}_outliers", f"{mlp.down.input[1]}_outliers"], [y], name=f"{down}_outliers"))
    last = mlp.down_bias_add or mlp.down
    output = last.output[0]
    last.output[0] = f"{output}_main"
    nodes.append(helper.make_node("Add", [last.output[0], y], [output], name=f"{down}_outliers_sum"))
    for name in made:  # the O branch up to `hidden`: k units wide; the original, the others
        ctx.declare(f"{name}_outliers", like=name, last_dim=units.size)
        ctx.declare(name, like=name, last_dim=rest.size)
    for name in (y, last.output[0]):
        ctx.declare(name, like=output)
    graph_nodes = ctx.model.graph.node
    at = next(k for k, n in enumerate(graph_nodes) if n is last or (n.output and n.output[0] == last.output[0]))
    for k, node in enumerate(nodes):
        graph_nodes.insert(at + 1 + k, node)
    return y


def run(ctx: AlgorithmContext) -> list[str]:
    check_config("outlier_split", ctx.config, SETTINGS)
    keep, max_units = ctx.config.get("keep", "auto"), ctx.config.get("max_units", MAX_UNITS)
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
        raise UsageError(f"outlier_split: max_units must be a positive integer, not {max_units!r}", where="--config")
    mlps = find_mlps(GraphFacts.of(ctx.model))
    if not mlps:
        logger.warning("outlier_split: no MatMul -> activation (or gate) -> MatMul with constant weights; nothing split")
        return ["outlier_split: no matching pattern"]
    samples = itertools.islice(ctx.samples(), int(ctx.config.get("num_batches", 32)))
    ranges = observe_channels(ctx.model, [m.hidden for m in mlps], samples, ctx.threads)
    before = copy(ctx.model)
    layers, split_nodes, rewritten = [], set(), []
    for mlp in mlps:
        if (seen := ranges.get(mlp.hidden)) is None:
            continue
        if split_nodes & {id(node) for node in (*mlp.ups, mlp.down)}:
            # a chain of MLPs (DETR's box head: Linear, ReLU, Linear, ReLU, Linear): the MatMul between them was
            # split already, as this one's up, and a second split of it would drop the first one's branch
            continue
        units = choose_units(seen.channel_lo, seen.channel_hi, np.linalg.norm(ctx.array(mlp.down.input[1]), axis=1), max_units)
        if units.size:
            rest_hi = np.delete(seen.channel_hi, units).max()
            _split(ctx, mlp, units)
            rewritten += mlp.tensors()  # narrowed to the other units
            split_nodes |= {id(node) for node in (*mlp.ups, mlp.down)}
            layers.append(f"{mlp.hidden} ({units.size} of {seen.channel_hi.size} units, max {seen.channel_hi.max():.3g} -> {rest_hi:.3g})")
            logger.info("outlier_split: %s", layers[-1])
    if not layers:
        return ["outlier_split: no MLP has outlier units"]
    note = f"outlier_split: {len(layers)} MLPs split: " + ", ".join(layers)
    return kept_if_better(ctx, "outlier_split", before, note, keep, rewritten)

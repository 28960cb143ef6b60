"""Outlier split: a transformer MLP's few outlier hidden units computed in a branch of their own.

In trained encoders one or a few hidden units of an MLP fire 3-5x higher than all the others (the units
that write the residual stream's outlier channels; all-MiniLM-L6-v2: one unit reaches 24.7 after GELU
where the other 1535 stay below 6). The activation output shares one 8-bit grid, so that unit sets the
step of every other unit, and the second MatMul sums their noise. The MLP

    y = act(x·W1 + b1)·W2 + b2

is rewritten, exactly in float, over the hidden units O (outliers) and N (the rest):

    y = (act(x·W1[:, N] + b1[N])·W2[N, :] + b2) + act(x·W1[:, O] + b1[O])·W2[O, :]

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
    """MatMul (+ bias) → elementwise activation → MatMul (+ bias), every weight 2-D and used once."""

    up: onnx.NodeProto  # the first MatMul
    up_bias: str | None
    act: onnx.NodeProto
    down: onnx.NodeProto  # the second MatMul
    down_bias_add: onnx.NodeProto | None  # the Add of its bias constant

    @property
    def output(self) -> str:
        return (self.down_bias_add or self.down).output[0]


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


def find_mlps(facts: GraphFacts) -> list[Mlp]:
    found = []
    for act in facts.model.graph.node:
        if act.op_type not in ACTIVATIONS or len(act.input) != 1 or act.output[0] in facts.graph_outputs:
            continue
        source = facts.producers.get(act.input[0])
        if source is None or len(facts.consumers.get(act.input[0], [])) != 1:
            continue
        up_bias = None
        if source.op_type == "Add":
            if (fused := facts.bias_add(source)) is None or len(facts.consumers.get(fused[1], [])) != 1:
                continue
            source, up_bias = fused
        readers = facts.consumers.get(act.output[0], [])
        if source.op_type != "MatMul" or not _single_use_weight(facts, source) or len(readers) != 1:
            continue
        down = readers[0]
        if down.op_type != "MatMul" or down.input[0] != act.output[0] or not _single_use_weight(facts, down):
            continue
        if down.output[0] in facts.graph_outputs:
            continue
        bias_after = _bias_add_after(facts, down)
        found.append(Mlp(source, up_bias, act, down, bias_after[0] if bias_after else None))
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
    w1, w2 = ctx.array(mlp.up.input[1]), ctx.array(mlp.down.input[1])
    rest = np.setdiff1d(np.arange(w1.shape[1]), units)
    hidden = mlp.act.output[0]
    branch = {k: f"{t}_outliers" for k, t in (("w1", mlp.up.input[1]), ("w2", mlp.down.input[1]), ("z", mlp.act.input[0]), ("h", hidden))}
    branch["y"] = f"{mlp.output}_outliers"
    new = ctx.model.graph.initializer  # in the weights' own dtype (set_array adds float32: a float16 model's would not load)
    new.extend([numpy_helper.from_array(w1[:, units], branch["w1"]), numpy_helper.from_array(w2[units, :], branch["w2"])])
    ctx.set_array(mlp.up.input[1], w1[:, rest])
    ctx.set_array(mlp.down.input[1], w2[rest, :])
    up, down = (n.name or n.output[0] for n in (mlp.up, mlp.down))  # an unnamed node goes by its output
    nodes = [helper.make_node("MatMul", [mlp.up.input[0], branch["w1"]], [branch["z"]], name=f"{up}_outliers")]
    if mlp.up_bias is not None:
        b1 = ctx.array(mlp.up_bias)
        new.append(numpy_helper.from_array(b1[..., units], f"{mlp.up_bias}_outliers"))
        ctx.set_array(mlp.up_bias, b1[..., rest])
        nodes[0].output[0] = f"{branch['z']}_matmul"
        nodes.append(helper.make_node("Add", [nodes[0].output[0], f"{mlp.up_bias}_outliers"], [branch["z"]], name=f"{up}_outliers_bias"))
    act = onnx.NodeProto()
    act.CopyFrom(mlp.act)
    act.name, act.input[0], act.output[0] = f"{mlp.act.name or hidden}_outliers", branch["z"], branch["h"]
    nodes += [act, helper.make_node("MatMul", [branch["h"], branch["w2"]], [branch["y"]], name=f"{down}_outliers")]
    last = mlp.down_bias_add or mlp.down
    output = last.output[0]
    last.output[0] = f"{output}_main"
    nodes.append(helper.make_node("Add", [last.output[0], branch["y"]], [output], name=f"{down}_outliers_sum"))
    for name in dict.fromkeys([mlp.up.output[0], mlp.act.input[0], hidden]):
        ctx.declare(name, like=name, last_dim=rest.size)
    for name in {n.output[0] for n in nodes[:-2]}:  # the O branch up to its activation: k units wide
        ctx.declare(name, like=hidden, last_dim=units.size)
    for name in (branch["y"], last.output[0]):
        ctx.declare(name, like=output)
    graph_nodes = ctx.model.graph.node
    at = next(k for k, n in enumerate(graph_nodes) if n is last or (n.output and n.output[0] == last.output[0]))
    for k, node in enumerate(nodes):
        graph_nodes.insert(at + 1 + k, node)
    return branch["y"]


def run(ctx: AlgorithmContext) -> list[str]:
    check_config("outlier_split", ctx.config, SETTINGS)
    keep, max_units = ctx.config.get("keep", "auto"), ctx.config.get("max_units", MAX_UNITS)
    if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
        raise UsageError(f"outlier_split: max_units must be a positive integer, not {max_units!r}", where="--config")
    mlps = find_mlps(GraphFacts.of(ctx.model))
    if not mlps:
        logger.warning("outlier_split: no MatMul -> activation -> MatMul with constant weights; nothing split")
        return ["outlier_split: no matching pattern"]
    samples = itertools.islice(ctx.samples(), int(ctx.config.get("num_batches", 32)))
    ranges = observe_channels(ctx.model, [m.act.output[0] for m in mlps], samples, ctx.threads)
    before = copy(ctx.model)
    layers, split_nodes, rewritten = [], set(), []
    for mlp in mlps:
        if (seen := ranges.get(mlp.act.output[0])) is None:
            continue
        if split_nodes & {id(mlp.up), id(mlp.down)}:
            # a chain of MLPs (DETR's box head: Linear, ReLU, Linear, ReLU, Linear): the MatMul between them was
            # split already, as this one's up, and a second split of it would drop the first one's branch
            continue
        units = choose_units(seen.channel_lo, seen.channel_hi, np.linalg.norm(ctx.array(mlp.down.input[1]), axis=1), max_units)
        if units.size:
            rest_hi = np.delete(seen.channel_hi, units).max()
            _split(ctx, mlp, units)
            rewritten += [mlp.up.output[0], mlp.act.input[0], mlp.act.output[0]]  # narrowed to the other units
            split_nodes |= {id(mlp.up), id(mlp.down)}
            layers.append(f"{mlp.act.output[0]} ({units.size} of {seen.channel_hi.size} units, max {seen.channel_hi.max():.3g} -> {rest_hi:.3g})")
            logger.info("outlier_split: %s", layers[-1])
    if not layers:
        return ["outlier_split: no MLP has outlier units"]
    note = f"outlier_split: {len(layers)} MLPs split: " + ", ".join(layers)
    return kept_if_better(ctx, "outlier_split", before, note, keep, rewritten)

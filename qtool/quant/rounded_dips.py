"""SiLU, HardSwish and GELU outputs whose 8-bit grid step is deeper than the activation's dip below 0.

Such an output spans a wide range (YOLOv8's second SiLU: [-0.28, 222], a step of 0.87) while about half its values
sit in the dip, within 0.28 of 0: they all round to 0 (or one level), an error of one sign that the next layer sums
over its fan-in, and that every later layer carries. An early layer's error reaches every output: nudenet's
YOLOv8n class scores 11.5 -> 17.6 dB (calibration samples) with that one tensor at 16 bits, F1 against the float
model's boxes 91.7 -> 95.1 % held out (its input x too: 95.2 %, 20.1 dB on those samples but 17.6 held out). The
default plan raises such outputs to 16 bits (plan.build_plan) where a Conv, Gemm or MatMul sums them on that grid
(summed_on_its_grid); inspect lints them on a written model, and quantize's warning names them where they stay 8-bit.
"""

from __future__ import annotations

from collections.abc import Callable

from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import gates_itself
from qtool.quant.rules import rule_for

# the deepest value of each activation's negative lobe: SiLU (x * Sigmoid(x)) at x = -1.28, HardSwish at -1.5,
# GELU at -0.75
DIP_DEPTHS = {"SiLU": 0.2785, "HardSwish": 0.375, "Gelu": 0.17}
SUMMING_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def dips(facts: GraphFacts) -> dict[str, str]:
    """SiLU, HardSwish and GELU outputs: tensor -> the activation's name."""
    found = {}
    for node in facts.model.graph.node:
        if node.op_type in ("HardSwish", "Gelu"):
            found[node.output[0]] = node.op_type
        elif any(gates_itself(facts, node, t) for t in node.input[:2]):
            found[node.output[0]] = "SiLU"
    return found


def rounded_dips(facts: GraphFacts, step: Callable[[str], float | None]) -> list[tuple[str, str, float]]:
    """(tensor, activation, its grid step) of the SiLU / HardSwish / GELU outputs whose one-grid step is deeper than
    the activation's dip: the negative values all round to zero (or to one level), an error of one sign that the
    next layer sums over its fan-in. YOLOv8's first SiLU, range [-0.28, 155], step 0.61: nudenet 29.6 -> 9.9 dB."""
    found = []
    for tensor, op in dips(facts).items():
        s = step(tensor)
        if s is not None and s > DIP_DEPTHS[op]:
            found.append((tensor, op, s))
    return sorted(found, key=lambda t: -t[2] / DIP_DEPTHS[t[1]])


def summed_on_its_grid(facts: GraphFacts, tensor: str) -> bool:
    """Whether every reader of `tensor`, past ops that move its values on its grid (Split, Reshape, MaxPool), is a
    Conv, Gemm or MatMul: 16 bits on it then reach the layer that sums the dip. Not where a Concat joins it (its grid
    is the group's, which a raise lifts whole: PP-OCRv5's recogniser's SiLU, 8-bit only on its partner's range, went
    16.0 -> 15.7 dB held out raised), nor where an op makes a grid of its own (a learnable-affine Mul, a residual Add),
    on which the dip, scaled or shifted, rounds again (its HardSwish raised: 16.01 dB either way)."""
    pending, seen = [tensor], set()
    while pending:
        name = pending.pop()
        readers = facts.consumers.get(name, [])
        if not readers or name in facts.graph_outputs:
            return False
        for node in readers:
            if node.op_type in SUMMING_LAYERS and node.domain in ("", "ai.onnx"):
                continue
            if not rule_for(node).shares_input_encoding:
                return False
            pending.extend(o for o in node.output if o and o not in seen)
            seen.update(node.output)
    return True

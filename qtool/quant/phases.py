"""The argument of a Sin or Cos is a phase: it stays float, and so does the position arithmetic that makes it.

A periodic op turns its input's absolute rounding error into a phase error, and its input's range spans
many periods: a rotary embedding's angles (position · inverse frequency, as every Llama, Qwen, Phi or GPT-NeoX
export computes them) reach the context length in radians. On an 8-bit grid over [0, 34] rad one step is
0.13 rad; a 4-layer Llama's decode step lost 6 dB of logit SQNR to its Sin alone (its worst layer). No grid
that spans a context's positions keeps a phase: 16 bits over 4096 positions is still 0.06 rad a step.

So: each Sin or Cos input, and every float tensor before it computed from no float model input (positions:
Cast(position_ids) and its products with constants), stays float. The cos / sin tables (in [−1, 1]) are
activations like any other, quantized where they meet the data. A Sin of data (SIREN, Fourier features)
keeps its input float too, for the same reason; what computes that input from the data stays quantized.
"""

from __future__ import annotations

from qtool import runtime
from qtool.quant.graph_facts import GraphFacts

PERIODIC = frozenset({"Sin", "Cos"})


def phases(facts: GraphFacts) -> set[str]:
    """The float tensors that stay float as phases (module docstring)."""
    data = runtime.downstream(facts.model.graph.node, [n for n in facts.graph_inputs if facts.is_float(n)])
    found: set[str] = set()
    frontier = [n.input[0] for n in facts.model.graph.node if n.op_type in PERIODIC and n.domain in ("", "ai.onnx")]
    while frontier:
        name = frontier.pop()
        if name in found or not facts.is_float(name) or name in facts.initializers:
            continue
        found.add(name)
        producer = facts.producers.get(name)
        if producer is not None and name not in data:  # position arithmetic: walk back to where it starts
            frontier += [i for i in producer.input if i]
    return found

"""Attention: the Softmax inputs and the mask branch that feeds them, found by graph structure.

Exporters write the additive attention mask many ways: `Where(mask, 0, finfo.min)`,
`(1 - mask) * finfo.min` (or -1e4, -1e9), `Where(mask, scores, -inf)`, a causal `Trilu`
constant, broadcast from [B, 1, 1, S]. What they share: the mask is computed from the integer
mask input (or from constants) alone, and joins the scores in the Add (Sub, Where) in front of a
Softmax. That branch stays float, as QNN and onnxruntime run it: a float mask add in front of a
quantized Softmax input. The Softmax input itself is observed per row (observers.SoftmaxInput).
"""

from __future__ import annotations

import onnx

from qtool.quant.graph_facts import GraphFacts
from qtool.quant.rules import rule_for

SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})


def softmax_chains(facts: GraphFacts, tensors: list[str]) -> dict[str, tuple[int, list[str]]]:
    """Softmax input -> (its axis, the tensors sharing its encoding: itself and the data-invariant ops
    (Reshape, Transpose...) that alone lead to it), for float32 inputs among `tensors`."""
    wanted = set(tensors)
    chains: dict[str, tuple[int, list[str]]] = {}
    for node in facts.model.graph.node:
        name = node.input[0] if node.input else ""
        if node.op_type not in SOFTMAX_OPS or node.domain not in ("", "ai.onnx") or name not in wanted:
            continue
        if facts.elem_types.get(name) != onnx.TensorProto.FLOAT or len(facts.consumers.get(name, [])) != 1:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        members, current = [name], name
        while (producer := facts.producers.get(current)) is not None and rule_for(producer).shares_input_encoding:
            source = producer.input[0] if producer.input else ""
            if source not in wanted or len(facts.consumers.get(source, [])) != 1 or _other_outputs_read(facts, producer):
                break  # a Split's other parts go elsewhere (YOLOv8's class logits beside the DFL Softmax's boxes)
            members.append(source)
            current = source
        chains[name] = (axis, members)
    return chains


def _other_outputs_read(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    """Whether more than one output of `node` is read (or given out): its input feeds more than one chain."""
    return sum(1 for o in node.output if o and (facts.consumers.get(o) or o in facts.graph_outputs)) > 1


MASK_JOINS = frozenset({"Add", "Sub", "Where"})


def _chain_head(facts: GraphFacts, name: str) -> str:
    """Walk back from a Softmax input over data-invariant ops (Reshape, Transpose) with one user."""
    while (producer := facts.producers.get(name)) is not None and rule_for(producer).shares_input_encoding:
        source = producer.input[0] if producer.input else ""
        if not source or len(facts.consumers.get(source, [])) != 1:
            break
        name = source
    return name


def data_tensors(facts: GraphFacts) -> set[str]:
    """Tensors that depend on a float graph input or on an embedding lookup (a Gather of a float table by
    computed indices): the data path, graph nodes in topological order. A text model's inputs are all integers
    (token ids and the mask): its data starts at the Gather of its token table, its mask at a Cast of the mask."""
    data = {t for t in facts.graph_inputs if facts.is_float(t)}
    dynamic = set(facts.graph_inputs)
    for node in facts.model.graph.node:
        lookup = node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in facts.initializers
        if any(i in data for i in node.input if i) or (lookup and node.input[1] in dynamic and facts.is_float(node.input[0])):
            data.update(o for o in node.output if o)
        if any(i in dynamic for i in node.input if i):
            dynamic.update(o for o in node.output if o)
    return data


def mask_branch(facts: GraphFacts) -> set[str]:
    """Float tensors of the mask branches: off the data path, joining it at a Softmax input's Add/Sub/Where; and
    those a mask's fill reaches on the way into a Softmax input (_filled) but masked_softmax_inputs' own."""
    branch, joined = _masks(facts)
    return branch | (_filled(facts) - joined)


MASK_FILL = -1000.0  # a Where writing a constant this low writes a mask (-1e4, -1e9, finfo.min, -inf), not data


def _filled(facts: GraphFacts) -> set[str]:
    """Float tensors holding a mask's fill on its way into a Softmax input: written by a Where whose constant value
    input is all at or below MASK_FILL, or by an Add, Sub, Where or Concat reading one, behind the Softmax input's
    chain. A mask computed from the data (atspm-detector's funcnet head: log prior probabilities, -1e4 where a
    candidate is out, added to the scores, a null column concatenated) is on the data path, so _masks does not
    see it, and an 8-bit grid spanning -1e4 (a step of 39) wiped out the scores and priors beside it."""
    tree: set[str] = set()
    for node in facts.model.graph.node:
        stack = [_chain_head(facts, node.input[0])] if node.op_type in SOFTMAX_OPS and node.input else []
        while stack:
            name = stack.pop()
            producer = facts.producers.get(name)
            if name in tree or producer is None or producer.op_type not in {*MASK_JOINS, "Concat"}:
                continue
            tree.add(name)
            stack += [i for i in producer.input if i and i not in facts.initializers]
    filled: set[str] = set()
    for node in facts.model.graph.node:  # topological: a join's inputs are decided before it
        out = node.output[0] if node.output else ""
        fill = node.op_type == "Where" and any(i in facts.initializers and (facts.array(i) <= MASK_FILL).all() for i in node.input[1:])
        if out in tree and (fill or any(i in filled for i in node.input)):
            filled.add(out)
    return {t for t in filled if facts.is_float(t)}


def masked_softmax_inputs(facts: GraphFacts) -> set[str]:
    """The Softmax inputs a mask branch joins, from the join on: they read float whether or not the calibration
    samples were padded. On a grid fitted to unpadded ones a padded key clamps to the lowest real score, a few
    units below its row's best: it took 65-92% of DistilBERT's attention (float: 0)."""
    return _masks(facts)[1]


def _masks(facts: GraphFacts) -> tuple[set[str], set[str]]:
    data = data_tensors(facts)
    found: set[str] = set()
    joined: set[str] = set()
    for node in facts.model.graph.node:
        if node.op_type not in SOFTMAX_OPS or not node.input:
            continue
        head = _chain_head(facts, node.input[0])
        joint = facts.producers.get(head)
        if joint is None or joint.op_type not in MASK_JOINS or not any(i in data for i in joint.input):
            continue
        stack = [i for i in joint.input if i and i not in data and i not in facts.initializers]
        while stack:
            name = stack.pop()
            if name in found or name in data:
                continue
            found.add(name)
            producer = facts.producers.get(name)
            if producer is not None:
                stack += [i for i in producer.input if i and i not in facts.initializers]
        if any(i in found for i in joint.input):  # a mask joins here
            name = node.input[0]
            joined.add(name)
            while name != head and (producer := facts.producers.get(name)) is not None:
                name = producer.input[0]
                joined.add(name)
    return {t for t in found if facts.is_float(t)}, {t for t in joined if facts.is_float(t)}

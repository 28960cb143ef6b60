"""Fuse a written-out Softmax, Exp(x − m) / ReduceSum(Exp(x − m)) with m constant along the summed axis (the
row's max), into Softmax, with the layout op an exporter put after the Exp (and the sum) moved after it.

Written out, each step is quantized on its own: the Exp's output, the sum and the quotient take three 8-bit
grids, and the probabilities are rounded three times (czann's nuclei U-Net, tf2onnx from `tf.exp(x - max) /
reduce_sum`: 0.6 dB behind quantize_static, which leaves Exp and Div in float). QNN, TIDL and the DPU run
Softmax as one op, and qtool's Softmax-input rule then sees its input. Exact up to float rounding: a shift
constant along the axis cancels in the quotient, and Softmax subtracts the row's max itself.

Matched: Div(f(E), g(ReduceSum(E, [a]))) with E = Exp(Sub(x, m)), where f is nothing or a Transpose and g
restores the summed axis the same way (nothing or the same Transpose after a sum that keeps its dims, or a
Reshape to the shape that would give, where it moves no value), and m has size 1 along a.
Every tensor between x and the quotient is read inside the pattern only.

Also the largest probability written out, 1 / ReduceSum(Exp(x − max(x)), [a]) (trueocr's recogniser writes its
per-step confidence so): it becomes ReduceMax(Softmax(x), [a]). Quantized as written, the shifted logits'
8-bit grid (a step of 0.25 over [−64, 0]) put up to 13% of error into every Exp before the sum: held out, that
confidence read 24.4 dB, quantize_static (which leaves the chain float) 27.2; fused, 27.5.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import new_constant, sole_reader, static_dims
from qtool.graph.passes.kept_names import KeepNamesPass

logger = logging.getLogger(__name__)


def _summed_axis(node: ir.Node | None, rank: int, op: str = "ReduceSum") -> tuple[int, bool] | None:
    """(axis, keepdims) of a ReduceSum (or `op`) over exactly one axis."""
    if node is None or node.op_type != op or node.domain != "":
        return None
    keep = node.attributes.get("keepdims")
    keepdims = keep is None or keep.as_int() == 1
    if len(node.inputs) > 1 and node.inputs[1] is not None:  # opset 13: axes is an input
        given = node.inputs[1].const_value
        axes = given.numpy().reshape(-1).tolist() if given is not None else None
    else:
        axes = list(node.attributes["axes"].as_ints()) if "axes" in node.attributes else None
    if not axes or len(axes) != 1 or not -rank <= axes[0] < rank:
        return None
    return axes[0] % rank, keepdims


def _perm(node: ir.Node | None) -> list[int] | None:
    """A Transpose's perm; without the attribute, the reversed axes (the spec's default), or None if its rank is
    unknown."""
    if node is None or node.op_type != "Transpose" or node.domain != "":
        return None
    if "perm" in node.attributes:
        return list(node.attributes["perm"].as_ints())
    dims = static_dims(node.inputs[0])
    return list(reversed(range(len(dims)))) if dims is not None else None


def _reshaped_sum(dims: list[int] | None, axis: int, perm: list[int] | None) -> list[int] | None:
    """The shape a Reshape of the sum must have to stand for it with its axis kept (and moved by the numerator's
    Transpose `perm`), or None where the Transpose reorders values a Reshape cannot."""
    if dims is None or (perm is not None and sorted(perm) != list(range(len(dims)))):
        return None
    kept = [1 if k == axis else d for k, d in enumerate(dims)]
    order = perm if perm is not None else list(range(len(dims)))
    moved = [k for k in order if kept[k] != 1]
    return [kept[k] for k in order] if moved == sorted(moved) else None


def _match(div: ir.Node, graph: ir.Graph) -> tuple[ir.Value, int, list[int] | None, list[ir.Node]] | None:
    """(x, axis, perm of the layout op after it or None, the nodes the Softmax replaces) for a written-out
    Softmax ending at `div`."""
    if div.op_type != "Div" or div.domain != "" or len(div.inputs) != 2:
        return None
    numerator, denominator = div.inputs[0].producer(), div.inputs[1].producer()  # type: ignore[union-attr]
    if numerator is None or denominator is None:
        return None
    layout = numerator if numerator.op_type == "Transpose" else None
    if layout is not None and _perm(layout) is None:
        return None
    exp = numerator.inputs[0].producer() if layout is not None else numerator  # type: ignore[union-attr]
    if exp is None or exp.op_type != "Exp" or exp.domain != "":
        return None
    e = exp.outputs[0]
    readers = [use.node for use in e.uses()]
    total = next((n for n in readers if n.op_type == "ReduceSum"), None)
    if e in graph.outputs or total is None or len(readers) != 2 or (layout or div) not in readers:
        return None
    rank = len(static_dims(e) or [])
    found = _summed_axis(total, rank) if rank else None
    if found is None or sole_reader(total.outputs[0], graph) is None:
        return None
    axis, keepdims = found
    restore = sole_reader(total.outputs[0], graph)
    if restore is div:  # no op between: a sum that kept its dims, and no layout op on the numerator
        ok = keepdims and layout is None
        replaced_denominator = [total]
    else:
        if restore is not denominator or sole_reader(restore.outputs[0], graph) is not div:  # type: ignore[union-attr]
            return None
        if restore.op_type == "Transpose":  # type: ignore[union-attr]
            ok = keepdims and layout is not None and _perm(restore) == _perm(layout)
        elif restore.op_type == "Reshape":  # type: ignore[union-attr]
            ok = static_dims(restore.outputs[0]) == _reshaped_sum(static_dims(e), axis, _perm(layout))  # type: ignore[union-attr]
        else:
            ok = False
        replaced_denominator = [total, restore]  # type: ignore[list-item]
    shifted = exp.inputs[0].producer()  # type: ignore[union-attr]
    if not ok or shifted is None or shifted.op_type != "Sub" or shifted.domain != "":
        return None
    x, shift = shifted.inputs
    shift_dims, x_dims = static_dims(shift), static_dims(x)
    if sole_reader(shifted.outputs[0], graph) is not exp or x_dims is None or shift_dims is None or x_dims != static_dims(e):
        return None
    padded = [1] * (len(x_dims) - len(shift_dims)) + shift_dims
    if len(padded) != len(x_dims) or padded[axis] != 1:  # a shift that varies along the axis is not a Softmax's
        return None
    if layout is not None and sole_reader(layout.outputs[0], graph) is not div:
        return None
    replaced = [shifted, exp, *([layout] if layout is not None else []), *replaced_denominator, div]
    return x, axis, _perm(layout), replaced  # type: ignore[return-value]


def _is_max(m: ir.Value, x: ir.Value, axis: int, rank: int) -> bool:
    """m is x's max along `axis`, the axis kept: ReduceMax(x, keepdims=1), or keepdims=0 and an Unsqueeze back."""
    node = m.producer()
    if node is not None and node.op_type == "Unsqueeze" and node.domain == "":
        given = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
        axes = given.numpy().reshape(-1).tolist() if given is not None else list(node.attributes["axes"].as_ints())
        inner = node.inputs[0].producer()  # type: ignore[union-attr]
        return [a % rank for a in axes] == [axis] and _summed_axis(inner, rank, "ReduceMax") == (axis, False) and inner.inputs[0] is x  # type: ignore[union-attr]
    return _summed_axis(node, rank, "ReduceMax") == (axis, True) and node.inputs[0] is x  # type: ignore[union-attr]


def _match_top(node: ir.Node, graph: ir.Graph) -> tuple[ir.Value, int, bool, list[ir.Node]] | None:
    """(x, axis, keepdims, the nodes replaced) for Reciprocal (or 1 /) ReduceSum(Exp(x − max(x)), [axis])."""
    one = node.inputs[0].const_value if node.op_type == "Div" and node.inputs[0] is not None else None
    if node.domain != "" or not (node.op_type == "Reciprocal" or (one is not None and one.numpy().size == 1 and one.numpy().item() == 1)):
        return None
    total = node.inputs[-1].producer()  # type: ignore[union-attr]
    exp = total.inputs[0].producer() if total is not None and total.inputs[0] is not None else None
    if exp is None or exp.op_type != "Exp" or sole_reader(exp.outputs[0], graph) is not total or sole_reader(total.outputs[0], graph) is not node:  # type: ignore[union-attr]
        return None
    rank = len(static_dims(exp.outputs[0]) or [])
    found = _summed_axis(total, rank) if rank else None
    shifted = exp.inputs[0].producer()  # type: ignore[union-attr]
    if found is None or shifted is None or shifted.op_type != "Sub" or shifted.domain != "" or sole_reader(shifted.outputs[0], graph) is not exp:
        return None
    x, m = shifted.inputs
    if static_dims(x) != static_dims(exp.outputs[0]) or not _is_max(m, x, found[0], rank):  # type: ignore[arg-type]
        return None
    if one is not None and one.numpy().ndim > rank - (not found[1]):  # a 1 of more dims broadcasts the quotient up
        return None
    return x, found[0], found[1], [shifted, exp, total, node]  # type: ignore[list-item, return-value]


def _taken(replaced: list[ir.Node], x: ir.Value, graph: ir.Graph) -> set[str]:
    """The names the fusion takes away: the replaced nodes' outputs but the quotient's, and those of the nodes only
    they read (the max the Sub shifts by, jax2tf's Reshape of it), which RemoveUnusedNodes removes after."""
    gone, todo = set(replaced), [v for n in replaced for v in n.inputs]
    while todo:
        v = todo.pop()
        node = v.producer() if v is not None else None
        if node is None or node in gone or x in node.outputs:
            continue
        if all(o not in graph.outputs and all(u.node in gone for u in o.uses()) for o in node.outputs):
            gone.add(node)
            todo.extend(node.inputs)
    return {v.name for n in gone if n is not replaced[-1] for v in n.outputs if v.name}


class FuseSoftmaxPass(KeepNamesPass):
    """A kept name on the Exp, the sum or the quotient's inputs leaves the Softmax written out."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fused = 0
        for div in [n for n in model.graph if n.op_type == "Div"]:
            found = _match(div, model.graph)
            if found is None:
                continue
            x, axis, perm, replaced = found
            if _taken(replaced, x, model.graph) & self.keep:
                continue
            head = div.name or div.outputs[0].name
            softmax = ir.node("Softmax", inputs=[x], attributes={"axis": axis}, name=f"{head}_softmax")
            out = softmax.outputs[0]
            out.name, out.type, out.shape = f"{head}_softmax_output", x.type, x.shape
            nodes = [softmax]
            if perm is not None:
                nodes.append(ir.node("Transpose", inputs=[out], attributes={"perm": perm}, name=f"{head}_transpose"))
            last = nodes[-1].outputs[0]
            if perm is not None:
                last.type, last.shape = div.outputs[0].type, div.outputs[0].shape
            ir.convenience.replace_nodes_and_values(model.graph, div, replaced, nodes, [div.outputs[0]], [last])
            fused += 1
        opset = model.opset_imports.get("", 13)
        for node in [n for n in model.graph if n.op_type in ("Reciprocal", "Div")]:
            top = _match_top(node, model.graph)
            if top is None or _taken(top[3], top[0], model.graph) & self.keep:
                continue
            x, axis, keepdims, replaced = top
            head = node.name or node.outputs[0].name
            softmax = ir.node("Softmax", inputs=[x], attributes={"axis": axis}, name=f"{head}_softmax")
            probs = softmax.outputs[0]
            probs.name, probs.type, probs.shape = f"{head}_softmax_output", x.type, x.shape
            axes = new_constant(model.graph, f"{head}_axes", np.array([axis], np.int64)) if opset >= 18 else None
            attributes = {"keepdims": int(keepdims), **({} if axes is not None else {"axes": [axis]})}
            top_p = ir.node("ReduceMax", inputs=[probs, *([axes] if axes is not None else [])], attributes=attributes, name=f"{head}_max")
            ir.convenience.replace_nodes_and_values(model.graph, node, replaced, [softmax, top_p], [node.outputs[0]], [top_p.outputs[0]])
            fused += 1
        logger.info("fuse_softmax: %d written-out Softmax(es) fused", fused)
        return ir.passes.PassResult(model, modified=bool(fused))


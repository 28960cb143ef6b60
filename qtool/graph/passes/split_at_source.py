"""Take a Split's parts from where they were made, not from the tensor that joined them.

Detection heads join tensors of different kinds and split them again. YOLOv8 concatenates each scale's box
logits (DFL bins, [-26, 15] on nudenet) and class logits along the channels, flattens and joins the scales, and
splits boxes from classes before the DFL Softmax and the class Sigmoid; PicoDet's last Conv makes class and box
logits as one tensor that a Split divides. A QDQ model gives the joined tensor one grid, and a Split's outputs
share their input's: every class logit is rounded on a grid as wide as the box logits' (nudenet's scale 0.165,
for scores decided near logit -1.1), so detections near the threshold come and go.

Taken where they are made, the parts never share a tensor: the Split reads through a Concat on its axis whose
inputs its boundaries fall between (the parts are those inputs), a Concat on another axis or a Reshape that
keeps its axis (each input is split, and the parts joined or reshaped alike), or a Conv (one Conv per part, on
the slice of the weights and bias that makes it). Exact: every value is computed as before. Only where each
tensor on the way is read by the next step alone, so nothing else reads a joined tensor.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.output_parts import kept_axis
from qtool.graph.passes.constants import new_constant, sole_reader, static_dims
from qtool.graph.passes.kept_names import KeepNamesPass

logger = logging.getLogger(__name__)


def _axis(node: ir.Node, rank: int, default: int = 0) -> int | None:
    attr = node.attributes.get("axis")
    axis = attr.as_int() if attr is not None else default
    return axis % rank if -rank <= axis < rank else None


def split_sizes(split: ir.Node) -> tuple[int, list[int]] | None:
    """(axis, part sizes) of a Split whose sizes are constants or its input's equal parts."""
    dims = static_dims(split.inputs[0])
    axis = _axis(split, len(dims)) if dims else None
    if dims is None or axis is None or any(o is None for o in split.outputs):
        return None
    if len(split.inputs) > 1 and split.inputs[1] is not None:  # opset 13+
        given = split.inputs[1].const_value
        sizes = given.numpy().reshape(-1).tolist() if given is not None else None
    elif "split" in split.attributes:  # opset < 13
        sizes = list(split.attributes["split"].as_ints())
    else:
        count = len(split.outputs)
        sizes = [dims[axis] // count] * count if dims[axis] % count == 0 else None
    if not sizes or sum(sizes) != dims[axis] or min(sizes) <= 0:
        return None
    return axis, [int(s) for s in sizes]


class _Parts:
    """Builds each part of a value split along `axis`: `plan` checks that it can be done (building nothing),
    `build` then makes the nodes, in an order where each comes after what it reads."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.nodes: list[ir.Node] = []  # new, producers first
        self.replaced: list[ir.Node] = []  # old, to remove (plan lists them)

    def plan(self, value: ir.Value, axis: int, sizes: list[int]) -> bool:
        node = value.producer()
        if node is None or node.domain != "" or len(node.outputs) != 1:
            return False
        self.replaced.append(node)  # only kept if the whole plan holds
        dims = static_dims(value)
        if dims is None:
            return False
        if node.op_type == "Concat":
            join = _axis(node, len(dims))
            if join is None or any(
                static_dims(x) is None or x.producer() is None or sole_reader(x, self.graph) is not node  # type: ignore[union-attr]
                for x in node.inputs
            ):  # a part takes the name of the Split's output: a graph input or constant keeps its own
                return False
            if join == axis:
                return _runs(node, axis, sizes) is not None
            return all(self.plan(x, axis, sizes) for x in node.inputs)  # type: ignore[arg-type]
        if node.op_type == "Reshape":
            source = node.inputs[0]
            inner = kept_axis(static_dims(source), dims, axis)
            return inner is not None and sole_reader(source, self.graph) is node and self.plan(source, inner, sizes)  # type: ignore[arg-type]
        if node.op_type == "Conv":
            group = node.attributes.get("group")
            weight, bias = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
            return (
                axis == 1
                and (group is None or group.as_int() == 1)
                and weight is not None
                and weight.const_value is not None
                and (bias is None or bias.const_value is not None)
            )
        return False

    def build(self, value: ir.Value, axis: int, sizes: list[int]) -> list[ir.Value]:
        node = value.producer()
        assert node is not None
        dims = static_dims(value)
        assert dims is not None
        head = node.name or value.name
        if node.op_type == "Concat" and _axis(node, len(dims)) == axis:
            parts = []
            for k, run in enumerate(_runs(node, axis, sizes) or []):
                parts.append(run[0] if len(run) == 1 else self._node("Concat", run, node.attributes, f"{head}_part{k}", value, axis, sizes[k]))
            return parts
        if node.op_type == "Concat":
            pieces = [self.build(x, axis, sizes) for x in node.inputs]  # type: ignore[arg-type]
            return [self._node("Concat", [p[k] for p in pieces], node.attributes, f"{head}_part{k}", value, axis, size)
                    for k, size in enumerate(sizes)]  # fmt: skip
        if node.op_type == "Reshape":
            source = node.inputs[0]
            inner = kept_axis(static_dims(source), dims, axis)
            pieces = self.build(source, inner, sizes)  # type: ignore[arg-type]
            parts = []
            for k, (piece, size) in enumerate(zip(pieces, sizes, strict=True)):
                shape = new_constant(self.graph, f"{head}_part{k}_shape", np.array(_with(dims, axis, size), np.int64))
                parts.append(self._node("Reshape", [piece, shape], {}, f"{head}_part{k}", value, axis, size))
            return parts
        weight = node.inputs[1].const_value.numpy()  # type: ignore[union-attr]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        parts, start = [], 0
        for k, size in enumerate(sizes):
            rows = slice(start, start + size)
            start += size
            inputs = [node.inputs[0], new_constant(self.graph, f"{node.inputs[1].name}_part{k}", weight[rows])]  # type: ignore[union-attr]
            if bias is not None:
                inputs.append(new_constant(self.graph, f"{bias.name}_part{k}", bias.const_value.numpy()[rows]))  # type: ignore[union-attr]
            parts.append(self._node("Conv", inputs, node.attributes, f"{head}_part{k}", value, axis, size))
        return parts

    def _node(self, op: str, inputs: list, attributes, name: str, like: ir.Value, axis: int, size: int) -> ir.Value:
        node = ir.node(op, inputs=inputs, attributes=attributes, name=name)
        out = node.outputs[0]
        out.name, out.type = f"{name}_output", like.type
        out.shape = ir.Shape(_with(static_dims(like), axis, size))  # type: ignore[arg-type]
        self.nodes.append(node)
        return out


def _names(parts: _Parts) -> set[str]:
    """The names the rewrite takes away: every output of a replaced node, every input it renames (a Concat input that
    becomes a Split output) and a replaced Conv's weight and bias."""
    taken = [v for n in parts.replaced for v in (*n.outputs, *(n.inputs if n.op_type == "Concat" else n.inputs[1:3]))]
    return {v.name for v in taken if v is not None and v.name}


def _with(dims: list[int], axis: int, size: int) -> list[int]:
    return [size if k == axis else d for k, d in enumerate(dims)]


def _runs(concat: ir.Node, axis: int, sizes: list[int]) -> list[list[ir.Value]] | None:
    """The Concat's inputs grouped into one run per part, when every part boundary falls between inputs."""
    runs: list[list[ir.Value]] = [[]]
    filled, bounds = 0, list(np.cumsum(sizes))
    for x in concat.inputs:
        filled += static_dims(x)[axis]  # type: ignore[index]
        runs[-1].append(x)  # type: ignore[arg-type]
        if filled > bounds[len(runs) - 1]:
            return None
        if filled == bounds[len(runs) - 1] and len(runs) < len(sizes):
            runs.append([])
    return runs if filled == bounds[-1] and all(runs) else None


class SplitAtSourcePass(KeepNamesPass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        moved = 0
        for split in [n for n in model.graph if n.op_type == "Split" and n.domain == ""]:
            found = split_sizes(split)
            if found is None or sole_reader(split.inputs[0], model.graph) is not split:  # type: ignore[arg-type]
                continue
            parts = _Parts(model.graph)
            if not parts.plan(split.inputs[0], *found) or _names(parts) & self.keep:  # type: ignore[arg-type]
                continue
            made = parts.build(split.inputs[0], *found)  # type: ignore[arg-type]
            outputs = list(split.outputs)
            ir.convenience.replace_nodes_and_values(model.graph, split, [split, *parts.replaced], parts.nodes, outputs, made)
            moved += 1
        logger.info("split_at_source: %d Split(s) now take their parts where they are made", moved)
        return ir.passes.PassResult(model, modified=bool(moved))

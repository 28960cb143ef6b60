"""Parts of a graph output that hold different quantities: a detection head's box coordinates (0..320) and
class scores (0..1) concatenated into one tensor. One SQNR over the whole tensor is the boxes' alone (a
YOLOv8 head: output 26.8 dB while its scores were at 8.2 dB and half its detections gone), so drift is
also measured part by part (inspect/compare.py) and mixed precision holds every part to its target.

A part is a run of a Concat's inputs made by one op type (boxes by a Mul, scores by a Sigmoid), found
along the output's axis back through the data movement a head does after its Concat: Transpose, a Reshape
that keeps that axis, Identity, and a Concat along another axis whose inputs are split alike (YOLOX joins
its three levels' [box, objectness, class] tensors so). A Concat of one kind of input has one part: no
split. Shapes are onnx's inferred ones; compare checks each output's real shape against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from qtool.graph.model import tensor_shapes

# ops between a value's producer and a Concat that neither compute nor change what the value means
_MOVES = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Split"})
_DEPTH = 12  # ops walked back from an output: a head's tail is a few


@dataclass(frozen=True)
class Part:
    output: str
    axis: int
    start: int
    stop: int
    rank: int
    size: int  # the output's length along `axis`: its parts tile it

    @property
    def name(self) -> str:
        """numpy's spelling: `output0[:, 4:22]`."""
        index = [":"] * self.rank
        index[self.axis] = f"{self.start}:{self.stop}"
        return f"{self.output}[{', '.join(index)}]"

    def of(self, array: np.ndarray) -> np.ndarray | None:
        """This part of one sample's output, or None when the output's real shape is not the inferred one (a
        dynamic dimension counts as 1 in inferred shapes: a split along it is not one)."""
        if array.ndim != self.rank or array.shape[self.axis] != self.size:
            return None
        return array[(slice(None),) * self.axis + (slice(self.start, self.stop),)]


def output_parts(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> list[Part]:
    """The parts of every graph output that holds more than one (none for most models); `shapes`: the model's
    tensor_shapes, if the caller has them."""
    producers = {out: node for node in model.graph.node for out in node.output if out}
    concat_outputs = [o.name for o in model.graph.output if _reaches_concat(o.name, producers)]
    if not concat_outputs:  # shape inference only where a Concat could split an output
        return []
    shapes = tensor_shapes(model) if shapes is None else shapes
    parts = []
    for name in concat_outputs:
        shape = shapes.get(name)
        if not shape:
            continue
        for axis in range(len(shape)):
            runs = _runs(name, axis, producers, shapes, _DEPTH)
            if runs is not None and len(runs) > 1:
                parts += [Part(name, axis, start, stop, len(shape), runs[-1][1]) for start, stop in runs]
                break
    return parts


def _reaches_concat(name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    for _ in range(_DEPTH):
        node = producers.get(name)
        if node is None or not node.input:
            return False
        if node.op_type == "Concat":
            return True
        name = node.input[0]
    return False


def _runs(
    name: str, axis: int, producers: dict[str, onnx.NodeProto], shapes: dict[str, tuple[int, ...]], depth: int
) -> list[tuple[int, int]] | None:
    """[(start, stop)] of the parts of tensor `name` along `axis`; None when no split can be followed."""
    node = producers.get(name)
    if node is None or depth == 0 or not node.input:
        return None
    source = node.input[0]
    if node.op_type in ("Identity", "Cast"):  # a float16 model's outputs leave through convert's Cast
        return _runs(source, axis, producers, shapes, depth - 1)
    if node.op_type == "Transpose":
        perm = _ints(node, "perm") or list(range(len(shapes.get(name, ()))))[::-1]
        return _runs(source, perm[axis], producers, shapes, depth - 1) if axis < len(perm) else None
    if node.op_type == "Reshape":
        kept = kept_axis(shapes.get(source), shapes.get(name), axis)
        return None if kept is None else _runs(source, kept, producers, shapes, depth - 1)
    if node.op_type != "Concat":
        return None
    rank = len(shapes.get(name, ()))
    joined = _ints(node, "axis")
    if not rank or not joined:
        return None
    if joined[0] % rank != axis:  # alongside: every input split the same way, or no split
        found = [_runs(i, axis, producers, shapes, depth - 1) for i in node.input]
        return found[0] if found[0] is not None and all(f == found[0] for f in found) else None
    sizes = [shapes.get(i, ())[axis] if len(shapes.get(i, ())) == rank else 0 for i in node.input]
    if not all(sizes):
        return None
    runs: list[tuple[int, int]] = []
    start, kinds = 0, [_kind(i, producers) for i in node.input]
    for k, size in enumerate(sizes):
        if runs and kinds[k] == kinds[k - 1]:
            runs[-1] = (runs[-1][0], start + size)
        else:
            runs.append((start, start + size))
        start += size
    return runs


def _kind(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The op type that computed a Concat input's values, looking through data movement."""
    for _ in range(_DEPTH):
        node = producers.get(name)
        if node is None:
            return "input"
        if node.op_type not in _MOVES or not node.input:
            return node.op_type
        name = node.input[0]
    return "?"


def kept_axis(before: Sequence[int] | None, after: Sequence[int] | None, axis: int) -> int | None:
    """The axis of a Reshape's input that is `after`'s `axis`: same size, same number of values before it."""
    if not before or not after or axis >= len(after):
        return None
    ahead = math.prod(after[:axis])
    for k, size in enumerate(before):
        if size == after[axis] and math.prod(before[:k]) == ahead:
            return k
    return None


def _ints(node: onnx.NodeProto, name: str) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return list(value) if isinstance(value, list | tuple) else [int(value)]
    return []

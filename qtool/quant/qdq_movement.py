"""A quantized weight that reaches its layer through data movement: DequantizeLinear(W) -> Transpose -> MatMul.

PyTorch writes a Linear of a 3-D input so (its weight is [out, in]; the MatMul reads it transposed), and Reshape,
Squeeze or Unsqueeze between a weight's DequantizeLinear and its Conv come from other exporters. Read as it stands,
the grid was keyed by the DequantizeLinear's output, which convert's folding then replaced by the moved constant:
the weight's imported grid was dropped ('1 imported encodings name tensors that normalisation removed') and
quantize chose its own. Moving a per-tensor or per-axis grid with its values is exact (dequantizing commutes with
moving values), so the chain's end becomes the weight, its grid along the axis its channels moved to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

MOVEMENT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})

Move = Callable[[np.ndarray], np.ndarray]


def movement_chain(
    start: str, readers: dict[str, list[tuple[onnx.NodeProto, int]]], outputs: set[str],
    constant: Callable[[str], np.ndarray | None], opset: int, shape: tuple[int, ...],
) -> tuple[list[onnx.NodeProto], list[Move], list[tuple[int, ...]]]:  # fmt: skip
    """The data-movement nodes `start` (a weight of `shape`) goes through alone, each the only reader of a value
    that is no graph output (the last may write one: the moved weight then is an initializer onnxruntime serves
    as that output), with the moves that compute them and the shapes: `shape`, then each node's output's."""
    chain: list[onnx.NodeProto] = []
    moves: list[Move] = []
    shapes = [shape]
    name = start
    while name not in outputs and len(users := readers.get(name, [])) == 1:
        node, index = users[0]
        if node.op_type not in MOVEMENT_OPS or node.domain not in ("", "ai.onnx") or index != 0:
            break
        move = _move(node, constant, opset, shape)
        if move is None:
            break
        shape = move[1]
        shapes.append(shape)
        chain.append(node)
        moves.append(move[0])
        name = node.output[0]
    return chain, moves, shapes


def moved_axis(axis: int | None, chain: list[onnx.NodeProto], shapes: list[tuple[int, ...]]) -> int | None:
    """Where the channels along `axis` end up after the chain (`shapes` as movement_chain gives them), or -1
    where no one axis holds them all alone (a Reshape that splits or merges them); None for a per-tensor grid."""
    if axis is None:
        return None
    for node, shape, after in zip(chain, shapes, shapes[1:], strict=False):
        if node.op_type == "Transpose":
            axis = _perm(node, len(shape)).index(axis)
            continue
        lead = math.prod(shape[:axis])
        axis = next((j for j, d in enumerate(after) if d == shape[axis] and math.prod(after[:j]) == lead), -1)
        if axis < 0:
            return -1
    return axis


def _perm(node: onnx.NodeProto, rank: int) -> list[int]:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return [p % rank for p in perm] if perm else list(range(rank))[::-1]


def _ints(node: onnx.NodeProto, attr: str, slot: int, constant: Callable[[str], np.ndarray | None], opset: int) -> list[int] | None:
    """An op's integer list given as an attribute before opset 13 (Squeeze's axes) or as a constant input since."""
    if opset < 13 and attr:
        return next((list(a.ints) for a in node.attribute if a.name == attr), [])
    if len(node.input) <= slot or not node.input[slot]:
        return []
    value = constant(node.input[slot])
    return None if value is None else [int(v) for v in np.asarray(value).ravel()]


def _move(node: onnx.NodeProto, constant: Callable[[str], np.ndarray | None], opset: int,
          shape: tuple[int, ...]) -> tuple[Move, tuple[int, ...]] | None:  # fmt: skip
    """The numpy move `node` makes of a `shape`-shaped array and its output shape; None when it is not known
    from constants (a Reshape of a computed shape)."""
    rank = len(shape)
    kind = node.op_type
    if kind == "Identity":
        return (lambda a: a), shape
    if kind == "Transpose":
        perm = _perm(node, rank)
        if sorted(perm) != list(range(rank)):
            return None
        return (lambda a: np.ascontiguousarray(np.transpose(a, perm))), tuple(shape[p] for p in perm)
    if kind == "Flatten":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        axis += rank if axis < 0 else 0  # -1 is the last dim, not past it: [-r, r] counts r from the back
        if not 0 <= axis <= rank:  # onnxruntime refuses the node: it stays to say so
            return None
        after = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    elif kind == "Reshape":
        target = _ints(node, "", 1, constant, opset)  # an input in every opset
        if not target or target.count(-1) > 1:
            return None
        zero_copies = not next((a.i for a in node.attribute if a.name == "allowzero"), 0)
        dims = [shape[k] if d == 0 and zero_copies and k < rank else d for k, d in enumerate(target)]
        known = math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if known == 0 or math.prod(shape) % known:
                return None
            dims[dims.index(-1)] = math.prod(shape) // known
        after = tuple(dims)
    elif kind == "Squeeze":
        axes = _ints(node, "axes", 1, constant, opset)
        if axes is None:
            return None
        drop = {a % rank for a in axes if -rank <= a < rank} if axes else {k for k, d in enumerate(shape) if d == 1}
        if axes and len(drop) != len(axes):  # repeated or out-of-range axes: onnxruntime refuses the node
            return None
        after = tuple(d for k, d in enumerate(shape) if k not in drop)
    else:  # Unsqueeze
        axes = _ints(node, "axes", 1, constant, opset)
        out_rank = rank + len(axes or ())
        places = {a % out_rank for a in axes or () if -out_rank <= a < out_rank}
        if not axes or len(places) != len(axes):  # as Squeeze's (a repeated axis was a StopIteration, exit 1)
            return None
        rest = iter(shape)
        after = tuple(1 if k in places else next(rest) for k in range(out_rank))
    if math.prod(after) != math.prod(shape) or any(d < 0 for d in after):
        return None
    return (lambda a: a.reshape(after)), after

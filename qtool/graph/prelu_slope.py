"""PRelu before opset 7 applies a 1-D slope per channel (axis 1, as Caffe2 did); from opset 7 the slope broadcasts
numpy-style, against the last axis. onnx's version converter upgrades PRelu 6 -> 7 as compatible and keeps the
[C] slope, so an NCHW PRelu then fails at run time ("broadcast an axis by a dimension other than 1"), or is
silently wrong where W == C. `per_channel` gives such slopes the shape [C, 1, ...] that means the same in every
opset."""

from __future__ import annotations

import onnx
from onnx import helper

from qtool.errors import ModelError
from qtool.graph import model as gm
from qtool.graph.names import FreshNames


def per_channel(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """`model` (opset < 7) with every PRelu's 1-D slope of more than one value shaped [C, 1, ...] to its
    input's rank; `model` itself when no PRelu needs it."""
    prelus = [n for n in model.graph.node if n.op_type == "PRelu" and n.domain in ("", "ai.onnx")]
    if not prelus:
        return model
    shapes = gm.tensor_shapes(model)
    slopes = [(n, shapes.get(n.input[1])) for n in prelus]
    changing = [(n, s) for n, s in slopes if s is not None and len(s) == 1 and s[0] > 1]
    if not changing:
        return model
    out = gm.copy(model)
    initializers = {t.name: t for t in out.graph.initializer}
    readers: dict[str, int] = {}
    for node in out.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    fresh = FreshNames(gm.tensor_names(out) | {n.name for n in out.graph.node})
    by_output = {n.output[0]: n for n in out.graph.node if n.output}
    for original, (channels,) in changing:
        node = by_output[original.output[0]]
        rank = len(shapes.get(node.input[0], ()))
        if rank == 0:
            raise ModelError(
                f"PRelu {node.name or node.output[0]!r}: its slope has {channels} values and its input's rank is unknown; "
                "before opset 7 a slope applies per channel, after it along the last axis",
                where=where,
                hint="give the model's inputs fixed shapes (`qtool convert --input_dim`) so the rank is known",
            )
        if rank <= 2:
            continue  # [N, C]: the last axis is the channel axis, both readings agree
        dims = [channels] + [1] * (rank - 2)
        slope = node.input[1]
        if slope in initializers:
            tensor = initializers[slope]
            if readers.get(slope, 0) > 1:  # shared: reshape a copy
                tensor = out.graph.initializer.add()
                tensor.CopyFrom(initializers[slope])
                tensor.name = fresh(f"{slope}_per_channel")
                node.input[1] = tensor.name
            del tensor.dims[:]
            tensor.dims.extend(dims)
            _declare(out, slope, tensor.name, dims)
            continue
        shape, reshaped = fresh(f"{slope}_per_channel_shape"), fresh(f"{slope}_per_channel")
        out.graph.initializer.append(helper.make_tensor(shape, onnx.TensorProto.INT64, [rank - 1], dims))
        if out.ir_version < 4:  # an initializer is also a graph input there
            out.graph.input.append(helper.make_tensor_value_info(shape, onnx.TensorProto.INT64, [rank - 1]))
        index = list(out.graph.node).index(node)
        out.graph.node.insert(index, helper.make_node("Reshape", [slope, shape], [reshaped], name=reshaped))
        node.input[1] = reshaped
    return out


def _declare(model: onnx.ModelProto, original: str, name: str, dims: list[int]) -> None:
    """Before IR 4 an initializer is also a graph input: its declared shape follows the new dims."""
    for value in list(model.graph.input):
        if value.name == original:
            if name != original:
                value = model.graph.input.add()
                value.CopyFrom(next(v for v in model.graph.input if v.name == original))
                value.name = name
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                shape.dim.add().dim_value = d

"""What onnx's version converter changes the meaning of as it upgrades an old opset, put back after it.

Resize 10, and Upsample 7-9 (which the converter turns into Resize), map an output pixel x to the input's
x / scale ('asymmetric'); onnxruntime takes the nearest pixel below it (above, where the scale shrinks). Resize 11
added coordinate_transformation_mode, whose default, half_pixel, the converter leaves: a bilinear upsampling moved by
half a pixel, and a nearest one on a non-integer scale picked other pixels. Hardmax up to opset 12 flattened its input
at `axis` into [outer, inner] and took the maximum over all of inner; 13 takes it along `axis` alone, and the
converter calls the two compatible (it rewrites Softmax and LogSoftmax as 12 meant them). Resize 11's
coordinate_transformation_mode 'tf_half_pixel_for_nn', (x + 0.5) / scale, is gone from 13, and the converter keeps it:
it is half_pixel's coordinate + 0.5, so a nearest Resize picks the same pixel under half_pixel, rounding otherwise.
Nodes the converter cannot adapt at all (Cast up to 5 naming its type, BatchNormalization up to 8 with spatial=0)
are set aside in a domain of their own while it runs, and written in the target opset's terms after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import helper

from qtool.errors import ModelError
from qtool.graph.attributes import attribute
from qtool.graph.constant_size import constant_value
from qtool.graph.names import FreshNames
from qtool.graph.node_order import subgraphs

DEFAULT = ("", "ai.onnx")
TYPE_NAMES = frozenset(onnx.TensorProto.DataType.keys())  # Cast-1..5's 'to': "FLOAT", "INT32"...
ASIDE = "qtool.set_aside"  # a domain no model uses: where nodes wait while onnx's converter passes over them
# nearest_mode under tf_half_pixel_for_nn -> the one under half_pixel picking the same pixel, c being half_pixel's
# coordinate (float-exact: c + 0.5 is): round_prefer_floor(c + 0.5) = ceil(c), floor(c + 0.5) = round_prefer_ceil(c)
HALF_PIXEL_NEAREST = {b"round_prefer_floor": "ceil", b"floor": "round_prefer_ceil"}

logger = logging.getLogger(__name__)
# opset 6's binary ops whose broadcast=1 aligned B's dims with A's from `axis` (7 on: numpy's, from the last dim)
AXIS_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"})


def converted(light: onnx.ModelProto, source: int, target: int,
              convert: Callable[[onnx.ModelProto, int], onnx.ModelProto]) -> onnx.ModelProto:  # fmt: skip
    """convert(light, target), with the Resize and Hardmax nodes of opset `source` meaning what they meant there."""
    old = {n.output[0]: n for n in _nodes(light.graph) if n.domain in DEFAULT and n.output}
    resized = {o for o, n in old.items() if n.op_type in ("Resize", "Upsample")} if source <= 10 < target else set()
    flat = {o for o, n in old.items() if n.op_type == "Hardmax"} if source <= 12 < target else set()
    if source <= 6 < target and any(a.name == "axis" for n in old.values() if n.op_type in AXIS_BROADCAST
                                    for a in n.attribute):  # fmt: skip
        light = _suffix_broadcasts(light)
    light, aside = _set_aside(light, source, target)
    out = convert(light, target)
    if aside:
        _put_back(out, aside)
    if 11 <= source <= 12 < target:
        _half_pixel_resizes(out.graph, {o for o, n in old.items() if n.op_type == "Resize"})
    fresh = FreshNames(_names(out.graph))
    if resized:
        _asymmetric_resizes(out.graph, resized, fresh)
    if flat:
        _flatten_hardmax(out.graph, flat, fresh)
    return out


def _set_aside(light: onnx.ModelProto, source: int, target: int) -> tuple[onnx.ModelProto, dict[str, onnx.NodeProto]]:
    """Nodes onnx's converter asserts on, moved to a domain of their own for it to pass over, by first output:
    Cast up to opset 5 ('to' a type's name; 'No Adapter From Version $5 for Cast') and BatchNormalization up to 8
    with spatial=0 ('Attribute spatial must have value 1'), whose statistics are per value ([C, D1, ...])."""
    picked = {n.output[0]: n for n in _nodes(light.graph) if n.domain in DEFAULT and n.output and (
        (n.op_type == "Cast" and source <= 5 < target) or (n.op_type == "BatchNormalization" and source <= 8 < target
                                                           and attribute(n, "spatial", 1) == 0))}  # fmt: skip
    if not picked:
        return light, {}
    out = onnx.ModelProto()
    out.CopyFrom(light)
    for node in _nodes(out.graph):  # an If's branches too: the converter asserts there as well
        if node.output and node.output[0] in picked and node.domain in DEFAULT:
            node.domain = ASIDE
    out.opset_import.append(helper.make_opsetid(ASIDE, 1))
    return out, {o: _checked_aside(n) for o, n in picked.items()}


def _checked_aside(node: onnx.NodeProto) -> onnx.NodeProto:
    named = f"{node.op_type} node {node.name or node.output[0]!r}"
    if node.op_type == "BatchNormalization" and any(node.output[1:]):
        raise ModelError(f"{named}: spatial=0 in training mode (it outputs its running mean and variance), which "
                         "onnx's later opsets have no form of: export the model in inference mode")  # fmt: skip
    to = attribute(node, "to", None)
    if node.op_type == "Cast" and isinstance(to, bytes) and to.decode(errors="replace").upper() not in TYPE_NAMES:
        raise ModelError(f"{named}: 'to' names no ONNX type ({to.decode(errors='replace')!r})")
    return node


def _put_back(model: onnx.ModelProto, aside: dict[str, onnx.NodeProto]) -> None:
    """The set-aside nodes in the target opset's form: Cast with 'to' a number, and BatchNormalization's
    (X - mean) / sqrt(var + epsilon) * scale + B, whose [C, D1, ...] operands broadcast over the batch as spatial=0's
    did (numpy's broadcasting aligns them with X's last dims)."""
    _put_back_in(model.graph, aside, FreshNames(_names(model.graph)), model.graph.initializer)
    kept = [o for o in model.opset_import if o.domain != ASIDE]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _put_back_in(graph: onnx.GraphProto, aside: dict[str, onnx.NodeProto], fresh: FreshNames, initializers) -> None:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for inner in subgraphs(node):
            _put_back_in(inner, aside, fresh, initializers)
        old = aside.get(node.output[0]) if node.domain == ASIDE and node.output else None
        if old is None:
            nodes.append(node)
        elif old.op_type == "Cast":
            to = attribute(old, "to", None)
            number = onnx.TensorProto.DataType.Value(to.decode().upper()) if isinstance(to, bytes) else to
            nodes.append(helper.make_node("Cast", list(old.input), list(old.output), name=old.name, to=number))
        else:
            x, scale, bias, mean, var = old.input[:5]
            eps, centred, widened, root, normed, scaled = (fresh(f"{old.output[0]}_{k}") for k in
                                                           ("epsilon", "centred", "var_eps", "std", "normed", "scaled"))  # fmt: skip
            epsilon = float(attribute(old, "epsilon", 1e-5))  # type: ignore[arg-type]
            dtype = _elem_type(graph, [var, mean, x], initializers)
            nodes += [helper.make_node("Constant", [], [eps], name=fresh(eps), value=helper.make_tensor(eps, dtype, [], [epsilon])),
                      helper.make_node("Sub", [x, mean], [centred], name=fresh(centred)),
                      helper.make_node("Add", [var, eps], [widened], name=fresh(widened)),
                      helper.make_node("Sqrt", [widened], [root], name=fresh(root)),
                      helper.make_node("Div", [centred, root], [normed], name=fresh(normed)),
                      helper.make_node("Mul", [normed, scale], [scaled], name=fresh(scaled)),
                      helper.make_node("Add", [scaled, bias], [old.output[0]], name=old.name or fresh(old.output[0]))]  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)


def _elem_type(graph: onnx.GraphProto, names: list[str], initializers) -> int:
    """The element type of the first of `names` whose type the graph states (an initializer, an input, a declared
    tensor, a Constant's value), else float: taken from an initializer alone, a double BatchNormalization whose
    variance is a graph input got a float epsilon, and shape inference refused the Add."""
    stated = {t.name: t.data_type for t in initializers}
    stated |= {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info] if v.type.tensor_type.elem_type}
    stated |= {n.output[0]: a.t.data_type for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    return next((stated[n] for n in names if n in stated), onnx.TensorProto.FLOAT)


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for inner in subgraphs(node):
            yield from _nodes(inner)


def _names(graph: onnx.GraphProto) -> Iterator[str]:
    yield from (t.name for t in graph.initializer)
    for node in _nodes(graph):
        yield from (*node.input, *node.output)
        yield from (t.name for g in subgraphs(node) for t in g.initializer)


def _asymmetric_resizes(graph: onnx.GraphProto, resized: set[str], fresh: FreshNames) -> None:
    """Resize 10's coordinates, and onnxruntime's nearest pixel for them, axis by axis: below where the scale grows,
    above where it shrinks. A nearest Resize whose constant scales do both becomes two, the shrinking axes' then the
    growing ones' (nearest is separable): one nearest_mode for both was 3.7 off at [1, 1, 0.75, 1.5]. So does one whose
    scales the graph computes, its halves' scales Min(s, 1) and Max(s, 1): taken to grow, a runtime shrink by 0.75 was
    3.7 off too (a half whose scales fold to 1 is an Identity: passes/remove_identity)."""
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for inner in subgraphs(node):
            _asymmetric_resizes(inner, resized, fresh)
        nodes.append(node)
        if node.op_type != "Resize" or not node.output or node.output[0] not in resized:
            continue
        mode = attribute(node, "mode", b"nearest")
        kept = [a for a in node.attribute if a.name not in ("coordinate_transformation_mode", "nearest_mode")]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("coordinate_transformation_mode", "asymmetric")])
        if mode != b"nearest":
            continue
        scales = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        # scales the graph computes (from a Shape, often) are known as it runs: either way on every axis, split too
        computed = scales is None and len(node.input) > 2 and bool(node.input[2])
        shrinks, grows = (computed or (scales is not None and bool(np.any(f(scales, 1)))) for f in (np.less, np.greater))
        if shrinks and grows:
            y, names = node.output[0], [fresh(f"{node.output[0]}_{way}_scales") for way in ("shrink", "grow")]
            if computed:  # Min(s, 1) and Max(s, 1), which convert folds where the dims it fixes make s constant
                one = fresh(f"{y}_one")
                graph.initializer.append(onnx.numpy_helper.from_array(np.ones(1, np.float32), one))
                nodes[-1:-1] = [helper.make_node(op, [node.input[2], one], [n]) for op, n in zip(("Min", "Max"), names,
                                                                                                strict=True)]  # fmt: skip
            else:
                graph.initializer.extend(onnx.numpy_helper.from_array(f(scales, 1).astype(np.float32), n)
                                         for f, n in zip((np.minimum, np.maximum), names, strict=True))  # fmt: skip
            grown = onnx.NodeProto()
            grown.CopyFrom(node)
            node.input[2], node.output[0] = names[0], fresh(f"{y}_shrunk")
            grown.input[0], grown.input[2], grown.name = node.output[0], names[1], fresh(f"{node.name or y}_grow")
            grown.attribute.append(helper.make_attribute("nearest_mode", "floor"))
            nodes.append(grown)
        node.attribute.append(helper.make_attribute("nearest_mode", "ceil" if shrinks else "floor"))
    del graph.node[:]
    graph.node.extend(nodes)


def _suffix_broadcasts(light: onnx.ModelProto) -> onnx.ModelProto:
    """Opset 6's Add(A, B, broadcast=1, axis=k) with B's dims aligned at A's k-th, as the same op whose B is unsqueezed
    to end where A ends, without `axis`: what onnx's converter means and does not write (B [3] under A [1, 3, 4, 4]
    at axis 1 became B [3, 1, 1, 1], a [3, 3, 4, 4] output, exit 0; B [3, 4] failed its assertion). Ranks unknown
    to shape inference are left to the converter."""
    out = onnx.ModelProto()
    out.CopyFrom(light)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for g in [onnx.shape_inference.infer_shapes(light).graph]
             for v in (*g.input, *g.value_info, *g.output) if v.type.tensor_type.HasField("shape")}  # fmt: skip
    ranks.update({t.name: len(t.dims) for t in light.graph.initializer})
    fresh, nodes = FreshNames(_names(out.graph)), []
    for node in out.graph.node:
        axis = next((a for a in node.attribute if a.name == "axis"), None)
        a, b = (ranks.get(n) for n in [*node.input, "", ""][:2])
        if node.op_type in AXIS_BROADCAST and node.domain in DEFAULT and axis is not None and None not in (a, b):
            trailing = a - (axis.i % a if a else 0) - b
            if trailing > 0:
                nodes.append(helper.make_node("Unsqueeze", [node.input[1]], [fresh(f"{node.input[1]}_aligned")],
                                              name=fresh(f"{node.name or node.output[0]}_align"),
                                              axes=list(range(b, b + trailing))))  # fmt: skip
                node.input[1] = nodes[-1].output[0]
            node.attribute.remove(axis)
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _half_pixel_resizes(graph: onnx.GraphProto, resized: set[str]) -> None:
    """A nearest Resize's tf_half_pixel_for_nn as half_pixel (HALF_PIXEL_NEAREST); another is kept, which onnxruntime
    still runs, and said (no mode of 13 picks its pixels: ceil or round_prefer_ceil, or linear or cubic at c + 0.5)."""
    for node in _nodes(graph):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Resize" or node.output[:1] == [] or node.output[0] not in resized or \
                attrs.get("coordinate_transformation_mode") != b"tf_half_pixel_for_nn":  # fmt: skip
            continue
        same = HALF_PIXEL_NEAREST.get(attrs.get("nearest_mode", b"round_prefer_floor"))
        if attrs.get("mode", b"nearest") != b"nearest" or same is None:
            logger.warning("Resize %r keeps coordinate_transformation_mode tf_half_pixel_for_nn, which opset 13 dropped "
                           "(no mode of 13 computes it with mode %s, nearest_mode %s); onnxruntime still runs it",
                           node.name or node.output[0], attrs.get("mode", b"nearest").decode(),
                           attrs.get("nearest_mode", b"round_prefer_floor").decode())  # fmt: skip
            continue
        kept = [a for a in node.attribute if a.name not in ("coordinate_transformation_mode", "nearest_mode")]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("coordinate_transformation_mode", "half_pixel"),
                               helper.make_attribute("nearest_mode", same)])  # fmt: skip


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """A small initializer's values, or a Constant node's (the converter writes Upsample 7's scales as one)."""
    found = next((t for t in graph.initializer if t.name == name), None)
    if found is not None:
        return onnx.numpy_helper.to_array(found) if found.data_location == onnx.TensorProto.DEFAULT else None
    return next((constant_value(n) for n in graph.node if name in n.output), None)


def _flatten_hardmax(graph: onnx.GraphProto, flat: set[str], fresh: FreshNames) -> None:
    """Hardmax(x, axis) as opset 12 meant it: Flatten(x, axis) -> Hardmax(-1) -> Reshape to x's shape."""
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for inner in subgraphs(node):
            _flatten_hardmax(inner, flat, fresh)
        if node.op_type != "Hardmax" or node.domain not in DEFAULT or not node.output or node.output[0] not in flat:
            nodes.append(node)
            continue
        axis = attribute(node, "axis", 1)
        x, y = node.input[0], node.output[0]
        flat_x, flat_y, shape = fresh(f"{y}_flat_in"), fresh(f"{y}_flat"), fresh(f"{y}_shape")
        nodes += [helper.make_node("Flatten", [x], [flat_x], name=fresh(f"{node.name or y}_Flatten"), axis=axis),
                  helper.make_node("Hardmax", [flat_x], [flat_y], name=node.name or fresh(f"{y}_Hardmax"), axis=-1),
                  helper.make_node("Shape", [x], [shape], name=fresh(f"{node.name or y}_Shape")),
                  helper.make_node("Reshape", [flat_y, shape], [y], name=fresh(f"{node.name or y}_Reshape"))]  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)

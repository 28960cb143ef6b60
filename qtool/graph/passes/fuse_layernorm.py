"""Fuse a decomposed layer normalisation into one LayerNormalization (opset 17).

    mean = ReduceMean(x, [a]); d = x - mean; var = ReduceMean(d², [a]) (d² as Pow(d, 2) or d·d)
    y = d / Sqrt(var + ε) · scale + bias        (a = the last axis; scale, bias constants)

and TensorFlow's tf.nn.batch_normalization form, which tf2onnx and keras2onnx write for a Keras
LayerNormalization (the mean as GlobalAveragePool where it is the trailing axes of a rank-3 tensor):

    r = Reciprocal(Sqrt(var + ε)) · scale;  y = x · r + (bias − mean · r)

and tf2onnx's FusedBatchNormV3 form of a Keras LayerNormalization over the last axis (magika 0.5.1's
standard_v1): the rows as a BatchNormalization's channels, its statistics computed beside it, then γ and β:

    r = Reshape(x, [1, -1, D, 1]); m = ReduceMean(r, [0, 2, 3]); v = ReduceSumSquare(r - m, [0, 2, 3]) / D
    y = Reshape(BatchNormalization(r, 1, 0, Squeeze(m), v), x's shape) · scale + bias

Exporters (paddle2onnx, older torch) write it out op by op. Quantized op by op, the variance path
(d², its mean, the square root) is what 8 bits cannot hold; as one op only its output is
quantized, as on HTP and in onnxruntime (on PP-OCRv4's recogniser: 99.05% -> 99.33% characters).
onnxscript's own rule wants axes as an input (opset 18) and -1; exporters write an attribute.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)
MIN_OPSET = 17


def _axes(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("axes")
    if attr is not None:
        return list(attr.as_ints())
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const_value is not None:
        return [int(a) for a in node.inputs[1].const_value.numpy().ravel()]
    return None


def _only_user(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [u for u, _ in value.uses()]
    return users[0] if len(users) == 1 and users[0].op_type == op_type and not value.is_graph_output() else None


def _users(value: ir.Value) -> list[ir.Node]:
    """The nodes reading `value`, each once (Mul(d, d) reads it twice), none if it is a graph output."""
    return [] if value.is_graph_output() else list({id(u): u for u, _ in value.uses()}.values())


def _const(node: ir.Node, other_than: ir.Value) -> np.ndarray | None:
    others = [v for v in node.inputs if v is not other_than]
    return (
        others[0].const_value.numpy()
        if len(others) == 1 and others[0] is not None and others[0].const_value is not None
        else None
    )


def _square_and_divide(d: ir.Value) -> tuple[ir.Node, ir.Node] | None:
    users = _users(d)
    squares = [
        u
        for u in users
        if (u.op_type == "Pow" and _is_two(_const(u, d)))
        or (u.op_type == "Mul" and u.inputs[0] is d and u.inputs[1] is d)
    ]
    divides = [u for u in users if u.op_type == "Div" and u.inputs[0] is d]
    return (squares[0], divides[0]) if len(users) == 2 and len(squares) == 1 and len(divides) == 1 else None


def _is_two(value: np.ndarray | None) -> bool:
    return value is not None and value.size == 1 and float(value.ravel()[0]) == 2.0


def _match(mean: ir.Node) -> tuple[list[ir.Node], dict] | None:
    x, axes = mean.inputs[0], _axes(mean)
    rank = len(x.shape) if x is not None and x.shape is not None else None
    if rank is None or axes is None or len(axes) != 1 or axes[0] % rank != rank - 1:
        return None
    sub = _only_user(mean.outputs[0], "Sub")
    if sub is None or sub.inputs[0] is not x:
        return None
    pair = _square_and_divide(sub.outputs[0])
    if pair is None:
        return None
    square, divide = pair
    var = _only_user(square.outputs[0], "ReduceMean")
    add = _only_user(var.outputs[0], "Add") if var is not None and _axes(var) == axes else None
    sqrt = _only_user(add.outputs[0], "Sqrt") if add is not None else None
    eps = _const(add, var.outputs[0]) if add is not None else None
    if sqrt is None or eps is None or eps.size != 1 or divide.inputs[1] is not sqrt.outputs[0]:
        return None
    nodes, found = [mean, sub, square, var, add, sqrt, divide], {"x": x, "epsilon": float(eps.ravel()[0]), "axis": -1}
    return _with_affine(nodes, found)


def _with_affine(nodes: list[ir.Node], found: dict) -> tuple[list[ir.Node], dict]:
    """`nodes` and what they found, with the constant Mul (scale) and Add (bias) after the last node taken in."""
    tail = nodes[-1]
    for op, key in (("Mul", "scale"), ("Add", "bias")):
        user = _only_user(tail.outputs[0], op)
        value = _const(user, tail.outputs[0]) if user is not None else None
        if value is None or value.ndim > 1:
            break
        nodes.append(user)
        found[key], tail = value, user
    return nodes, found


def _reduced_from(mean: ir.Node, rank: int) -> int | None:
    """The first axis of the trailing axes `mean` averages over (GlobalAveragePool: all from 2), or None."""
    if mean.op_type == "GlobalAveragePool":
        return 2 if rank >= 3 else None
    axes = _axes(mean)
    if not axes or mean.attributes.get_int("keepdims", 1) != 1:
        return None
    axes = sorted(a % rank for a in axes)
    return axes[0] if axes == list(range(axes[0], rank)) else None


def _over(value: np.ndarray, normalised: list) -> np.ndarray | None:
    """`value` as a scale or bias over the normalised dims, or None where it varies along any other dim."""
    lead = max(0, value.ndim - len(normalised))
    if any(d != 1 for d in value.shape[:lead]):
        return None
    value = value.reshape(value.shape[lead:])
    if not all(isinstance(d, int) for d in normalised):
        return value
    try:
        return np.broadcast_to(value, tuple(normalised))
    except ValueError:
        return None


def _same_reduction(node: ir.Node | None, mean: ir.Node) -> bool:
    return node is not None and node.op_type == mean.op_type and (
        node.op_type == "GlobalAveragePool" or (_axes(node) == _axes(mean) and node.attributes.get_int("keepdims", 1) == 1)
    )


def _match_batchnorm_form(mean: ir.Node) -> tuple[list[ir.Node], dict] | None:
    """TensorFlow's form (module docstring): y = x · r + (bias − mean · r), r = rsqrt(var + ε) · scale."""
    x = mean.inputs[0]
    rank = len(x.shape) if x is not None and x.shape is not None else None
    axis = _reduced_from(mean, rank) if rank is not None else None
    readers = _users(mean.outputs[0])
    subs = [u for u in readers if u.op_type == "Sub" and u.inputs[0] is x and u.inputs[1] is mean.outputs[0]]
    if axis is None or len(readers) != 2 or len(subs) != 1:
        return None
    d = subs[0].outputs[0]
    square = _users(d)
    if len(square) != 1 or square[0].op_type != "Mul" or list(square[0].inputs) != [d, d]:
        return None
    var = _only_user(square[0].outputs[0], mean.op_type)
    add = _only_user(var.outputs[0], "Add") if _same_reduction(var, mean) else None
    eps = _const(add, var.outputs[0]) if add is not None else None
    sqrt = _only_user(add.outputs[0], "Sqrt") if add is not None else None
    recip = _only_user(sqrt.outputs[0], "Reciprocal") if sqrt is not None else None
    if recip is None or eps is None or eps.size != 1:
        return None
    nodes, found = [mean, subs[0], square[0], var, add, sqrt, recip], {"epsilon": float(eps.ravel()[0]), "axis": axis}
    normalised = list(x.shape)[axis:]
    r = recip.outputs[0]
    scaled = _only_user(r, "Mul")
    if scaled is not None and (scale := _const(scaled, r)) is not None:
        if (scale := _over(scale, normalised)) is None:
            return None  # a scale per channel over spatial means: an instance norm, not a LayerNormalization
        nodes.append(scaled)
        found["scale"], r = scale, scaled.outputs[0]
    by_mean = [u for u in _users(r) if u.op_type == "Mul" and set(u.inputs) == {mean.outputs[0], r}]
    by_x = [u for u in _users(r) if u.op_type == "Mul" and set(u.inputs) == {x, r}]
    if len(_users(r)) != 2 or len(by_mean) != 1 or len(by_x) != 1:
        return None
    shift = _only_user(by_mean[0].outputs[0], "Sub")
    bias = _const(shift, by_mean[0].outputs[0]) if shift is not None and shift.inputs[1] is by_mean[0].outputs[0] else None
    bias = _over(bias, normalised) if bias is not None else None
    out = _only_user(by_x[0].outputs[0], "Add")
    if bias is None or out is None or set(out.inputs) != {by_x[0].outputs[0], shift.outputs[0]}:
        return None
    found.update(x=x, bias=bias)
    return [*nodes, by_mean[0], shift, by_x[0], out], found


def _const_of(value: ir.Value | None) -> np.ndarray | None:
    return value.const_value.numpy() if value is not None and value.const_value is not None else None


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type else None


def _match_fused_batchnorm_form(bn: ir.Node) -> tuple[list[ir.Node], dict] | None:
    """tf2onnx's FusedBatchNormV3 form (module docstring), matched from its BatchNormalization."""
    if len(bn.inputs) != 5 or bn.attributes.get_int("training_mode", 0) != 0:
        return None
    r = bn.inputs[0]
    reshape = _producer(r, "Reshape")
    x = reshape.inputs[0] if reshape is not None else None
    shape, ones, zeros = _const_of(reshape.inputs[1]) if reshape else None, _const_of(bn.inputs[1]), _const_of(bn.inputs[2])
    if x is None or x.shape is None or shape is None or ones is None or zeros is None:
        return None
    width = x.shape[-1] if len(x.shape) else None
    if not isinstance(width, int) or list(shape) not in ([1, -1, width, 1], [1, int(np.prod(x.shape)) // width, width, 1]):
        return None
    squeeze = bn.inputs[3].producer() if bn.inputs[3] is not None else None
    mean = _producer(squeeze.inputs[0], "ReduceMean") if squeeze is not None and squeeze.op_type in ("Squeeze", "Reshape") else None
    divide = bn.inputs[4].producer() if bn.inputs[4] is not None else None
    sums = _producer(divide.inputs[0], "ReduceSumSquare") if divide is not None and divide.op_type in ("Div", "Mul") else None
    sub = _producer(sums.inputs[0], "Sub") if sums is not None else None
    count = _const_of(divide.inputs[1]) if divide is not None else None
    if mean is None or sub is None or count is None or count.size != 1 or not (np.all(ones == 1) and np.all(zeros == 0)):
        return None
    per = float(count.ravel()[0]) if divide.op_type == "Div" else 1 / float(count.ravel()[0])
    axes, kept = [_axes(mean), _axes(sums)], mean.attributes.get_int("keepdims", 1) == 1
    if list(sub.inputs) != [r, mean.outputs[0]] or axes != [[0, 2, 3]] * 2 or not kept or not np.isclose(per, width):
        return None
    if {id(u) for u in _users(r)} != {id(mean), id(sub), id(bn)} or len(_users(mean.outputs[0])) != 2:
        return None
    # the statistics feed the BatchNormalization alone: one read elsewhere would lose its producer (convert crashed)
    chain = ((sub, sums), (sums, divide), (squeeze, bn), (divide, bn))
    if any([id(u) for u in _users(a.outputs[0])] != [id(b)] for a, b in chain):
        return None
    back = _only_user(bn.outputs[0], "Reshape")
    if back is None or back.outputs[0].shape != x.shape:
        return None
    found = {"x": x, "axis": -1, "epsilon": bn.attributes.get_float("epsilon", 1e-5)}
    return _with_affine([reshape, mean, sub, sums, divide, squeeze, bn, back], found)


class FuseLayerNormPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.opset_imports.get("", 0) < MIN_OPSET:
            return ir.passes.PassResult(model, modified=False)
        fused = 0
        for node in list(model.graph):
            if node.graph is None:
                continue
            if node.op_type == "BatchNormalization":
                matched = _match_fused_batchnorm_form(node)
            elif node.op_type in ("ReduceMean", "GlobalAveragePool"):
                matched = (_match(node) if node.op_type == "ReduceMean" else None) or _match_batchnorm_form(node)
            else:
                continue
            if matched is not None:
                self._replace(model.graph, *matched)
                fused += 1
        logger.info("fuse_layernorm: %d LayerNormalization", fused)
        return ir.passes.PassResult(model, modified=bool(fused))

    def _replace(self, graph: ir.Graph, nodes: list[ir.Node], found: dict) -> None:
        x, last = found["x"], nodes[-1]
        dims = list(x.shape)[found["axis"] :]  # the normalised dims: scale and bias take their shape
        shape = tuple(dims) if all(isinstance(d, int) for d in dims) else None
        scale = found.get("scale", np.ones(1, np.float32))
        scale = np.broadcast_to(scale, shape) if shape else scale
        inputs = [
            x,
            ir.Value(
                name=f"{last.outputs[0].name}_ln_scale", const_value=ir.tensor(np.ascontiguousarray(scale, np.float32))
            ),
        ]
        if "bias" in found:
            bias = np.broadcast_to(found["bias"], shape) if shape else found["bias"]
            inputs.append(
                ir.Value(
                    name=f"{last.outputs[0].name}_ln_bias",
                    const_value=ir.tensor(np.ascontiguousarray(bias, np.float32)),
                )
            )
        for value in inputs[1:]:
            graph.register_initializer(value)
        fused = ir.node(
            "LayerNormalization",
            inputs=inputs,
            # counted from the end, as exporters write it: the residual stream's rules read a last-axis norm as -1
            attributes={"axis": found["axis"] - len(x.shape) if found["axis"] >= 0 else found["axis"], "epsilon": found["epsilon"]},
            name=nodes[0].name,
        )
        output = last.outputs[0]
        ir.convenience.replace_nodes_and_values(graph, last, nodes, [fused], [output], [fused.outputs[0]])
        fused.outputs[0].name = output.name

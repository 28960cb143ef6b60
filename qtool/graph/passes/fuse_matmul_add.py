"""Fuse MatMul(x, W) + b into Gemm(x, W, b) when x is 2-D, W a 2-D constant and b a constant bias
([N], [1, N] or a scalar): a dense layer as TF and Paddle export it.

Left apart, the MatMul's output is quantized before the bias is added and the bias is an 8-bit
constant operand of an Add: one extra requantization per layer and a bias on a grid of its own.
As a Gemm, the bias is the layer's bias (int32 at scale input × weight with `--bias_bitwidth 32`) and
the output is quantized once, as qairt-converter and onnxruntime's pre-processing (MatMulAddFusion)
do. Exact up to float rounding. MatMuls of rank > 2 (transformers) stay as they are.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _bias_fits(bias: ir.Value | None, columns: int) -> bool:
    """A constant Gemm's C broadcasts as a bias: a scalar, [N] or [1, N], float like the weight."""
    if bias is None or bias.const_value is None:
        return False
    shape = tuple(bias.const_value.shape)
    return shape in ((), (1,), (columns,), (1, columns), (1, 1))


def _fusable(matmul: ir.Node, graph: ir.Graph) -> tuple[ir.Node, ir.Value] | None:
    """(the Add, its bias operand) when `matmul` is a 2-D dense layer whose only reader adds a bias."""
    if matmul.op_type != "MatMul" or matmul.domain != "" or len(matmul.inputs) != 2:
        return None
    x, weight = matmul.inputs
    out = matmul.outputs[0]
    if weight is None or weight.const_value is None or _rank(weight) != 2 or _rank(x) != 2:
        return None
    users = [use.node for use in out.uses()]
    if len(users) != 1 or out in graph.outputs or users[0].op_type != "Add" or users[0].domain != "":
        return None
    add = users[0]
    bias = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    dtype = weight.const_value.dtype
    if not _bias_fits(bias, weight.const_value.shape[1]) or bias.const_value.dtype != dtype:  # type: ignore[union-attr]
        return None
    return add, bias  # type: ignore[return-value]


def _as_vector(bias: ir.Value, columns: int, graph: ir.Graph) -> ir.Value:
    """The bias as a [N] initializer (a per-output-channel bias, which the int32 bias rule needs)."""
    values = bias.const_value.numpy()  # type: ignore[union-attr]
    if values.shape == (columns,):
        return bias
    name = f"{bias.name}_bias"
    if name not in graph.initializers:
        graph.register_initializer(ir.Value(name=name, const_value=ir.tensor(np.broadcast_to(values.reshape(-1), (columns,)).copy())))
    return graph.initializers[name]


def replace_pair(graph: ir.Graph, layer: ir.Node, add: ir.Node, fused: ir.Node) -> None:
    """`fused` in place of `layer` and the bias `add` after it, writing the Add's output under its name."""
    output = add.outputs[0]
    ir.convenience.replace_nodes_and_values(graph, add, [layer, add], [fused], [output], [fused.outputs[0]])
    fused.outputs[0].name = output.name


class FuseMatMulAddPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        fused = 0
        for node in list(model.graph):
            found = _fusable(node, model.graph)
            if found is None:
                continue
            add, bias = found
            bias = _as_vector(bias, node.inputs[1].const_value.shape[1], model.graph)  # type: ignore[union-attr]
            replace_pair(model.graph, node, add, ir.node("Gemm", inputs=[node.inputs[0], node.inputs[1], bias], name=node.name))
            fused += 1
        logger.info("fuse_matmul_add: %d MatMul + bias pairs fused into Gemm", fused)
        return ir.passes.PassResult(model, modified=bool(fused))

"""An Einsum of an activation and a constant that contracts one index becomes a MatMul with a 2-D weight.

torch exports `torch.einsum("btf,fd->btd", x, w)` as an Einsum: no quantizer (qtool, onnxruntime, QNN) has a
quantized Einsum, so its weight stayed float32 between quantized activations. As MatMul(x, W) the weight gets
per-channel grids like any linear layer's. The general case this takes: the constant's letters are the
contracted one (j) and new ones (N, in no other operand); the activation's letters are j and the rest (R);
the output is R and N in any order. Then

    Transpose(x) to (R, j) -> MatMul(., W[j, N...] as [|j|, |N|]) -> Reshape to (R, N) -> Transpose to the output

with each Transpose or Reshape left out where it is the identity ("btd,hde->bhte": a multi-head projection
is MatMul, Reshape and Transpose). Exact up to float summation order. A letter the weight holds at size 1 and
the output keeps is a broadcast, not a batch: the weight drops it and the activation keeps it (DeepFilterNet's
grouped linear `btgi,gih->btgh` with one group, its GRUs' input and output projections). Letters in both
operands and the output besides j (B: that linear's groups, 8 or 16 in DeepFilterNet3's df_fc_emb and
df_gru) batch the MatMul: x to (R, B, 1, j) @ W[B, j, N] -> (R, B, 1, N) -> Reshape to (R, B, N); the weight
is 3-D, on one grid or one per output feature as any MatMul's. Ellipses, repeated letters, a second contracted
letter and three or more operands are left alone.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from qtool.graph.passes.constants import new_constant

logger = logging.getLogger(__name__)


def _operands(equation: str) -> tuple[str, str, str] | None:
    """The letters of a two-operand equation's operands and output, or None (an ellipsis, implicit output)."""
    if "..." in equation or "->" not in equation:
        return None
    operands, output = equation.replace(" ", "").split("->")
    parts = operands.split(",")
    return (parts[0], parts[1], output) if len(parts) == 2 else None


def lowering(data: str, weight: str, output: str) -> tuple[str, list[str], list[str]] | None:
    """The contracted letter, the batch letters (in `data`'s order) and the new letters (in output order) when
    `data`,`weight`->`output` contracts one letter with a weight whose other letters are batch or new; else None."""
    if any(len(set(s)) != len(s) for s in (data, weight, output)):
        return None
    shared = set(data) & set(weight)
    contracted = shared - set(output)
    if len(contracted) != 1:
        return None
    (j,) = contracted
    batch = [c for c in data if c in shared and c != j]
    new = [c for c in output if c in weight and c not in shared]
    if set(output) != (set(data) - {j}) | set(new) or set(weight) != {j, *batch, *new} or not new:
        return None
    return j, batch, new


def drop_unit_letters(data: str, weight: str, output: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """`weight`'s letters and `array` without the letters it holds at size 1 that `data` and `output` hold too."""
    unit = [k for k, c in enumerate(weight) if array.shape[k] == 1 and c in data and c in output]
    if not unit or len(set(weight)) != len(weight):
        return weight, array
    return "".join(c for k, c in enumerate(weight) if k not in unit), array.squeeze(axis=tuple(unit))


def _replace(graph: ir.Graph, node: ir.Node, data: ir.Value, steps: list[tuple[str, list[ir.Value], dict]]) -> None:
    """`node` replaced by a chain of `steps` (op, inputs after the chain's value, attributes) from `data`; the
    MatMul keeps the Einsum's name, the last step its output's."""
    result, nodes, x = node.outputs[0], [], data
    for k, (op, inputs, attributes) in enumerate(steps):
        made = ir.node(op, [x, *inputs], attributes or None, name=node.name if op == "MatMul" else f"{node.name}/{op}_{k}")
        x = made.outputs[0]
        x.name = f"{result.name}_{op.lower()}_{k}"
        nodes.append(made)
    ir.convenience.replace_nodes_and_values(graph, node, [node], nodes, [result], [x])
    x.name = result.name


def _steps(
    graph: ir.Graph, name: str, array: np.ndarray, letters: tuple[str, str, str], found: tuple[str, list[str], list[str]]
) -> list[tuple[str, list[ir.Value], dict]]:
    """The chain the module docstring writes, from the activation to the Einsum's output."""
    (data, weight, output), (j, batch, new) = letters, found
    rest = [c for c in data if c != j and c not in batch]
    size = {c: array.shape[weight.index(c)] for c in weight}
    w = np.transpose(array, [weight.index(c) for c in (*batch, j, *new)])
    w = w.reshape(*[size[c] for c in batch], size[j], -1)
    steps: list[tuple[str, list[ir.Value], dict]] = []
    if data != "".join(rest + batch) + j:
        steps.append(("Transpose", [], {"perm": [data.index(c) for c in (*rest, *batch, j)]}))
    if batch:  # a row of one before j: MatMul broadcasts W's groups against x's
        steps.append(("Unsqueeze", [new_constant(graph, f"{name}_matmul_axes", np.array([-2], np.int64))], {}))
    steps.append(("MatMul", [new_constant(graph, f"{name}_matmul", np.ascontiguousarray(w))], {}))
    if batch or len(new) > 1:
        dims = [0] * (len(rest) + len(batch)) + [size[c] for c in new]
        steps.append(("Reshape", [new_constant(graph, f"{name}_matmul_shape", np.array(dims, np.int64))], {}))
    if output != "".join(rest + batch + new):
        steps.append(("Transpose", [], {"perm": [(rest + batch + new).index(c) for c in output]}))
    return steps


class EinsumToMatMulPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = 0
        for node in list(model.graph):
            if node.op_type != "Einsum" or node.domain != "" or len(node.inputs) != 2 or None in node.inputs:
                continue
            parsed = _operands(node.attributes.get_string("equation", ""))
            constant = [v is not None and v.const_value is not None for v in node.inputs]
            if parsed is None or constant.count(True) != 1:
                continue
            k = constant.index(True)
            data, weight_value = node.inputs[1 - k], node.inputs[k]
            data_letters, weight_letters, output = (parsed[1 - k], parsed[k], parsed[2])
            array = weight_value.const_value.numpy()  # type: ignore[union-attr]
            weight_letters, array = drop_unit_letters(data_letters, weight_letters, output, array)
            found = lowering(data_letters, weight_letters, output)
            if found is None or array.dtype.kind != "f":
                continue
            steps = _steps(model.graph, weight_value.name, array, (data_letters, weight_letters, output), found)
            _replace(model.graph, node, data, steps)
            changed += 1
        logger.info("einsum_to_matmul: %d Einsums with a constant operand", changed)
        return ir.passes.PassResult(model, modified=bool(changed))

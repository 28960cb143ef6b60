"""The weighted layers algorithms work on, and their inputs as rows that meet the weight rows.

Conv weights (Cout, Cin/g, kh, kw) become rows of length Cin/g·kh·kw; the input becomes im2col
patches in the same order, per group. A 1-D Conv (audio front ends, TCNs) is the 2-D case with
kh = 1. Gemm/MatMul weights become rows of length K (one per
output feature) and the input rows of K. Then a layer's output is rows(x) @ rows(w).T.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.quant.graph_facts import GraphFacts

if TYPE_CHECKING:
    from qtool.quant.algorithms import AlgorithmContext


@dataclass
class Layer:
    node: onnx.NodeProto
    weight: str
    groups: int  # Conv groups; 1 for Gemm/MatMul

    @property
    def input(self) -> str:
        return self.node.input[0]

    def weight_rows(self, w: np.ndarray) -> np.ndarray:
        """(out_features, fan_in) view of the weight."""
        if self.node.op_type == "Conv":
            return w.reshape(w.shape[0], -1)
        if (self.node.op_type == "Gemm" and not attribute(self.node, "transB", 0)) or self.node.op_type == "MatMul":
            return w.T
        return w

    def fan_in(self, dims: list[int]) -> int:
        """A weight row's length (weight_rows) for a weight of shape `dims`, without its values."""
        return self.weight_rows(np.broadcast_to(np.float32(0), dims)).shape[1]

    def weight_from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.node.op_type == "Conv":
            return rows.reshape(shape)
        if (self.node.op_type == "Gemm" and not attribute(self.node, "transB", 0)) or self.node.op_type == "MatMul":
            return rows.T.reshape(shape)
        return rows.reshape(shape)

    def input_rows(self, x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
        """Input rows per group, (groups, rows, fan_in) in float64: at most `limit` rows, sampled
        deterministically before the patches are gathered, so only those are ever copied."""
        if self.node.op_type != "Conv":
            rows = x.reshape(-1, x.shape[-1])
            picked = rows[rng.choice(len(rows), limit, replace=False)] if len(rows) > limit else rows
            return picked.astype(np.float64)[None]
        windows = _windows(x[:, :, None] if x.ndim == 3 else x, self.node)  # (N, C, OH, OW, kh, kw), a view
        positions = (windows.shape[0], *windows.shape[2:4])
        total = int(np.prod(positions))
        picked = rng.choice(total, limit, replace=False) if total > limit else np.arange(total)
        at_n, at_h, at_w = np.unravel_index(picked, positions)
        patches = windows[at_n, :, at_h, at_w].astype(np.float64)  # (rows, C, kh, kw)
        return patches.reshape(len(picked), self.groups, -1).transpose(1, 0, 2)


def _windows(x: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    kernel = attribute(node, "kernel_shape", None) or [0, 0]
    lead = [1] * (2 - len(kernel))  # a 1-D Conv is the 2-D one with height 1
    (kh, kw), pads = lead + kernel, attribute(node, "pads", [0] * 2 * len(kernel))
    strides, dil = lead + attribute(node, "strides", [1] * len(kernel)), lead + attribute(node, "dilations", [1] * len(kernel))
    pads = [0, pads[0], 0, pads[1]] if lead else pads
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = ((kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    return windows[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]


def weighted_layers(facts: GraphFacts, skip: set[str] = frozenset()) -> list[Layer]:
    layers = []
    for node in facts.model.graph.node:
        if node.name in skip or node.op_type in skip or len(node.input) < 2 or node.input[1] not in facts.initializers:
            continue
        if node.op_type == "Conv" and len(facts.initializers[node.input[1]].dims) in (3, 4):
            if not attribute(node, "kernel_shape", None):
                dims = facts.initializers[node.input[1]].dims
                node.attribute.append(onnx.helper.make_attribute("kernel_shape", list(dims[2:])))
            layers.append(Layer(node, node.input[1], int(attribute(node, "group", 1))))
        elif (
            node.op_type in ("Gemm", "MatMul")
            and len(facts.initializers[node.input[1]].dims) == 2
            and not attribute(node, "transA", 0)
        ):
            layers.append(Layer(node, node.input[1], 1))
    return layers


def matmul_bias(facts: GraphFacts, node: onnx.NodeProto) -> str | None:
    """The constant bias the MatMul's only user adds to it, if that is what its user does."""
    users = facts.consumers.get(node.output[0], [])
    found = facts.bias_add(users[0]) if len(users) == 1 else None
    return found[1] if found is not None and found[0] is node else None


def layer_bias(ctx: AlgorithmContext, facts: GraphFacts, layer: Layer, channels: int) -> str | None:
    """The layer's bias: its third input, the constant a MatMul's only user adds (how exporters write a
    Linear layer: transformers' every projection), or a new zero bias for a Conv or Gemm."""
    node = layer.node
    if len(node.input) > 2 and node.input[2]:
        return node.input[2]
    if node.op_type == "MatMul":
        return matmul_bias(facts, node)
    base, taken = f"{layer.weight}_bc_bias", {i.name for i in ctx.model.graph.initializer}
    # layers sharing one weight (tied) each get a bias: one by the weight's name took the last layer's correction
    name = next(n for n in itertools.chain([base], (f"{base}_{k}" for k in itertools.count(1))) if n not in taken)
    del node.input[2:]
    node.input.append(name)
    ctx.set_array(name, np.zeros(channels, np.float32))
    return name


def restore_biases(ctx: AlgorithmContext, facts: GraphFacts, originals: dict[str, np.ndarray]) -> None:
    """Each bias back to its value before a reverted correction; one layer_bias added (not in `facts`, read before
    it) goes with its node input, so the model is the one given, not one with zero biases the plan quantizes."""
    for name, value in originals.items():
        if name in facts.initializers:
            ctx.set_array(name, value)
            continue
        graph = ctx.model.graph
        for node in graph.node:
            if node.op_type in ("Conv", "Gemm") and node.input[2:] == [name]:
                del node.input[2:]
        del graph.initializer[next(k for k, i in enumerate(graph.initializer) if i.name == name)]


def augmented_moments(
    layer: Layer, x: np.ndarray, limit: int, seed: tuple[int, ...], target: np.ndarray | None = None
) -> np.ndarray:
    """Per group, Σ x̃ x̃ᵀ with x̃ = [x; 1] over at most `limit` sampled input rows (the 1 stands
    for the bias). Shape (groups, d+1, d+1). Given `target` (the float model's input at the same
    sample), also Σ x̃ t̃ᵀ over the same rows, stacked after: shape (2, groups, d+1, d+1)."""

    rows = layer.input_rows(x, limit, np.random.default_rng(seed))
    moments = _augmented_product(rows, rows)
    if target is None:
        return moments
    return np.stack([moments, _augmented_product(rows, layer.input_rows(target, limit, np.random.default_rng(seed)))])


def _augmented_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ ã b̃ᵀ per group over the rows, ã = [a; 1] and b̃ = [b; 1]: the 1s' row and column are sums."""
    groups, count, d = a.shape
    out = np.empty((groups, d + 1, d + 1))
    out[:, :d, :d] = a.transpose(0, 2, 1) @ b
    out[:, :d, d], out[:, d, :d], out[:, d, d] = a.sum(axis=1), b.sum(axis=1), count
    return out

"""The weighted layers algorithms work on, and their inputs as rows that meet the weight rows.

Conv weights (Cout, Cin/g, kh, kw) become rows of length Cin/g·kh·kw; the input becomes im2col
patches in the same order, per group. Gemm/MatMul weights become rows of length K (one per
output feature) and the input rows of K. Then a layer's output is rows(x) @ rows(w).T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qtool.quant.graph_facts import GraphFacts


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return default


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
        if (self.node.op_type == "Gemm" and not _attr(self.node, "transB", 0)) or self.node.op_type == "MatMul":
            return w.T
        return w

    def weight_from_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if self.node.op_type == "Conv":
            return rows.reshape(shape)
        if (self.node.op_type == "Gemm" and not _attr(self.node, "transB", 0)) or self.node.op_type == "MatMul":
            return rows.T.reshape(shape)
        return rows.reshape(shape)

    def input_rows(self, x: np.ndarray, limit: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Input rows per group (at most `limit` rows each, sampled deterministically)."""
        if self.node.op_type != "Conv":
            rows = x.reshape(-1, x.shape[-1])
            return [rows[rng.choice(len(rows), limit, replace=False)] if len(rows) > limit else rows]
        patches = _im2col(x, self.node)  # (rows, C, kh*kw)
        if len(patches) > limit:
            patches = patches[rng.choice(len(patches), limit, replace=False)]
        per_group = patches.shape[1] // self.groups
        return [patches[:, g * per_group : (g + 1) * per_group].reshape(len(patches), -1) for g in range(self.groups)]


def _im2col(x: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    kh, kw = _attr(node, "kernel_shape", None) or [0, 0]
    strides = _attr(node, "strides", [1, 1])
    dil = _attr(node, "dilations", [1, 1])
    pads = _attr(node, "pads", [0, 0, 0, 0])
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = ((kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]  # (N, C, OH, OW, kh, kw)
    n, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c, kh * kw)


def weighted_layers(facts: GraphFacts, skip: set[str] = frozenset()) -> list[Layer]:
    layers = []
    for node in facts.model.graph.node:
        if node.name in skip or node.op_type in skip or len(node.input) < 2 or node.input[1] not in facts.initializers:
            continue
        if node.op_type == "Conv" and len(facts.initializers[node.input[1]].dims) == 4:
            if not _attr(node, "kernel_shape", None):
                dims = facts.initializers[node.input[1]].dims
                node.attribute.append(onnx.helper.make_attribute("kernel_shape", list(dims[2:])))
            layers.append(Layer(node, node.input[1], int(_attr(node, "group", 1))))
        elif (
            node.op_type in ("Gemm", "MatMul")
            and len(facts.initializers[node.input[1]].dims) == 2
            and not _attr(node, "transA", 0)
        ):
            layers.append(Layer(node, node.input[1], 1))
    return layers


def augmented_moments(
    layer: Layer, x: np.ndarray, limit: int, seed: tuple[int, ...], target: np.ndarray | None = None
) -> np.ndarray:
    """Per group, Σ x̃ x̃ᵀ with x̃ = [x; 1] over at most `limit` sampled input rows (the 1 stands
    for the bias). Shape (groups, d+1, d+1). Given `target` (the float model's input at the same
    sample), also Σ x̃ t̃ᵀ over the same rows, stacked after: shape (2, groups, d+1, d+1)."""

    def rows_of(values: np.ndarray) -> np.ndarray:
        rows = np.stack(layer.input_rows(values, limit, np.random.default_rng(seed))).astype(np.float64)
        return np.concatenate([rows, np.ones((*rows.shape[:2], 1))], axis=2)

    rows = rows_of(x)
    moments = rows.transpose(0, 2, 1) @ rows
    if target is None:
        return moments
    return np.stack([moments, rows.transpose(0, 2, 1) @ rows_of(target)])

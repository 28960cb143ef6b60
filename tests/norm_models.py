"""A LayerNorm written op by op, as exporters that do not emit LayerNormalization write it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def flax_layernorm_nodes() -> tuple[list[onnx.NodeProto], dict]:
    """Flax's LayerNorm as jax2tf writes it (Magika): over axis 1 of [1, 64, 16], var = E[x²] − E[x]²."""
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s1"], keepdims=0),
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["s2"], keepdims=0),
        helper.make_node("Mul", ["s2", "inv_n"], ["ex2"]),
        helper.make_node("Mul", ["s1", "inv_n"], ["mean"]),
        helper.make_node("Mul", ["mean", "mean"], ["mean2"]),
        helper.make_node("Sub", ["ex2", "mean2"], ["var"]),
        helper.make_node("Max", ["zero", "var"], ["var0"]),
        helper.make_node("Reshape", ["var0", "row"], ["var_b"]),
        helper.make_node("Add", ["var_b", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Reciprocal", ["std"], ["rstd"]),
        helper.make_node("Mul", ["rstd", "scale"], ["gain"]),
        helper.make_node("Reshape", ["mean", "row"], ["mean_b"]),
        helper.make_node("Sub", ["x", "mean_b"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["normed"]),
        helper.make_node("Add", ["normed", "bias"], ["y"]),
    ]
    rng = np.random.default_rng(0)
    arrays = {
        "axes": np.array([1], np.int64), "inv_n": np.float32(1 / 64), "zero": np.float32(0), "eps": np.float32(1e-6),
        "row": np.array([1, 1, 16], np.int64), "scale": rng.uniform(0.5, 2, (1, 64, 1)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (1, 64, 1)).astype(np.float32),
    }  # fmt: skip
    return nodes, arrays

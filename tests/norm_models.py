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


def gelu_nodes(form: str, x: str = "x", y: str = "y", prefix: str = "g_") -> tuple[list[onnx.NodeProto], dict]:
    """GELU as exporters below opset 20 write it: "erf" (PyTorch), "tanh" (GPT-2's gelu_new, x³ as Pow) or
    "tanh-mul" (Flax / jax2tf: x³ as x·x·x, the halving first); its inside tensors are named `prefix` + a letter."""
    g = lambda name: prefix + name  # noqa: E731
    make = helper.make_node
    if form == "erf":
        nodes = [
            make("Div", [x, "sqrt2"], [g("d")]), make("Erf", [g("d")], [g("e")]), make("Add", [g("e"), "one"], [g("a")]),
            make("Mul", [x, g("a")], [g("m")]), make("Mul", [g("m"), "half"], [y]),
        ]  # fmt: skip
        return nodes, {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    if form == "tanh":
        cube = [make("Pow", [x, "three"], [g("c")])]
    else:
        cube = [make("Mul", [x, x], [g("sq")]), make("Mul", [g("sq"), x], [g("c")])]
    nodes = [
        *cube, make("Mul", [g("c"), "k"], [g("ck")]), make("Add", [x, g("ck")], [g("s")]),
        make("Mul", [g("s"), "root"], [g("t")]), make("Tanh", [g("t")], [g("h")]), make("Add", ["one", g("h")], [g("a")]),
        make("Mul", [x, "half"], [g("x2")]), make("Mul", [g("x2"), g("a")], [y]),
    ]  # fmt: skip
    arrays = {"three": np.float32(3), "k": np.float32(0.044715), "root": np.float32(np.sqrt(2 / np.pi)),
              "one": np.float32(1), "half": np.float32(0.5)}  # fmt: skip
    return nodes, arrays

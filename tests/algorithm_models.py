"""Generated models for the algorithm tests: an unbalanced two-conv net, one with absorbable BN bias,
a MatMul/Gemm stack and a tiny transformer block."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def unbalanced_convs(seed: int = 0) -> onnx.ModelProto:
    """Conv(4->6) -> Relu -> Conv(6->3), the first conv's channels scaled 1e-2..1e2 apart."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(6, 4, 3, 3)).astype(np.float32) * np.logspace(-2, 2, 6, dtype=np.float32)[:, None, None, None]
    b1 = rng.normal(size=6).astype(np.float32)
    w2 = rng.normal(size=(3, 6, 3, 3)).astype(np.float32) / np.logspace(-2, 2, 6, dtype=np.float32)[None, :, None, None]
    b2 = rng.normal(size=3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes,
        "unbalanced",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def conv1d_stack(seed: int = 0) -> onnx.ModelProto:
    """An audio-style front end: Conv1d(4->8, k5, no bias) -> Relu -> Conv1d(8->4, k3) over (1, 4, 32)."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(8, 4, 5)).astype(np.float32), rng.normal(size=(4, 8, 3)).astype(np.float32)
    b2 = rng.normal(size=4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1], strides=[2]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes,
        "conv1d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def high_bias_convs() -> onnx.ModelProto:
    """Conv(4->6) -> BatchNormalization -> Relu -> Conv 1x1 (6->3). BN's β is 3 on channels 0-2 and
    0.5 on 3-5 with γ 0.5, and the first conv's weights are tiny, so the ReLU input stays near β:
    β − 3γ = 1.5 is absorbable on 0-2 and exactly so (the ReLU never cuts), nothing on 3-5."""
    rng = np.random.default_rng(0)
    arrays = {
        "w1": rng.normal(0, 0.01, (6, 4, 3, 3)).astype(np.float32),
        "b1": np.zeros(6, np.float32),
        "gamma": np.full(6, 0.5, np.float32),
        "beta": np.array([3, 3, 3, 0.5, 0.5, 0.5], np.float32),
        "mean": np.zeros(6, np.float32),
        "var": np.ones(6, np.float32),
        "w2": rng.normal(0, 1.0, (3, 6, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 3).astype(np.float32),
    }
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        high_bias (float[1,4,8,8] x) => (float[1,3,8,8] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            b = BatchNormalization <epsilon = 0.0> (c, gamma, beta, mean, var)
            r = Relu (b)
            y = Conv (r, w2, b2)
        }
        """)
    model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in arrays.items())
    return model


def linear_stack(seed: int = 0) -> onnx.ModelProto:
    """x[6,16] -> MatMul (no bias) -> Relu -> Gemm (W [K, N], no bias) -> Relu -> Gemm (transB, bias):
    the three weight layouts the algorithms read as rows, two of them without a bias."""
    rng = np.random.default_rng(seed)
    arrays = {
        "w1": rng.normal(0, 0.5, (16, 8)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (8, 5)).astype(np.float32),
        "w3": rng.normal(0, 0.5, (4, 5)).astype(np.float32),
        "b3": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        linear_stack (float[6,16] x) => (float[6,4] y) {
            h1 = MatMul (x, w1)
            r1 = Relu (h1)
            h2 = Gemm (r1, w2)
            r2 = Relu (h2)
            y = Gemm <transB = 1> (r2, w3, b3)
        }
        """)
    model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in arrays.items())
    return model


def attention_block(seed: int = 0) -> onnx.ModelProto:
    """Self-attention over 8 tokens with a -3.4e38 padding mask, LayerNormalization and Erf-GELU."""
    rng = np.random.default_rng(seed)
    d = 16
    mask = np.zeros((1, 8, 8), np.float32)
    mask[:, :, 6:] = np.finfo(np.float32).min  # the last two tokens are padding
    inits = {
        "wq": rng.normal(size=(d, d)) / 4,
        "wk": rng.normal(size=(d, d)) / 4,
        "wv": rng.normal(size=(d, d)) / 4,
        "scale": np.array(1 / np.sqrt(d)),
        "mask": mask,
        "gamma": np.ones(d),
        "beta": np.zeros(d),
        "w_ff": rng.normal(size=(d, d)) / 4,
        "half": np.array(0.5),
        "one": np.array(1.0),
        "rsqrt2": np.array(1 / np.sqrt(2)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["raw_scores"]),
        helper.make_node("Mul", ["raw_scores", "scale"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
        helper.make_node("Add", ["ctx", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w_ff"], ["ff"]),
        helper.make_node("Mul", ["ff", "rsqrt2"], ["ff_s"]),
        helper.make_node("Erf", ["ff_s"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["ff", "erf1"], ["g1"]),
        helper.make_node("Mul", ["g1", "half"], ["y"]),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{node.op_type}_{i}"
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, d])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def hardswish_depthwise(affine: bool = False, channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv -> HardSwish [-> Mul(a) -> Add(b), PP-LCNetV3's learnable affine] -> depthwise Conv -> Relu -> Conv,
    as PP-LCNet has them: channel 5's HardSwish output is all but silent and the depthwise Conv multiplies
    it by hundreds (a folded BatchNorm with a tiny variance), so on the tensor's one grid it is noise."""
    rng = np.random.default_rng(seed)
    w0 = (rng.normal(size=(channels, 3, 3, 3)) * 0.3).astype(np.float32)
    w0[5] *= 0.01
    b0 = (rng.normal(size=channels) * 0.1).astype(np.float32)
    b0[5] = 0.0
    w1 = rng.normal(size=(channels, 1, 3, 3)).astype(np.float32)
    w1[5] *= 300
    w2 = (rng.normal(size=(8, channels, 1, 1)) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for v, n in ((w0, "w0"), (b0, "b0"), (w1, "w1"), (w2, "w2"))]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["u"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["u"], ["h"], name="hs")]  # fmt: skip
    read = "h"
    if affine:
        inits += [numpy_helper.from_array(np.array(1.3, np.float32), "a"), numpy_helper.from_array(np.array(0.2, np.float32), "b")]
        nodes += [helper.make_node("Mul", ["h", "a"], ["ha"], name="scale"), helper.make_node("Add", ["ha", "b"], ["hb"], name="shift")]
        read = "hb"
    nodes += [
        helper.make_node("Conv", [read, "w1"], ["d"], name="dw", pads=[1, 1, 1, 1], group=channels),
        helper.make_node("Relu", ["d"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="pw"),
    ]
    graph = helper.make_graph(
        nodes, "hardswish_depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model

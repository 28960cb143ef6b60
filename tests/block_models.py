"""Small MatMul/Gemm/Conv models for per-block weights, a numpy reference of block quantization,
and a numpy forward pass of the MLP (the reference the QDQ model must match).

The models are at opset 21 (ir 10), where blocked DequantizeLinear lives, so that quantizing a
stripped model again gives the same bytes (a lower opset would be upgraded on the first pass only).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21


def _model(nodes, name: str, x_shape, y_shape, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp_weights(seed: int = 0, dims: tuple[int, ...] = (64, 96, 32)) -> dict[str, np.ndarray]:
    """W0 [64, 96] (MatMul, blocks on axis 0) and W1 [32, 96] (Gemm transB=1, blocks on axis 1);
    a few input rows 6x the rest, the outliers per-block scales are for."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 1 / np.sqrt(dims[0]), (dims[0], dims[1])).astype(np.float32)
    w0[[3, 40]] *= 6.0
    w1 = rng.normal(0, 1 / np.sqrt(dims[1]), (dims[2], dims[1])).astype(np.float32)
    w1[:, [7, 70]] *= 6.0
    return {
        "W0": w0,
        "B0": rng.normal(0, 0.1, dims[1]).astype(np.float32),
        "W1": w1,
        "B1": rng.normal(0, 0.1, dims[2]).astype(np.float32),
    }


def mlp_model(seed: int = 0, dims: tuple[int, ...] = (64, 96, 32)) -> onnx.ModelProto:
    """x[8, 64] -> MatMul W0 -> Add B0 -> Relu -> Gemm(W1, B1, transB=1) -> y[8, 32]."""
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W0"], ["m0"], name="mm0"),
        n("Add", ["m0", "B0"], ["a0"], name="add0"),
        n("Relu", ["a0"], ["r0"], name="relu0"),
        n("Gemm", ["r0", "W1", "B1"], ["y"], name="gemm1", transB=1),
    ]
    return _model(nodes, "mlp", [8, dims[0]], [8, dims[2]], mlp_weights(seed, dims))


def mlp_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    hidden = np.maximum(x @ weights["W0"] + weights["B0"], 0.0)
    return hidden @ weights["W1"].T + weights["B1"]


def conv_model(seed: int = 0, cin: int = 32) -> onnx.ModelProto:
    """x[1, cin, 6, 6] -> Conv 3x3 (8 outputs, blocks along its cin inputs) -> y[1, 8, 6, 6]."""
    rng = np.random.default_rng(seed)
    arrays = {"W": rng.normal(0, 0.2, (8, cin, 3, 3)).astype(np.float32), "B": rng.normal(0, 0.1, 8).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    return _model(nodes, "conv", [1, cin, 6, 6], [1, 8, 6, 6], arrays)


def reference_blocks(w: np.ndarray, block_axis: int, size: int, bitwidth: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """min-max symmetric block quantization, written out by hand: (per-block scales in the weight's
    layout with the block axis divided by `size`, the dequantized weight)."""
    levels = 2 ** (bitwidth - 1) - 1
    moved = np.moveaxis(w.astype(np.float64), block_axis, 0)
    blocks = moved.reshape(moved.shape[0] // size, size, *moved.shape[1:])
    reduce = (1, *range(3, blocks.ndim)) if w.ndim > 2 else (1,)  # a Conv block spans its kernel too
    scale = np.abs(blocks).max(axis=reduce, keepdims=True) / levels
    q = np.clip(np.rint(blocks / scale), -levels - 1, levels)
    dequantized = np.moveaxis((q * scale).reshape(moved.shape), 0, block_axis)
    return np.moveaxis(scale.squeeze(axis=1), 0, block_axis), dequantized


def embedding_model(seed: int = 0, vocab: int = 40, width: int = 64, outliers: tuple[int, ...] = (2, 5)) -> onnx.ModelProto:
    """ids[1, 8] (int64) -> Gather(table [vocab, width]) -> MatMul W [width, 32] -> y[1, 8, 32]; a few tokens'
    rows (`outliers`) 8x the rest, what per-token blocks of the table are for."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 1, (vocab, width)).astype(np.float32)
    table[list(outliers)] *= 8.0
    arrays = {"table": table, "W": rng.normal(0, 1 / np.sqrt(width), (width, 32)).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Gather", ["table", "ids"], ["e"], name="embed"), n("MatMul", ["e", "W"], ["y"], name="proj")]
    graph = helper.make_graph(
        nodes,
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def patch_model(seed: int = 0) -> onnx.ModelProto:
    """x[1, 3, 8, 8] -> Conv 4x4 stride 4 (3 inputs: no block of 16 fits, per channel) -> [1, 4, 32] tokens ->
    MatMul W [32, 16] (blocks) -> y[1, 4, 16]: a ViT's patch embedding and a first layer."""
    rng = np.random.default_rng(seed)
    arrays = {
        "P": rng.normal(0, 0.2, (32, 3, 4, 4)).astype(np.float32),
        "shape": np.array([1, 32, 4], np.int64),
        "W": rng.normal(0, 0.2, (32, 16)).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "P"], ["c"], name="patch", kernel_shape=[4, 4], strides=[4, 4]),
        n("Reshape", ["c", "shape"], ["r"], name="flatten"),
        n("Transpose", ["r"], ["t"], name="tokens", perm=[0, 2, 1]),
        n("MatMul", ["t", "W"], ["y"], name="proj"),
    ]
    return _model(nodes, "patch", [1, 3, 8, 8], [1, 4, 16], arrays)


def tied_model(seed: int = 0, vocab: int = 200, width: int = 64) -> onnx.ModelProto:
    """ids[1, 8] -> Gather(table [vocab, width]) -> MatMul W -> MatMul(·, Transpose(table)) -> logits[1, 8, vocab]:
    a tied lm_head over a table small enough for convert's constant folding (under 4M values)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "table": rng.normal(0, 1, (vocab, width)).astype(np.float32),
        "W": rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["table", "ids"], ["e"], name="embed"),
        n("MatMul", ["e", "W"], ["h"], name="mid"),
        n("Transpose", ["table"], ["tT"], name="tied", perm=[1, 0]),
        n("MatMul", ["h", "tT"], ["logits"], name="lm_head"),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, vocab])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    return model

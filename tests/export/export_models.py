"""Generated float models for the export tests, and helpers to quantize and run them.

Each model covers ops the QOperator exporter converts (or must leave float) in one small graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from conftest import input_shapes, save_model, write_samples
from onnx import numpy_helper

from qtool import api
from qtool.config import QuantizeOptions


def _model(text: str, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in arrays.items():
        kept = value if value.dtype.kind in "iu" else value.astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(kept, name))
    onnx.checker.check_model(model, full_check=True)
    return model


def matmul_model() -> onnx.ModelProto:
    """x[1,4,6] -> MatMul -> Add(const) -> Relu -> MatMul -> Sigmoid -> Mul(const) -> Gemm(transB=0) -> y."""
    rng = np.random.default_rng(3)
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    mm (float[1,4,6] x) => (float[4,3] y) {
        a = MatMul (x, W1)
        b = Add (a, B1)
        r = Relu (b)
        m = MatMul (r, W2)
        s = Sigmoid (m)
        k = Mul (s, K)
        f = Reshape (k, shape)
        y = Gemm <alpha = 0.5> (f, W3, B3)
    }
    """
    arrays = {
        "W1": rng.normal(0, 0.5, (6, 8)),
        "B1": rng.normal(0, 0.2, (8,)),
        "W2": rng.normal(0, 0.5, (8, 5)),
        "K": rng.uniform(0.5, 2.0, (5,)),
        "W3": rng.normal(0, 0.5, (5, 3)),
        "B3": rng.normal(0, 0.2, (3,)),
        "shape": np.array([4, 5], np.int64),
    }
    return _model(text, arrays)


def pool_model() -> onnx.ModelProto:
    """Conv -> Clip(0, 6) -> AveragePool -> LeakyRelu -> Transpose -> Softmax (no QOperator form) -> y."""
    rng = np.random.default_rng(4)
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    pools (float[1,3,8,8] x) => (float[1,4,4,4] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
        r = Clip (c, lo, hi)
        p = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (r)
        l = LeakyRelu <alpha = 0.1> (p)
        t = Transpose <perm = [0, 2, 3, 1]> (l)
        y = Softmax <axis = -1> (t)
    }
    """
    arrays = {
        "W": rng.normal(0, 1.0, (4, 3, 3, 3)),
        "B": rng.normal(0, 0.5, (4,)),
        "lo": np.array(0.0),
        "hi": np.array(1.5),
    }
    return _model(text, arrays)


def relu6_model(per_channel: bool = False) -> onnx.ModelProto:
    """Conv -> Relu -> Min(constant) -> Conv: the ReLU6 form cle leaves (a cap per channel with
    `per_channel`), quantized only after the Min."""
    rng = np.random.default_rng(5)
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    relu6 (float[1,3,6,6] x) => (float[1,2,6,6] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        r = Relu (c)
        m = Min (r, cap)
        y = Conv (m, W2, B2)
    }
    """
    arrays = {
        "W1": rng.normal(0, 1.0, (4, 3, 3, 3)),
        "B1": rng.normal(0, 0.5, (4,)),
        "cap": np.array([0.3, 0.8, 1.2, 5.0]).reshape(1, 4, 1, 1) if per_channel else np.array(0.8),
        "W2": rng.normal(0, 0.5, (2, 4, 1, 1)),
        "B2": rng.normal(0, 0.1, (2,)),
    }
    return _model(text, arrays)


def quantize(tmp_path: Path, model: onnx.ModelProto, name: str = "model", **flags) -> tuple[Path, Path]:
    """Save `model`, calibrate it on 8 random samples; returns (float model path, QDQ model path)."""
    source = save_model(model, tmp_path / f"{name}.onnx")
    calib = write_samples(tmp_path / f"{name}_calib", model, 8, list_name="calib.txt")
    output = tmp_path / f"{name}.quant.onnx"
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=output, **flags))
    return source, output


def random_feeds(model: onnx.ModelProto, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {name: rng.uniform(-1.0, 1.0, shape).astype(dtype) for name, dtype, shape in input_shapes(model)}
        for _ in range(n)
    ]


def session(model: onnx.ModelProto | Path, optimized: bool = True) -> ort.InferenceSession:
    """`optimized=False` runs a QDQ model op by op (no fusion), as its float simulation."""
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def max_difference(a: ort.InferenceSession, b: ort.InferenceSession, feeds: list[dict]) -> float:
    return max(float(np.abs(x - y).max()) for f in feeds for x, y in zip(a.run(None, f), b.run(None, f), strict=True))


def fallback_model() -> onnx.ModelProto:
    """Conv without a bias (a QLinearConv with none), then ops with no QLinear form here: MaxPool
    that also returns its indices, a dilated AveragePool (its input, the Relu's output, read float so
    that onnxruntime loads the model), and a MatMul on a per-channel-quantized input; they must stay
    float between DequantizeLinear and QuantizeLinear."""
    rng = np.random.default_rng(6)
    text = """
    <ir_version: 9, opset_import: ["" : 19]>
    fallback (float[1,3,8,8] x) => (float[1,4,4] y, int64[1,4,4,4] i) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W)
        p, i = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (c)
        r = Relu (p)
        a = AveragePool <kernel_shape = [2, 2], dilations = [2, 2], pads = [1, 1, 1, 1]> (r)
        f = Reshape (a, shape)
        y = MatMul (f, W2)
    }
    """
    arrays = {
        "W": rng.normal(0, 1.0, (4, 3, 3, 3)),
        "W2": rng.normal(0, 0.5, (16, 4)),
        "shape": np.array([1, 4, 16], np.int64),
    }
    return _model(text, arrays)

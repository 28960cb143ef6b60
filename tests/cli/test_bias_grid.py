"""An int32 bias sits on its layer's accumulator grid (input scale x weight scale), which onnxruntime's fused
integer kernels read it on whatever its DequantizeLinear says: a bias too large for that grid raises the weight's
scale (encoding.weight_for_int32_bias), and the model runs the same fused as in Q/DQ arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SATURATING_CPU, integer_kernels_saturate, run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper


def _quantized(tmp_path: Path, graph: onnx.GraphProto, samples: list[np.ndarray]) -> tuple[Path, Path]:
    """The model saved and quantized W8A8 per channel with int32 biases, calibrated on `samples` of input x."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    listing = write_feeds(tmp_path, [{"x": x} for x in samples])
    result = run_cli(["quantize", "-i", path, "--input_list", listing, "-o", out,
                      "--use_per_channel_quantization", "--use_per_row_quantization", "--bias_bitwidth", "32"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return path, out


def _sqnr_qdq_and_fused(path: Path, out: Path, x: np.ndarray) -> list[float]:
    """Output SQNR against the float model in Q/DQ arithmetic, then with onnxruntime's QDQ fusions (integer kernels)."""
    want, found = ort.InferenceSession(str(path)).run(None, {"x": x})[0], []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        got = ort.InferenceSession(str(out), options).run(None, {"x": x})[0]
        found.append(float(10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))))
    return found


def test_unused_tags_with_tiny_weights_and_a_large_bias_run_the_same_in_fused_kernels(tmp_path: Path) -> None:
    """A tagger's last layer (LAC): ten unused tags with weights of 1e-5 and a bias of -13.7 needed -4.4e9 on the
    accumulator grid; written with a scale of its own, onnxruntime's QGemm read it at half (-1.9 dB, not 41.7)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (64, 20)).astype(np.float32)
    b = rng.normal(0, 0.5, 20).astype(np.float32)
    w[:, 10:] = rng.normal(0, 1e-5, (64, 10))
    b[10:] = -13.7
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])], "tagger",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 20])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    path, out = _quantized(tmp_path, graph, [rng.normal(0, 0.1, (1, 8, 64)).astype(np.float32) for _ in range(4)])
    sqnr = _sqnr_qdq_and_fused(path, out, rng.normal(0, 0.1, (1, 8, 64)).astype(np.float32))
    assert min(sqnr) > 30, sqnr


def test_layers_that_share_a_bias_each_get_it_on_their_own_accumulator_grid(tmp_path: Path) -> None:
    """Weight-tied layers (ALBERT; chython-rxnmap's 8 tied layers) share their bias, while their inputs have
    different scales: one int32 grid was right for one layer only, and the fused kernels added it at the wrong
    scale for the rest. convert gives each layer a copy of the bias (the weight stays shared)."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(0, 0.3, (16, 16)).astype(np.float32), rng.normal(0, 1.0, 16).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m1"]), helper.make_node("Add", ["m1", "b"], ["h1"]),
             helper.make_node("Mul", ["h1", "ten"], ["h1x"]),  # the tied layer's second use reads 10x the range
             helper.make_node("MatMul", ["h1x", "w"], ["m2"]), helper.make_node("Add", ["m2", "b"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array(10.0, np.float32), "ten")],
    )  # fmt: skip
    path, out = _quantized(tmp_path, graph, [rng.normal(0, 1, (1, 4, 16)).astype(np.float32) for _ in range(4)])
    quantized = onnx.load(str(out))
    biases = {n.input[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("b")}
    assert len(biases) == 2, biases  # one int32 bias per layer
    if integer_kernels_saturate():  # the fused kernels' own loss (1.6 dB on AVX2) would hide the bias's
        pytest.skip(SATURATING_CPU)
    sqnr = _sqnr_qdq_and_fused(path, out, rng.normal(0, 1, (1, 4, 16)).astype(np.float32))
    assert abs(sqnr[1] - sqnr[0]) < 1, sqnr  # the fused kernels run what the Q/DQ arithmetic says

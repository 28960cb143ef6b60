"""Generalized-mean (GeM) pooling's cubes stay float: Clip -> Pow(3) -> ReduceMean -> Pow(1/3), as SSCD's copy-detection
embedders write it, put x³ on one 8-bit grid spanning the cube of x's range, where the small cubes round to zero,
and the cube root magnified their mean's rounding (quant/normalization.reduced_powers); the pooled root and
everything else stay quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper

from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import float_by_structure


def gem_embedder() -> onnx.ModelProto:
    """x [1, 3, 16, 16] -> Conv 3x3 (16 ch) -> Relu -> Clip(1e-6) -> Pow(3) -> ReduceMean over H, W -> Pow(1/3) ->
    Flatten -> Gemm [16 -> 8]: the embedding."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, (8, 16)).astype(np.float32), "g"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             numpy_helper.from_array(np.array(3.0, np.float32), "p"),
             numpy_helper.from_array(np.array(1 / 3, np.float32), "inv_p"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "hw")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Clip", ["r", "eps"], ["clipped"]), helper.make_node("Pow", ["clipped", "p"], ["cubes"]),
             helper.make_node("ReduceMean", ["cubes", "hw"], ["mean"], keepdims=1),
             helper.make_node("Pow", ["mean", "inv_p"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "g"], ["embedding"], transB=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "gem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 8])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def feeds(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    """Mostly small activations and a few bright spots, as a photo's features: the mean of cubes is the small ones'
    as much as the spots'."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(0, 0.3, (1, 3, 16, 16)) + 6 * (rng.random((1, 3, 16, 16)) < 0.003) for _ in range(n)]
    return [{"x": x.astype(np.float32)} for x in xs]


def test_the_cubes_and_their_mean_stay_float_and_the_pooled_root_does_not() -> None:
    floats = float_by_structure(GraphFacts.of(onnx.shape_inference.infer_shapes(gem_embedder())))
    assert {"cubes", "mean"} <= floats and not floats & {"pooled", "embedding", "clipped"}


def test_gem_pooling_quantizes_closer_to_float(tmp_path: Path) -> None:
    """Held-out inputs of another seed, min-max ranges, no algorithms."""
    source = gem_embedder()
    onnx.save(source, str(tmp_path / "m.onnx"))
    calib = write_feeds(tmp_path, feeds(2, 16))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", calib, "-o", tmp_path / "q.onnx",
                      "--act_quantizer_calibration", "min-max", "--apply_algorithms", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run = lambda path, x: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    xs = [f["x"] for f in feeds(3, 8)]
    ref = np.concatenate([run(tmp_path / "m.onnx", x) for x in xs])
    got = np.concatenate([run(tmp_path / "q.onnx", x) for x in xs])
    sqnr = 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr > 27.5, sqnr  # 29.0 dB; 25.4 with the cubes on an 8-bit grid

"""The report's "QDQ arithmetic in float" runs the graph as written: onnxruntime's NCHWc layout rewrite
re-blocks Conv sums, and on a QDQ model each changed sum can flip a rounding that later layers carry on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool import runtime

SIDE = 48


def _conv_stack(rng: np.random.Generator) -> onnx.ModelProto:
    """Six 3x3 Conv + Relu layers with channel counts NCHWc blocks (32, 64)."""
    nodes, inits, x, cin = [], [], "x", 3
    for i, cout in enumerate([32, 64, 64, 64, 64, 64]):
        w = rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")]  # fmt: skip
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]  # fmt: skip
        x, cin = f"r{i}", cout
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, cin, SIDE, SIDE])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_arithmetic_is_the_graph_as_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    onnx.save(_conv_stack(rng), str(tmp_path / "m.onnx"))
    lines = []
    for k in range(8):
        rng.standard_normal((1, 3, SIDE, SIDE)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
        lines.append(f"x:={tmp_path / f's{k}.raw'}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--input_list", tmp_path / "list.txt"])
    assert result.exit_code == 0, result.stderr
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    as_written = ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    report = runtime.session(quantized, optimized=True, integer_kernels=False)
    for k in range(8):
        feed = {"x": np.fromfile(tmp_path / f"s{k}.raw", np.float32).reshape(1, 3, SIDE, SIDE)}
        np.testing.assert_array_equal(report.run(None, feed)[0], as_written.run(None, feed)[0])

"""NaN a Where discards is a value, not a fault: TensorFlow's div_no_nan (tf2onnx writes Div, Equal, Where)
is 0/0 on a silent window of basic-pitch's normalised log spectrum. A NaN that reaches anything else is still
an error naming the tensor and the sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, save_model
from onnx import TensorProto, helper, numpy_helper


def _normalised(discarded: bool) -> onnx.ModelProto:
    """y = (x - min x) / (max x - min x), written as div_no_nan when `discarded` (else a bare Div)."""
    nodes = [
        helper.make_node("Mul", ["x", "gain"], ["a"]),
        helper.make_node("ReduceMin", ["a"], ["lo"], keepdims=1),
        helper.make_node("Sub", ["a", "lo"], ["shifted"]),
        helper.make_node("ReduceMax", ["shifted"], ["span"], keepdims=1),
        helper.make_node("Div", ["shifted", "span"], ["ratio"]),
    ]
    if discarded:
        nodes += [
            helper.make_node("Equal", ["span", "zero"], ["empty"]),
            helper.make_node("Where", ["empty", "zero", "ratio"], ["picked"]),
        ]
    nodes.append(helper.make_node("Mul", ["picked" if discarded else "ratio", "gain"], ["y"]))
    graph = helper.make_graph(
        nodes, "norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "gain"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(tmp_path: Path) -> Path:
    """Seven noisy windows and one silent one (all zeros: 0/0 inside)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        x = rng.normal(0, 1, (1, 64)).astype(np.float32) if i != 5 else np.zeros((1, 64), np.float32)
        path = tmp_path / f"{i}.raw"
        path.write_bytes(x.tobytes())
        lines.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def test_a_nan_the_where_discards_calibrates_and_stays_float(tmp_path: Path) -> None:
    model = save_model(_normalised(discarded=True), tmp_path / "m.onnx")
    samples, out = _samples(tmp_path), tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", samples, "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert acts["ratio"][0]["dtype"] == "float"  # it held NaN: no grid for it
    assert acts["picked"][0]["dtype"] == "int" and acts["picked"][0]["max"] <= 1.01  # the Where's output: [0, 1]
    silent = np.zeros((1, 64), np.float32)
    assert np.array_equal(ort.InferenceSession(str(out)).run(None, {"x": silent})[0], silent)
    # inspect's statistics run the quantized model's float view on the same samples
    result = run_cli(["inspect", out, "--reference", model, "--input_list", samples])
    assert result.exit_code == 0, result.stderr


def test_a_nan_that_reaches_the_output_is_an_error_naming_the_tensor_and_sample(tmp_path: Path) -> None:
    model = save_model(_normalised(discarded=False), tmp_path / "m.onnx")
    samples, out = _samples(tmp_path), tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", samples, "-o", out])
    assert result.exit_code != 0
    assert "list.txt:6" in result.stderr and "'ratio' has NaN values" in result.stderr
    assert not out.exists()

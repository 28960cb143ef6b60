"""A MatMul whose first input is the constant (C @ x: swift-f0's DFT front end, torch's `weight @ x`) quantizes C
as a weight, one scale per row of C (the output rows) under --use_per_row_quantization: only input 1 counted,
so C stayed float ('float weights 6 (MatMul 6: read outside a slot qtool quantizes as a weight)')."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import quantize_model, run_cli, write_samples
from onnx import TensorProto, helper, numpy_helper

GAINS = np.array([0.02, 0.1, 0.5, 1.0, 2.0, 4.0], np.float32)  # row ranges spanning 200x


def _model() -> onnx.ModelProto:
    c = (np.random.default_rng(0).normal(0, 1, (6, 8)) * GAINS[:, None]).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["C", "x"], ["y"])], "cx",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5])],
        [numpy_helper.from_array(c, "C")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weight_dq(path: Path) -> tuple[int | None, np.ndarray]:
    model = onnx.load(str(path))
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    dq = next(n for n in model.graph.node if n.output[0] == matmul.input[0])
    assert dq.op_type == "DequantizeLinear"
    scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == dq.input[1]))
    return next((a.i for a in dq.attribute if a.name == "axis"), None), scale


def test_a_constant_first_input_is_quantized_per_row(tmp_path: Path) -> None:
    model = _model()
    samples = write_samples(tmp_path, model, 16)
    result = run_cli(["quantize", "-i", _saved(model, tmp_path), "--input_list", samples, "-o", tmp_path / "q.onnx",
                      "--use_per_row_quantization"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "float weights" not in result.output
    axis, scale = _weight_dq(tmp_path / "q.onnx")
    c = numpy_helper.to_array(model.graph.initializer[0])
    assert axis == 0 and scale.shape == (6,)  # one per row of C: each output row's accumulator has one scale
    np.testing.assert_allclose(scale, np.abs(c).max(axis=1) / 127, rtol=0.02)
    axis, scale = _weight_dq(quantize_model(tmp_path, model, name="per_tensor"))
    assert axis is None and scale.size == 1


def test_qoperator_keeps_a_per_row_constant_first_input_in_dequantized_form(tmp_path: Path) -> None:
    """onnxruntime's QLinearMatMul takes one scale for A: written with C's per-row scales it failed at run time."""
    out = quantize_model(tmp_path, _model(), "--use_per_row_quantization", "--act_quantizer_schema", "symmetric")
    result = run_cli(["export", "-i", out, "-o", tmp_path / "export", "--format", "qoperator"])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "export" / "q.qoperator.onnx"
    assert "QLinearMatMul" not in {n.op_type for n in onnx.load(str(exported)).graph.node}
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 5)).astype(np.float32)
    got = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    c = numpy_helper.to_array(_model().graph.initializer[0])
    want = c @ x
    assert 10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()) > 30


def _saved(model: onnx.ModelProto, tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path

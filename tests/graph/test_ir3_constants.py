"""IR 3 models whose initializers are not graph inputs (OnnxMLTools wrote waifu2x's upconv_7 so): onnxruntime
runs them as constants; convert and quantize read them as IR 4 instead of failing onnx.checker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, save_model, write_samples
from onnx import TensorProto, helper, numpy_helper


def _ir3_model() -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv(w, b) -> LeakyRelu -> ConvTranspose(wt) at opset 8, IR 3, weights not listed as inputs."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 4, 4)).astype(np.float32), "wt"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["r"], alpha=0.1),
        helper.make_node("ConvTranspose", ["r", "wt"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "ir3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    return model


def test_ir3_initializers_not_inputs_convert_and_quantize(tmp_path: Path) -> None:
    model = _ir3_model()
    src = save_model(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    conv = tmp_path / "m.conv.onnx"
    result = run_cli(["convert", "-i", src, "-o", conv])
    assert result.exit_code == 0, result.output
    got = ort.InferenceSession(str(conv), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    listing = write_samples(tmp_path, model, 4)
    result = run_cli(["quantize", "-i", src, "--input_list", listing, "-o", tmp_path / "q" / "m.quant.onnx"])
    assert result.exit_code == 0, result.output

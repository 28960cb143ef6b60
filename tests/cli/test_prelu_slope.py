"""PReLU's slope is a per-channel parameter, quantized like a weight (rules.OpRule.slope; issue 21, MTCNN)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SATURATING_CPU, integer_kernels_saturate, quantize_model
from onnx import TensorProto, helper, numpy_helper

from qtool.io.encodings import read_encodings

SLOPES = np.array([-0.6, -0.05, 0.004, 0.02, 0.1, 0.25, 0.5, 0.9], np.float32)  # MTCNN's span: −0.73 .. 1.01


def _model(slope_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Conv -> PRelu(one slope per channel) -> Conv."""
    rng = np.random.default_rng(0)
    arrays = {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "slope": SLOPES.reshape(slope_shape),
        "w2": rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c1", "slope"], ["p"]),
        helper.make_node("Conv", ["p", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _sqnr(model: onnx.ModelProto, quantized: Path) -> float:
    """Output SQNR (dB) against float over held-out inputs (not the calibration samples)."""
    x = np.random.default_rng(99).uniform(-1, 1, (32, 1, 3, 8, 8)).astype(np.float32)
    want_s, got_s = ort.InferenceSession(model.SerializeToString()), ort.InferenceSession(str(quantized))
    want = np.stack([want_s.run(None, {"x": xi})[0] for xi in x])
    got = np.stack([got_s.run(None, {"x": xi})[0] for xi in x])
    return float(10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()))


@pytest.mark.parametrize("slope_shape", [(1, 8, 1, 1), (8, 1, 1)])
def test_a_per_channel_slope_gets_one_symmetric_grid_per_channel(tmp_path: Path, slope_shape) -> None:
    model = _model(slope_shape)
    out = quantize_model(tmp_path, model, "--use_per_channel_quantization")
    slope = read_encodings(out.with_suffix(".encodings.json")).params["slope"]
    assert len(slope.scale) == 8 and slope.is_symmetric and slope.bitwidth == 8
    dq = next(n for n in onnx.load(str(out)).graph.node if n.output[0] == "slope")
    assert [a.i for a in dq.attribute if a.name == "axis"] == [slope_shape.index(8)]
    dequantized = np.asarray(slope.dequantize(slope.quantize(SLOPES.reshape(8, 1)))).reshape(-1)
    np.testing.assert_allclose(dequantized, SLOPES, rtol=1e-6)  # each channel's grid holds its slope exactly
    # the old rule: one asymmetric 8-bit grid over all the slopes, as an activation constant
    lo, hi = min(0.0, float(SLOPES.min())), max(0.0, float(SLOPES.max()))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"slope": [
        {"bitwidth": 8, "min": lo, "max": hi, "is_symmetric": "False"}]}}))  # fmt: skip
    before = quantize_model(tmp_path, model, "--use_per_channel_quantization", "--quantization_overrides", str(old),
                       name="old")  # fmt: skip
    assert _sqnr(model, out) >= _sqnr(model, before)  # held out; loads and runs in onnxruntime


def test_a_slope_is_per_tensor_with_the_weights_schema_without_per_channel(tmp_path: Path) -> None:
    out = quantize_model(tmp_path, _model((1, 8, 1, 1)), "--param_quantizer_schema", "symmetric")
    slope = read_encodings(out.with_suffix(".encodings.json")).params["slope"]
    assert len(slope.scale) == 1 and slope.is_symmetric and slope.bitwidth == 8


def test_ort_cpu_keeps_the_slope_float(tmp_path: Path) -> None:
    """onnxruntime has no integer PRelu kernel (PRelu is not in the preset's op_types_to_quantize): a DQ on the
    slope would only add error, as quantize_static, which keeps it float, shows."""
    if integer_kernels_saturate():
        pytest.skip(SATURATING_CPU)
    model = _model((1, 8, 1, 1))
    out = quantize_model(tmp_path, model, "--target", "ort-cpu")
    assert "slope" not in read_encodings(out.with_suffix(".encodings.json")).params
    assert "slope" in {i.name for i in onnx.load(str(out)).graph.initializer}
    assert _sqnr(model, out) > 25

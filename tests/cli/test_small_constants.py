"""A constant operand smaller than its grid's steps (an eps: Log(power + 1e-8), Sqrt(x + 1e-6), y / (x + eps)):
on a level of a grid that holds it where one exists, float where its op runs float (quant/plan._constant_encoding,
_runs_float)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper

from qtool import encoding as enc


def _eps_model(eps: float) -> onnx.ModelProto:
    """x [1, 64] -> p = x·x -> s = p + eps -> lg = Log(s); r = Relu(x) -> t = r + eps -> sq = Sqrt(t);
    dv = y / t: a silent frame (x = 0) reads only the eps."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["p"]),
        helper.make_node("Add", ["p", "eps"], ["s"]),
        helper.make_node("Log", ["s"], ["lg"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Add", ["r", "eps"], ["t"]),
        helper.make_node("Sqrt", ["t"], ["sq"]),
        helper.make_node("Div", ["y", "t"], ["dv"]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 64]) for n in ("x", "y", "lg", "sq", "dv")]
    graph = helper.make_graph(nodes, "eps", io[:2], io[2:], [numpy_helper.from_array(np.array(eps, np.float32), "eps")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(8):
        x = rng.normal(0, 1, (1, 64)).astype(np.float32)
        x[:, rng.random(64) < 0.3] = 0  # silent frames
        feeds.append({"x": x, "y": rng.normal(0, 1, (1, 64)).astype(np.float32)})
    return feeds


def _quantize(tmp_path: Path, eps: float, *args: object) -> tuple[dict, Path, Path]:
    model_path, out = tmp_path / "eps.onnx", tmp_path / "q.onnx"
    onnx.save(_eps_model(eps), str(model_path))
    cal = write_feeds(tmp_path, _feeds(0))
    result = run_cli(["quantize", "-i", model_path, "--input_list", cal, "-o", out,
                      "--act_quantizer_calibration", "min-max", *args])  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(out.with_suffix(".encodings.json").read_text()), model_path, out


def _held_out_sqnr(model_path: Path, out: Path, output: str) -> float:
    float_model, quantized = ort.InferenceSession(str(model_path)), ort.InferenceSession(str(out))
    signal = noise = 0.0
    for feed in _feeds(1):
        want = float_model.run([output], feed)[0].astype(np.float64)
        got = quantized.run([output], feed)[0].astype(np.float64)
        signal, noise = signal + float(np.sum(want**2)), noise + float(np.sum((want - got) ** 2))
    return 10 * np.log10(signal / noise) if noise > 0 else float("inf")


def test_a_small_scalar_constant_lands_on_a_level_of_a_grid_within_the_minimum_range(tmp_path: Path) -> None:
    """1e-6 on the grid its own range gives ([0, 1e-4] by the minimum range rule, steps of 3.9e-7) read 1.18e-6:
    its scale now rises to 5e-7, two steps, and the file holds 1e-6."""
    encodings, _, _ = _quantize(tmp_path, 1e-6)
    e = encodings["param_encodings"]["eps"][0]
    assert e["dtype"] == "int" and e["bitwidth"] == 8 and e["max"] - e["min"] >= enc.MIN_RANGE
    level = round(1e-6 / e["scale"]) + e["offset"]
    assert abs(level * e["scale"] - 1e-6) < 1e-6 * 1e-6


def test_a_constant_below_every_step_of_its_bitwidth_finds_one_at_16_bits(tmp_path: Path) -> None:
    encodings, _, _ = _quantize(tmp_path, 1e-8, "--act_bitwidth", "16")
    e = encodings["param_encodings"]["eps"][0]
    assert e["bitwidth"] == 16 and e["max"] - e["min"] >= enc.MIN_RANGE
    assert abs(round(1e-8 / e["scale"]) * e["scale"] - 1e-8) < 1e-8 * 1e-6  # 7 steps of 1.53e-9 read 1.07e-8


def test_the_constant_of_an_op_whose_output_stays_float_stays_float(tmp_path: Path) -> None:
    """The Log chain kept float (an override, as inspect advises, or mixed precision's float candidates): the Add
    runs float, as QNN runs an op all float or all integer. Its eps on an 8-bit grid of its own was 0, and a
    silent frame's Log(0) = -inf reached the float output: held-out SQNR -inf, now that of the power's grid."""
    float32 = [{"bitwidth": 32, "dtype": "float"}]
    overrides = tmp_path / "float_log.json"
    overrides.write_text(json.dumps({"activation_encodings": {"s": float32, "lg": float32}, "param_encodings": {}}))
    encodings, model_path, out = _quantize(tmp_path, 1e-8, "--quantization_overrides", overrides)
    assert "eps" not in encodings["param_encodings"] or encodings["param_encodings"]["eps"][0]["dtype"] == "float"
    assert _held_out_sqnr(model_path, out, "lg") > 9.0
    assert _held_out_sqnr(model_path, out, "sq") > 30.0  # the Relu's Add still runs integer beside it

"""Sin / Cos arguments stay float (quant/phases.py): a rotary embedding's angles, computed from integer
positions, keep their phase at any position, not only inside the calibrated range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

FREQS = 16


def _rotary_model() -> onnx.ModelProto:
    """q [1, 32] and position_ids [1, 1] (int64) -> angles = position · inv_freq ([1, 32], duplicated as
    Llama's rotary_emb does) -> q·cos + rotate_half(q)·sin."""
    n = helper.make_node
    inv_freq = (1.0 / 10000 ** (np.arange(FREQS) / FREQS)).astype(np.float32).reshape(1, FREQS)
    nodes = [
        n("Cast", ["position_ids"], ["pos"], to=TensorProto.FLOAT),
        n("Mul", ["pos", "inv_freq"], ["freqs"]),
        n("Concat", ["freqs", "freqs"], ["angles"], axis=-1),
        n("Cos", ["angles"], ["cos"]),
        n("Sin", ["angles"], ["sin"]),
        n("Split", ["q"], ["q1", "q2"], axis=-1, num_outputs=2),
        n("Neg", ["q2"], ["minus_q2"]),
        n("Concat", ["minus_q2", "q1"], ["rotated"], axis=-1),
        n("Mul", ["q", "cos"], ["a"]),
        n("Mul", ["rotated", "sin"], ["b"]),
        n("Add", ["a", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "rotary",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2 * FREQS]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * FREQS])],
        [numpy_helper.from_array(inv_freq, "inv_freq")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def test_rotary_angles_stay_float_and_hold_positions_past_the_calibrated_ones(tmp_path: Path) -> None:
    model = _rotary_model()
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    lines = []
    for i in range(16):  # positions 0..15 only
        (tmp_path / f"q{i}.raw").write_bytes(rng.normal(0, 1, (1, 2 * FREQS)).astype(np.float32).tobytes())
        (tmp_path / f"p{i}.raw").write_bytes(np.array([[i]], np.float32).tobytes())
        lines.append(f"q:={tmp_path / f'q{i}.raw'} position_ids:={tmp_path / f'p{i}.raw'}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert not {"pos", "freqs", "angles"} & acts.keys()  # the phases: float
    assert {"cos", "sin", "q", "y"} <= acts.keys()  # the tables and the data: quantized

    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for position in (7, 300, 2000):  # inside, then far past, the calibrated positions
        feed = {"q": rng.normal(0, 1, (1, 2 * FREQS)).astype(np.float32), "position_ids": np.array([[position]])}
        want, got = float_run.run(None, feed)[0], quant_run.run(None, feed)[0]
        sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
        assert sqnr > 25, (position, sqnr)  # 8-bit q, cos, sin and y: ~30 dB; a clipped angle: ~0 dB


def test_index_arithmetic_stays_float_and_the_levels_stay_exact(tmp_path: Path) -> None:
    """A box's pyramid level as torchvision's MultiScaleRoIAlign computes it: Cast(Clip(Floor(Log(Sqrt(area)) + 4),
    2, 4)) to int64. On 8-bit grids 78% of the levels came out wrong (3 as 2.996, truncated to 2), exit 0."""
    n = helper.make_node
    nodes = [n("Sqrt", ["x"], ["s"]), n("Log", ["s"], ["l"]), n("Add", ["l", "four"], ["a"]), n("Floor", ["a"], ["f"]),
             n("Clip", ["f", "lo", "hi"], ["k"]), n("Cast", ["k"], ["level"], to=TensorProto.INT64),
             n("Mul", ["x", "half"], ["scaled"])]  # fmt: skip
    arrays = {"four": 4.0, "lo": 2.0, "hi": 4.0, "half": 0.5}
    graph = helper.make_graph(
        nodes, "levels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100])],
        [helper.make_tensor_value_info("level", TensorProto.INT64, [1, 100]),
         helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 100])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    areas = lambda: np.exp(rng.uniform(-4, 1, (1, 100))).astype(np.float32) ** 2  # noqa: E731
    for i in range(8):
        (tmp_path / f"{i}.raw").write_bytes(areas().tobytes())
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f'{i}.raw'}\n" for i in range(8)))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert not {"s", "l", "a", "f", "k"} & acts.keys() and "scaled" in acts  # x itself is read by the Mul too
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for _ in range(8):
        feed = {"x": areas()}
        want, got = float_run.run(["level"], feed)[0], quant_run.run(["level"], feed)[0]
        assert np.mean(want != got) < 0.05  # only where x's own 8-bit grid moves an area across a level's edge

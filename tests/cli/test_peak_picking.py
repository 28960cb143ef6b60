"""Non-maximum suppression by max pooling, y = MaxPool(s) · Equal(s, MaxPool(s)) (CenterNet's, afis's LEADER
minutiae head): the map and its pooled maximum stay float, so the peaks are the float model's (quant/phases.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

S = 24


def _nms_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
        helper.make_node("MaxPool", ["score"], ["pooled"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Equal", ["score", "pooled"], ["is_peak"]),
        helper.make_node("Cast", ["is_peak"], ["peak"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pooled", "peak"], ["y"]),
    ]
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (1, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-2.0], np.float32), "b")]  # fmt: skip
    graph = helper.make_graph(nodes, "nms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, S, S])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, S, S])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(folder: Path, seed: int, n: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):  # smooth maps: broad low plateaus once rounded, a few peaks
        x = rng.normal(0, 1, (S, S))
        for _ in range(4):  # a box blur, four times: about a Gaussian of sigma 2.5
            x = sum(np.roll(np.roll(x, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        x = x * 24.0
        path = folder / f"{i}.raw"
        x.astype(np.float32).tofile(path)
        paths.append(str(path))
    listing = folder / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def test_max_pool_peaks_are_the_float_models(tmp_path: Path) -> None:
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_nms_model(), str(path))
    calibration, held_out = _samples(tmp_path / "cal", 0, 16), _samples(tmp_path / "val", 1, 16)
    result = run_cli(["quantize", "-i", path, "--input_list", calibration, "-o", out])
    assert result.exit_code == 0, result.stderr
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    peaks = extra = 0
    for line in held_out.read_text().split():
        x = np.fromfile(line, np.float32).reshape(1, 1, S, S)
        want, got = float_run.run(None, {"x": x})[0] > 0, quant_run.run(None, {"x": x})[0] > 0
        peaks, extra = peaks + int(want.sum()), extra + int((got & ~want).sum())
    # on one 8-bit grid the rounded plateaus tie and each tie is a peak (several times the float model's)
    assert extra <= peaks // 10, (peaks, extra)

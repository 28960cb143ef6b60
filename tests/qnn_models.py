"""Generated models for the QNN-rule tests: the seed's three-Conv network and its samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def three_conv_model(channels: int = 4) -> onnx.ModelProto:
    """data_0 -> conv1 -> conv1_1 -> conv2 -> conv2_1 -> conv3 -> conv3_1 -> Relu -> MaxPool -> out,
    with the seed's tensor names (conv{i}_w_0, conv{i}_b_0)."""
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "data_0"
    for i in (1, 2, 3):
        w = rng.normal(size=(channels, 3 if i == 1 else channels, 3, 3)).astype(np.float32) * 0.3
        inits += [
            numpy_helper.from_array(w, f"conv{i}_w_0"),
            numpy_helper.from_array(rng.normal(size=channels).astype(np.float32) * 0.1, f"conv{i}_b_0"),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [prev, f"conv{i}_w_0", f"conv{i}_b_0"], [f"conv{i}_1"], name=f"conv{i}", pads=[1, 1, 1, 1]
            )
        )
        prev = f"conv{i}_1"
    nodes.append(helper.make_node("Relu", ["conv3_1"], ["relu"], name="relu"))
    nodes.append(helper.make_node("MaxPool", ["relu"], ["out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    graph = helper.make_graph(
        nodes,
        "three_conv",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def add_mul_model() -> onnx.ModelProto:
    """Conv -> a -> Add(a, a) -> s -> Mul(s, s) -> out: an op without weights (Add) for INT32 overrides."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "a"], ["s"], name="add"),
        helper.make_node("Mul", ["s", "s"], ["out"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "add_mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 4])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def write_case(folder: Path, model: onnx.ModelProto, samples: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Save the model and `samples` raw inputs with their input_list; returns (model, input_list)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.onnx"
    onnx.save(model, model_path)
    value = model.graph.input[0]
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
    lines = []
    for k in range(samples):
        path = folder / f"sample_{k}.raw"
        rng.normal(size=shape).astype(np.float32).tofile(path)
        lines.append(path.name)
    listing = folder / "input_list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return model_path, listing


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def qtool(*args: object) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from qtool.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# Generators for the overrides round trip (tests/cli/test_overrides_round_trip.py): each returns the model and its
# samples as {input: array} feeds, each input drawn on its own scale, so that the groups a Concat or a Slice would
# join hold ranges `scales` apart.


def _model(nodes: list, inputs: dict[str, list[int]], outputs: dict[str, list[int]], inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "round_trip",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), n) for n, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(inputs: dict[str, tuple[list[int], float]], samples: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: (rng.uniform(-1, 1, s) * k).astype(np.float32) for n, (s, k) in inputs.items()} for _ in range(samples)]


def concat_of_inputs(scales: list[float], seed: int = 0) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """y = Concat(x0, x1, ..., Relu(x0)) · W: inputs of ranges `scales` joined on one axis, one of them read
    by another op too."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(len(scales))]
    width = 4 * (len(scales) + 1)
    nodes = [helper.make_node("Relu", ["x0"], ["r"]), helper.make_node("Concat", [*names, "r"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "W"], ["y"])]  # fmt: skip
    model = _model(nodes, {n: [1, 4] for n in names}, {"y": [1, 3]}, {"W": rng.normal(size=(width, 3))})
    return model, _feeds({n: ([1, 4], k) for n, k in zip(names, scales, strict=True)}, 8, seed)


def small_second_input(small: float, seed: int = 0) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """VoiceFilter-Lite's mask model in small: frames of log-mels (±10) and a speaker vector d of range `small`,
    broadcast to every frame (Unsqueeze, Expand) and concatenated with them: y = Concat(Slice(mel), Expand(d)) · W."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Slice", ["mel", "starts", "ends", "axes"], ["frames"]),
        helper.make_node("Unsqueeze", ["d", "axis1"], ["d1"]),
        helper.make_node("Expand", ["d1", "shape"], ["dx"]),
        helper.make_node("Concat", ["frames", "dx"], ["c"], axis=2),
        helper.make_node("MatMul", ["c", "W"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["y"]),
    ]
    inits = {"W": rng.normal(size=(8, 4)), "axis1": np.array([1], np.int64), "shape": np.array([1, 3, 4], np.int64),
             "starts": np.array([0], np.int64), "ends": np.array([4], np.int64), "axes": np.array([2], np.int64)}  # fmt: skip
    model = _model(nodes, {"mel": [1, 3, 6], "d": [1, 4]}, {"y": [1, 3, 4]}, inits)
    return model, _feeds({"mel": ([1, 3, 6], 10.0), "d": ([1, 4], small)}, 8, seed)


def split_concat(gain: float, seed: int = 0) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """GTCRN's mask head in small: m = Tanh(x); c = Concat(m[:, :4], m[:, 4:] · (gain·W)), read only by two
    Gathers whose parts (±1 and ±gain) keep their own grids; y = c[0] * z + c[1]. Also a Concat whose output
    leaves the model: o = Concat(m, 50·x)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Tanh", ["x"], ["m"]),
        helper.make_node("Slice", ["m", "s0", "s4", "ax"], ["lo"]),
        helper.make_node("Slice", ["m", "s4", "s8", "ax"], ["hi"]),
        helper.make_node("MatMul", ["hi", "W"], ["hw"]),
        helper.make_node("Concat", ["lo", "hw"], ["c"], axis=0),
        helper.make_node("Gather", ["c", "i0"], ["g0"], axis=0),
        helper.make_node("Gather", ["c", "i1"], ["g1"], axis=0),
        helper.make_node("Mul", ["g0", "z"], ["p"]),
        helper.make_node("Add", ["p", "g1"], ["y"]),
        helper.make_node("Mul", ["x", "fifty"], ["x50"]),
        helper.make_node("Concat", ["m", "x50"], ["o"], axis=1),
    ]
    inits = {"W": rng.normal(size=(4, 4)) * gain, "s0": np.array([0], np.int64), "s4": np.array([4], np.int64),
             "s8": np.array([8], np.int64), "ax": np.array([1], np.int64), "i0": np.array(0, np.int64),
             "i1": np.array(1, np.int64), "fifty": np.array(50.0)}  # fmt: skip
    model = _model(nodes, {"x": [1, 8], "z": [4]}, {"y": [4], "o": [1, 16]}, inits)
    return model, _feeds({"x": ([1, 8], 2.0), "z": ([4], 1.0)}, 8, seed)

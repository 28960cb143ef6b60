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

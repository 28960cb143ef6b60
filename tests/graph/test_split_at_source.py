"""SplitAtSourcePass: a Split takes its parts where they were made (a detection head's box and class logits),
through a Concat on its axis, a Concat on another and a Reshape that keeps its axis, or from a Conv; the model
computes what it did, bit for bit. A joined tensor something else reads, or a Reshape that merges the split
axis, stays as it was. Quantized, the class logits get a grid of their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise

BOX, CLS = 8, 3


def yolo_head(scales: tuple[int, ...] = (4, 2), merge_axis: bool = False, extra_reader: bool = False) -> onnx.ModelProto:
    """Per scale s: Conv box (BOX ch, wide) and Conv cls (CLS ch) on x_s [1, 4, s, s], Concat on channels,
    Reshape [1, BOX+CLS, s*s]; the scales joined on axis 2; Split [BOX, CLS] on axis 1 -> box, Sigmoid(cls)."""
    rng = np.random.default_rng(0)
    nodes, inits, inputs, joined = [], [], [], []
    for k, s in enumerate(scales):
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, 4, s, s]))
        for part, channels, gain in (("box", BOX, 6.0), ("cls", CLS, 0.5)):
            inits.append(numpy_helper.from_array((rng.normal(size=(channels, 4, 1, 1)) * gain).astype(np.float32), f"w_{part}{k}"))
            inits.append(numpy_helper.from_array(rng.normal(size=channels).astype(np.float32) - (3 if part == "cls" else 0), f"b_{part}{k}"))
            nodes.append(helper.make_node("Conv", [f"x{k}", f"w_{part}{k}", f"b_{part}{k}"], [f"{part}{k}"]))
        nodes.append(helper.make_node("Concat", [f"box{k}", f"cls{k}"], [f"cat{k}"], axis=1))
        shape = [1, (BOX + CLS) * s * s] if merge_axis else [1, BOX + CLS, s * s]
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"shape{k}"))
        nodes.append(helper.make_node("Reshape", [f"cat{k}", f"shape{k}"], [f"flat{k}"]))
        joined.append(f"flat{k}")
    nodes.append(helper.make_node("Concat", joined, ["all"], axis=2 if not merge_axis else 1))
    inits.append(numpy_helper.from_array(np.array([BOX, CLS] if not merge_axis else [sum(BOX * s * s for s in scales), sum(CLS * s * s for s in scales)], np.int64), "sizes"))
    nodes += [helper.make_node("Split", ["all", "sizes"], ["box", "logits"], axis=1), helper.make_node("Sigmoid", ["logits"], ["scores"])]
    cells = sum(s * s for s in scales)
    shapes = ([1, BOX * cells], [1, CLS * cells]) if merge_axis else ([1, BOX, cells], [1, CLS, cells])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in zip(("box", "scores"), shapes, strict=True)]
    if extra_reader:
        nodes.append(helper.make_node("ReduceMax", ["cat0"], ["peak"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("peak", TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "head", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def picodet_head() -> onnx.ModelProto:
    """One Conv making CLS class logits and BOX box logits, a Split on its channels, Sigmoid on the classes."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.normal(size=(CLS + BOX, 4, 3, 3))).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=CLS + BOX).astype(np.float32), "b")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x0", "w", "b"], ["both"], pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["both"], ["logits", "box"], axis=1, split=[CLS, BOX]),
             helper.make_node("Sigmoid", ["logits"], ["scores"])]  # fmt: skip
    graph = helper.make_graph(nodes, "pico", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, CLS, 4, 4]),
                               helper.make_tensor_value_info("box", TensorProto.FLOAT, [1, BOX, 4, 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def feeds(model: onnx.ModelProto, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in dims.items()}


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_a_yolo_heads_split_takes_box_and_class_logits_from_their_convs() -> None:
    model = yolo_head()
    out = normalise(model, {}, "m.onnx")
    ops = [n.op_type for n in out.graph.node]
    assert "Split" not in ops and ops.count("Concat") == 2 and ops.count("Reshape") == 4
    concat_inputs = [set(n.input) for n in out.graph.node if n.op_type == "Concat"]
    producers = {o: n for n in out.graph.node for o in n.output}
    for inputs in concat_inputs:  # each joins one kind across the scales
        weights = {producers[producers[i].input[0]].input[1][:5] for i in inputs}
        assert len(weights) == 1
    assert [o.name for o in out.graph.output] == ["box", "scores"]
    feed = feeds(model)
    for got, want in zip(run(out, feed), run(model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_conv_read_by_a_split_becomes_one_conv_per_part() -> None:
    model = picodet_head()
    out = normalise(model, {}, "m.onnx")
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    assert "Split" not in [n.op_type for n in out.graph.node] and len(convs) == 2
    sizes = sorted(next(i for i in out.graph.initializer if i.name == c.input[1]).dims[0] for c in convs)
    assert sizes == [CLS, BOX]
    feed = feeds(model)
    for got, want in zip(run(out, feed), run(model, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_joined_tensor_read_elsewhere_or_a_merged_axis_stays() -> None:
    for model in (yolo_head(extra_reader=True), yolo_head(merge_axis=True)):
        out = normalise(model, {}, "m.onnx")
        assert "Split" in [n.op_type for n in out.graph.node]
        feed = feeds(model)
        for got, want in zip(run(out, feed), run(model, feed), strict=True):
            np.testing.assert_array_equal(got, want)


def test_quantized_the_class_logits_get_a_grid_of_their_own(tmp_path: Path) -> None:
    """Joined, the class logits shared the box logits' grid (~±30 here); apart, theirs spans only what the
    Sigmoid reads."""
    model = yolo_head()
    onnx.save(model, str(tmp_path / "m.onnx"))
    lines = []
    for i in range(6):
        names = []
        for name, value in feeds(model, seed=10 + i).items():
            (tmp_path / f"{name}_{i}.raw").write_bytes(value.tobytes())
            names.append(f"{name}:={tmp_path / f'{name}_{i}.raw'}")
        lines.append(" ".join(names))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert acts["logits"][0]["scale"] * 4 < acts["box"][0]["scale"]


def test_a_tensor_an_override_names_keeps_its_split(tmp_path: Path) -> None:
    """An overrides file written for the model as exported names its joined tensors: the rewrite would take the
    names away, and convert refused the file ("names tensor 'cat0', which the graph does not have")."""
    model = yolo_head()
    onnx.save(model, str(tmp_path / "m.onnx"))
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"cat0": [{"bitwidth": 8, "min": -30.0, "max": 30.0}]},
                                     "param_encodings": {}}))  # fmt: skip
    out = tmp_path / "c.onnx"
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", out, "--quantization_overrides", overrides])
    assert result.exit_code == 0, result.stderr
    assert "Split" in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Split" not in [n.op_type for n in normalise(model, {}, "m.onnx", keep=frozenset({"unrelated"})).graph.node]


def test_quantizing_a_converted_model_with_an_override_for_a_rewritten_tensor_says_to_convert_with_it(tmp_path: Path) -> None:
    model = yolo_head()
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"]).exit_code == 0
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"all": [{"bitwidth": 8, "min": -30.0, "max": 30.0}]},
                                     "param_encodings": {}}))  # fmt: skip
    result = run_cli(["quantize", "-i", tmp_path / "c.onnx", "-o", tmp_path / "q.onnx", "--enable_float_fallback",
                      "--quantization_overrides", overrides])  # fmt: skip
    assert result.exit_code == 4 and "'all'" in result.stderr and "convert --quantization_overrides" in result.stderr, result.stderr

"""Parts of a graph output that hold different quantities (graph/output_parts.py): detection heads as
YOLOv8 and YOLOX exporters write them, found back through their tails; no split where there is none."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.output_parts import Part, output_parts
from qtool.inspect.compare import compare_outputs


def _model(nodes, inputs, outputs, arrays: dict) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, "m", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _yolov8_head() -> onnx.ModelProto:
    """Boxes (a Mul by the stride) and class scores (a Sigmoid) joined on axis 1: [1, 4 + 3, anchors]."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["wb", "x"], ["b0"]),
        helper.make_node("Mul", ["b0", "stride"], ["boxes"]),
        helper.make_node("MatMul", ["wc", "x"], ["c0"]),
        helper.make_node("Sigmoid", ["c0"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1),
    ]
    arrays = {
        "wb": rng.normal(0, 1, (4, 16)).astype(np.float32),
        "wc": rng.normal(0, 1, (3, 16)).astype(np.float32),
        "stride": np.array(32, np.float32),
    }
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 50])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 50])], arrays)  # fmt: skip


def _yolox_head() -> onnx.ModelProto:
    """Per level [box 4, objectness 1, classes 2] on channels, flattened, levels joined on axis 2, transposed:
    the parts are along the output's last axis."""
    rng = np.random.default_rng(1)
    nodes, arrays, flat = [], {}, []
    for level, side in enumerate((4, 2)):
        x = f"x{level}"
        for head, channels in (("reg", 4), ("obj", 1), ("cls", 2)):
            arrays[f"w_{head}{level}"] = rng.normal(0, 0.5, (channels, 8, 1, 1)).astype(np.float32)
            nodes.append(helper.make_node("Conv", [x, f"w_{head}{level}"], [f"{head}{level}"]))
        nodes += [
            helper.make_node("Sigmoid", [f"obj{level}"], [f"objs{level}"]),
            helper.make_node("Sigmoid", [f"cls{level}"], [f"clss{level}"]),
            helper.make_node("Concat", [f"reg{level}", f"objs{level}", f"clss{level}"], [f"cat{level}"], axis=1),
            helper.make_node("Reshape", [f"cat{level}", f"shape{level}"], [f"flat{level}"]),
        ]
        arrays[f"shape{level}"] = np.array([1, 7, side * side], np.int64)
        flat.append(f"flat{level}")
    nodes += [helper.make_node("Concat", flat, ["levels"], axis=2),
              helper.make_node("Transpose", ["levels"], ["y"], perm=[0, 2, 1])]  # fmt: skip
    inputs = [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 8, 4, 4]),
              helper.make_tensor_value_info("x1", TensorProto.FLOAT, [1, 8, 2, 2])]  # fmt: skip
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 7])], arrays)


def test_a_yolov8_head_splits_into_boxes_and_scores() -> None:
    assert output_parts(_yolov8_head()) == [Part("y", 1, 0, 4, 3, 7), Part("y", 1, 4, 7, 3, 7)]
    assert [p.name for p in output_parts(_yolov8_head())] == ["y[:, 0:4, :]", "y[:, 4:7, :]"]


def test_a_yolox_head_is_followed_through_reshape_concat_of_levels_and_transpose() -> None:
    """Objectness and class scores are both Sigmoids: one part beside the boxes."""
    assert output_parts(_yolox_head()) == [Part("y", 2, 0, 4, 3, 7), Part("y", 2, 4, 7, 3, 7)]


def test_a_concat_of_one_kind_of_values_is_one_part() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]  # fmt: skip
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], {})  # fmt: skip
    assert output_parts(model) == []


def test_levels_split_unlike_each_other_are_not_parts() -> None:
    """A Concat along another axis passes a split on only when every input is split the same way."""
    model = _yolov8_head()
    nodes = list(model.graph.node)
    nodes += [  # another level, [1, 7, 50], but joined from Relus alone: no box/score split on axis 1
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["sliced"]),
        helper.make_node("Relu", ["sliced"], ["r0"]),
        helper.make_node("Relu", ["sliced"], ["r1"]),
        helper.make_node("Concat", ["r0", "r1"], ["seven"], axis=1),
        helper.make_node("Concat", ["y", "seven"], ["z"], axis=2),
    ]
    arrays = {"starts": np.array([0], np.int64), "ends": np.array([4], np.int64), "axes": np.array([1], np.int64)}
    inits = list(model.graph.initializer) + [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, "m", list(model.graph.input),
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 7, 100])], inits)  # fmt: skip
    joined = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert output_parts(joined) == []
    nodes[-1] = helper.make_node("Concat", ["y", "y"], ["z"], axis=2)  # two levels split alike: the split holds
    del joined.graph.node[:]
    joined.graph.node.extend(nodes)
    assert [p.name for p in output_parts(joined)] == ["z[:, 0:4, :]", "z[:, 4:7, :]"]


def test_compare_measures_each_part_and_its_share_of_the_error() -> None:
    """The score part's SQNR is its own: noise of 0.01 on scores in 0..1 beside boxes in 0..500."""
    reference = _yolov8_head()
    noisy = onnx.ModelProto()
    noisy.CopyFrom(reference)
    noisy.graph.node[-1].output[0] = "y_clean"
    noisy.graph.initializer.append(numpy_helper.from_array(np.full((1, 7, 50), 0.01, np.float32), "bias"))
    noisy.graph.node.append(helper.make_node("Add", ["y_clean", "bias"], ["y"]))
    feeds = [{"x": np.random.default_rng(k).normal(0, 1, (1, 16, 50)).astype(np.float32)} for k in range(3)]
    drift = compare_outputs(reference, noisy, feeds)
    assert list(drift) == ["y", "y[:, 0:4, :]", "y[:, 4:7, :]"]
    want = ort.InferenceSession(reference.SerializeToString()).run(None, feeds[0])[0][:, 4:]
    scores_db = 10 * np.log10((want**2).sum() / (want.size * 0.01**2))
    assert drift["y[:, 4:7, :]"].samples == 3 and drift["y"].sqnr_db > drift["y[:, 4:7, :]"].sqnr_db + 20
    assert drift["y[:, 4:7, :]"].sqnr_db == pytest.approx(scores_db, abs=1.5)


def test_a_part_of_an_output_whose_real_length_differs_is_not_measured() -> None:
    """Inferred shapes count a dynamic dimension as 1: a split along it would slice the wrong values."""
    part = Part("y", 1, 4, 7, 3, 7)
    assert part.of(np.zeros((1, 7, 5))).shape == (1, 3, 5)
    assert part.of(np.zeros((1, 9, 5))) is None and part.of(np.zeros((7, 5))) is None

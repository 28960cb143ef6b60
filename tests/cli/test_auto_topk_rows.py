"""auto does not score range methods (nor bc) on outputs whose rows a TopK's indices pick: an end-to-end YOLO's
[1, 300, 6] detections (isbnx 0.0.18) reorder where two near scores swap, every method and bc scored the same
-1.7 dB on the halves, and the folds took 661 of the run's 954 s for no choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli, write_samples
from onnx import TensorProto, helper, numpy_helper


def detector(scores_out: bool) -> onnx.ModelProto:
    """x [1, 3, 16, 16] -> Conv to 5 channels -> [1, 256, 5] rows -> TopK(20) of the Sigmoid of column 4 ->
    GatherElements of the top rows: 'dets' [1, 20, 5]; `scores_out`: the scores [1, 256] an output too."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (5, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 5, 256], np.int64), "shape"),
             numpy_helper.from_array(np.array([4], np.int64), "c4"), numpy_helper.from_array(np.array([5], np.int64), "c5"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2"), numpy_helper.from_array(np.array([20], np.int64), "k"),
             numpy_helper.from_array(np.array([1, 1, 5], np.int64), "reps")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rows"], perm=[0, 2, 1]),
             helper.make_node("Slice", ["rows", "c4", "c5", "ax2"], ["logit"]),
             helper.make_node("Squeeze", ["logit", "ax2"], ["l2"]), helper.make_node("Sigmoid", ["l2"], ["scores"]),
             helper.make_node("TopK", ["scores", "k"], ["top", "idx"], axis=1),
             helper.make_node("Unsqueeze", ["idx", "ax2"], ["idx3"]), helper.make_node("Tile", ["idx3", "reps"], ["idx5"]),
             helper.make_node("GatherElements", ["rows", "idx5"], ["dets"], axis=1)]  # fmt: skip
    outputs = [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 20, 5])]
    if scores_out:
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 256]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantize(tmp_path: Path, model: onnx.ModelProto) -> str:
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(
        ["quantize", "-i", tmp_path / "m.onnx", "-l", write_samples(tmp_path, model, 8), "-o", tmp_path / "q.onnx"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "q.onnx").exists()
    return result.output


def test_topk_picked_rows_alone_leave_min_max_untried(tmp_path: Path) -> None:
    out = quantize(tmp_path, detector(scores_out=False))
    assert "calibration auto: min-max ('dets' takes rows by a TopK's indices" in out and "none was tried" in out
    assert "held-out halves" not in out and "bc auto: not tried" in out


def test_an_output_beside_them_is_scored(tmp_path: Path) -> None:
    out = quantize(tmp_path, detector(scores_out=True))
    assert "output SQNR on held-out halves of the list" in out


def knn_classifier() -> onnx.ModelProto:
    """Points x [1, 64, 3] -> inner products x x^T -> TopK(4) neighbours' indices -> Gather of the neighbours' points
    -> MatMul to 16 features -> Relu -> ReduceMax over points and neighbours -> Gemm logits [1, 10]: DGCNN's kNN."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (3, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 1, (16, 10)).astype(np.float32), "g"),
             numpy_helper.from_array(np.array([4], np.int64), "k"), numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "ax12")]  # fmt: skip
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["x", "xt"], ["dots"]),
             helper.make_node("TopK", ["dots", "k"], ["near", "idx"], axis=2),
             helper.make_node("Squeeze", ["x", "ax0"], ["x0"]), helper.make_node("Gather", ["x0", "idx"], ["nb"], axis=0),
             helper.make_node("MatMul", ["nb", "w"], ["f"]), helper.make_node("Relu", ["f"], ["fr"]),
             helper.make_node("ReduceMax", ["fr", "ax12"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "g"], ["logits"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_logits_pooled_from_picked_neighbours_are_scored(tmp_path: Path) -> None:
    """The logits depend on the TopK's indices but hold no picked row: a MatMul and a ReduceMax mix the gathered
    neighbours, as a swap of two near ones is one term of many (e24e232 left auto and bc untried: 33.5 dB held out
    on min-max alone, 34.3 with the method and bc the halves chose)."""
    out = quantize(tmp_path, knn_classifier())
    assert "takes rows by a TopK's indices" not in out
    assert "output SQNR on held-out halves of the list" in out


def test_inspect_ranks_the_layers_after_the_neighbours_as_their_own(tmp_path: Path) -> None:
    """inspect's layer ranking put every layer after the TopK last as 'reordered: rows picked by a TopK's indices'
    (runtime.downstream): the kNN classifier's MatMul, ReduceMax and Gemm logits too. The gathered neighbours are
    the picked rows; the layers that mix them rank by their own error."""
    quantize(tmp_path, knn_classifier())
    listing = tmp_path / "input_list.txt"
    inspected = run_cli(["inspect", tmp_path / "q.onnx", "--reference", tmp_path / "m.onnx", "--input_list", listing])
    assert inspected.exit_code == 0, inspected.output
    reordered = {line.split()[1] for line in inspected.output.splitlines() if "reordered: rows picked" in line}
    assert reordered == {"nb"}, inspected.output


def test_a_quality_warning_on_pooled_logits_blames_no_topk(tmp_path: Path) -> None:
    """quantize's far-from-float warning said "'logits' takes rows by a TopK's indices" of the kNN classifier's
    logits (runtime.downstream of the indices), which a swap of two near neighbours does not reorder: that blame is
    for rows the indices pick, as auto's and inspect's (compare.picked_rows)."""
    model = knn_classifier()
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", write_samples(tmp_path, model, 8),
                      "-o", tmp_path / "q.onnx", "--min_sqnr", "90"])  # fmt: skip
    assert result.exit_code == 6, result.output
    assert "the quantized model is far from the float one" in result.output, result.output
    assert "takes rows by a TopK's indices" not in result.output, result.output


def test_the_comparison_scores_pooled_logits_as_class_scores() -> None:
    """compare_outputs took every output downstream of a TopK's indices as no class scores (no top-1 agreement):
    the kNN classifier's logits too, which hold no picked row. As auto's, inspect's ranking and quantize's warning, a
    TopK's picked rows alone are not (compare.picked_rows); an ArgMax's index still reaches all it feeds."""
    from qtool.inspect import compare

    model = knn_classifier()
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 64, 3)).astype(np.float32)} for k in range(3)]
    assert compare.compare_outputs(model, model, feeds)["logits"].may_be_scores

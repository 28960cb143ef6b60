"""Top-1 agreement is reported for outputs that can be class scores only: not for a recurrent state, a normalised
embedding or a boolean mask, whose argmax agreeing with float's says nothing."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.inspect.compare import Drift, class_axes, compare_outputs


def _heads() -> onnx.ModelProto:
    """x [1, 8] -> logits (Gemm), an L2-normalised embedding (Div), a GRU's last state (Squeeze), a mask (Greater)."""
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(8, 6)).astype(np.float32),
        "gw": rng.normal(size=(1, 12, 8)).astype(np.float32),
        "gr": rng.normal(size=(1, 12, 4)).astype(np.float32),
        "zero": np.array(0.0, np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["logits"]),
        helper.make_node("ReduceL2", ["logits"], ["norm"], keepdims=1),
        helper.make_node("Div", ["logits", "norm"], ["embedding"]),
        helper.make_node("Unsqueeze", ["x", "axes"], ["seq"]),
        helper.make_node("GRU", ["seq", "gw", "gr"], ["", "h"], hidden_size=4),
        helper.make_node("Squeeze", ["h", "axes"], ["state"]),
        helper.make_node("Greater", ["logits", "zero"], ["mask"]),
        helper.make_node("Exp", ["logits"], ["e"]),  # a Softmax written out: its probabilities are scores
        helper.make_node("ReduceSum", ["e", "last"], ["total"], keepdims=1),
        helper.make_node("Div", ["e", "total"], ["probs"]),
    ]
    arrays["last"] = np.array([-1], np.int64)
    arrays["axes"] = np.array([0], np.int64)
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("logits", "embedding", "state", "probs")]
    outputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, None))
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])], outputs,
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_top1_agreement_only_for_outputs_that_can_be_class_scores() -> None:
    model = _heads()
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 8)).astype(np.float32)} for k in range(4)]
    drift = compare_outputs(model, model, feeds)
    assert "top1_agreement" in drift["logits"].summary(False) and "top1_agreement" in drift["probs"].summary(False)
    for name in ("embedding", "state", "mask"):
        assert "top1_agreement" not in drift[name].summary(False), name


def test_integer_outputs_and_equal_zero_outputs_do_not_fail_a_model() -> None:
    """A detector's int64 class ids named the worst output at 1.9 dB; a model whose every output is zero (no
    detections) in both models was 'far from the float one (SQNR inf dB, cosine 0.0000)'."""
    from qtool.inspect.compare import Drift
    from qtool.quant.mixed_precision import overall

    boxes, labels = Drift(), Drift()
    boxes.update(np.array([[10.0, 20.0, 30.0, 40.0]]), np.array([[10.1, 20.0, 29.9, 40.0]]), None)
    labels.update(np.array([3, 1], np.int64), np.array([1, 3], np.int64), None)
    assert labels.integer and not boxes.integer
    assert overall({"boxes": boxes, "labels": labels})["sqnr_db"] > 40
    empty = Drift()
    empty.update(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), None)
    assert overall({"boxes": empty}) == {"sqnr_db": float("inf"), "cosine": 1.0}


def test_a_model_that_fails_on_a_sample_is_one_line_naming_it() -> None:
    import pytest

    from qtool.errors import ModelError

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.ones((1, 4), np.float32), "shape": np.array([4], np.int64)},
             {"x": np.ones((1, 4), np.float32), "shape": np.array([5], np.int64)}]  # fmt: skip
    with pytest.raises(ModelError, match="the float model fails in onnxruntime on evaluation sample 2"):
        compare_outputs(model, model, feeds)


def test_no_top1_for_a_loop_output_or_scattered_features() -> None:
    """A Keras LSTM written as a Loop (chars2vec's 300-d embedding) and a graph network's scattered features
    printed top1_agreement (helper-40); a Slice of a Loop output is the same embedding."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["h_in", "one"], ["h_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )  # fmt: skip
    nodes = [
        helper.make_node("Loop", ["trips", "", "x"], ["looped"], body=body),
        helper.make_node("Slice", ["looped", "starts", "ends"], ["sliced"]),
        helper.make_node("ScatterElements", ["x", "idx", "upd"], ["scattered"], axis=1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "trips": np.array(2, np.int64), "starts": np.array([0], np.int64), "ends": np.array([4], np.int64),
        "idx": np.zeros((1, 2), np.int64), "upd": np.ones((1, 2), np.float32)}.items()]  # fmt: skip
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("looped", "sliced", "scattered")]
    graph = helper.make_graph(nodes, "loops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 8)).astype(np.float32)} for k in range(3)]
    drift = compare_outputs(model, model, feeds)
    for name in ("looped", "sliced", "scattered"):
        assert "top1_agreement" not in drift[name].summary(False), name


def test_no_top1_for_torch_normalize_whose_norm_is_expanded() -> None:
    """torch's F.normalize exports x / Expand(Clip(‖x‖, eps), shape(x)): the divisor reaches the norm through an
    Expand, and EfficientWord-Net's L2-normalised 2048-d word embedding printed top1_agreement 0.9062 (helper-43)."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(8, 6)).astype(np.float32), "two": np.array(2.0, np.float32),
              "half": np.array(0.5, np.float32), "last": np.array([1], np.int64), "eps": np.array(1e-12, np.float32),
              "shape": np.array([1, 6], np.int64)}  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["feat"]),
        helper.make_node("Abs", ["feat"], ["abs"]),
        helper.make_node("Pow", ["abs", "two"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "last"], ["ss"], keepdims=1),
        helper.make_node("Pow", ["ss", "half"], ["norm"]),
        helper.make_node("Clip", ["norm", "eps"], ["clipped"]),
        helper.make_node("Expand", ["clipped", "shape"], ["expanded"]),
        helper.make_node("Div", ["feat", "expanded"], ["embedding"]),
    ]
    graph = helper.make_graph(nodes, "normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 8)).astype(np.float32)} for k in range(3)]
    drift = compare_outputs(model, model, feeds)
    assert "top1_agreement" not in drift["embedding"].summary(False)


def _pitch_track() -> onnx.ModelProto:
    """x [1, 6, 8] (frames x bins) -> a clip's class scores (the frames' mean logits) and a pitch track: each frame's best bin (ArgMax) read back
    by index (GatherElements) and turned to a frequency (Exp), one value per frame, as swift-f0's is."""
    w = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["best"], axis=-1, keepdims=1),
        helper.make_node("GatherElements", ["logits", "best"], ["peak"], axis=-1),
        helper.make_node("Squeeze", ["peak", "last"], ["peak_per_frame"]),
        helper.make_node("Exp", ["peak_per_frame"], ["pitch"]),
        helper.make_node("ReduceMean", ["logits"], ["scores"], axes=[1], keepdims=0),  # a clip's class scores
    ]
    arrays = {"w": w, "last": np.array([-1], np.int64)}
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("pitch", "scores")]
    graph = helper.make_graph(nodes, "track", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])],
                              outputs, [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_no_top1_agreement_for_values_an_argmax_picks() -> None:
    model = _pitch_track()
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 6, 8)).astype(np.float32)} for k in range(4)]
    drift = compare_outputs(model, model, feeds)
    assert "top1_agreement" not in drift["pitch"].summary(False)  # an argmax over frames says nothing
    assert "top1_agreement" in drift["scores"].summary(False)


def test_an_integer_output_is_measured_by_agreement_not_sqnr() -> None:
    """Class ids an ArgMax writes: their SQNR read 'ids 23.994 dB' (an id off by 4 counted 16x one off by 1)."""
    drift = Drift()
    drift.update(np.array([[1, 2, 3, 4]]), np.array([[1, 2, 3, 8]]), None)
    drift.update(np.array([[0, 0]]), np.array([[0, 1]]), None)
    summary = drift.summary(False)
    assert summary["agreement"] == round(4 / 6, 4) and summary["sqnr_db"] is None and summary["cosine"] is None
    assert summary["max_abs_error"] == 4
    floats = Drift()
    floats.update(np.array([1.0, 2.0]), np.array([1.0, 2.5]), None)
    assert "agreement" not in floats.summary(False)


def test_no_top1_agreement_for_an_output_whose_length_its_values_set() -> None:
    """Kokoro-82M's waveform, audio ['audio_length'] (its length follows the durations the model predicts), read
    'top1_agreement 0' in quantize's table: an argmax over the samples, the loudest one's place. A declared class
    axis keeps it."""
    n = helper.make_node
    nodes = [n("Greater", ["x", "zero"], ["keep"]), n("Compress", ["x", "keep"], ["wave"], axis=0),
             n("Unsqueeze", ["x", "axes"], ["logits"])]  # fmt: skip
    arrays = {"zero": np.array(0.0, np.float32), "axes": np.array([0], np.int64)}
    outputs = [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["samples"]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])]  # fmt: skip
    graph = helper.make_graph(nodes, "voice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])], outputs,
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": np.random.default_rng(k).normal(size=8).astype(np.float32)} for k in range(4)]
    drift = compare_outputs(model, model, feeds)
    assert "top1_agreement" not in drift["wave"].summary(False)
    assert drift["logits"].summary(False)["top1_agreement"] == 1.0


def test_a_float_model_naming_its_class_axis_keeps_top1_agreement_against_a_converted_one() -> None:
    """A float model as tf2onnx ships it names every dim, a classifier's [unk__2, unk__3] too; convert numbers it
    [1, 10]. 79b2023 took the reference's named last axis for a length, so 'inspect q.onnx --reference tf.onnx' lost
    the top1_agreement column quantize gives (1 on 8 samples). A length is named in both models."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32), "W")

    def classifier(dims: list) -> onnx.ModelProto:
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "c",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], [w])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 16)).astype(np.float32)} for k in range(4)]
    drift = compare_outputs(classifier(["unk__2", "unk__3"]), classifier([1, 10]), feeds)
    assert drift["y"].summary(False)["top1_agreement"] == 1.0


def _decoder(lm_head: np.ndarray, gemm: bool = False) -> onnx.ModelProto:
    """ids [1, 12] -> embeddings [1, 12, 8] -> logits [1, 12, V]: a MatMul by lm_head (or a Gemm of its transpose
    on [12, 8] rows, with a bias, Reshaped back and under a LogSoftmax over axis 2)."""
    table = numpy_helper.from_array(np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32), "table")
    n = helper.make_node
    if gemm:
        arrays = [numpy_helper.from_array(np.ascontiguousarray(lm_head.T), "head"),
                  numpy_helper.from_array(np.full(lm_head.shape[1], 0.1, np.float32), "bias"),
                  numpy_helper.from_array(np.array([12, 8], np.int64), "rows"),
                  numpy_helper.from_array(np.array([1, 12, lm_head.shape[1]], np.int64), "back")]  # fmt: skip
        nodes = [n("Gather", ["table", "ids"], ["h"]), n("Reshape", ["h", "rows"], ["h2"]),
                 n("Gemm", ["h2", "head", "bias"], ["g"], transB=1), n("Reshape", ["g", "back"], ["z"]),
                 n("LogSoftmax", ["z"], ["logits"], axis=2)]  # fmt: skip
    else:
        arrays = [numpy_helper.from_array(lm_head, "head")]
        nodes = [n("Gather", ["table", "ids"], ["h"]), n("MatMul", ["h", "head"], ["logits"])]
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 12, lm_head.shape[1]])],
                              [table, *arrays])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_logits_of_a_position_each_are_compared_row_by_row() -> None:
    """flan-t5's decoder logits [1, 16, 32128] had no top-1 column (an output is a class vector only where its last
    axis holds all its values) while the next token differed from float's at 55% of positions, at cosine 0.977. A
    last axis a linear layer's weight sizes is its classes: each position's top-1 is one prediction."""
    rng = np.random.default_rng(0)
    head = rng.normal(size=(8, 30)).astype(np.float32)
    noisy = head + rng.normal(scale=0.6, size=head.shape).astype(np.float32)
    feeds = [{"ids": rng.integers(0, 20, size=(1, 12))} for _ in range(4)]
    for gemm in (False, True):
        reference, quantized = _decoder(head, gemm), _decoder(noisy, gemm)
        summary = compare_outputs(reference, quantized, feeds, labels=[1, 2, 3, 4])["logits"].summary(True)
        table = numpy_helper.to_array(reference.graph.initializer[0])
        best = [(table[f["ids"][0]] @ head).argmax(-1) == (table[f["ids"][0]] @ noisy).argmax(-1) for f in feeds]
        assert 0 < summary["top1_agreement"] == round(np.mean(best), 4) < 1, gemm  # 48 positions, not 4 vectors
        assert "float_accuracy" not in summary  # a label is a sample's, not a position's


def test_no_top1_for_a_detector_whose_last_axis_runs_over_anchors() -> None:
    """YOLO's [1, 22, N]: 4 box values and 18 class scores for each of N anchors, which a Concat of Conv maps joins
    on the last axis. A row's argmax is the anchor where one quantity peaks: no prediction."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    arrays = {"w1": rng.normal(size=(22, 3, 1, 1)).astype(np.float32), "w2": rng.normal(size=(22, 3, 1, 1)).astype(np.float32),
              "flat1": np.array([1, 22, 64], np.int64), "flat2": np.array([1, 22, 16], np.int64)}  # fmt: skip
    nodes = [n("Conv", ["x", "w1"], ["c1"]), n("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["p", "w2"], ["c2"]), n("Reshape", ["c1", "flat1"], ["r1"]), n("Reshape", ["c2", "flat2"], ["r2"]),
             n("Concat", ["r1", "r2"], ["output0"], axis=2)]  # fmt: skip
    graph = helper.make_graph(nodes, "yolo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 22, 80])],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    assert "top1_agreement" not in compare_outputs(model, model, feeds)["output0"].summary(False)


def test_no_top1_for_one_score_a_row() -> None:
    """A regressor's [N, 1] (surfaces-onnx-files' MLP surrogates: one predicted score for each of N hyperparameter
    points) has one column a row: its argmax is 0 whatever the model computes, so a top-1 agreement of 1 said nothing."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(4, 1)).astype(np.float32), "b": np.array([0.5], np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["score"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [8, 1])],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.normal(size=(8, 4)).astype(np.float32)} for _ in range(2)]
    summary = compare_outputs(model, model, feeds)["score"].summary(False)
    assert "top1_agreement" not in summary and summary["sqnr_db"] == float("inf")


def test_no_top1_for_a_hidden_state_a_residual_sum_makes() -> None:
    """An encoder's last hidden state, RMSNorm(x + x · W) [1, 12, 8], ends in a linear layer of 8 columns too, but
    through a residual sum and a norm's division, each of two tensors: no bias or scale. Its argmax over the hidden
    units is no prediction; class_axes followed either operand, and gave it a per-position top-1 (review of 708970b)."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(8, 8)).astype(np.float32), "gamma": np.ones(8, np.float32),
              "eps": np.array(1e-5, np.float32)}  # fmt: skip
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "x"], ["r"]), n("Mul", ["r", "r"], ["sq"]),
             n("ReduceMean", ["sq"], ["var"], axes=[-1]), n("Add", ["var", "eps"], ["ve"]), n("Sqrt", ["ve"], ["sd"]),
             n("Div", ["r", "sd"], ["normed"]), n("Mul", ["normed", "gamma"], ["hidden"])]  # fmt: skip
    graph = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, 8])],
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 12, 8])],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.normal(size=(1, 12, 8)).astype(np.float32)} for _ in range(2)]
    assert "top1_agreement" not in compare_outputs(model, model, feeds)["hidden"].summary(False)


def test_logits_over_a_temperature_constant_are_compared_row_by_row() -> None:
    """logits / T, T a Constant's value_float: a scale, as an initializer is (review of 708970b)."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("MatMul", ["h", "head"], ["m"]), n("Constant", [], ["t"], value_float=0.7), n("Div", ["m", "t"], ["logits"])]
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 12, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 12, 30])],
                              [numpy_helper.from_array(rng.normal(size=(8, 30)).astype(np.float32), "head")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"h": rng.normal(size=(1, 12, 8)).astype(np.float32)} for _ in range(2)]
    assert class_axes(model) == {"logits": 30}
    assert compare_outputs(model, model, feeds)["logits"].summary(False)["top1_agreement"] == 1


def test_no_top1_for_one_logit_a_position_squeezed() -> None:
    """text2tashkeel 0.1.0's rawi_v3 writes a presence gate [1, T]: one logit a character (a Linear to 1 column, the
    column squeezed away) beside its value logits [1, T, 75]. The gate's argmax is the position where it is surest,
    no prediction ('top1_agreement 0.9688'); the value logits keep theirs, one a position."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    arrays = {"wp": rng.normal(size=(4, 1)).astype(np.float32), "wv": rng.normal(size=(4, 5)).astype(np.float32),
              "b": np.array([0.5], np.float32), "last": np.array([2], np.int64)}  # fmt: skip
    nodes = [n("MatMul", ["x", "wp"], ["m"]), n("Add", ["b", "m"], ["a"]), n("Squeeze", ["a", "last"], ["presence"]),
             n("MatMul", ["x", "wv"], ["value"])]  # fmt: skip
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4])],
                              [helper.make_tensor_value_info("presence", TensorProto.FLOAT, [1, 8]),
                               helper.make_tensor_value_info("value", TensorProto.FLOAT, [1, 8, 5])],
                              [numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.normal(size=(1, 8, 4)).astype(np.float32)} for _ in range(2)]
    drift = compare_outputs(model, model, feeds)
    assert "top1_agreement" not in drift["presence"].summary(False)
    assert drift["value"].summary(False)["top1_agreement"] == 1

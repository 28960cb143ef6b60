"""mean_correction: the bias takes back the mean shift rounding a layer's weights and input adds
(algorithms/mean_correction.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.quant.algorithms import mean_correction
from qtool.quant.algorithms.layers import Layer
from tests.conftest import quantize_model, write_samples


def _node(op: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)


def test_conv_shift_by_hand() -> None:
    """Two groups of one input channel each, 2 taps: per output channel Σ_taps(Wq)·E[Q(x)] − Σ_taps(W)·E[x]."""
    layer = Layer(_node("Conv", group=2), "w", 2)
    w = np.array([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])  # (2 out, 1 in per group, 1, 2)
    wq = np.array([[[[1.5, 2.0]]], [[[3.0, 3.0]]]])
    shift = mean_correction._shift(layer, w, wq, np.array([10.0, 20.0]), np.array([11.0, 20.0]))
    np.testing.assert_allclose(shift, [3.5 * 11 - 3 * 10, 6 * 20 - 7 * 20])


def test_matmul_and_gemm_shift_by_hand() -> None:
    w = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # (K 3, N 2)
    wq = w + np.array([[0.5, 0.0], [0.0, 0.0], [0.0, -1.0]])
    mean, mean_q = np.array([2.0, 4.0, 6.0]), np.array([2.0, 4.0, 7.0])
    expected = mean_q @ wq - mean @ w
    np.testing.assert_allclose(mean_correction._shift(Layer(_node("MatMul"), "w", 1), w, wq, mean, mean_q), expected)
    gemm = Layer(_node("Gemm", transB=1, alpha=2.0, beta=0.5), "w", 1)  # bias added times beta: it takes shift / beta
    np.testing.assert_allclose(mean_correction._shift(gemm, w.T, wq.T, mean, mean_q), expected * 2.0 / 0.5)


def test_means_of_the_wrong_width_are_no_shift() -> None:
    assert mean_correction._shift(Layer(_node("MatMul"), "w", 1), np.ones((3, 2)), np.ones((3, 2)), np.ones(4), np.ones(4)) is None


def _offset_depthwise(channels: int = 4) -> onnx.ModelProto:
    """x + 3 into a depthwise 3x3 Conv whose taps sit 0.4 of a step above the grid the largest one sets: every
    tap rounds down, and the input's mean (3) turns that into a shift of the output's mean."""
    rng = np.random.default_rng(0)
    steps = rng.integers(-100, 100, size=(channels, 1, 3, 3)).astype(np.float64) + 0.4
    steps[:, 0, 0, 0] = 127  # the largest tap sets scale = max|w| / 127 = 0.01 exactly
    w = (steps * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "three"], ["x3"]),
         helper.make_node("Conv", ["x3", "w", "b"], ["y"], group=channels, pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
        "depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        [numpy_helper.from_array(np.float32(3), "three"), numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.zeros(channels, np.float32), "b")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tied_depthwise(channels: int = 4) -> onnx.ModelProto:
    """_offset_depthwise's Conv, without a bias, twice on one weight: on x + 3 and on x - 3, whose shifts are opposite."""
    model = _offset_depthwise(channels)
    graph = model.graph
    del graph.node[1].input[2:]
    del graph.initializer[2]
    graph.node.extend([helper.make_node("Sub", ["x", "three"], ["xm"]), helper.make_node(
        "Conv", ["xm", "w"], ["y2"], group=channels, pads=[1, 1, 1, 1], kernel_shape=[3, 3])])
    graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, channels, 8, 8]))
    return model


def _mean_error(float_model: onnx.ModelProto, quantized: str, feeds: list[np.ndarray], output: int = 0) -> np.ndarray:
    ref = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"])
    errors = [qdq.run(None, {"x": x})[output] - ref.run(None, {"x": x})[output] for x in feeds]
    return np.mean([e[:, :, 1:-1, 1:-1].mean(axis=(0, 2, 3)) for e in errors], axis=0)  # the border reads padding


@pytest.mark.parametrize("extra", [(), ("--weights_bitwidth", "4")])
def test_the_corrected_model_keeps_the_float_mean(tmp_path, extra) -> None:
    model = _offset_depthwise()
    flags = ("--use_per_channel_quantization", "--param_quantizer_schema", "symmetric", "--bias_bitwidth", "32", *extra)
    plain = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "none", name="plain")
    corrected = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "mean_correction", name="corrected")
    rng = np.random.default_rng(1)  # held out: other samples than the 16 it was corrected on
    feeds = [rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(8)]
    before, after = np.abs(_mean_error(model, str(plain), feeds)), np.abs(_mean_error(model, str(corrected), feeds))
    assert before.min() > 0.05  # the rounding's shift is there to take back ...
    assert (after < before / 5).all(), (before, after)  # ... and is taken back


def test_the_report_says_what_it_corrected(tmp_path) -> None:
    from tests.conftest import run_cli

    model = _offset_depthwise()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    listing = write_samples(tmp_path, model, 4)
    result = run_cli(["quantize", "-i", path, "--input_list", listing, "-o", tmp_path / "q.onnx",
                      "--apply_algorithms", "mean_correction"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean_correction: corrected 1 layer biases" in result.output


@pytest.mark.parametrize("make", [_offset_depthwise, _tied_depthwise])
def test_a_correction_that_lowers_the_output_sqnr_is_taken_back(tmp_path, monkeypatch, make) -> None:
    """keep: auto scores the model with and without the corrections on the calibration samples; a shift that
    only looks right layer by layer (here: 50 times the true one) is reverted, and the written model is the plain
    one: a bias-less layer's zero bias, added to correct it, goes too (the reverted model had kept an int32 bias of
    zeros per such layer and its encodings)."""
    real = mean_correction._shift
    monkeypatch.setattr(mean_correction, "_shift", lambda *args: None if (s := real(*args)) is None else 50 * s)
    model = make()
    flags = ("--use_per_channel_quantization", "--bias_bitwidth", "32")
    plain = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "none", name="plain")
    reverted = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "mean_correction", name="reverted")
    assert onnx.load(str(reverted)).graph == onnx.load(str(plain)).graph


def test_layers_sharing_a_weight_get_a_bias_each(tmp_path) -> None:
    """Two bias-less Convs on one weight: the bias added for each was named after the weight, one tensor, so the
    second layer's correction replaced the first's and both read it (y's mean error doubled, exit 0)."""
    model = _tied_depthwise()
    config = tmp_path / "always.yaml"
    config.write_text("mean_correction:\n  keep: always\n")
    flags = ("--use_per_channel_quantization", "--param_quantizer_schema", "symmetric", "--bias_bitwidth", "32")
    plain = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "none", name="plain")
    corrected = quantize_model(tmp_path, model, *flags, "--apply_algorithms", "mean_correction", "--config", config, name="c")
    rng = np.random.default_rng(1)
    feeds = [rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(8)]
    for output in (0, 1):
        before = np.abs(_mean_error(model, str(plain), feeds, output))
        after = np.abs(_mean_error(model, str(corrected), feeds, output))
        assert (after < before / 5).all(), (output, before, after)


def test_a_layer_writing_a_graph_output_is_read_on_its_input_grid(tmp_path) -> None:
    """The QDQ writer renames a graph output's producer's output `<y>_prequant`: a model's heads found no input grid
    by the name `y`, and their input's rounding went uncorrected (E[Q(x)] read as E[x])."""
    from qtool.quant.algorithms.layers import weighted_layers
    from qtool.quant.graph_facts import GraphFacts

    model = _offset_depthwise()
    qdq = onnx.load(str(quantize_model(tmp_path, model, "--use_per_channel_quantization")))
    scale = next(numpy_helper.to_array(i) for i in qdq.graph.initializer if i.name == "x3_scale")
    grids = mean_correction._input_grids(qdq, weighted_layers(GraphFacts.of(model)))
    assert list(grids) == ["y"] and grids["y"].scale == pytest.approx(float(scale))

"""Drift between outputs whose shapes differ (a decoder loop that stops at another step when quantized)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from qtool.encoding import tf
from qtool.inspect import layers
from qtool.inspect.compare import Drift, common_shape
from qtool.inspect.layers import LayerError


def test_outputs_of_different_lengths_compare_with_the_missing_steps_as_error() -> None:
    ref = np.ones((1, 5, 3), np.float32)
    quant = np.ones((1, 4, 3), np.float32)  # stopped one step early
    drift = Drift()
    drift.update(ref, quant, None)
    assert drift.signal == 15 and drift.noise == 3  # the missing step's three values
    a, b = common_shape(np.arange(6.0).reshape(2, 3), np.arange(4.0))
    assert a.shape == b.shape == (6,) and b[4:].tolist() == [0.0, 0.0]


def test_a_mask_minus_infinity_in_both_models_adds_no_error() -> None:
    layer = LayerError(SimpleNamespace(encoding=None, live=None))  # a probe without an encoding: no local error
    ref = np.array([0.5, -np.inf, 1.0], np.float32)
    layer.update(ref, np.array([0.5, -np.inf, 1.25], np.float32))
    assert layer.noise == 0.0625


def test_a_mask_marker_is_no_signal() -> None:
    """A masked Softmax input's -3.4e38: its square was the whole signal, so the Softmax after it seemed to add
    all the noise and the quality warning blamed it (MiniLM), not the residual stream that made the noise."""
    layer = LayerError(SimpleNamespace(encoding=None, live=None))
    masked = np.float32(np.finfo(np.float32).min)
    layer.update(np.array([1.0, masked, 2.0], np.float32), np.array([1.1, masked, 2.0], np.float32))
    assert layer.signal == 5.0 and np.isclose(layer.noise, 0.01)


def test_a_one_value_output_is_judged_by_its_cosine_over_the_samples() -> None:
    # a wake-word score: tiny on most clips, where the 8-bit grid rounds it to 0
    drift = Drift()
    for ref, quant in [(1e-4, 0.0), (2e-4, 0.0), (0.9, 0.898), (0.5, 0.502)]:
        drift.update(np.array([[ref]], np.float32), np.array([[quant]], np.float32), None)
    assert drift.summary(False)["cosine"] > 0.9999  # per sample it was 0.5: the sign of each number
    assert drift.summary(False)["sqnr_db"] > 45


def test_minus_infinity_in_both_outputs_is_agreement_not_nan() -> None:
    drift = Drift()
    with np.errstate(invalid="raise"):
        drift.update(np.array([1.0, -np.inf, 2.0]), np.array([1.0, -np.inf, 2.5]), None)
    assert drift.noise == 0.25 and drift.signal == 5.0 and 0.99 < drift.cosine < 1


def test_a_layer_error_summed_in_chunks_equals_the_whole_sum(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 37)).astype(np.float32)
    quant = ref + rng.normal(scale=0.01, size=ref.shape).astype(np.float32)
    encoding = tf(-3.0, 3.0, 8)
    whole = LayerError(SimpleNamespace(encoding=encoding, live=None))
    whole.update(ref, quant)
    monkeypatch.setattr(layers, "UPDATE_CHUNK", 10)  # 111 values: 12 chunks, the last of one value
    chunked = LayerError(SimpleNamespace(encoding=encoding, live=None))
    chunked.update(ref, quant)
    r, q = ref.astype(np.float64).ravel(), quant.astype(np.float64).ravel()
    local = r - encoding.fake_quantize(ref).astype(np.float64).ravel()
    expected = [(r * r).sum(), ((r - q) ** 2).sum(), (local * local).sum()]
    for e in (whole, chunked):
        assert np.allclose([e.signal, e.noise, e.local_noise], expected, rtol=1e-12) and e.local_noise > 0


def test_values_past_the_grid_are_named_as_clipping_not_rounding() -> None:
    """Silero VAD (silero-vad 6.2.3) held out: a ReLU calibrated to 44.9 met 223.8 from voices the calibration
    had not heard; the report said "cle" (its channels differ), where the inputs were the cause."""
    import onnx

    from qtool.quant.graph_facts import GraphFacts

    relu = onnx.helper.make_node("Relu", ["c"], ["r"])
    probe = layers.Probe("r", "r_dequantized", relu, tf(0.0, 10.0, 8))
    clipped, rounded = LayerError(probe), LayerError(probe)
    values = np.linspace(0, 9.9, 1000, dtype=np.float32)
    clipped.update(np.append(values, [50.0, 20.0]).astype(np.float32), np.zeros(1002, np.float32))
    rounded.update(values, np.zeros(1000, np.float32))
    assert (clipped.peak, clipped.end) == (50.0, 10.0) and clipped.clip_noise == (50 - 10) ** 2 + (20 - 10) ** 2
    assert rounded.clip_noise == 0 and rounded.peak == 0
    facts = GraphFacts.of(onnx.helper.make_model(onnx.helper.make_graph([relu], "g", [], [])))
    fix = layers.suggest(clipped, clipped.local_nsr, facts, None)
    assert fix.startswith("clipped: values reach 5.0x its grid's end (50 against 10)")
    assert not layers.suggest(rounded, rounded.local_nsr, facts, None).startswith("clipped")


def test_a_conv_squashed_into_a_clipped_relu_is_named_clipped_too() -> None:
    """Silero's Conv before the clipped ReLU ranked first with "16-bit weights": its grid is the ReLU's."""
    import onnx

    from qtool.quant.graph_facts import GraphFacts

    conv = onnx.helper.make_node("Conv", ["x", "w"], ["c"])
    relu = onnx.helper.make_node("Relu", ["c"], ["r"])
    w = onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([conv, relu], "g", [info("x", 1, [1, 1, 4, 4])], [info("r", 1, [1, 1, 4, 4])], [w])
    facts = GraphFacts.of(onnx.shape_inference.infer_shapes(onnx.helper.make_model(graph)))
    assert facts.squashed_into("c") == "r"
    errors = {"c": LayerError(layers.Probe("c", "c", conv, None)), "r": LayerError(layers.Probe("r", "r_dq", relu, tf(0.0, 10.0, 8)))}
    values = np.append(np.linspace(0, 9.9, 1000), [50.0]).astype(np.float32)
    errors["r"].update(values, np.clip(values, 0, 10))
    fix = layers._carrier_clipped(errors["c"], facts, errors, frozenset())
    assert fix is not None and fix.startswith("squashed into r: clipped: values reach 5.0x") and fix.endswith("--act_16bit_tensors r alone keeps its end")
    assert layers._carrier_clipped(errors["r"], facts, errors, frozenset()) is None  # it has a grid of its own
    given = layers._carrier_clipped(errors["c"], facts, errors, frozenset({"r"}))  # r's grid from -q: the file's to widen
    assert given is not None and given.endswith("a grid the overrides file gives: widen its min/max there, or drop the entry to calibrate it")


def test_softmax_scores_below_their_row_max_by_the_span_are_not_clipping() -> None:
    """A Softmax input's grid is cut at the smallest row max - 20 (observers.SoftmaxInput): the scores below weigh
    < e^-20. adaptive-terrain-diffusion's UNet attention read, on the very samples that had set its grid, as
    "clipped: values reach 11.1x its grid's end (-225 against -20.27): calibrate on inputs like these". Below
    the row's max - 20 both models' scores count as equal; a score past the grid's top still reads as clipped."""
    import onnx

    from qtool.quant.graph_facts import GraphFacts

    softmax = onnx.helper.make_node("Softmax", ["s"], ["p"], axis=-1)
    matmul = onnx.helper.make_node("MatMul", ["x", "w"], ["s"])
    facts = GraphFacts.of(onnx.helper.make_model(onnx.helper.make_graph([matmul, softmax], "g", [], []),
                                                 opset_imports=[onnx.helper.make_opsetid("", 13)]))  # fmt: skip
    assert layers._softmax_of(facts, "s") == (-1, False) and layers._softmax_of(facts, "x") is None
    probe = layers.Probe("s", "s_dequantized", matmul, tf(-20.0, 10.0, 8), softmax=layers._softmax_of(facts, "s"))
    ref = np.array([[9.0, 5.0, -3.0, -225.0], [1.0, -19.0, -60.0, -20.5]], np.float32)
    quant = tf(-20.0, 10.0, 8).fake_quantize(ref)
    dead = LayerError(probe)
    dead.update(ref, quant)
    assert dead.clip_noise == 0 and dead.peak == 0, (dead.clip_noise, dead.peak)
    assert not (layers.suggest(dead, dead.local_nsr, facts, None) or "").startswith("clipped")
    high = LayerError(probe)
    high.update(np.array([[60.0, 5.0, 1.0, 0.0]], np.float32), np.array([[10.0, 5.0, 1.0, 0.0]], np.float32))
    assert (high.peak, high.end) == (60.0, tf(-20.0, 10.0, 8).fake_quantize(np.array([1e30], np.float32))[0])


def test_a_layer_error_holds_a_chunk_of_float64_copies_not_the_tensor() -> None:
    """The sums' float64 copies of a 64K-value probe (Silero VAD's largest: 41K) were made of the whole tensor,
    at the per-layer ranking's peak (both models' sessions and a sample's values held)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1 << 16,)).astype(np.float32)
    quant = ref + rng.normal(scale=0.01, size=ref.shape).astype(np.float32)
    layer = LayerError(SimpleNamespace(encoding=tf(-3.0, 3.0, 8), live=None))
    tracemalloc.start()
    try:
        layer.update(ref, quant)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert layer.local_noise > 0
    assert peak < 3 * ref.nbytes  # 2x at 16K-value chunks (its clipping masks); whole-tensor float64 copies: 7x

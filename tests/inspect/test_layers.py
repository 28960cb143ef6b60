"""Per-layer compare: a planted bad layer is ranked first with the right fix; nothing per sample is kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from conftest import write_samples
from inspect_models import clean, outlier_channel, save

from qtool import api
from qtool.config import InspectOptions, QuantizeOptions
from qtool.inspect import layers


def quantized(tmp_path: Path, model: onnx.ModelProto, **flags) -> tuple[Path, Path, Path]:
    """(float model, its QDQ model, validation list), quantized by qtool with `flags`."""
    source = save(model, tmp_path / "float.onnx")
    calib = write_samples(tmp_path / "calib", model, 16, seed=1)
    out = tmp_path / "quant.onnx"
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=out, **flags))
    return source, out, write_samples(tmp_path / "val", model, 12, seed=2)


def ranked(source: Path, quant: Path, val: Path) -> list[layers.LayerRow]:
    report = api.inspect_model(InspectOptions(model=quant, reference=source, input_list=val))
    table = next(t for t in report.tables if t.title.startswith("layers"))
    return [layers.LayerRow(*[row[0], 0, row[1], row[2], "", row[3], row[4], row[5], row[6]]) for row in table.rows]


def ranked_text(tmp_path: Path, text: str, arrays: dict[str, np.ndarray]) -> list[layers.LayerRow]:
    """The layer rows of a model written in ONNX's text format, its constants given as float32 arrays."""
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays.items())
    return ranked(*quantized(tmp_path, model))


def test_terrible_activation_range_is_ranked_first(tmp_path):
    overrides = tmp_path / "bad.json"
    bad = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -64.0, "max": 64.0}
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"r1": [bad]}, "param_encodings": {}}))
    rows = ranked(*quantized(tmp_path, clean(), quantization_overrides=overrides))
    assert rows[0].tensor == "r1"
    assert rows[0].local_db < 20 and rows[0].added_db < 20
    assert rows[0].fix.startswith("16-bit activation") and "--act_16bit_tensors r1" in rows[0].fix
    assert all(r.added_db > rows[0].added_db for r in rows[1:])


def test_outlier_weight_channel_per_tensor_is_ranked_first(tmp_path):
    """W2's channel 0 is 50x the others: layer 2 (Conv c2 and its ReLU r2) is the worst. The outlier
    channel also stretches r2's per-tensor range, so r2's own quantization dominates: cle evens out
    both; c2's weight error alone asks for per-channel weights."""
    rows = ranked(*quantized(tmp_path, outlier_channel(50.0)))
    assert rows[0].tensor == "r2"
    assert rows[0].fix.startswith("cle: --apply_algorithms cle") and "'W2'" in rows[0].fix
    c2 = next(r for r in rows if r.tensor == "c2")
    assert c2.local_db == "-"  # ReLU squashing: c2 has no encoding of its own
    assert c2.fix.endswith("per-channel: --use_per_channel_quantization")
    assert c2.rank <= 3


def test_per_channel_quantization_removes_the_planted_layer(tmp_path):
    source, quant, val = quantized(tmp_path, outlier_channel(50.0), use_per_channel_quantization=True)
    rows = ranked(source, quant, val)
    c2 = next(r for r in rows if r.tensor == "c2")
    assert not c2.fix.startswith("per-channel")


def test_probes_read_dequantized_values(tmp_path):
    source, quant, _ = quantized(tmp_path, clean())
    probes = {p.tensor: p for p in layers.probes(onnx.load(str(source)), onnx.load(str(quant)))}
    assert probes["x"].quant_name == "x_dequantized" and probes["x"].node is None
    assert probes["r1"].quant_name == "r1_dequantized" and probes["r1"].encoding is not None
    assert probes["c1"].quant_name == "c1" and probes["c1"].encoding is None  # squashed into r1
    assert probes["y"].quant_name == "y" and probes["y"].encoding is not None  # a graph output keeps its name


def test_another_tools_qdq_names_are_probed_after_their_pair(tmp_path):
    """The same QDQ model with onnxruntime's names (T_DequantizeLinear_Output) gives the same figures."""
    source, quant, _ = quantized(tmp_path, clean())
    theirs = onnx.load(str(quant))
    renamed = {}
    for node in theirs.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0].endswith("_dequantized"):
            renamed[node.output[0]] = node.output[0].replace("_dequantized", "_DequantizeLinear_Output")
    for node in theirs.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    reference = onnx.load(str(source))
    probes = {p.tensor: p.quant_name for p in layers.probes(reference, theirs)}
    assert renamed and probes["r1"] == "r1_DequantizeLinear_Output"

    def feeds():
        rng = np.random.default_rng(0)
        return ({"x": rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)} for _ in range(6))

    ours, other = layers.stream(reference, onnx.load(str(quant)), feeds()), layers.stream(reference, theirs, feeds())
    assert [(e.probe.tensor, e.noise) for e in ours] == [(e.probe.tensor, e.noise) for e in other]


def test_streaming_keeps_no_per_sample_state(tmp_path):
    """Every accumulator holds a fixed number of scalars, however many samples pass through."""
    source, quant, _ = quantized(tmp_path, clean())
    rng = np.random.default_rng(0)
    consumed = 0

    def feeds():
        nonlocal consumed
        for _ in range(40):
            consumed += 1
            yield {"x": rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)}

    errors = layers.stream(onnx.load(str(source)), onnx.load(str(quant)), feeds())
    assert consumed == 40 and errors
    for e in errors:
        assert all(isinstance(v, (float, int)) for k, v in vars(e).items() if k != "probe")
        assert math.isfinite(e.signal) and e.signal > 0


def test_a_tensor_read_only_by_a_relu_is_judged_on_what_the_relu_sees(tmp_path):
    """A LayerNormalization read only by a Relu gets a grid over [0, max] (group_range): its negative half
    reads as 0 either way. Judged on the whole tensor it showed ~3 dB of local error and was ranked worst,
    with 'keep this LayerNormalization in float' as the fix (openWakeWord's hey_jarvis head)."""
    rng = np.random.default_rng(0)
    arrays = {"gamma": rng.uniform(0.5, 2.0, 32), "beta": rng.normal(0, 0.2, 32), "w": rng.normal(0, 0.3, (32, 8))}
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        ln_relu (float[1,32] x) => (float[1,8] y) {
            n = LayerNormalization <axis = -1> (x, gamma, beta)
            r = Relu (n)
            y = MatMul (r, w)
        }
        """, arrays)
    n = next(r for r in rows if r.tensor == "n")
    assert n.local_db > 30 and n.added_db > 30


def test_a_log_of_a_rounded_power_spectrum_sends_its_fix_upstream(tmp_path):
    """log(x² + ε) at 8 bits: the Log's own grid adds little, the rounding of x² (a power spectrum) is what it
    magnifies. The fix had been '--act_16bit_tensors <the Log>', which changes nothing (DNSMOS's log spectrum)."""
    arrays = {"gain": np.array(3.0), "eps": np.array(1e-6)}
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        logpow (float[1,64] x) => (float[1,64] y) {
            s = Mul (x, gain)
            p = Mul (s, s)
            q = Add (p, eps)
            y = Log (q)
        }
        """, arrays)
    log = next(r for r in rows if r.tensor == "y")
    assert log.fix.startswith("upstream: this Log magnifies the rounding of its input 'q'")
    assert "--act_16bit_tensors y" not in log.fix


def test_a_slice_of_the_worse_part_sends_its_fix_upstream(tmp_path):
    """A Slice computes nothing: picking the half of a tensor whose error came from further up (here u's grid,
    which the other half stretched, magnified 100x), it showed as the worst layer with '--act_16bit_tensors
    <the Slice>' as the fix, which changes nothing (YOLOS's detection tokens out of the last LayerNorm)."""
    gains = np.r_[np.full(32, 0.01), np.ones(32)]
    arrays = {"gains": gains, "inverse": 1 / gains, "one": np.array(1.0)}
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        pick (float[1,64] x) => (float[1,32] y, float[1,64] z) {
            u = Mul (x, gains)
            t = Mul (u, inverse)
            starts = Constant <value = int64[1] {0}> ()
            ends = Constant <value = int64[1] {32}> ()
            axes = Constant <value = int64[1] {1}> ()
            s = Slice (t, starts, ends, axes)
            y = Mul (s, one)
            z = Relu (t)
        }
        """, arrays)
    picked = next(r for r in rows if r.tensor == "s")
    assert picked.fix.startswith("upstream: this Slice passes on the error of 't'"), picked


def test_an_op_without_weights_that_magnifies_its_inputs_error_sends_its_fix_upstream(tmp_path):
    """t carries u's error from a grid the other half stretched (magnified 100x); t·t doubles its relative error.
    Its own grid adds little: 16 bits on it, or on its input, changed nothing in Wav2Vec2's q·kᵀ."""
    gains = np.r_[np.full(32, 0.01), np.ones(32)]
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        square (float[1,64] x) => (float[1,64] y) {
            u = Mul (x, gains)
            t = Mul (u, inverse)
            y = Mul (t, t)
        }
        """, {"gains": gains, "inverse": 1 / gains})
    square = next(r for r in rows if r.tensor == "y")
    assert square.fix.startswith("upstream: this Mul magnifies the error 't' carries from"), square


def test_a_weighted_layer_that_magnifies_its_inputs_error_sends_its_fix_upstream(tmp_path):
    """y reads t's first half, whose error u's stretched grid magnified 100x, and almost nothing of the clean half:
    y's relative error is twice t's, so y 'adds' noise, yet its weights round at ~40 dB. The fix had been
    '16-bit weights', which changed nothing (a YOLOv8 class branch's first Conv; the advice came back)."""
    rng = np.random.default_rng(0)
    gains = np.r_[np.full(32, 0.01), np.ones(32)]
    w = np.r_[rng.normal(0, 1, (32, 8)), np.full((32, 8), 1e-4)]
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        magnify (float[1,64] x) => (float[1,8] y, float[1,64] z) {
            u = Mul (x, gains)
            t = Mul (u, inverse)
            y = MatMul (t, w)
            z = Relu (t)
        }
        """, {"gains": gains, "inverse": 1 / gains, "w": w})
    y = next(r for r in rows if r.tensor == "y")
    assert y.added_db < 30, y
    assert y.fix.startswith("upstream: this MatMul magnifies the error 't' carries"), y
    assert "--params_16bit_tensors" not in y.fix


def test_a_weighted_layer_whose_own_weights_are_coarse_keeps_the_16_bit_weights_fix(tmp_path):
    """Every output channel has one large weight on an input that is all but silent: the grid of each channel is
    coarse for the weights that carry the signal, which 16 bits fixes (and per-channel grids do not)."""
    rng = np.random.default_rng(0)
    gains = np.r_[0.001, np.ones(63)]
    w = rng.normal(0, 1, (64, 8))
    w[0] = 200.0
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        coarse (float[1,64] x) => (float[1,8] y) {
            u = Mul (x, gains)
            y = MatMul (u, w)
        }
        """, {"gains": gains, "w": w})
    y = next(r for r in rows if r.tensor == "y")
    assert y.added_db < 20, y
    assert y.fix == "16-bit weights: --params_16bit_tensors y", y


def test_a_sigmoid_tail_sends_its_fix_upstream(tmp_path):
    """Deep in its tail a Sigmoid is an exponential: the absolute error of its input is its relative one, and its
    own grid adds little. 'keep this Sigmoid in float or 16-bit' changed nothing (YOLOv8's scores)."""
    rows = ranked_text(tmp_path, """
        <ir_version: 8, opset_import: ["" : 17]>
        tail (float[1,64] x) => (float[1,64] y) {
            s = Mul (x, twenty)
            z = Sub (s, thirty)
            y = Sigmoid (z)
        }
        """, {"twenty": np.array(20.0), "thirty": np.array(30.0)})
    y = next(r for r in rows if r.tensor == "y")
    assert y.added_db < 30 and y.local_db > y.added_db + 6, y
    assert y.fix.startswith("upstream: this Sigmoid magnifies the rounding of its input 'z'"), y


def test_a_grid_too_wide_at_16_bits_already_gets_float_not_16_bits_again(tmp_path):
    """r1 at 16 bits over [-1e6, 1e6] (a step of 30 for values near 1): the fix had been --act_16bit_tensors r1,
    the flag already in effect (flan-t5's residual sums, whose 16-bit step is 6.4: the advice came back)."""
    overrides = tmp_path / "wide.json"
    wide = {"bitwidth": 16, "dtype": "int", "is_symmetric": "False", "min": -1e6, "max": 1e6}
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"r1": [wide]}, "param_encodings": {}}))
    rows = ranked(*quantized(tmp_path, clean(), quantization_overrides=overrides))
    assert rows[0].tensor == "r1"
    assert rows[0].fix.startswith("float: 'r1' is 16-bit already"), rows[0]
    assert "--act_16bit_tensors" not in rows[0].fix

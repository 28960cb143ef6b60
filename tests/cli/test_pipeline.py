"""End to end on samples/ through the CLI (as `make demo` runs it): convert -> quantize ->
inspect -> export, plus byte-identical reruns, the export round trip and --help."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SAMPLES, conv_bn_model, run_cli, save_model, two_input_model, write_samples

from qtool.cli import main
from qtool.graph import model as gm
from qtool.graph.lazy_weights import scratch_file
from qtool.inspect import compare
from qtool.io.encodings import read_encodings
from qtool.io.kept_outputs import KeptOutputs

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
CALIB, VAL, LABELS = SAMPLES / "input_list.txt", SAMPLES / "val_list.txt", SAMPLES / "val_labels.txt"
OVERRIDES = SAMPLES / "overrides.json"
DEMO_FLAGS = ["--use_per_channel_quantization", "--bias_bitwidth", "32"]  # as `make demo`
# the method the default's auto picks on the demo, without the trials' own float passes (nor the default's bc, which
# auto's halves keep on the demo: 36.7 -> 39.1 dB held out there)
NO_TRIALS = ["--act_quantizer_calibration", "min-max"]


def ok(args: list) -> dict | None:
    """Run qtool; expect exit 0 and no error; return the --json object when asked for."""
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "error" not in result.stderr
    if "--json" in args:
        return json.loads(result.stdout)
    return None


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The `make demo` pipeline, run once for the module."""
    out = tmp_path_factory.mktemp("demo")
    conv, quant = out / "digits_cnn.conv.onnx", out / "digits_cnn.quant.onnx"
    reports = {
        "convert": ok(["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", conv, "-q", OVERRIDES, "--json"]),
        "quantize": ok(["quantize", "-i", conv, "--input_list", CALIB, "-o", quant, *DEMO_FLAGS, "--json"]),
        "inspect": ok(["inspect", quant, "--reference", conv, "--input_list", VAL, "--labels", LABELS, "--json"]),
        "export": ok(["export", "-i", quant, "-o", out / "export", "--json"]),
    }
    return {"dir": out, "conv": conv, "quant": quant, "export": out / "export", "reports": reports}


def _val_sample(index: int) -> np.ndarray:
    return np.fromfile(SAMPLES / "val" / f"val_{index:03d}.raw", dtype="<f4").reshape(1, 1, 8, 8)


def assert_same_encodings(got_path: Path, want_path: Path) -> None:
    """Same tensors, bitwidths and offsets; scales equal up to float32 (QDQ models store them so)."""
    got, want = json.loads(got_path.read_text()), json.loads(want_path.read_text())
    for section in ("activation_encodings", "param_encodings"):
        assert sorted(got[section]) == sorted(want[section])
        for name, entries in want[section].items():
            found = got[section][name]
            assert [(e["bitwidth"], e["offset"]) for e in found] == [(e["bitwidth"], e["offset"]) for e in entries]
            np.testing.assert_allclose([e["scale"] for e in found], [e["scale"] for e in entries], rtol=1e-6)


def test_convert_output(demo) -> None:
    model = onnx.load(str(demo["conv"]))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and not ops & QDQ_OPS
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["qtool.converted"] == gm.fingerprint(model)  # the mark holds for this graph only
    carried = json.loads(meta["qtool.quantization_overrides"])
    assert list(carried["activation_encodings"]) == ["image"]
    assert demo["reports"]["convert"]["overrides carried"] == 1


def test_quantized_model_runs_in_onnxruntime(demo) -> None:
    model = onnx.load(str(demo["quant"]))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    sess = ort.InferenceSession(str(demo["quant"]), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"image": _val_sample(0)})
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
    # every weight is an integer initializer behind a DequantizeLinear
    float_inits = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert all(name.endswith("_scale") for name in float_inits), float_inits


def test_quantize_report(demo) -> None:
    report = demo["reports"]["quantize"]
    assert report["samples"] == 64
    assert report["activations quantized"] > 0 and report["params quantized"] > 0
    assert Path(report["encodings"]) == demo["quant"].with_suffix(".encodings.json")


def test_encodings_file(demo) -> None:
    data = json.loads(demo["quant"].with_suffix(".encodings.json").read_text())
    assert data["version"] == "0.6.1"
    acts, params = data["activation_encodings"], data["param_encodings"]
    # the override carried by convert wins for the input: 8-bit asymmetric [0, 1]
    (image,) = acts["image"]
    assert (image["min"], image["offset"], image["bitwidth"]) == (0.0, 0, 8)
    assert image["max"] == pytest.approx(1.0)
    # per-channel symmetric conv weights (offset -2^(bw-1)), 32-bit biases
    conv1 = params["conv1.weight"]
    assert len(conv1) == 32 and {c["offset"] for c in conv1} == {-128}
    assert {c["is_symmetric"] for c in conv1} == {"True"}
    assert {c["bitwidth"] for c in params["conv1.bias"]} == {32}
    for entries in [*acts.values(), *params.values()]:
        for e in entries:
            assert e["offset"] <= 0 and e["min"] <= 0.0 <= e["max"]


def test_accuracy_against_float(demo) -> None:
    report = demo["reports"]["inspect"]
    assert report["kind"] == "quantized" and report["compared samples"] == 300
    (logits,) = report["outputs (float vs quantized)"]
    assert logits["output"] == "logits"
    assert logits["top1_agreement"] >= 0.98
    assert logits["quant_accuracy"] >= logits["float_accuracy"] - 0.02
    assert logits["float_accuracy"] >= 0.95


def test_quantize_twice_is_byte_identical(demo, tmp_path: Path) -> None:
    again = tmp_path / demo["quant"].name
    ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", again, *DEMO_FLAGS])
    assert again.read_bytes() == demo["quant"].read_bytes()
    encodings = again.with_suffix(".encodings.json")
    assert encodings.read_bytes() == demo["quant"].with_suffix(".encodings.json").read_bytes()


def test_quantize_leaves_its_inputs_untouched(demo) -> None:
    before = demo["conv"].read_bytes()
    ok(["quantize", "-i", demo["conv"], "-f", "-o", demo["dir"] / "fallback.onnx"])
    assert demo["conv"].read_bytes() == before


def test_export_outputs(demo) -> None:
    stripped = onnx.load(str(demo["export"] / "digits_cnn.quant.stripped.onnx"))
    onnx.checker.check_model(stripped, full_check=True)
    assert not {n.op_type for n in stripped.graph.node} & QDQ_OPS
    assert_same_encodings(
        demo["export"] / "digits_cnn.quant.encodings.json", demo["quant"].with_suffix(".encodings.json")
    )
    # the stripped model computes what the float model does, up to weight quantization
    ref = ort.InferenceSession(str(demo["conv"]), providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"])
    for i in range(5):
        feed = {"image": _val_sample(i)}
        assert np.argmax(sess.run(None, feed)[0]) == np.argmax(ref.run(None, feed)[0])


def test_export_round_trip_is_byte_identical(demo) -> None:
    requant = demo["dir"] / "requant" / demo["quant"].name
    stripped = demo["export"] / "digits_cnn.quant.stripped.onnx"
    exported = demo["export"] / "digits_cnn.quant.encodings.json"
    ok(["quantize", "-i", stripped, "-o", requant, "--quantization_overrides", exported, "--enable_float_fallback"])
    assert requant.read_bytes() == demo["quant"].read_bytes()


def test_export_round_trip_with_shapes_restored(demo, tmp_path: Path) -> None:
    """Pins the cause of the bug above: with the activation types inferred again, the round trip holds."""
    stripped = onnx.load(str(demo["export"] / "digits_cnn.quant.stripped.onnx"))
    inferred = save_model(onnx.shape_inference.infer_shapes(stripped), tmp_path / "stripped.onnx")
    requant = tmp_path / "requant.onnx"
    exported = demo["export"] / "digits_cnn.quant.encodings.json"
    ok(["quantize", "-i", inferred, "-o", requant, "--quantization_overrides", exported, "-f"])
    assert requant.read_bytes() == demo["quant"].read_bytes()


def test_json_output_is_one_object(demo) -> None:
    result = run_cli(["inspect", demo["quant"], "--json"])
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 1
    report = json.loads(result.stdout)
    assert report["command"] == "qtool inspect" and report["kind"] == "quantized"
    assert {row["kind"] for row in report["encodings"]} == {"act", "param"}


def test_inspect_takes_its_model_as_convert_and_quantize_do(demo) -> None:
    positional, flagged = run_cli(["inspect", demo["quant"], "--json"]), run_cli(["inspect", "-i", demo["quant"], "--json"])
    assert positional.exit_code == flagged.exit_code == 0
    assert json.loads(flagged.stdout)["kind"] == json.loads(positional.stdout)["kind"] == "quantized"


def test_convert_imports_a_prequantized_qdq_model(demo, tmp_path: Path) -> None:
    """A QDQ model from QAT or another quantizer (here qtool's own) converts to its float graph
    with the Q/DQ pairs carried as overrides; quantize then needs no calibration data to give
    back the same encodings."""
    conv, requant = tmp_path / "imported.conv.onnx", tmp_path / "requant.onnx"
    report = ok(["convert", "-i", demo["quant"], "-o", conv, "--json"])
    assert not {n.op_type for n in onnx.load(str(conv)).graph.node} & QDQ_OPS
    assert report["encodings imported"] > 0
    assert report["overrides carried"] == report["encodings imported"]
    ok(["quantize", "-i", conv, "-o", requant, "--enable_float_fallback"])
    assert_same_encodings(requant.with_suffix(".encodings.json"), demo["quant"].with_suffix(".encodings.json"))


def test_convert_strip_drops_the_imported_encodings(demo, tmp_path: Path) -> None:
    conv = tmp_path / "stripped.conv.onnx"
    report = ok(["convert", "-i", demo["quant"], "-o", conv, "--export_format", "strip", "--json"])
    model = onnx.load(str(conv))
    assert not {n.op_type for n in model.graph.node} & QDQ_OPS
    assert report["encodings imported"] == 0 and report["overrides carried"] == 0
    assert not [p for p in model.metadata_props if "overrides" in p.key]


def test_convert_rejects_a_per_channel_weight_on_the_wrong_axis(demo, tmp_path: Path) -> None:
    model = onnx.load(str(demo["quant"]))
    dq = next(n for n in model.graph.node if n.name == "pw.weight_DequantizeLinear")
    next(a for a in dq.attribute if a.name == "axis").i = 1  # [32, 32, 1, 1]: the scales still fit
    source, conv = save_model(model, tmp_path / "wrong_axis.onnx"), tmp_path / "out" / "m.conv.onnx"
    result = run_cli(["convert", "-i", source, "-o", conv])
    assert result.exit_code == 3 and "Traceback" not in result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("qtool: error:")]
    assert len(error) == 1 and "'pw.weight'" in error[0] and "axis 1" in error[0] and "axis 0" in error[0]
    assert not conv.exists()


def test_eval_list_moves_the_reports_figures_to_held_out_samples(demo, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    args = ["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS, "--json"]
    report = ok([*args, "--eval_list", VAL, "--evaluate_samples", "10"])
    assert report["evaluated samples"] == 10 and report["evaluated on"] == str(VAL)
    assert report["samples"] == demo["reports"]["quantize"]["samples"]  # calibration is unchanged
    assert out.read_bytes() == demo["quant"].read_bytes()
    held_out = report["outputs (float vs quantized)"][0]["sqnr_db"]
    assert held_out != demo["reports"]["quantize"]["outputs (float vs quantized)"][0]["sqnr_db"]


def test_evaluation_from_calibrations_float_outputs_equals_its_own_float_pass(demo, tmp_path: Path, monkeypatch) -> None:
    """--eval_list naming the calibration list's own file makes the evaluation run the float model itself."""
    out = tmp_path / "q.onnx"
    with monkeypatch.context() as patched:  # without --eval_list the float outputs come from calibration
        patched.setattr(compare, "reference_outputs", lambda *a, **k: pytest.fail("a second float pass"))
        ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS, *NO_TRIALS])
    report = ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS, "--json",
                 "--eval_list", CALIB])  # fmt: skip
    (got,), (want,) = report["outputs (float vs quantized)"], demo["reports"]["quantize"]["outputs (float vs quantized)"]
    # the calibration graph's fetched tensors keep onnxruntime from some fusions: float32 rounding apart
    assert got == {**want, "max_abs_error": pytest.approx(want["max_abs_error"], rel=1e-4)}


def test_float_outputs_past_the_memory_budget_are_read_back_from_scratch_files(demo, tmp_path: Path, monkeypatch) -> None:
    """Kept on disk, not run again: the same figures as kept in memory, with and without --eval_list (platedet's
    YOLOv8-seg, 3.6 MB of outputs a sample: evaluation 40 -> 13 s, peak 701 -> 508 MB), and no file left."""
    kept = tmp_path / "kept.onnx"  # min-max without the default's bc, whose guard runs the float model again
    in_memory = ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", kept, *DEMO_FLAGS, *NO_TRIALS, "--json"])
    monkeypatch.setattr(compare, "KEPT_BYTES", 0)
    monkeypatch.setattr(compare, "reference_outputs", _counted(compare.reference_outputs, calls := []))
    for extra in ([], ["--eval_list", VAL, "--evaluate_samples", "10"]):
        out = tmp_path / "q.onnx"
        report = ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS, *NO_TRIALS, "--json",
                     *extra])  # fmt: skip
        assert out.read_bytes() == kept.read_bytes()
        if not extra:
            want = in_memory["outputs (float vs quantized)"]  # type: ignore[index]
            assert report["outputs (float vs quantized)"] == want and not calls  # from calibration's pass
    assert len(calls) == 1 and isinstance(calls[0], KeptOutputs) and len(calls[0]) == 10
    scratch = Path(scratch_file("x")).parent  # this process's
    assert len(list(scratch.glob("outputs-*"))) == 10  # the one store still referenced: the test's
    calls.clear()
    gc.collect()
    assert not list(scratch.glob("outputs-*"))


def _counted(function, calls: list):
    def wrapped(*args, **kwargs):
        calls.append(result := function(*args, **kwargs))
        return result

    return wrapped


def test_two_input_int64_model_with_named_lines(tmp_path: Path) -> None:
    model_path = save_model(two_input_model(), tmp_path / "two.onnx")
    input_list = write_samples(tmp_path, two_input_model(), 8)
    first_line = input_list.read_text().splitlines()[0]
    assert first_line.startswith("x:=") and " ids:=" in first_line
    out = tmp_path / "out" / "two.quant.onnx"
    report = ok(["quantize", "-i", model_path, "--input_list", input_list, "-o", out, "--json"])
    assert report["samples"] == 8
    encodings = json.loads(out.with_suffix(".encodings.json").read_text())
    assert "x" in encodings["activation_encodings"] and "ids" not in encodings["activation_encodings"]
    assert "W" in encodings["param_encodings"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in sess.get_inputs()} == {"x": "tensor(float)", "ids": "tensor(int64)"}
    (y,) = sess.run(None, {"x": np.zeros((1, 4), np.float32), "ids": np.array([[1, 2, 3]], np.int64)})
    assert y.shape == (1, 2) and np.isfinite(y).all()


def test_name_lines_in_any_order_match_positional(tmp_path: Path) -> None:
    model_path = save_model(two_input_model(), tmp_path / "two.onnx")
    named = write_samples(tmp_path / "a", two_input_model(), 4, named=True)
    positional = write_samples(tmp_path / "b", two_input_model(), 4, named=False)
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("".join(" ".join(reversed(line.split())) + "\n" for line in named.read_text().splitlines()))
    outs = []
    for name, list_path in (("named", named), ("positional", positional), ("swapped", swapped)):
        out = tmp_path / name / "two.quant.onnx"
        ok(["quantize", "-i", model_path, "--input_list", list_path, "-o", out])
        outs.append(out.with_suffix(".encodings.json").read_text())
    assert outs[0] == outs[1] == outs[2]


# --- help --------------------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.exit_code == 0 and "version" in result.stdout


@pytest.mark.parametrize("command", [None, *sorted(main.commands)])
def test_help(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = run_cli(args)
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    if command is None:
        assert set(main.commands) >= {"convert", "quantize", "inspect", "export"}
        for name in main.commands:
            assert name in result.stdout
        return
    for param in main.commands[command].params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{command} {param.opts[0]} has no help text"
            assert param.opts[0] in result.stdout


def test_quantize_accepts_the_seed_spellings(tmp_path: Path) -> None:
    """The QNN seed's old flag names are aliases (DESIGN.md "Flag names")."""
    out = tmp_path / "alias.quant.onnx"
    old = ["--act_bw", "8", "--weight_bw", "8", "--bias_bw", "32"]
    ok(["quantize", "--input_dlc", SAMPLES / "digits_cnn.onnx", "-l", CALIB, "--output_dlc", out, *old])
    assert out.exists() and out.with_suffix(".encodings.json").exists()


# --- other quantize options on the sample --------------------------------------------------------

CONFIGS = {
    "act16": (["--act_bitwidth", "16"], 0.98),
    "w16": (["--weights_bitwidth", "16"], 0.98),
    "w4": (["--weights_bitwidth", "4"], 0.5),
    "w4-packed": (["--weights_bitwidth", "4", "--pack_4_bit_weights"], 0.5),
    "per-row": (["--use_per_row_quantization", "--use_per_channel_quantization"], 0.98),
    "symmetric-acts": (["--act_quantizer_schema", "symmetric", "--param_quantizer_schema", "symmetric"], 0.98),
    "sqnr": (["--act_quantizer_calibration", "sqnr"], 0.98),
    "percentile": (["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "99.9"], 0.98),
    "legacy-adjusted": (["--act_quantizer", "tf", "--param_quantizer", "adjusted"], 0.98),
    "v1-encodings": (["--encodings_format", "1.0.0"], 0.98),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_quantize_options_give_runnable_models(demo, tmp_path: Path, config: str) -> None:
    flags, min_agreement = CONFIGS[config]
    out = tmp_path / "q.onnx"
    ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *flags])
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = ok(["inspect", out, "--reference", demo["conv"], "--input_list", VAL, "--labels", LABELS, "--json"])
    (logits,) = report["outputs (float vs quantized)"]
    assert logits["top1_agreement"] >= min_agreement
    # whatever the layout, the encodings file reads back as overrides
    encodings = read_encodings(out.with_suffix(".encodings.json"))
    assert "image" in encodings.activations and "conv1.weight" in encodings.params


def test_act16_uses_16_bit_qdq(demo, tmp_path: Path) -> None:
    out = tmp_path / "q16.onnx"
    ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, "--act_bitwidth", "16"])
    model = onnx.load(str(out))
    # 'image' keeps the 8-bit override carried by convert; everything calibrated is 16-bit
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types["image_zero_point"] == onnx.TensorProto.UINT8
    assert types["logits_zero_point"] == onnx.TensorProto.UINT16
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    encodings = json.loads(out.with_suffix(".encodings.json").read_text())
    assert encodings["activation_encodings"]["logits"][0]["bitwidth"] == 16


def test_quantize_model_with_initializers_as_inputs(tmp_path: Path) -> None:
    model = conv_bn_model()
    for init in model.graph.initializer:
        model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    path = save_model(model, tmp_path / "old.onnx")
    input_list = write_samples(tmp_path, conv_bn_model(), 4)
    ok(["quantize", "-i", path, "--input_list", input_list, "-o", tmp_path / "old.quant.onnx"])


def test_a_graph_input_that_is_also_an_output_passes_through(tmp_path: Path) -> None:
    """Its name belongs to the graph input: the output stays that float input, and only the
    consumers read it through Q/DQ (the writer used to define the name twice)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")], "passthrough", [x], [y, x]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    source, out = save_model(model, tmp_path / "m.onnx"), tmp_path / "q.onnx"
    ok(["quantize", "-i", source, "--input_list", write_samples(tmp_path, model, 8), "-o", out])
    feed = np.array([[-1.0, 0.25, 0.5, 0.75]], np.float32)
    got_y, got_x = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["y", "x"], {"x": feed})
    np.testing.assert_array_equal(got_x, feed)
    np.testing.assert_allclose(got_y, np.maximum(feed, 0), atol=0.01)


@pytest.mark.parametrize(("bits", "warned"), [("8", True), ("4", False)])
def test_pack_4_bit_weights_says_when_there_is_nothing_to_pack(demo, tmp_path: Path, bits: str, warned: bool) -> None:
    args = ["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", tmp_path / "q.onnx", "--pack_4_bit_weights"]
    result = run_cli([*args, "--weights_bitwidth", bits])
    assert result.exit_code == 0
    assert ("nothing was packed" in result.stderr) == warned


def test_bc_s_score_and_the_evaluation_read_one_float_pass_run_before_the_working_copy(demo, tmp_path, monkeypatch) -> None:
    """bc's keep-or-revert scores the whole list against the float model, and the evaluation reads the same outputs:
    one float pass, run while the reference is the only float model (malviz's ResNet-18 peaked at 331 MB with that
    pass beside the working copy and the quantized model, 288 MB before the copy); bc named, and the default's."""
    from qtool.quant.algorithms import bias_correction

    events: list[str] = []

    def logged(what: str, function):
        def wrapped(*args, **kwargs):
            events.append(what)
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(compare, "reference_outputs", logged("float", compare.reference_outputs))
    monkeypatch.setattr(gm, "copy", logged("copy", gm.copy))
    monkeypatch.setattr(bias_correction, "run", logged("bc", bias_correction.run))
    out = tmp_path / "q.onnx"
    ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS, *NO_TRIALS,
        "--apply_algorithms", "bc"])  # fmt: skip
    assert events == ["float", "copy", "bc"]
    events.clear()
    ok(["quantize", "-i", demo["conv"], "--input_list", CALIB, "-o", out, *DEMO_FLAGS])  # auto's halves keep bc
    assert events.count("float") == 1 and out.read_bytes() == demo["quant"].read_bytes()

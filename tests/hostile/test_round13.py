"""Round 13 (helper-80): inspect's outputs beside its inputs, stats files and lists that repeat themselves, models
that compute nothing, tensors empty in some samples, flags for what a run does not do, references that are not
MODEL's float model, and onnx's backend node cases run through quantize, inspect and export, probed on an installed
wheel as a careless user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto
from onnx import helper as oh


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- inspect --html on the encodings quantize wrote -------------------------------------------------------------


def test_inspect_html_does_not_replace_the_models_encodings(ws: Workspace) -> None:
    """`inspect q.onnx --html q.encodings.json` (a tab completion one character short) replaced the encodings
    quantize wrote beside the model with the HTML report, exit 0: they are not inspect's to replace."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    encodings = ws.out.with_suffix(".encodings.json")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.out, "--html", encodings), 2,
                   f"--html {encodings} is the same file as the encodings quantize wrote beside MODEL")  # fmt: skip


# --- stats files no calibration writes --------------------------------------------------------------------------


def _edited_stats(ws: Workspace, method: str, **changes: object) -> tuple[Path, str]:
    """A --save_stats file of the workspace's model, one tensor's state edited; returns it and that tensor."""
    saved = ws.root / "s.json"
    assert ws.quantize("-o", ws.out, "--save_stats", saved, "--act_quantizer_calibration", method).exit_code == 0
    doc = json.loads(saved.read_text())
    tensor = sorted(doc["tensors"])[0]
    doc["tensors"][tensor].update(changes)
    edited = ws.root / "edited.json"
    edited.write_text(json.dumps(doc))
    for path in ws.out.parent.iterdir():
        path.unlink()
    ws.out.parent.rmdir()
    return edited, tensor


@pytest.mark.parametrize("method", ["min-max", "percentile"])
@pytest.mark.parametrize("changes, said", [
    ({"count": 0}, "'count' is 0, yet it holds the range"),
    ({"hi": 3e38}, "reaches 1e+30: calibration reads such values as a mask's"),
])  # fmt: skip
def test_a_stats_state_calibration_never_saves_is_refused(ws: Workspace, method: str, changes: dict,
                                                          said: str) -> None:  # fmt: skip
    """A state with count 0 and a range (and a histogram) read as 'no calibration data' alone, and merged into
    another shard min-max took its range: 'count' 0 means nothing was seen. A range reaching 3e38 (below float32's
    end, so accepted) wrote a grid of step 1.2e36, exit 0, where calibration keeps a tensor reaching 1e30 float."""
    edited, tensor = _edited_stats(ws, method, **changes)
    flags = ["--act_quantizer_calibration", method]
    if method == "percentile" and changes == {"count": 0}:  # and the unseen range: its bins hold values all the same
        doc = json.loads(edited.read_text())
        doc["tensors"][tensor].update(lo=float("inf"), hi=float("-inf"))
        unseen = ws.root / "unseen.json"
        unseen.write_text(json.dumps(doc))
        before = ws.snapshot()
        result = ws.run("quantize", "-i", ws.model, "--load_stats", unseen, "-o", ws.out, *flags)
        assert_refused(ws, before, result, 4, f"{unseen}: tensor {tensor!r}: ", "0 where 'count' is")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("quantize", "-i", ws.model, "--load_stats", edited, "-o", ws.out, *flags), 4,
                   f"{edited}: tensor {tensor!r}: ", said)  # fmt: skip


# --- the same samples twice ---------------------------------------------------------------------------------------


def test_a_copy_of_a_stats_file_is_not_merged_twice(ws: Workspace) -> None:
    """--load_stats refused one file named twice, but a copy of it (cp a.json b.json) was merged as a second shard:
    'samples 8' of 4, each histogram's counts doubled against the other shards'."""
    saved = ws.root / "a.json"
    assert ws.quantize("-o", ws.out, "--save_stats", saved).exit_code == 0
    copy = ws.root / "copy.json"
    copy.write_text(json.dumps(json.loads(saved.read_text()) | {"input_lists": {}}))  # re-saved, not byte for byte
    out = ws.root / "again" / "q.onnx"
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("quantize", "-i", ws.model, "--load_stats", saved, "--load_stats", copy, "-o", out),
                   2, f"{copy}: holds the statistics {saved} holds (a copy?)")  # fmt: skip


def test_an_input_list_repeating_its_lines_is_warned_of(ws: Workspace) -> None:
    """`cat list.txt list.txt > twice.txt` calibrated every sample twice ('samples 8' of 4) without a word."""
    twice = ws.root / "twice.txt"
    twice.write_text(ws.listing.read_text() * 2)
    result = ws.run("quantize", "-i", ws.model, "-l", twice, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert f"qtool: WARNING: {twice}:5: names the files line 1 named (4 line(s) repeat an earlier one)" in result.stderr
    assert "names the files" not in ws.quantize("-o", ws.out).stderr


# --- a model that computes nothing --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_model_computing_nothing_is_refused(ws: Workspace, command: str) -> None:
    """A graph with no node, its input passed straight to its output, was converted with exit 0, and quantize
    reported 'activations quantized 1' and 'x inf dB' for a model it wrote without one Q/DQ."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    onnx.save(oh.make_model(oh.make_graph([], "g", [x], [x]), opset_imports=[oh.make_opsetid("", 13)]), ws.model)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out) if command == "quantize" else ws.run("convert", "-i", ws.model, "-o", ws.out)
    assert_refused(ws, before, result, 3, f"{ws.model}: computes nothing: every output is an input (x)")


# --- a tensor empty in some samples -------------------------------------------------------------------------------


def _detections_model(path: Path) -> None:
    """y = Relu(v * v), v = the values of x above 0.5 (NonZero, GatherND): empty where none is, as boxes past an
    NMS are on an image without a detection."""
    threshold = onnx.numpy_helper.from_array(np.array(0.5, np.float32), "t")
    nodes = [oh.make_node("Greater", ["x", "t"], ["g"]), oh.make_node("NonZero", ["g"], ["nz"]),
             oh.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]), oh.make_node("GatherND", ["x", "idx"], ["v"]),
             oh.make_node("Mul", ["v", "v"], ["sq"]), oh.make_node("Relu", ["sq"], ["y"])]  # fmt: skip
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["K"])], [threshold])  # fmt: skip
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("method", ["min-max", "percentile"])
def test_a_tensor_empty_in_one_sample_is_still_quantized(tmp_path: Path, method: str) -> None:
    """One calibration image without a detection left every tensor after the NonZero float, silently
    ('activations quantized 1', 'left float 3'): the reductions of an empty tensor are inf and -inf, which read
    as a mask's values. A tensor empty in every sample stays float, as it did, and is no error."""
    ws = Workspace(tmp_path)
    _detections_model(ws.model)
    rows = [np.random.default_rng(k).random((1, 8)).astype(np.float32) for k in range(4)] + [np.full((1, 8), 0.1)]
    for k, row in enumerate(rows):
        row.astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    ws.listing.write_text("".join(f"s{k}.raw\n" for k in range(len(rows))))
    result = ws.quantize("-o", ws.out, "--act_quantizer_calibration", method)
    assert result.exit_code == 0, result.stderr
    encodings = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert all(encodings[t][0]["dtype"] == "int" for t in ("v", "sq", "y")), encodings
    assert "reads as a mask's value" not in result.stderr
    ws.listing.write_text("s4.raw\n")
    result = ws.quantize("-o", ws.out, "--act_quantizer_calibration", method)
    assert result.exit_code == 0, result.stderr
    encodings = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert all(encodings[t][0]["dtype"] == "float" for t in ("v", "sq", "y")), encodings


# --- flags for something the run does not do ----------------------------------------------------------------------


@pytest.mark.parametrize("flags, said", [
    (["--mixed_precision_sensitivity", "exact"], "--mixed_precision_sensitivity applies to --mixed_precision auto's"),
    (["--matmulnbits_accuracy_level", "4"], "--matmulnbits_accuracy_level applies to the MatMulNBits --target ort-cpu"),
])  # fmt: skip
def test_quantize_refuses_a_flag_for_what_it_does_not_do(ws: Workspace, flags: list[str], said: str) -> None:
    """`--mixed_precision_sensitivity exact` without --mixed_precision auto (as 32714bd refused --target_sqnr), and
    --matmulnbits_accuracy_level without --target ort-cpu, were ignored: exit 0, a model as if never given."""
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, *flags), 2, said)
    assert ws.quantize("-o", ws.out, "--mixed_precision", "off", "--mixed_precision_sensitivity", "exact").exit_code == 0


@pytest.mark.parametrize("flags, said", [
    (["--format", "qdq", "--matmulnbits_accuracy_level", "4"], "applies to --format matmulnbits, which this export"),
    (["--format", "qdq", "--encodings_format", "2.0.0"], "applies to --format encodings, which this export"),
])  # fmt: skip
def test_export_refuses_a_setting_for_a_format_it_does_not_write(ws: Workspace, flags: list[str], said: str) -> None:
    """export --format qdq --encodings_format 2.0.0 (or --matmulnbits_accuracy_level 4) wrote the QDQ model, exit
    0, the setting ignored: the user who wanted 2.0.0 encodings has none."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("export", "-i", ws.out, "-o", ws.root / "exported", *flags), 2, said)


def test_convert_refuses_overrides_for_a_float16_model(ws: Workspace) -> None:
    """convert --float_bitwidth 16 -q ov.json carried the overrides into a float16 model, exit 0, and quantize refuses
    a float16 model ('quantize the float32 converted model and pass --float_bitwidth 16'): they were never read."""
    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "param_encodings": {}, "activation_encodings": {
        "x": [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0.0, "max": 1.0}]}}))  # fmt: skip
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--float_bitwidth", "16", "-q", overrides)
    assert_refused(ws, before, result, 2, "--quantization_overrides with --float_bitwidth 16")


def test_inspect_refuses_a_float16_reference(ws: Workspace) -> None:
    """inspect q.onnx --reference <convert --float_bitwidth 16's model> ranked two layers, 'logits Cast' first, its
    fix 'this Cast magnifies the error 'logits_fp16' carries': the float16 model hides its layers behind Casts."""
    half = ws.root / "half.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", half, "--float_bitwidth", "16").exit_code == 0
    assert ws.quantize("-o", ws.out).exit_code == 0
    before = ws.snapshot()
    result = ws.run("inspect", ws.out, "--reference", half, "-l", ws.listing)
    assert_refused(ws, before, result, 2, f"{half}: is a float16 model (convert --float_bitwidth 16): its layers run in")
    assert "`qtool convert` of this one" in result.stderr


def test_a_float16_model_converted_back_is_a_float32_model(ws: Workspace) -> None:
    """A float16 model convert --float_bitwidth 16 wrote, given to convert, computes in float32 (to_float32) but kept
    the float16 mark: 'quantize -i conv.onnx' said 'is a float16 model (quantize the float32 converted model ...)' of
    that very model, exit 2, and inspect refused it as --reference (see above), so a user holding only the float16
    model had no float32 one. Now its conversion is unmarked: quantize takes it, inspect compares with it."""
    half, back = ws.root / "half.onnx", ws.root / "back.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", half, "--float_bitwidth", "16").exit_code == 0
    assert ws.run("convert", "-i", half, "-o", back).exit_code == 0
    result = ws.run("quantize", "-i", back, "-l", ws.listing, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    inspected = ws.run("inspect", ws.out, "--reference", back, "-l", ws.listing, "--json")
    assert inspected.exit_code == 0, inspected.stderr
    assert json.loads(inspected.stdout)["outputs (float vs quantized)"][0]["sqnr_db"] > 20


# --- --calib_batch_size moving the ranges -------------------------------------------------------------------------


def test_calib_batch_size_does_not_thin_the_histograms(tmp_path: Path) -> None:
    """--calib_batch_size 32 binned SAMPLE_CAP values of each whole batch, where one sample at a time bins up to
    that many of each sample: 32x fewer values, and percentile's ranges moved (digits CNN: 4.89 -> 4.70 on its
    Concat) for a flag that should only change the speed."""
    ws = make_workspace(tmp_path, samples=32)
    ranges = []
    for batch in ("1", "32"):
        out = tmp_path / batch / "q.onnx"
        result = ws.quantize("-o", out, "--act_quantizer_calibration", "percentile", "--calib_batch_size", batch)
        assert result.exit_code == 0, result.stderr
        found = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
        ranges.append({t: (e[0]["min"], e[0]["max"]) for t, e in found.items()})
    for tensor, (lo, hi) in ranges[0].items():  # within a bin or two: re-binning as the range grows differs
        assert ranges[1][tensor] == pytest.approx((lo, hi), rel=2e-3, abs=(hi - lo) * 2e-3), tensor


# --- a node onnxscript's folding fails on -------------------------------------------------------------------------


def test_a_node_the_constant_folder_fails_on_is_left_unfolded(ws: Workspace) -> None:
    """SplitToSequence with a scalar `split` that is an input (onnx's own test_split_to_sequence_1): onnxscript's
    folding rule read it as a 1-D one and raised, and convert and quantize stopped with 'internal error'."""
    nodes = [oh.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1),
             oh.make_node("SequenceAt", ["seq", "zero"], ["part"]), oh.make_node("Relu", ["part"], ["y"])]  # fmt: skip
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6]),
                                       oh.make_tensor_value_info("split", TensorProto.INT64, [])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [3, "n"])],
                          [onnx.numpy_helper.from_array(np.array(0, np.int64), "zero")])  # fmt: skip
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), ws.model)
    result = ws.run("convert", "-i", ws.model, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert [n.op_type for n in onnx.load(ws.out).graph.node] == ["SplitToSequence", "SequenceAt", "Relu"]


# --- the original as --reference of a resized model ---------------------------------------------------------------


def test_inspect_refuses_a_reference_declaring_other_input_dims(tmp_path: Path) -> None:
    """convert --input_dim x 1,2,16,16 of a model declaring [1,2,8,8], quantize, then inspect --reference <the
    original>: 'the float model fails in onnxruntime on evaluation sample 1: Got invalid dimensions ... a converted
    model that fails where the original runs is a bug worth reporting', a qtool bug for the user's swap."""
    ws = Workspace(tmp_path)
    weight = onnx.numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 2, 3, 3)).astype(np.float32), "W")
    nodes = [oh.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [weight])  # fmt: skip
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), ws.model)
    for k in range(2):
        np.random.default_rng(k).random((1, 2, 16, 16)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    ws.listing.write_text("s0.raw\ns1.raw\n")
    converted = tmp_path / "big.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted, "--input_dim", "x", "1,2,16,16").exit_code == 0
    assert ws.run("quantize", "-i", converted, "-l", ws.listing, "-o", ws.out).exit_code == 0
    before = ws.snapshot()
    result = ws.run("inspect", ws.out, "--reference", ws.model, "-l", ws.listing)
    assert_refused(ws, before, result, 2, f"{ws.model}: declares input 'x' [1,2,8,8], MODEL [1,2,16,16]")
    assert ws.run("inspect", ws.out, "--reference", converted, "-l", ws.listing).exit_code == 0


def test_inspect_html_does_not_replace_the_mixed_precision_overrides(ws: Workspace) -> None:
    """`inspect q.onnx --html q.mixed_precision.json` replaced the overrides --mixed_precision auto wrote beside the
    model (the file a later run takes as -q) with the HTML report, exit 0."""
    assert ws.quantize("-o", ws.out, "--mixed_precision", "auto", "--target_sqnr", "20").exit_code == 0
    chosen = ws.out.with_suffix(".mixed_precision.json")
    assert chosen.exists()
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.out, "--html", chosen), 2,
                   f"--html {chosen} is the same file as the mixed-precision overrides beside MODEL")  # fmt: skip


# --- export's ranges of a 16-bit model ----------------------------------------------------------------------------


def test_the_ranges_of_a_16_bit_model_load_into_its_stripped_model(ws: Workspace) -> None:
    """README's 'export --format ranges --format stripped, then quantize -i the stripped model --load_stats' flow:
    a W16A16 model's stripped graph keeps its source's converted mark but not the graph it marked, so quantize
    normalises it again, while ranges hashed it as written: 'q.ranges.json: was saved for a different model'."""
    flags = ["--act_bitwidth", "16", "--weights_bitwidth", "16"]
    assert ws.quantize("-o", ws.out, *flags).exit_code == 0
    exported = ws.root / "exported"
    assert ws.run("export", "-i", ws.out, "-o", exported, "--format", "ranges", "--format", "stripped").exit_code == 0
    again = ws.root / "again" / "q.onnx"
    result = ws.run("quantize", "-i", exported / "q.stripped.onnx", "--load_stats", exported / "q.ranges.json",
                    "-o", again, *flags)  # fmt: skip
    assert result.exit_code == 0, result.stderr


def test_nothing_quantized_by_an_op_type_the_model_lacks_says_so(ws: Workspace) -> None:
    """--op_types_to_quantize MatMul on a model whose layers are Conv and Gemm quantized nothing and warned 'the model
    has no float32 activation or weight qtool can put on a grid (float64 and integer tensors stay as they are...)',
    of a float32 CNN: the flag named no op it has."""
    result = ws.quantize("-o", ws.out, "--op_types_to_quantize", "MatMul")
    assert result.exit_code == 0, result.stderr
    assert "nothing was quantized: --op_types_to_quantize names no op of the model (MatMul; as converted it has " \
        in result.stderr, result.stderr  # fmt: skip

"""Round 25 (helper h-hostile35): last round's leftovers (memory that followed a model's node count, not what its
tensors hold; an offset past float's reach; duplicate names inspect let through; a sample count printed in full),
then careless input to every command."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto, helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- inspect -l: a histogram holds what its tensor held ----------------------------------------------------------


def _chain(nodes: int) -> onnx.ModelProto:
    """x [1, 4] -> Neg -> Relu -> Neg -> ... -> y: `nodes` tensors of 4 values each."""
    ops = [helper.make_node("Relu" if k % 2 else "Neg", [f"t{k - 1}" if k else "x"], [f"t{k}"]) for k in range(nodes)]
    ops.append(helper.make_node("Identity", [f"t{nodes - 1}"], ["y"]))
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph(ops, "g", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_inspect_statistics_of_small_tensors_hold_what_they_saw() -> None:
    """inspect -l keeps a percentile histogram per float tensor: 2048 int64 bins, 16 KB, however few values the
    tensor held, and it binned a batch of them into one dense [tensors, 2048] array at once. A 20000-node chain of
    [1, 4] tensors peaked at 1.35 GB (328 MB of counts for 16 values each, 268 MB of bincount). Now a histogram that
    fills few bins keeps (bin, count) pairs and a batch is binned a few tensors at a time: 772 MB, what remains being
    onnxruntime's session of the probed graph. Here 2000 tensors: numpy's arrays peaked at 66 MB, now under 8."""
    from qtool.inspect.lint_data import collect_stats

    rng = np.random.default_rng(0)
    samples = [(f"x{k}.raw", {"x": rng.normal(size=(1, 4)).astype(np.float32)}) for k in range(4)]
    tracemalloc.start()  # numpy reports its arrays' data to tracemalloc
    try:
        stats = collect_stats(onnx.shape_inference.infer_shapes(_chain(2000)), samples, threads=1, count=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB"
    relu = stats["t1"]  # Relu(-x): the values are the samples' negated, clipped at 0
    assert relu.counts.sum() == 16 and relu.counts.size == 2048
    want = np.maximum(-np.concatenate([feed["x"].reshape(-1) for _, feed in samples]), 0)
    assert relu.lo == want.min() and relu.hi == want.max()


# --- a 0.6.1 entry's offset that no grid of its bits has -----------------------------------------------------------


@pytest.mark.parametrize("stated, said", [
    ({"scale": 0.01, "offset": -1e54}, "offset -1e+54 is no 8-bit grid's (AIMET's are -255 to 0): its scale and offset"),
    ({"scale": 0.01, "offset": 300}, "offset 300 is no 8-bit grid's"),
    ({"scale": 1e-9}, "scale 1e-09 spans 2.55e-07 in 8 bits, short of min -1: it is not used"),
    ({"scale": 1e-9, "offset": 0}, "scale 1e-09 spans 2.55e-07 in 8 bits, under the 0.0001 any range is widened to "
                                   "(QNN): its scale and offset are not used"),
])  # fmt: skip
def test_a_legacy_offset_no_grid_has_is_named(ws: Workspace, stated: dict, said: str) -> None:
    """A 0.6.1 entry with min/max [-1, 1.55] and offset -1e54 (or 300, or a scale of 1e-9 that spans 2.55e-7 in 8
    bits): qtool, as qairt, uses min/max, and said nothing, where an offset of -100 is named ('scale and offset give
    the grid ..., not its min/max's'): the warning looked for min/max that would give the stated grid, and an offset
    past 2^bw - 1 gives none, nor does a grid under MIN_RANGE (scale 1e-9 with offset 0: min/max are widened to
    1e-4). Now it says the scale and offset are not used, and which range is."""
    entry = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -1.0, "max": 1.55, **stated}
    path = ws.root / "o.json"
    path.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"r": [entry]}, "param_encodings": {}}))
    result = ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx", "--quantization_overrides", path)
    assert result.exit_code == 0, result.output
    assert f"'r': {said}" in result.stderr, result.stderr
    assert "qtool uses its min/max's [-1, 1.55] (scale 0.01), as qairt does" in result.stderr


# --- inspect says what convert's checker refuses --------------------------------------------------------------------


def _twice_named(kind: str) -> onnx.ModelProto:
    """x [1, 4] -> MatMul(W) -> y, with W given as two initializers, or a tensor two nodes write."""
    from onnx import numpy_helper

    weights = [numpy_helper.from_array(np.full((4, 4), k, np.float32), "W") for k in (1, 2)]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    if kind == "output":
        weights = weights[:1]
        nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["x"], ["h"]),
                 helper.make_node("MatMul", ["h", "W"], ["y"])]  # fmt: skip
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", value[:1], value[1:], weights),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind, said", [
    ("initializer", "onnx.checker: W initializer name is not unique: convert and quantize refuse the model as it stands"),
    ("output", "'h' has been used as output names multiple times: convert and quantize refuse the model as it stands"),
])  # fmt: skip
def test_inspect_names_what_convert_refuses(ws: Workspace, kind: str, said: str) -> None:
    """A model with two initializers named W (onnxruntime runs it, taking one), or a tensor two nodes write: convert
    and quantize refuse it (onnx.checker), but inspect, which runs no checker, printed 'lint findings: none', and
    --fail-on error passed it. Now inspect reports the checker's refusal as an error finding."""
    path = ws.root / "m.onnx"
    onnx.save(_twice_named(kind), path)
    result = ws.run("inspect", path)
    assert result.exit_code == 0, result.output
    assert "invalid-model" in result.output and said in result.output, result.output
    assert ws.run("inspect", path, "--fail-on", "error").exit_code == 5
    assert "invalid-model" not in ws.run("inspect", ws.model).output


def test_inspect_says_convert_takes_an_unshaped_input_given_its_dims(ws: Workspace) -> None:
    """An input that declares no shape: convert refuses the model as it stands, but takes it with --input_dim, so
    the finding must not read as a refusal whatever the user does (it said 'convert and quantize refuse the model')."""
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    model.ir_version = 8
    path = ws.root / "unshaped.onnx"
    onnx.save(model, path)
    said = ws.run("inspect", path).output
    assert "refuse the model as it stands" in said and "--input_dim x" in said, said
    assert ws.run("convert", "-i", path, "-o", ws.root / "c.onnx", "--input_dim", "x", "1,4").exit_code == 0


# --- a stats file's counts are bounded ----------------------------------------------------------------------------


@pytest.mark.parametrize("field, said", [
    ("samples", "'samples' must be a non-negative integer under 2^53, not a 401-digit number"),
    ("count", "'count' must be a non-negative integer under 2^53, not a 401-digit number"),
    ("samples", "'samples' must be a non-negative integer under 2^53, not 'xxxxxxxx"),
])  # fmt: skip
def test_a_stats_files_counts_are_bounded(ws: Workspace, field: str, said: str) -> None:
    """A --load_stats file whose 'samples' is 10^400: quantize printed all 401 digits as its sample count, exit 0
    (a tensor's 'count' of 10^400 was taken too). Now a count of 2^53 or more is refused in one line that gives its
    length, not its digits, as is a long string in its place (echoed whole before)."""
    stats = ws.root / "s.json"
    assert ws.quantize("-o", ws.out, "--save_stats", stats).exit_code == 0
    doc = json.loads(stats.read_text())
    huge = "x" * 5000 if said.endswith("'xxxxxxxx") else 10**400
    if field == "samples":
        doc["samples"] = huge
    else:
        doc["tensors"][next(iter(doc["tensors"]))]["count"] = huge
    stats.write_text(json.dumps(doc))
    ws.out.unlink()
    ws.out.with_suffix(".encodings.json").unlink()
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.run("quantize", "-i", ws.model, "--load_stats", stats, "-o", ws.out), 4,
                          "s.json", said)  # fmt: skip
    assert len(line) < 300, line


# --- flags the run would ignore -------------------------------------------------------------------------------------


def test_an_eval_list_no_evaluation_reads_is_refused(ws: Workspace) -> None:
    """--eval_list held.txt --evaluate_samples 0: the list was read and its files checked, then nothing measured on it
    (exit 0, no word), where a user meant the report's figures to be held out. --mixed_precision auto scores its
    search on it whatever --evaluate_samples says, so there it stands."""
    held = ws.root / "held.txt"
    held.write_text(ws.listing.read_text())
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--eval_list", held, "--evaluate_samples", 0), 2,
                   "--eval_list with --evaluate_samples 0: no evaluation reads it")  # fmt: skip
    result = ws.quantize("-o", ws.out, "--eval_list", held, "--evaluate_samples", 0, "--mixed_precision", "auto",
                         "--target_sqnr", 10)  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("flag, said", [
    (("--act_quantizer_schema", "symmetric"), "--act_quantizer_schema symmetric does nothing with --act_bitwidth 32"),
    (("--act_power_of_2",), "--act_power_of_2 does nothing with --act_bitwidth 32"),  # as typed: no 'true'
])  # fmt: skip
def test_activation_flags_a_weight_only_run_ignores_are_named(ws: Workspace, flag: tuple, said: str) -> None:
    """--act_bitwidth 32 --act_quantizer_schema symmetric (or --act_power_of_2): activations stay float, so the flag
    did nothing, exit 0 and no word, where --act_quantizer_calibration percentile is named. Now each is, unless the
    --target preset set it."""
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--act_bitwidth", 32, *flag)
    assert result.exit_code == 0, result.output
    assert said in result.stderr, result.stderr
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--act_bitwidth", 32, "--target", "tidl",
                    "--apply_algorithms", "none")  # fmt: skip
    assert result.exit_code == 0 and "does nothing" not in result.stderr, result.output


# --- an int4 activation an override asks for -------------------------------------------------------------------------


@pytest.mark.parametrize("tensor", ["x", "r"])
def test_an_int4_activation_override_quantizes_with_bias_correction(ws: Workspace, tensor: str) -> None:
    """A 2.0.0 overrides file giving an activation output_dtype int4: bias correction (the default tries it) kept
    each layer's DequantizeLinear input, 4x smaller than its output, and onnxruntime returns no array of an int4
    tensor: 'RuntimeError: No corresponding Numpy type for Tensor Type. Int4x2', an internal error. Now a 4-bit
    one is kept dequantized, and the run writes its model."""
    path = ws.root / "o.json"
    entry = {"name": tensor, "output_dtype": "int4", "y_scale": 0.5, "y_zero_point": 0}
    path.write_text(json.dumps({"version": "2.0.0", "encodings": [entry]}))
    result = ws.quantize("-o", ws.out, "-q", path, "--apply_algorithms", "bc")
    assert result.exit_code == 0, result.output
    assert "bc" in result.stdout and ws.out.is_file()

"""Ranges cut to what the readers can see (quant/group_range.py): inputs of ops flat outside an interval
(HardSwish, HardSigmoid, Relu, Clip), and members of a group read only by a max."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def _quantize(
    tmp_path: Path, nodes, arrays: dict, outputs: list, scale: float = 4.0, args: tuple = (), data: np.ndarray | None = None
) -> tuple[dict, Path, Path]:
    """x [1, 64] (normal, std `scale`, or `data`'s rows) -> nodes -> outputs (names, or (name, shape); [1, 64] by
    default), quantized with `args` added; returns (activation encodings, model, quantized model)."""
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 64]) if isinstance(o, str)
         else helper.make_tensor_value_info(o[0], TensorProto.FLOAT, o[1]) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        row = rng.normal(0, scale, (1, 64)) if data is None else data[i % len(data)]
        (tmp_path / f"{i}.raw").write_bytes(np.asarray(row, np.float32).tobytes())
        lines.append(str(tmp_path / f"{i}.raw"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    result = run_cli(["quantize", "-i", path, "--input_list", tmp_path / "list.txt", "-o", out, *args])
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    return {k: v[0] for k, v in acts.items()}, path, out


def _neg(name_in: str, name_out: str) -> onnx.NodeProto:
    """An op of its own between the input and the rule under test (the input itself is a graph input)."""
    return helper.make_node("Mul", [name_in, "one"], [name_out])


ONE = {"one": np.array(1.0, np.float32)}


def test_a_hardswish_input_keeps_only_its_live_part_and_the_model_stays_exact_there(tmp_path: Path) -> None:
    nodes = [_neg("x", "a"), helper.make_node("HardSwish", ["a"], ["y"])]
    acts, model, out = _quantize(tmp_path, nodes, ONE, ["y"], scale=6.0)
    assert acts["a"]["min"] <= -3.0 < acts["a"]["min"] + 2 * acts["a"]["scale"]  # just past −3, not ~−18
    x = np.linspace(-20, 2, 64, dtype=np.float32).reshape(1, 64)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert np.all(got[x < -3.5] == 0)  # the clamp lands where HardSwish is flat: exactly 0
    assert np.abs(got - want).max() <= acts["y"]["scale"] + acts["a"]["scale"]  # rounding of both grids


def test_hardsigmoid_and_clip_inputs_are_cut_to_their_bounds(tmp_path: Path) -> None:
    nodes = [_neg("x", "a"), helper.make_node("HardSigmoid", ["a"], ["y"], alpha=0.25, beta=0.5),
             _neg("x", "b"), helper.make_node("Clip", ["b", "lo", "hi"], ["z"])]  # fmt: skip
    arrays = {**ONE, "lo": np.array(-1.0, np.float32), "hi": np.array(2.0, np.float32)}
    acts, _, _ = _quantize(tmp_path, nodes, arrays, ["y", "z"], scale=6.0)
    assert -2.2 < acts["a"]["min"] <= -2.0 and 2.0 <= acts["a"]["max"] < 2.2  # flat outside [−β/α, (1−β)/α]
    assert -1.1 < acts["b"]["min"] <= -1.0 and 2.0 <= acts["b"]["max"] < 2.1


def test_a_tensor_read_by_anything_else_too_keeps_its_whole_range(tmp_path: Path) -> None:
    nodes = [_neg("x", "a"), helper.make_node("HardSwish", ["a"], ["y"]), helper.make_node("Add", ["a", "y"], ["z"])]
    acts, _, _ = _quantize(tmp_path, nodes, ONE, ["z"], scale=6.0)
    assert acts["a"]["min"] < -10


def test_a_max_pool_input_does_not_widen_the_shared_range_below_the_pools_own_minimum(tmp_path: Path) -> None:
    """The pool's input and output share one encoding (data-invariant); values below the pool's smallest
    output never won a window, so they do not stretch the grid (MTCNN: PReLU -> MaxPool)."""
    nodes = [
        _neg("x", "a"),
        helper.make_node("Reshape", ["a", "shape"], ["a4"]),
        helper.make_node("MaxPool", ["a4"], ["p"], kernel_shape=[1, 4], strides=[1, 4]),
        helper.make_node("Relu", ["p"], ["y"]),
        helper.make_node("Sub", ["p", "one"], ["z"]),
    ]
    arrays = {**ONE, "shape": np.array([1, 1, 1, 64], np.int64)}
    acts, _, _ = _quantize(tmp_path, nodes, arrays, [("y", [1, 1, 1, 16]), ("z", [1, 1, 1, 16])], scale=1.0)
    assert acts["a4"] == acts["p"]  # still one encoding, no requantization
    assert acts["p"]["min"] > -2.0  # the input alone reached below −2.5 on these samples


def _if_model(read_after: bool) -> tuple[list, dict, str]:
    """Sigmoid score s; If(mean(x) > 0) then x/2 else Identity(s) -> y (or y -> Mul -> z: read by an op)."""
    def branch(node: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph([node], node.output[0], [], [helper.make_tensor_value_info(node.output[0], 1, [1, 64])])

    then_branch = branch(helper.make_node("Mul", ["x", "half"], ["b_then"]))
    else_branch = branch(helper.make_node("Identity", ["s"], ["b_else"]))
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "limit"], ["c"]),  # about half the samples take each branch
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ] + ([helper.make_node("Mul", ["y", "half"], ["z"])] if read_after else [])
    arrays = {"half": np.array(0.5, np.float32), "limit": np.array(0.0, np.float32)}
    return nodes, arrays, "z" if read_after else "y"


def test_an_if_output_an_op_reads_shares_the_encoding_of_the_outer_tensor_it_returns(tmp_path: Path) -> None:
    """openWakeWord's score leaves through an If whose else-branch is Identity(score): a grid of the If output's
    own would requantize every such score by up to half a step."""
    nodes, arrays, output = _if_model(read_after=True)
    acts, _, out = _quantize(tmp_path, nodes, arrays, [output], scale=2.0)
    score = next(n.output[0] for n in onnx.load(str(out)).graph.node if n.op_type == "Sigmoid")  # convert renames it
    assert acts["y"] == acts[score] and acts["y"]["min"] < -1  # one grid, covering the then-branch's values too


def test_an_if_output_that_only_leaves_the_model_stays_float(tmp_path: Path) -> None:
    """The branches run in float, and nothing integer reads the result: rounding it would only add error
    (openWakeWord's verifier score was rounded onto the first stage's grid: 65 -> 41.6 dB)."""
    nodes, arrays, output = _if_model(read_after=False)
    acts, model, out = _quantize(tmp_path, nodes, arrays, [output], scale=2.0)
    assert acts["y"]["dtype"] == "float" and acts["y"]["bitwidth"] == 32
    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "y"]
    x = np.full((1, 64), 0.3, np.float32)  # mean > 0: the then-branch, x / 2 in float
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert np.array_equal(got, ort.InferenceSession(str(model)).run(None, {"x": x})[0])
    # export reads the float result back from the model, as quantize wrote it
    result = run_cli(["export", "-i", out, "-o", tmp_path / "export", "--format", "encodings"])
    assert result.exit_code == 0, result.stderr
    exported = json.loads((tmp_path / "export" / "q.encodings.json").read_text())
    assert exported["activation_encodings"]["y"][0]["dtype"] == "float"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt", "-o", out,
                      "--target", "ort-cpu"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert "y" not in acts or acts["y"][0]["dtype"] == "float"  # op types onnxruntime quantizes: If is not one
    # the float view inspect lints keeps the weight only the then-branch reads (`half`, an outer-scope read)
    result = run_cli(["inspect", out, "--reference", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt"])
    assert result.exit_code == 0, result.stderr
    assert "layers (worst first" in result.stdout


def test_a_sigmoid_input_keeps_only_where_its_output_leaves_the_grids_ends(tmp_path: Path) -> None:
    """A class logit of [-24, 24] before a Sigmoid read on a 1/255 grid: below logit(1/510) = -6.23 every value
    reads 0, above 6.23 every value reads the top. The grid keeps [-6.23, 6.23] (one step past each end), ~4x finer."""
    nodes = [_neg("x", "a"), helper.make_node("Sigmoid", ["a"], ["y"])]
    acts, model, out = _quantize(tmp_path, nodes, ONE, ["y"], scale=8.0)
    lo, hi = acts["a"]["min"], acts["a"]["max"]
    assert -6.23 - 2 * acts["a"]["scale"] < lo <= -6.23 and 6.2 <= hi < 6.23 + 2 * acts["a"]["scale"]
    x = np.linspace(-30, 30, 64, dtype=np.float32).reshape(1, 64)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    inputs = (acts["x"]["scale"] + acts["a"]["scale"]) / 2 * 0.25  # the input grids' rounding, at sigmoid's steepest
    assert np.all(got[x < -7] == 0) and np.abs(got - want).max() <= acts["y"]["scale"] / 2 + inputs + 1e-6


def test_a_tanh_input_is_cut_where_tanh_rounds_to_its_ends_and_not_when_read_elsewhere(tmp_path: Path) -> None:
    nodes = [_neg("x", "a"), helper.make_node("Tanh", ["a"], ["y"]),
             _neg("x", "b"), helper.make_node("Tanh", ["b"], ["z"]), helper.make_node("Add", ["b", "z"], ["w"])]  # fmt: skip
    acts, _, _ = _quantize(tmp_path, nodes, ONE, ["y", "w"], scale=8.0)
    edge = float(np.arctanh(1 - acts["y"]["scale"] / 2))  # ~3.1 on a [-1, 1] 8-bit grid
    assert -edge - 2 * acts["a"]["scale"] < acts["a"]["min"] <= -edge + 0.05 and acts["a"]["max"] < edge + 0.2
    assert acts["b"]["min"] < -15  # the Add sees every value


def test_a_sigmoid_with_a_float_output_keeps_its_input_whole(tmp_path: Path) -> None:
    """No grid after it, so nothing is flat: an override keeping the output float keeps the input's range."""
    nodes = [_neg("x", "a"), helper.make_node("Sigmoid", ["a"], ["y"])]
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"y": [{"bitwidth": 16, "dtype": "float"}]}, "param_encodings": {}}))
    acts, _, _ = _quantize(tmp_path, nodes, ONE, ["y"], scale=8.0, args=("--quantization_overrides", overrides))
    assert acts["a"]["min"] < -15


def test_a_cut_read_through_a_reshape_is_no_clipping_in_the_per_layer_report(tmp_path: Path) -> None:
    """The Mul's output reaches the Sigmoid through a Reshape: it shares the Reshape's grid, cut where the
    Sigmoid saturates. inspect judged the Mul alone (its reader a Reshape, not flat anywhere) and ranked every
    cut value as clipping, first in the report (nudenet's class logits)."""
    nodes = [_neg("x", "a"), helper.make_node("Reshape", ["a", "shape"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])]
    arrays = {**ONE, "shape": np.array([1, 8, 8], np.int64)}
    acts, model, out = _quantize(tmp_path, nodes, arrays, [("y", [1, 8, 8])], scale=8.0)
    assert acts["a"] == acts["r"] and acts["a"]["min"] > -7  # the cut reaches the Reshape's input
    result = run_cli(["inspect", out, "--reference", model, "-l", tmp_path / "list.txt", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = {row["tensor"]: row for row in json.loads(result.output)["layers (worst first by added error)"]}
    assert rows["a"]["local dB"] > 30 and "clipped" not in rows["a"]["fix"]


def test_a_tanh_whose_output_stays_float_cuts_nothing(tmp_path: Path) -> None:
    """--target ort-cpu quantizes no Tanh: its output leaving the model stays float, no grid rounds it, and a cut
    of its input would be an error of its own (up to half a step the Tanh never gets)."""
    nodes = [_neg("x", "a"), helper.make_node("Tanh", ["a"], ["y"])]
    acts, _, _ = _quantize(tmp_path, nodes, ONE, ["y"], scale=8.0, args=("--target", "ort-cpu"))
    assert "y" not in acts or acts["y"]["dtype"] == "float"
    assert acts["a"]["min"] < -15



def test_an_elu_input_keeps_only_where_elu_leaves_the_level_minus_alpha_rounds_to(tmp_path: Path) -> None:
    """Elu is α(eˣ − 1) below 0: far below, every value reads as the level −α rounds to on the output's grid, a
    multiple of its step, not −α itself: on [−1, 69.8] (step 0.278) −1 reads −1.11, and a cut half a step above −1
    read −0.83 for most of a TCN's outputs. madmom's CNNs feed Elus Conv outputs down to −2700: notes_cnn's grid
    step was 11 where the Elu tells values apart only within [−1, 105]."""
    nodes = [_neg("x", "a"), helper.make_node("Elu", ["a"], ["y"], alpha=1.0)]
    acts, model, out = _quantize(tmp_path, nodes, ONE, ["y"], data=np.linspace(-40, 69.8, 64)[None])
    assert -8 < acts["a"]["min"] < -1 and acts["a"]["max"] > 69  # cut below, whole above
    x = np.linspace(-40, 20, 64, dtype=np.float32).reshape(1, 64)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    step = acts["y"]["scale"]
    np.testing.assert_allclose(got[x < -10], round(-1.0 / step) * step, rtol=1e-5)  # -1.11, as Elu(-40) reads
    assert np.abs(got - want).max() <= step / 2 + (acts["x"]["scale"] + acts["a"]["scale"]) / 2 + 1e-6


def test_a_silu_input_is_cut_where_its_sigmoid_and_its_dip_read_zero_and_not_when_gated_by_another(tmp_path: Path) -> None:
    """SiLU written as Mul(a, Sigmoid(a)) (YOLOv8's every Conv): below the Sigmoid's logit(1/510) = -6.23 the gate
    reads 0, and x · Sigmoid(x), whose dip is -0.28, reads 0 on the Mul's grid wherever it is within half a step:
    the grid keeps [-6.23, max] (nudenet's stem: [-213, 221] before a SiLU grid of step 0.87). A Mul of a tensor and
    another's Sigmoid (a gate, not a SiLU) sees every value."""
    nodes = [_neg("x", "a"), helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Mul", ["s", "a"], ["y"]),
             _neg("x", "b"), _neg("x", "c"), helper.make_node("Sigmoid", ["c"], ["t"]),
             helper.make_node("Mul", ["b", "t"], ["z"])]  # fmt: skip
    acts, model, out = _quantize(tmp_path, nodes, ONE, ["y", "z"], scale=8.0)
    assert -6.23 - 2 * acts["a"]["scale"] < acts["a"]["min"] <= -6.2 and acts["a"]["max"] > 15  # cut below only
    assert acts["b"]["min"] < -15  # read by a Mul with c's gate: every value counts
    x = np.linspace(-30, 20, 64, dtype=np.float32).reshape(1, 64)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert np.all(got[x < -7] == 0) and np.all(np.abs(want[x < -7]) < acts["y"]["scale"] / 2)  # as the float reads there
    inputs = 1.1 * (acts["x"]["scale"] + acts["a"]["scale"]) / 2 + 20 * acts["s"]["scale"] / 2  # SiLU' <= 1.1; the gate's step
    assert np.abs(got - want).max() <= acts["y"]["scale"] / 2 + inputs + 1e-6

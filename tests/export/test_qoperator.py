"""QOperator export: integer ops where onnxruntime has CPU kernels, the rest float, and the model
agreeing with the QDQ model within one quantization step of the output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from conftest import SATURATING_CPU, conv_bn_model, integer_kernels_saturate, run_cli, save_model, write_samples
from export_models import (
    fallback_model,
    matmul_model,
    max_difference,
    pool_model,
    quantize,
    random_feeds,
    relu6_model,
    session,
)

from qtool.export.qoperator import to_qoperator
from qtool.quant.qdq_read import read_qdq

CASES = {
    "conv-asym": (conv_bn_model, {}, {"QLinearConv", "QGemm"}),
    "conv-symmetric-per-channel": (
        conv_bn_model,
        {
            "act_quantizer_schema": "symmetric",
            "param_quantizer_schema": "symmetric",
            "use_per_channel_quantization": True,
        },
        {"QLinearConv", "QGemm", "Max"},  # ReLU on a signed grid: an integer Max with the zero point
    ),
    "conv-4bit-weights": (
        conv_bn_model,
        {"weights_bitwidth": 4, "use_per_channel_quantization": True},
        {"QLinearConv"},
    ),
    "matmul": (matmul_model, {}, {"QLinearMatMul", "QLinearSigmoid", "QLinearMul", "QGemm"}),  # MatMul + bias Add + Relu: one QGemm
    "matmul-per-row": (
        matmul_model,
        {"use_per_row_quantization": True, "bias_bitwidth": 32},
        {"QLinearMatMul", "QGemm"},
    ),
    "relu6": (relu6_model, {}, {"QLinearConv"}),  # Relu -> Min folded into the first QLinearConv
    "relu6-symmetric": (
        relu6_model,
        {"act_quantizer_schema": "symmetric", "param_quantizer_schema": "symmetric"},
        {"Max"},  # the Relu; the cap (0.8) lies past the grid's top, saturation applies it
    ),
    "relu6-per-channel-cap": (lambda: relu6_model(per_channel=True), {}, {"QLinearConv", "Min"}),  # as cle leaves it
    "pool": (pool_model, {}, {"QLinearConv", "QLinearAveragePool", "QLinearLeakyRelu", "Transpose", "Softmax"}),
    "pool-symmetric": (
        pool_model,
        {"act_quantizer_schema": "symmetric", "param_quantizer_schema": "symmetric"},
        {"QLinearConv", "Max", "QLinearAveragePool", "QLinearLeakyRelu"},
    ),
}


def _qdq_and_qoperator(tmp_path: Path, factory, flags: dict) -> tuple[onnx.ModelProto, onnx.ModelProto, float]:
    _, path = quantize(tmp_path, factory(), **flags)
    qdq = onnx.load(str(path))
    stripped, found = read_qdq(qdq)
    output = qdq.graph.output[0].name
    return qdq, to_qoperator(stripped, found), found.activations[output].scale[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_qdq_within_one_step(tmp_path: Path, case: str) -> None:
    if integer_kernels_saturate():
        pytest.skip(SATURATING_CPU)
    factory, flags, expected_ops = CASES[case]
    qdq, qop, step = _qdq_and_qoperator(tmp_path, factory, flags)
    onnx.checker.check_model(qop, full_check=True)
    ops = Counter(n.op_type for n in qop.graph.node)
    assert expected_ops <= set(ops), ops
    assert {"Conv", "MatMul", "Gemm", "Add", "Mul", "Relu"}.isdisjoint(ops)
    assert ops["DequantizeLinear"] == 1 + ops["Softmax"]  # integers from input to output (Softmax stays float)
    feeds = random_feeds(qdq, 20)
    assert max_difference(session(qdq, optimized=False), session(qop), feeds) <= step * (1 + 1e-5)


def test_every_weight_is_an_integer_initializer(tmp_path: Path) -> None:
    _, qop, _ = _qdq_and_qoperator(tmp_path, conv_bn_model, {"use_per_channel_quantization": True})
    inits = {i.name: i for i in qop.graph.initializer}
    conv = next(n for n in qop.graph.node if n.op_type == "QLinearConv")
    assert inits[conv.input[3]].data_type == onnx.TensorProto.INT8  # symmetric per-channel weight
    assert list(inits[conv.input[4]].dims) == [4]  # one scale per output channel
    assert inits[conv.input[8]].data_type == onnx.TensorProto.INT32  # bias on x_scale * w_scale
    assert not [i for i in qop.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims and i.dims[0] > 4]


@pytest.mark.parametrize("flags", [{"act_quantizer_schema": "symmetric"}, {"act_bitwidth": 16}])
def test_ops_without_an_integer_kernel_stay_float(tmp_path: Path, flags: dict) -> None:
    """int8 activations against uint8 weights have no ORT kernel; 16-bit activations no QLinear op.
    Those ops run exactly as in the QDQ model."""
    qdq, qop, step = _qdq_and_qoperator(tmp_path, conv_bn_model, flags)
    ops = Counter(n.op_type for n in qop.graph.node)
    assert ops["Conv"] == 1 and ops["Gemm"] == 1 and not any(op.startswith("QLinear") for op in ops)
    assert max_difference(session(qdq, optimized=False), session(qop), random_feeds(qdq, 5)) <= step * 1e-3


def test_graph_interface_is_unchanged(tmp_path: Path) -> None:
    qdq, qop, _ = _qdq_and_qoperator(tmp_path, matmul_model, {})
    for a, b in ((qdq.graph.input, qop.graph.input), (qdq.graph.output, qop.graph.output)):
        assert [(v.name, v.type.tensor_type.elem_type) for v in a] == [
            (v.name, v.type.tensor_type.elem_type) for v in b
        ]
    assert any(o.domain == "com.microsoft" for o in qop.opset_import)


def test_is_deterministic(tmp_path: Path) -> None:
    _, path = quantize(tmp_path, pool_model())
    stripped, found = read_qdq(onnx.load(str(path)))
    first = to_qoperator(stripped, found).SerializeToString(deterministic=True)
    assert to_qoperator(stripped, found).SerializeToString(deterministic=True) == first


def test_ops_it_cannot_convert_stay_float_between_dq_and_q(tmp_path: Path, caplog) -> None:
    """MaxPool returning its indices and a dilated AveragePool have no QLinear form; the bias-less
    Conv becomes a QLinearConv with no bias input. onnxruntime's own QDQ fusion would turn a dilated
    AveragePool into an invalid QLinearAveragePool: under every target the pool reads float, with a warning."""
    if integer_kernels_saturate():
        pytest.skip(SATURATING_CPU)
    qdq, qop, step = _qdq_and_qoperator(tmp_path, fallback_model, {"use_per_channel_quantization": True})
    assert "input left float: onnxruntime would fuse it" in caplog.text
    onnx.checker.check_model(qop, full_check=True)
    ops = Counter(n.op_type for n in qop.graph.node)
    assert ops["MaxPool"] == ops["AveragePool"] == ops["QLinearConv"] == ops["QLinearMatMul"] == 1, ops
    assert len(next(n for n in qop.graph.node if n.op_type == "QLinearConv").input) == 8  # no bias
    pool = next(n for n in qop.graph.node if n.op_type == "MaxPool")
    assert len(pool.output) == 2 and qop.graph.output[1].name == pool.output[1]
    feeds = random_feeds(qdq, 10)
    assert max_difference(session(qdq, optimized=False), session(qop, optimized=False), feeds) <= step * (1 + 1e-5)


def test_ort_cpu_target_keeps_a_dequantize_from_a_dilated_average_pool_so_ort_loads_it(tmp_path: Path) -> None:
    """onnxruntime's default optimisation fuses DQ -> AveragePool -> Q into a QLinearAveragePool that rejects
    dilations and fails to load; under --target ort-cpu the pool reads float, and the model loads as it is."""
    model = fallback_model()
    source = save_model(model, tmp_path / "model.onnx")
    calib = write_samples(tmp_path / "calib", model, 8, list_name="calib.txt")
    output = tmp_path / "model.quant.onnx"
    flags = ["--target", "ort-cpu", "--apply_algorithms", "bc"]  # bc rebuilds the plan: the warning still comes once
    result = run_cli(["quantize", "-i", source, "--input_list", calib, "-o", output, *flags])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("'AveragePool_3': input left float") == 1, result.stderr
    assert "ran unfused" not in result.stderr, result.stderr
    qdq = onnx.load(str(output))
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    pool = next(n for n in qdq.graph.node if n.op_type == "AveragePool")
    assert producers[pool.input[0]] == "Relu"  # no DequantizeLinear the fusion could start from
    default = ort.InferenceSession(str(output))  # default options: ORT_ENABLE_ALL, with its QDQ fusions
    (y, _) = default.run(None, random_feeds(model, 1)[0])
    assert y.shape == (1, 4, 4)


def test_an_if_body_reading_a_quantized_outer_tensor_gets_its_float_value(tmp_path: Path) -> None:
    """openWakeWord's verifier If returns the first stage's Sigmoid score from one branch: in QOperator form that
    score is an integer tensor, and the body still read the float name, which no node wrote before the If
    (onnxruntime: 'Nodes in a graph must be topologically sorted'; export exit 3)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def branch(node: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph([node], node.output[0], [], [helper.make_tensor_value_info(node.output[0], 1, [1, 16])])

    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("ReduceMean", ["s"], ["m"], keepdims=0),  # the score decides too, as openWakeWord's
        helper.make_node("Greater", ["m", "limit"], ["c"]),
        helper.make_node(
            "If", ["c"], ["y"],
            then_branch=branch(helper.make_node("Mul", ["x", "half"], ["t"])),
            else_branch=branch(helper.make_node("Identity", ["s"], ["e"])),
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "verifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half"), numpy_helper.from_array(np.array(0.5, np.float32), "limit")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = save_model(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, model, 16)
    qdq, out = tmp_path / "q.onnx", tmp_path / "export"
    assert run_cli(["quantize", "-i", source, "--input_list", listing, "-o", qdq]).exit_code == 0
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "qoperator"])
    assert result.exit_code == 0, result.stderr
    qop = ort.InferenceSession(str(out / "q.qoperator.onnx"))
    reference = ort.InferenceSession(str(qdq))
    step = 1 / 255  # the Sigmoid's [0, 1] grid
    for sign in (1.0, -1.0):  # the then-branch (float x / 2) and the else-branch (the score)
        x = np.full((1, 16), sign, np.float32) + np.linspace(-0.5, 0.5, 16, dtype=np.float32)
        np.testing.assert_allclose(qop.run(None, {"x": x})[0], reference.run(None, {"x": x})[0], atol=step * 1.01)


def test_a_float16_tensor_read_by_an_integer_op_keeps_its_convert_grid(tmp_path: Path) -> None:
    """A ReLU overridden float16 feeding an 8-bit Conv: the QDQ model quantizes it for the Conv on a convert grid
    of its own (r_converted), which read_qdq overwrote with the float override; the QOperator model then fed the
    Conv float values (14 dB from the QDQ model). The Sigmoid, float too, reads the ReLU's float values, rounded to
    float16 as the QDQ model's Cast pair rounds them (read_qdq drops the pair; the QOperator model had not rounded them,
    nor s). The weights are uint8 (asymmetric): no u8 x s8 kernel that saturates on CPUs without VNNI."""
    import json

    import numpy as np
    from export_models import _model

    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    half (float[1,2,8,8] x) => (float[1,4,8,8] y, float[1,4,8,8] s) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W1)
        r = Relu (c)
        y = Conv <pads = [1, 1, 1, 1]> (r, W2)
        s = Sigmoid (r)
    }
    """
    rng = np.random.default_rng(3)
    model = _model(text, {"W1": rng.normal(0, 1.0, (4, 2, 3, 3)), "W2": rng.normal(0, 0.3, (4, 4, 3, 3))})
    overrides = tmp_path / "o.json"
    float16 = [{"bitwidth": 16, "dtype": "float"}]
    overrides.write_text(json.dumps({"activation_encodings": {"r": float16, "s": float16}, "param_encodings": {}}))
    _, path = quantize(tmp_path, model, quantization_overrides=overrides)
    qdq = onnx.load(str(path))
    stripped, found = read_qdq(qdq)
    assert found.activations["r"].is_float and not found.converts["r"][0].is_float
    qop = to_qoperator(stripped, found)
    onnx.checker.check_model(qop, full_check=True)
    assert Counter(n.op_type for n in qop.graph.node)["QLinearConv"] == 1
    step = found.activations["y"].scale[0]
    for feeds in random_feeds(qdq, 8):
        (y, s), (y_op, s_op) = session(qdq, optimized=False).run(None, feeds), session(qop).run(None, feeds)
        assert np.abs(y - y_op).max() <= step * (1 + 1e-5)
        assert np.mean(np.abs(y - y_op) > step / 2) < 0.01  # was 11% of y one step off: the Conv read r unrounded
        assert np.abs(s - s_op).max() <= 1e-6  # rounded to float16 as in the QDQ model (was 3e-4: kept float32)


def test_a_float16_input_that_is_an_output_too_stays_the_input(tmp_path: Path) -> None:
    """An input overridden float16 that the model also returns: qdq.py leaves it the input (its name is taken), its
    float readers reading a rounded copy; 80ba5b7's QOperator export renamed it to x_prequant as a produced output
    would be, which nothing writes: 'input 'x_prequant' of node Cast is not output of any previous nodes'."""
    import json

    import numpy as np
    from export_models import _model

    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    passed (float[1,2,8,8] x) => (float[1,4,8,8] y, float[1,2,8,8] s, float[1,2,8,8] x) {
        y = Conv <pads = [1, 1, 1, 1]> (x, W1)
        s = Sigmoid (x)
    }
    """
    model = _model(text, {"W1": np.random.default_rng(3).normal(0, 1.0, (4, 2, 3, 3))})
    overrides = tmp_path / "o.json"
    float16 = [{"bitwidth": 16, "dtype": "float"}]
    overrides.write_text(json.dumps({"activation_encodings": {"x": float16, "s": float16}, "param_encodings": {}}))
    _, path = quantize(tmp_path, model, quantization_overrides=overrides)
    qdq = onnx.load(str(path))
    qop = to_qoperator(*read_qdq(qdq))
    onnx.checker.check_model(qop, full_check=True)
    assert Counter(n.op_type for n in qop.graph.node)["QLinearConv"] == 1
    for feeds in random_feeds(qdq, 4):
        for want, got in zip(session(qdq, optimized=False).run(None, feeds), session(qop).run(None, feeds), strict=True):
            np.testing.assert_array_equal(got, want)

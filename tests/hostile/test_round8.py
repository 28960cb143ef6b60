"""Round 8 (helper-63): QDQ models other tools write, read by export and convert. Every export written with exit 0
must compute what the QDQ model computes (QOperator to the bit, the stripped float model within the grid it
drops), and a model whose Q/DQ nodes qtool cannot read is one line naming it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hostile_env import Workspace, assert_refused
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(8)
X = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)


def _qdq(name: str, scale: float, zp: np.ndarray) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Q then DQ of `name` into `name`_dq."""
    inits = [numpy_helper.from_array(np.float32(scale), f"{name}_s"), numpy_helper.from_array(zp, f"{name}_z")]
    nodes = [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                              name=f"{name}_DQ")]  # fmt: skip
    return nodes, inits


def conv_qdq(weight_zp: int = 2, weight_type: type = np.int8) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(W from a DQ with `weight_zp`) -> Q/DQ -> y, as onnxruntime's quantize_static writes it."""
    w_q = RNG.integers(-100, 100, (4, 3, 3, 3)).astype(weight_type)
    inits = [numpy_helper.from_array(w_q, "W_q"), numpy_helper.from_array(np.float32(0.01), "W_s"),
             numpy_helper.from_array(np.array(weight_zp, weight_type), "W_z")]  # fmt: skip
    nodes = [helper.make_node("DequantizeLinear", ["W_q", "W_s", "W_z"], ["W"], name="W_DQ")]
    for name, scale in (("x", 0.03), ("c", 0.05)):
        n, i = _qdq(name, scale, np.array(0, np.int8))
        nodes, inits = nodes + n, inits + i
    nodes.insert(3, helper.make_node("Conv", ["x_dq", "W"], ["c"], name="conv"))
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _run(path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


def test_an_asymmetric_int8_weight_is_dequantized_on_its_own_grid(tmp_path) -> None:
    """onnxruntime's quantize_static(WeightSymmetric=False) stores int8 weights with a zero point (2, 17): read as
    qtool's unsigned grid (zero point + 128), every weight was 128 steps off, and export's stripped, fp16 and
    qoperator models and convert's float model were written (exit 0) computing something else (35 on outputs of 4)."""
    ws = Workspace(tmp_path)
    onnx.save(conv_qdq(), str(tmp_path / "q.onnx"))
    ref = _run(tmp_path / "q.onnx")
    result = ws.run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator",
                    "--format", "stripped")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(_run(tmp_path / "e" / "q.qoperator.onnx"), ref)
    q = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    stripped = onnx.load(str(tmp_path / "e" / "q.stripped.onnx"))
    w = {i.name: numpy_helper.to_array(i) for i in stripped.graph.initializer}["W"]
    np.testing.assert_allclose(w, (q["W_q"].astype(np.float32) - 2) * np.float32(0.01), rtol=1e-6)
    np.testing.assert_allclose(np.abs(_run(tmp_path / "e" / "q.stripped.onnx") - ref).max(), 0, atol=0.2)
    result = ws.run("convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx")
    assert result.exit_code == 0, result.stderr
    assert np.abs(_run(tmp_path / "c.onnx") - ref).max() < 0.2


def blocked_matmul_qdq() -> onnx.ModelProto:
    """x[1, 64] -> Q/DQ -> MatMul(W: int4 [64, 8] in blocks of 32 along its inputs) -> Q/DQ -> y."""
    import ml_dtypes

    w_q = RNG.integers(-8, 8, (64, 8)).astype(ml_dtypes.int4)
    inits = [numpy_helper.from_array(w_q, "W_q"),
             numpy_helper.from_array(RNG.uniform(0.01, 0.03, (2, 8)).astype(np.float32), "W_s")]  # fmt: skip
    nodes = [helper.make_node("DequantizeLinear", ["W_q", "W_s"], ["W"], name="W_DQ", axis=0, block_size=32)]
    for name, scale in (("x", 0.03), ("m", 0.05)):
        n, i = _qdq(name, scale, np.array(0, np.int8))
        nodes, inits = nodes + n, inits + i
    nodes.insert(3, helper.make_node("MatMul", ["x_dq", "W"], ["m"], name="mm"))
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_a_per_block_weight_exported_as_qoperator_keeps_its_blocks(tmp_path) -> None:
    """The QOperator model's DequantizeLinear of a 4-bit per-block weight (qtool's --weights_block_size, or
    another tool's) was written per-channel, axis 1 with a scale per block: exit 0, and onnxruntime refused it
    ('For per axis quantization, scale must be 1D tensor with size 8')."""
    ws = Workspace(tmp_path)
    onnx.save(blocked_matmul_qdq(), str(tmp_path / "q.onnx"))
    x = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    result = ws.run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "e" / "q.qoperator.onnx"
    np.testing.assert_array_equal(ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, x)[0], ref)


def test_a_block_size_that_does_not_divide_the_weight_is_one_line_naming_the_node(tmp_path) -> None:
    """ONNX lets the last block be short (64 inputs in blocks of 48): every reader was an internal error (numpy's
    reshape of 512 values into (1, 48, 8)); qtool reads whole blocks only, and says so."""
    model = blocked_matmul_qdq()
    dq = model.graph.node[0]
    next(a for a in dq.attribute if a.name == "block_size").i = 48
    onnx.save(model, str(tmp_path / "q.onnx"))
    ws = Workspace(tmp_path)
    before = ws.snapshot()
    for args in (["export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e"],
                 ["convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx"],
                 ["inspect", tmp_path / "q.onnx"]):  # fmt: skip
        assert_refused(ws, before, ws.run(*args), 3, "q.onnx", "'W_DQ'", "block_size 48")


def test_a_scale_whose_grid_is_past_float32_is_refused_naming_the_node(tmp_path) -> None:
    """A weight scale of 1e37 is finite, but 127 steps of it are not a float32: export wrote stripped and fp16
    models of inf and NaN weights (exit 0, numpy's overflow warning on stderr), and an activation's encodings
    file with a range (-1.3e39) qtool's own encodings reader refuses."""
    ws = Workspace(tmp_path)
    for name in ("W_s", "c_s"):
        model = conv_qdq(weight_zp=0)
        next(i for i in model.graph.initializer if i.name == name).CopyFrom(numpy_helper.from_array(np.float32(1e37), name))
        onnx.save(model, str(tmp_path / "q.onnx"))
        before = ws.snapshot()
        for args in (["export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "stripped",
                      "--format", "encodings"], ["convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx"]):  # fmt: skip
            assert_refused(ws, before, ws.run(*args), 3, "q.onnx", f"'{name}'", "past float32")


def test_a_weight_only_an_if_branch_reads_is_kept_in_the_qoperator_model(tmp_path) -> None:
    """y = If(cond, x @ W, -x) with W dequantized outside the If: the QOperator writer left out every weight
    with an encoding that no top-level node read, so nothing defined W and the export failed ('onnxruntime
    cannot load it: ... must be topologically sorted, however input 'W' ...') on a model onnxruntime runs."""
    w_q = numpy_helper.from_array(np.arange(16, dtype=np.int8).reshape(4, 4), "W_q")
    scale, zp = numpy_helper.from_array(np.float32(0.1), "W_s"), numpy_helper.from_array(np.int8(3), "W_z")
    out = {b: helper.make_tensor_value_info(f"{b}_out", TensorProto.FLOAT, [1, 4]) for b in ("then", "else")}
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["then_out"])], "then", [], [out["then"]])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["else_out"])], "else", [], [out["else"]])
    nodes = [helper.make_node("DequantizeLinear", ["W_q", "W_s", "W_z"], ["W"], name="W_DQ"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other)]  # fmt: skip
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [w_q, scale, zp])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(tmp_path / "q.onnx"))
    feeds = {"x": np.array([[1.0, -2.0, 0.3, 4.0]], np.float32), "cond": np.array(True)}
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    result = Workspace(tmp_path).run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator")
    assert result.exit_code == 0, result.stderr
    session = ort.InferenceSession(str(tmp_path / "e" / "q.qoperator.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, feeds)[0], ref)


def test_a_quantize_dequantize_pair_of_two_grids_is_refused_naming_both(tmp_path) -> None:
    """Q on scale 0.05 then DQ on 0.09 (or another zero point) rescales by 1.8: read as the DQ's grid alone, the
    stripped and QOperator models were written with exit 0 and differed from the QDQ model by 2.4 on outputs of 4.5."""
    ws = Workspace(tmp_path)
    for name, value in (("c_s", np.float32(0.09)), ("c_z", np.int8(20))):
        model = conv_qdq(weight_zp=0)
        model.graph.initializer.append(numpy_helper.from_array(value, f"{name}_b"))
        dq = next(n for n in model.graph.node if n.name == "c_DQ")
        dq.input[list(dq.input).index(name)] = f"{name}_b"
        onnx.save(model, str(tmp_path / "q.onnx"))
        before = ws.snapshot()
        for args in (["export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator",
                      "--format", "stripped"], ["convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx"]):  # fmt: skip
            assert_refused(ws, before, ws.run(*args), 3, "q.onnx", "'c_Q'", "'c_DQ'", "different scales")


def _float16_conv_qdq() -> onnx.ModelProto:
    """conv_qdq with float16 scales, weights, input and output, as a float16 model's quantizer writes it."""
    model = conv_qdq(weight_zp=0)
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


def test_a_float16_qdq_model_s_stripped_export_keeps_its_weights_float16(tmp_path) -> None:
    """A float16 model's DequantizeLinear has a float16 scale and gives float16: its weights were dequantized to
    float32, and the stripped model (exit 0) was one onnxruntime refused: Conv's x float16, W float32."""
    onnx.save(_float16_conv_qdq(), str(tmp_path / "q.onnx"))
    x = {"x": X.astype(np.float16)}
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    result = Workspace(tmp_path).run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "stripped")
    assert result.exit_code == 0, result.stderr
    out = ort.InferenceSession(str(tmp_path / "e" / "q.stripped.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    inside = (out > -6.4) & (out < 6.35)  # c's grid: the QDQ model clips there, the float one does not
    assert np.abs(out - ref)[inside].max() < 0.25  # the two grids it drops (x: 0.03, c: 0.05)


def test_a_float16_qdq_model_has_no_qoperator_form_said_in_one_line(tmp_path) -> None:
    """QLinear ops take float32 scales: the QOperator writer built a model of float16 Q/DQ on float32 scales and
    refused it with onnxruntime's load error ('Type parameter (T1) of Optype (QuantizeLinear) bound to ...')."""
    onnx.save(_float16_conv_qdq(), str(tmp_path / "q.onnx"))
    ws = Workspace(tmp_path)
    before = ws.snapshot()
    result = ws.run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator")
    line = assert_refused(ws, before, result, 3, "q.onnx", "float16", "qoperator")
    assert "onnxruntime" not in line


def test_a_qoperator_model_with_blocked_weights_and_zero_points_runs(tmp_path) -> None:
    """Blocked 4-bit weights with zero points held in int8: onnxruntime 1.32 fuses DQ(x), DQ(W), MatMul into a
    MatMulIntegerToFloat that drops the blocks, and the QOperator model written with exit 0 failed at its first run
    ('Per-column quantization parameter of batched matrix ...'); held as INT4 it is not fused."""
    import ml_dtypes

    model = blocked_matmul_qdq()
    model.graph.initializer.append(numpy_helper.from_array(RNG.integers(-2, 3, (2, 8)).astype(ml_dtypes.int4), "W_z"))
    model.graph.node[0].input.append("W_z")
    model.graph.node[-2].input[0] = "m"  # the MatMul's output leaves float, as another tool's model may leave it
    del model.graph.node[-2:]
    model.graph.output[0].name = "m"
    onnx.save(model, str(tmp_path / "q.onnx"))
    x = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    result = Workspace(tmp_path).run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "qoperator")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "e" / "q.qoperator.onnx"
    np.testing.assert_allclose(ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, x)[0], ref,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_blocks_along_a_weight_s_output_channels_are_refused_naming_the_node(tmp_path) -> None:
    """A MatMul weight [64, 8] blocked along axis 1 (its outputs; ONNX allows it): read as qtool's blocks, which run
    along the inputs, the grid moved to other weights, and re-quantizing the export's stripped model with its 1.0.0
    encodings (which hold no block axis) wrote a model of other numbers; the QOperator model failed at its first run."""
    model = blocked_matmul_qdq()
    dq = model.graph.node[0]
    next(a for a in dq.attribute if a.name == "axis").i = 1
    next(a for a in dq.attribute if a.name == "block_size").i = 8
    next(i for i in model.graph.initializer if i.name == "W_s").CopyFrom(
        numpy_helper.from_array(RNG.uniform(0.01, 0.03, (64, 1)).astype(np.float32), "W_s"))  # fmt: skip
    onnx.save(model, str(tmp_path / "q.onnx"))
    ws = Workspace(tmp_path)
    before = ws.snapshot()
    for args in (["export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "stripped", "--format",
                  "encodings", "--encodings_format", "1.0.0"], ["convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx"]):  # fmt: skip
        assert_refused(ws, before, ws.run(*args), 3, "q.onnx", "'W_DQ'", "blocks run along axis 1")


def test_a_graph_input_quantized_straight_into_a_graph_output_keeps_that_output(tmp_path) -> None:
    """x -> Q -> DQ -> y with x a graph input and y a graph output: dropping the pair renamed x's readers to y,
    and nothing made y: export's stripped and fp16 models were invalid (written with exit 0), qoperator was an
    internal error and convert failed onnx.checker."""
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="DQ"),
             helper.make_node("Relu", ["y"], ["r"], name="relu")]  # fmt: skip
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("y", "r")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(tmp_path / "q.onnx"))
    x = {"x": np.array([[1.0, -2.0, 0.31, 4.0]], np.float32)}
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)
    ws = Workspace(tmp_path)
    result = ws.run("export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "e", "--format", "stripped",
                    "--format", "fp16", "--format", "qoperator")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    for kind, atol in (("qoperator", 0), ("stripped", 0.025), ("fp16", 0.025)):
        session = ort.InferenceSession(str(tmp_path / "e" / f"q.{kind}.onnx"), providers=["CPUExecutionProvider"])
        for got, want in zip(session.run(None, x), ref, strict=True):
            np.testing.assert_allclose(got.astype(np.float32), want, atol=atol + 1e-3)
    assert ws.run("convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "c.onnx").exit_code == 0


def test_a_graph_input_that_is_also_an_output_survives_float16(tmp_path) -> None:
    """r = Relu(x) with x listed as an output too (passed through): the float16 rewrite Cast r and x back to
    float32, the second redefining the input x, and `convert --float_bitwidth 16` (and export's fp16) wrote,
    with exit 0, a model onnxruntime refused ('Duplicate definition of name (x)')."""
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "r")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu")], "g", values[:1], values[::-1])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    result = Workspace(tmp_path).run("convert", "-i", tmp_path / "f.onnx", "-o", tmp_path / "h.onnx", "--float_bitwidth", "16")
    assert result.exit_code == 0, result.stderr
    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    r, passed = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_array_equal(passed, x)

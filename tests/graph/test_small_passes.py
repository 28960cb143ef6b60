"""DivToMulPass, FusePadIntoConvPass and ConstantOfShape folding: op counts and unchanged outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def padded_conv_with_division() -> onnx.ModelProto:
    """TF-style same padding: pads computed from ConstantOfShape, then Pad -> Conv -> Div(6)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    inits = [
        w,
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), "tail"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["four"], ["zeros"], value=numpy_helper.from_array(np.array([0], np.int64))
        ),
        helper.make_node("Concat", ["zeros", "tail"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "w"], ["c"], name="conv"),
        helper.make_node("Div", ["c", "six"], ["y"], name="div"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_pad_folds_into_conv_and_division_becomes_multiplication() -> None:
    model = padded_conv_with_division()
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Conv", "Mul"]
    assert [n.name for n in out.graph.node] == ["conv", "div"] and out.graph.output[0].name == "y"
    x = np.random.default_rng(1).normal(size=(1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-6)


def affine_block(bias_as_add: bool = False) -> onnx.ModelProto:
    """PP-LCNetV3 as Paddle exports it: Conv(3x3) -> s*c + t -> x*Clip(x+3, 0, 6)/6 -> s2*h + t2 -> Conv(1x1).
    paddle2onnx 2.x (PP-OCRv5's detector) writes the first Conv's bias as an Add of [1, C, 1, 1] after it."""
    rng = np.random.default_rng(0)
    scalars = {"s": 0.7, "t": 0.2, "three": 3.0, "zero": 0.0, "six": 6.0, "s2": 1.3, "t2": -0.1}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scalars.items()]
    for name, shape in (("w", (4, 2, 3, 3)), ("b", (4,)), ("w2", (3, 4, 1, 1)), ("b2", (3,))):
        inits.append(numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name))
    conv = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    if bias_as_add:
        inits.append(numpy_helper.from_array(rng.normal(size=(1, 4, 1, 1)).astype(np.float32), "b_add"))
        conv = [helper.make_node("Conv", ["x", "w"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
                helper.make_node("Add", ["c0", "b_add"], ["c"])]  # fmt: skip
    nodes = [
        *conv,
        helper.make_node("Mul", ["s", "c"], ["cs"]),  # Paddle writes the scale first
        helper.make_node("Add", ["cs", "t"], ["a"]),
        helper.make_node("Add", ["a", "three"], ["a3"]),
        helper.make_node("Clip", ["a3", "zero", "six"], ["gate"]),
        helper.make_node("Mul", ["a", "gate"], ["ag"]),
        helper.make_node("Div", ["ag", "six"], ["h"]),
        helper.make_node("Mul", ["h", "s2"], ["hs"]),
        helper.make_node("Add", ["hs", "t2"], ["p"]),
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"], name="pointwise", pads=[0, 0, 0, 0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("bias_as_add", [False, True])
def test_affines_fold_into_the_convs_and_the_hardswish_fuses(bias_as_add: bool) -> None:
    model = affine_block(bias_as_add)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Conv", "HardSwish", "Conv"]
    assert [n.name for n in out.graph.node if n.op_type == "Conv"] == ["conv", "pointwise"]
    assert out.graph.output[0].name == "y"
    x = np.random.default_rng(1).normal(size=(1, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-5)


def test_an_stft_left_to_its_default_onesided_converts_to_a_model_onnxruntime_loads() -> None:
    """onnx-asr's mel front ends: STFT without `onesided` (1: frame_length / 2 + 1 bins), then mel filters
    of 201 rows. onnx 1.23's shape inference gave the STFT 400 bins and convert wrote that into value_info."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(160, np.int64), "hop"),
             numpy_helper.from_array(np.hanning(400).astype(np.float32), "window"),
             numpy_helper.from_array(rng.uniform(0, 1, (201, 8)).astype(np.float32), "mel")]  # fmt: skip
    nodes = [helper.make_node("STFT", ["x", "hop", "window"], ["spec"]),
             helper.make_node("ReduceSumSquare", ["spec"], ["power"], axes=[-1], keepdims=0),
             helper.make_node("MatMul", ["power", "mel"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert [onnx.helper.get_attribute_value(a) for a in out.graph.node[0].attribute if a.name == "onesided"] == [1]
    x = rng.normal(size=(1, 4000)).astype(np.float32)
    np.testing.assert_allclose(run(out, x)[0], run(model, x)[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (4, 1, 1)])
def test_a_batchnorm_written_as_a_per_channel_mul_and_add_folds_into_the_conv(shape) -> None:
    """captcha-whisperer's CRNN writes each BatchNorm as Conv -> Mul(s[1,C,1,1]) -> Add(t[1,C,1,1]) -> Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-2, 2, shape).astype(np.float32), "s"),
             numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), "t")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Add", ["t", "m"], ["a"]), helper.make_node("Relu", ["a"], ["y"], name="relu")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert [(n.op_type, n.name) for n in out.graph.node] == [("Conv", "conv"), ("Relu", "relu")]
    assert out.graph.node[0].input[1] == "w"  # the weight keeps its name (overrides, reports)
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("negative", [False, True])
def test_a_batchnorm_after_a_dense_relu_folds_into_the_gemms_around_it(negative: bool) -> None:
    """Keras's Dense -> ReLU -> BatchNorm as tf2onnx writes it: Gemm -> Relu -> Mul(s) -> Add(t) -> Gemm. A positive
    s moves into the first Gemm through the ReLU, t into the second Gemm's bias; a negative s cannot pass a ReLU."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.1, 30, 8).astype(np.float32)
    s[3] = -s[3] if negative else s[3]
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b1"),
             numpy_helper.from_array(s, "s"), numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "t"),
             numpy_helper.from_array(rng.normal(size=(3, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b2")]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="dense"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="head", transB=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    want = ["Gemm", "Relu", "Mul", "Gemm"] if negative else ["Gemm", "Relu", "Gemm"]  # t folds either way
    assert [n.op_type for n in out.graph.node] == want
    assert [n.input[1] for n in out.graph.node if n.op_type == "Gemm"] == ["w1", "w2"]  # the weights keep their names
    x = rng.normal(size=(1, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("other_reader", [False, True])
def test_a_dense_batchnorm_shift_read_by_several_heads_folds_into_each(other_reader: bool) -> None:
    """vietcombank-captcha's five digit heads read one Dense -> ReLU -> BatchNorm: t moves into every head's bias
    (they are all Gemms); with one reader that is no Gemm, t stays for all."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.uniform(0.1, 3, 8).astype(np.float32), "s"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "t")]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="dense"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"])]  # fmt: skip
    outputs = []
    for k in range(3):
        inits += [numpy_helper.from_array(rng.normal(size=(3, 8)).astype(np.float32), f"hw{k}"),
                  numpy_helper.from_array(rng.normal(size=3).astype(np.float32), f"b{k}")]  # fmt: skip
        nodes.append(helper.make_node("Gemm", ["a", f"hw{k}", f"b{k}"], [f"y{k}"], name=f"head{k}", transB=1))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [1, 3]))
    if other_reader:
        nodes.append(helper.make_node("Sigmoid", ["a"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert ("Add" in [n.op_type for n in out.graph.node]) == other_reader
    x = rng.normal(size=(1, 6)).astype(np.float32)
    for got, want in zip(run(out, x), run(model, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("negative", [False, True])
def test_a_conv_relu_batchnorm_scale_folds_into_the_conv(negative: bool) -> None:
    """Keras's Conv -> ReLU -> BatchNorm as Mul(s[1,C,1,1]) and Add(t): a positive s moves into the Conv through
    the ReLU; the shift stays where it is."""
    rng = np.random.default_rng(1)
    s = rng.uniform(0.1, 30, (1, 4, 1, 1)).astype(np.float32)
    s[0, 2] = -s[0, 2] if negative else s[0, 2]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"), numpy_helper.from_array(s, "s"),
             numpy_helper.from_array(rng.normal(size=(1, 4, 1, 1)).astype(np.float32), "t")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Mul", ["r", "s"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == (["Conv", "Relu", "Mul", "Add"] if negative else ["Conv", "Relu", "Add"])
    assert out.graph.node[0].input[1] == "w"
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_constant_folding_prints_no_numpy_warnings() -> None:
    """T5's relative-position buckets take log(0) and cast -inf to int64 on the positions a Where then discards:
    folding them printed numpy's 'divide by zero encountered in log' and 'invalid value encountered in cast' from
    onnx's reference evaluator on every convert (helper-43: a flan-t5-small encoder); the folded value is kept."""
    import warnings

    inits = [numpy_helper.from_array(np.array([0.0, 1.0, 8.0], np.float32), "rel"),
             numpy_helper.from_array(np.array(2.0, np.float32), "small"),
             numpy_helper.from_array(np.array([1.0, 1.0, 1.0], np.float32), "w")]  # fmt: skip
    nodes = [
        helper.make_node("Log", ["rel"], ["log"]),
        helper.make_node("Cast", ["log"], ["bucket"], to=TensorProto.INT64),
        helper.make_node("Cast", ["rel"], ["rel_i"], to=TensorProto.INT64),
        helper.make_node("Less", ["rel", "small"], ["is_small"]),
        helper.make_node("Where", ["is_small", "rel_i", "bucket"], ["picked"]),
        helper.make_node("Cast", ["picked"], ["bias"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["bias", "w"], ["b"]),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "t5_buckets", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.zeros((1, 3), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = normalise(model, {}, "m")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert "Log" not in {n.op_type for n in out.graph.node}
    np.testing.assert_array_equal(run(out, x)[0, :2], [0.0, 1.0])


def filterbank_scattered_into_zeros(rows: int = 96, columns: int = 16) -> onnx.ModelProto:
    """swift-f0's front end: its filterbank is built at run time, ConstantOfShape([rows * columns]) zeros with
    ScatterElements writing the nonzero taps, Reshape to [rows, columns], then MatMul(spectrum, filterbank)."""
    rng = np.random.default_rng(0)
    taps = np.arange(0, rows * columns, 7, dtype=np.int64)
    inits = [numpy_helper.from_array(np.array([rows * columns], np.int64), "size"),
             numpy_helper.from_array(taps, "taps"),
             numpy_helper.from_array(rng.uniform(0.5, 1, taps.size).astype(np.float32), "gains"),
             numpy_helper.from_array(np.array([rows, columns], np.int64), "bank_shape")]  # fmt: skip
    nodes = [helper.make_node("ConstantOfShape", ["size"], ["zeros"],
                              value=numpy_helper.from_array(np.array([0], np.float32))),
             helper.make_node("ScatterElements", ["zeros", "taps", "gains"], ["flat"], axis=0),
             helper.make_node("Reshape", ["flat", "bank_shape"], ["bank"]),
             helper.make_node("MatMul", ["x", "bank"], ["y"], name="filterbank")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, columns])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_weight_scattered_into_zeros_folds_to_an_initializer() -> None:
    """A ConstantOfShape every reader of which folds too is folded: left as written, the filterbank was an
    activation the MatMul read, and its ScatterElements' taps a float weight no slot quantizes."""
    model = filterbank_scattered_into_zeros()
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["MatMul"]
    assert out.graph.node[0].input[1] in {i.name for i in out.graph.initializer}
    x = np.random.default_rng(1).normal(size=(1, 5, 96)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_axis", [False, True])
def test_a_dequantized_table_whose_rows_fold_is_a_float_constant(per_axis: bool) -> None:
    """flan-t5's relative attention bias: a uint8 table, rows a Gather picks at indices that fold, a
    DequantizeLinear after. Folded up to it, the DequantizeLinear read a constant, and quantize refused the model
    as 'quantized already'. A DequantizeLinear of an initializer as given (a weight's grid) stays."""
    rng = np.random.default_rng(2)
    table = numpy_helper.from_array(rng.integers(0, 255, (6, 4), dtype=np.uint8), "table")
    scale = numpy_helper.from_array(np.array([0.5, 0.25, 0.1, 2.0] if per_axis else 0.05, np.float32), "s")
    zero = numpy_helper.from_array(np.array([3, 7, 0, 128] if per_axis else 100, np.uint8), "z")
    weight = numpy_helper.from_array(rng.integers(-100, 100, (4, 4), dtype=np.int8), "w_q")
    wscale = numpy_helper.from_array(np.array(0.01, np.float32), "w_s")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Add", ["zeros", "offsets"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["picked"]),
        helper.make_node("DequantizeLinear", ["picked", "s", "z"], ["bias"], axis=1),
        helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "bias"], ["y"]),
    ]
    inits = [table, scale, zero, weight, wscale, numpy_helper.from_array(np.array([3], np.int64), "shape"),
             numpy_helper.from_array(np.array([0, 1, 4], np.int64), "offsets")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    dequantized = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert [n.input[0] for n in dequantized] == ["w_q"]  # the weight's grid stays for convert to import
    assert "bias" in {i.name for i in out.graph.initializer}
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-6, atol=1e-6)


def test_a_dequantized_table_that_is_a_graph_output_folds_too() -> None:
    """The DequantizeLinear's output a graph output: the pass left it, and quantize refused the converted model
    as 'quantized already' (exit 3), hinting to convert it again."""
    table = numpy_helper.from_array(np.arange(24, dtype=np.uint8).reshape(6, 4), "table")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Add", ["zeros", "offsets"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["picked"]),
        helper.make_node("DequantizeLinear", ["picked", "s", "z"], ["bias"]),
        helper.make_node("Add", ["x", "bias"], ["y"]),
    ]
    inits = [table, numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(10, np.uint8), "z"),
             numpy_helper.from_array(np.array([3], np.int64), "shape"), numpy_helper.from_array(np.array([0, 1, 4], np.int64), "offsets")]  # fmt: skip
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in ("y", "bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Add"] and [o.name for o in out.graph.output] == ["y", "bias"]
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (out, model)]
    for got, want in zip(*(s.run(None, {"x": x}) for s in sessions), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_dequantized_weight_behind_a_folded_transpose_is_not_folded_away() -> None:
    """int8 W -> Transpose -> DequantizeLinear -> MatMul is a QDQ model's weight: folded to float, quantize put it on
    a grid of its own without a word (helper-89's review); left, the model is refused as quantized already."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["w_qT"], ["w_q"], perm=[1, 0]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]  # fmt: skip
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (4, 8), dtype=np.int8), "w_qT"),
             numpy_helper.from_array(np.array(0.02, np.float32), "w_s"), numpy_helper.from_array(np.array(0, np.int8), "w_z")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)  # fmt: skip
    out = normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["DequantizeLinear", "MatMul"]

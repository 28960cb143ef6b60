"""to_float16's `keep_float32` (export fp16 and convert --float_bitwidth 16 since 80ed48a/b7fd70c): the ops reading a
value past float16's range run in float32, and what they write goes back to float16 through a Cast. On 80ed48a every
output of such an op got that Cast, an Equal's bool and an ArgMax's int64 too, and an If's body read the float32 value
as float16: models onnxruntime refuses, written with exit 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper
from onnx import numpy_helper as onh

from qtool.graph.float16 import to_float16

_LOWEST = onh.from_array(np.array(np.finfo(np.float32).min, np.float32), "lowest")  # torch's masking constant
_X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "wide", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


def test_a_mask_compared_with_a_float32_kept_weight_converts_to_float16(tmp_path: Path) -> None:
    """Equal(mask, finfo.min) -> Where (y = mask, as an input's finfo.min is -inf past its float16 Cast): convert --float_bitwidth 16 Cast the Equal's bool to float16 ('Type
    (tensor(bool)) of output arg (e) of node (e_fp32_to_fp16) does not match'), exit 0."""
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 8])
    nodes = [helper.make_node("Equal", ["mask", "lowest"], ["e"]), helper.make_node("Where", ["e", "x", "mask"], ["y"])]
    model = _model(nodes, [_X, mask], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [_LOWEST])
    source, half = tmp_path / "m.onnx", tmp_path / "h.onnx"
    onnx.save(model, source)
    result = run_cli(["convert", "-i", source, "-o", half, "--float_bitwidth", "16"])
    assert result.exit_code == 0, result.output
    feeds = {"x": np.arange(8, dtype=np.float32)[None], "mask": np.array([[0.0, -1.0] * 4], np.float32)}
    want, got = _run(model, feeds)[0], ort.InferenceSession(str(half)).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


def test_integer_outputs_of_an_op_reading_a_wide_value_take_no_cast() -> None:
    """ArgMax, Shape and Cast to int64 of a value past float16's range: their int64 outputs stay int64, exact."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["h"]),
        helper.make_node("ArgMax", ["h"], ["a"], axis=1),
        helper.make_node("Cast", ["h"], ["hi"], to=TensorProto.INT64),
        helper.make_node("Shape", ["h"], ["s"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    info = helper.make_tensor_value_info
    outputs = [info("y", TensorProto.FLOAT, [1, 8]), info("a", TensorProto.INT64, [1, 1]),
               info("hi", TensorProto.INT64, [1, 8]), info("s", TensorProto.INT64, [2])]  # fmt: skip
    model = _model(nodes, [_X], outputs, [onh.from_array(np.array(1e3, np.float32), "k")])
    feeds = {"x": (np.arange(8, dtype=np.float32) * 100)[None]}
    want, got = _run(model, feeds), _run(to_float16(model, keep_float32={"h", "y"}), feeds)
    for expected, found in zip(want, got, strict=True):
        np.testing.assert_array_equal(found, expected)  # y (up to 7e5) float32 as h: exact too


def test_a_subgraph_reading_a_wide_value_reads_a_float16_copy() -> None:
    """An If whose branch reads finfo.min from the outer graph (its types float16) and a Loop taking it as a
    carried value: on 80ed48a the float32 value met the float16 body ('bound to different types')."""
    info = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("Max", ["x", "lowest"], ["t"])], "then", [],
                             [info("t", TensorProto.FLOAT, [1, 8])])  # fmt: skip
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["o"])], "else", [], [info("o", TensorProto.FLOAT, [1, 8])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Max", ["v", "x"], ["v_out"])], "body",
        [info("i", TensorProto.INT64, []), info("c", TensorProto.BOOL, []), info("v", TensorProto.FLOAT, [])],
        [info("c_out", TensorProto.BOOL, []), info("v_out", TensorProto.FLOAT, [1, 8])],
    )  # fmt: skip
    nodes = [
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
        helper.make_node("Loop", ["trips", "", "lowest"], ["z"], body=body),
    ]
    inputs = [_X, info("cond", TensorProto.BOOL, []), info("trips", TensorProto.INT64, [])]
    outputs = [info("y", TensorProto.FLOAT, [1, 8]), info("z", TensorProto.FLOAT, None)]
    model = _model(nodes, inputs, outputs, [_LOWEST])
    for cond in (True, False):
        feeds = {"x": np.linspace(-2, 2, 8, dtype=np.float32)[None], "cond": np.array(cond), "trips": np.array(2)}
        want, got = _run(model, feeds), _run(to_float16(model, keep_float32={"lowest"}), feeds)
        for expected, found in zip(want, got, strict=True):
            np.testing.assert_allclose(found, expected, atol=1e-3)


@pytest.mark.parametrize("text", [
    """seq_out (float[1,3,8,8] x) => (seq(float[1,1,8,8]) s, float[1,4,8,8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        s = SplitToSequence <axis = 1, keepdims = 1> (c)
        y = Relu (c)
    }""",
    """seq_in (float[1,3,8,8] x, seq(float[1,3,8,8]) more) => (float[1,4,8,8] y) {
        joined = ConcatFromSequence <axis = 0> (more)
        first = Slice (joined, zero, one)
        c = Conv <pads = [1, 1, 1, 1]> (first, w)
        y = Add (c, c)
    }""",
    """optional_out (float[1,3,8,8] x) => (optional(float[1,4,8,8]) o) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        o = Optional (c)
    }""",
], ids=["sequence output", "sequence input", "optional output"])  # fmt: skip
def test_a_sequence_or_optional_input_or_output_stays_float32(text: str) -> None:
    """A graph input or output holding a sequence or an optional of float32 takes no boundary Cast (a Cast takes
    tensors): on b0d88f1 a SplitToSequence's output, declared seq(tensor(float)), was made float16 and onnxruntime
    refused the model ('Type (seq(tensor(float))) of output arg (s) ... does not match expected type
    (seq(tensor(float16)))'), written with exit 0. Now it stays float32, with the op making or reading it."""
    model = onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : 18]>\n{text}')
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([onh.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
                                    onh.from_array(np.array([0], np.int64), "zero"),
                                    onh.from_array(np.array([1], np.int64), "one")])  # fmt: skip
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    feeds = {"x": x, "more": [x, x + 1]} if "more" in text else {"x": x}
    for expected, found in zip(_run(model, feeds), _run(to_float16(model), feeds), strict=True):
        np.testing.assert_allclose(np.asarray(found, np.float32), np.asarray(expected), atol=2e-2)
        assert np.asarray(found).dtype == np.float32  # the caller reads what it read


def test_a_mask_filled_by_constant_of_shape_and_a_cast_integer_stay_float32(tmp_path) -> None:
    """scores + (1 - m) * ConstantOfShape(finfo.min) -> Softmax, and Cast(int 100000) -> Mul: the fill became -inf in
    float16 and 0 * -inf NaN, and the cast integer inf (helper-112's review of 80ed48a)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from qtool.export.fp16 import half_precision

    fill = numpy_helper.from_array(np.array([np.finfo(np.float32).min], np.float32), "value")
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(100000, np.int64), "big"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "tiny")]  # fmt: skip
    nodes = [helper.make_node("Shape", ["s"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["fill"], value=fill),
             helper.make_node("Sub", ["one", "m"], ["inv"]), helper.make_node("Mul", ["inv", "fill"], ["bias"]),
             helper.make_node("Add", ["s", "bias"], ["masked"]), helper.make_node("Softmax", ["masked"], ["p"]),
             helper.make_node("Cast", ["big"], ["bigf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["bigf", "tiny"], ["k"]), helper.make_node("Mul", ["p", "k"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 6]),
                                           helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {"s": np.linspace(-1, 1, 6, dtype=np.float32)[None], "m": np.array([[1, 1, 1, 1, 0, 0]], np.float32)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    half = half_precision(model, {}, "m.onnx")
    got = ort.InferenceSession(half.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, atol=2e-3)

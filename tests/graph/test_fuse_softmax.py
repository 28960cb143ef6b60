"""FuseSoftmaxPass: Exp(x - max) / ReduceSum(...) as exporters write it by hand becomes one Softmax (with the
numerator's Transpose after it), computing what it did; a shift that varies along the summed axis, or an Exp
something else reads too, stays written out."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def written_softmax(form: str) -> onnx.ModelProto:
    """x [1, 3, 4, 5] -> written-out softmax over axis 1, in one of the forms exporters use:
    'plain' (keepdims sums, no layout op), 'tf' (a Transpose to NHWC on the Exp and on the sum, as tf2onnx writes
    czann's), 'jax' (sums without kept dims, a Reshape putting the axis back, as jax2tf writes magika's),
    'shift' (a per-channel constant subtracted: not a softmax's shift), 'exp_read' (the Exp also an output)."""
    perm = [0, 2, 3, 1]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("Relu", ["x"], ["r"])]
    if form == "shift":
        inits.append(numpy_helper.from_array(np.array([0.0, 1.0, 2.0], np.float32).reshape(1, 3, 1, 1), "m"))
    elif form == "jax":
        inits.append(numpy_helper.from_array(np.array([1, 1, 4, 5], np.int64), "kept"))
        nodes += [helper.make_node("ReduceMax", ["r"], ["m0"], axes=[1], keepdims=0),
                  helper.make_node("Reshape", ["m0", "kept"], ["m"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("ReduceMax", ["r"], ["m"], axes=[1], keepdims=1))
    nodes += [helper.make_node("Sub", ["r", "m"], ["d"]), helper.make_node("Exp", ["d"], ["e"])]
    if form == "tf":
        nodes += [helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
                  helper.make_node("Transpose", ["e"], ["et"], perm=perm),
                  helper.make_node("Transpose", ["s"], ["st"], perm=perm),
                  helper.make_node("Div", ["et", "st"], ["y"])]  # fmt: skip
        shape = [1, 4, 5, 3]
    elif form == "jax":
        nodes += [helper.make_node("ReduceSum", ["e", "axes"], ["s0"], keepdims=0),
                  helper.make_node("Reshape", ["s0", "kept"], ["s"]), helper.make_node("Div", ["e", "s"], ["y"])]  # fmt: skip
        shape = [1, 3, 4, 5]
    else:
        nodes += [helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1), helper.make_node("Div", ["e", "s"], ["y"])]
        shape = [1, 3, 4, 5]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if form == "exp_read":
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 3, 4, 5]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto) -> list[np.ndarray]:
    x = np.random.default_rng(0).normal(0, 4, (1, 3, 4, 5)).astype(np.float32)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_each_written_out_form_becomes_one_softmax() -> None:
    for form in ("plain", "tf", "jax"):
        model = written_softmax(form)
        out = normalise(model, {}, "m.onnx")
        ops = [n.op_type for n in out.graph.node]
        assert ops.count("Softmax") == 1 and "Exp" not in ops and "Div" not in ops, (form, ops)
        assert next(n for n in out.graph.node if n.op_type == "Softmax").attribute[0].i == 1
        assert [o.name for o in out.graph.output] == ["y"]
        np.testing.assert_allclose(run(out)[0], run(model)[0], rtol=1e-6, atol=1e-7)


def test_a_shift_along_the_axis_or_an_exp_read_elsewhere_stays_written_out() -> None:
    for form in ("shift", "exp_read"):
        model = written_softmax(form)
        out = normalise(model, {}, "m.onnx")
        assert "Softmax" not in [n.op_type for n in out.graph.node], form
        for got, want in zip(run(out), run(model), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_transpose_without_perm_reverses_the_axes() -> None:
    """Transpose's perm defaults to the reversed axes: the fused Softmax keeps that Transpose after it, and a
    Reshape of the sum that does not stand for it (the reversal moves values) leaves the pattern as it is."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    head = [helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1), helper.make_node("Sub", ["x", "m"], ["d"]),
            helper.make_node("Exp", ["d"], ["e"]), helper.make_node("Transpose", ["e"], ["et"])]  # fmt: skip
    forms = {
        "transpose": ([1, 3, 4, 5], [5, 4, 3, 1], [], [helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
                                                       helper.make_node("Transpose", ["s"], ["st"])]),
        "reshape": ([2, 3, 2], [2, 3, 2], [numpy_helper.from_array(np.array([2, 1, 2], np.int64), "kept")],
                    [helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=0),
                     helper.make_node("Reshape", ["s", "kept"], ["st"])]),
    }  # fmt: skip
    for form, (x_shape, y_shape, inits, tail) in forms.items():
        graph = helper.make_graph([*head, *tail, helper.make_node("Div", ["et", "st"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], [axes, *inits])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        out = normalise(model, {}, "m.onnx")
        assert ("Softmax" in [n.op_type for n in out.graph.node]) == (form == "transpose"), form
        x = np.random.default_rng(0).normal(0, 4, x_shape).astype(np.float32)
        got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                     for m in (out, model))  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_written_out_softmax_whose_exp_an_override_names_stays() -> None:
    model = written_softmax("plain")
    out = normalise(model, {}, "m.onnx", keep=frozenset({"e"}))
    assert "Softmax" not in [n.op_type for n in out.graph.node]
    assert "Softmax" in [n.op_type for n in normalise(model, {}, "m.onnx", keep=frozenset({"x", "y"})).graph.node]


@pytest.mark.parametrize(("form", "name"), [("plain", "m"), ("jax", "m0"), ("jax", "m")])
def test_a_written_out_softmax_whose_max_an_override_names_stays(form: str, name: str) -> None:
    """The max the Sub shifts by is read by nothing once fused, and RemoveUnusedNodes took it (and the Reshape
    jax2tf puts after it) away: an overrides file naming it was refused as naming a tensor the graph lacks."""
    out = normalise(written_softmax(form), {}, "m.onnx", keep=frozenset({name}))
    assert name in {o for n in out.graph.node for o in n.output}


def top_probability(form: str, opset: int = 13) -> onnx.ModelProto:
    """x [1, 6, 5] -> 1 / ReduceSum(Exp(x - max(x)), [2]), the largest softmax probability per row, as trueocr's
    recogniser writes its confidence: 'unsqueeze' (a max without kept dims, an Unsqueeze back, a Reciprocal),
    'kept' (keepdims max and sum, a Div of 1), 'not_max' (a ReduceMin in the max's place: not that probability)."""
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    inits = [axes, numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    reduce = "ReduceMin" if form == "not_max" else "ReduceMax"
    keep = int(form != "unsqueeze")
    max_node = (helper.make_node(reduce, ["x", "axes"], ["m0"], keepdims=keep) if opset >= 18
                else helper.make_node(reduce, ["x"], ["m0"], axes=[2], keepdims=keep))  # fmt: skip
    nodes = [max_node, helper.make_node("Unsqueeze", ["m0", "axes"], ["m"]) if not keep else helper.make_node("Identity", ["m0"], ["m"]),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Exp", ["d"], ["e"]),
             helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=keep),
             helper.make_node("Reciprocal", ["s"], ["y"]) if form == "unsqueeze" else helper.make_node("Div", ["one", "s"], ["y"])]  # fmt: skip
    shape = [1, 6] if form == "unsqueeze" else [1, 6, 1]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("form", "opset"), [("unsqueeze", 13), ("kept", 13), ("unsqueeze", 18), ("not_max", 13)])
def test_the_largest_probability_written_out_becomes_the_max_of_a_softmax(form: str, opset: int) -> None:
    """Quantized written out, the shifted logits' grid rounds every Exp's input (trueocr's confidence: 24.4 dB
    held out against quantize_static's 27.2, which leaves the chain float); as ReduceMax(Softmax(x)) only the
    probabilities are rounded, on a [0, 1] grid. A shift by anything but the row's max is left written out."""
    model = top_probability(form, opset)
    out = normalise(model, {}, "m.onnx")
    ops = [n.op_type for n in out.graph.node]
    assert (ops == ["Softmax", "ReduceMax"]) == (form != "not_max"), ops
    assert [o.name for o in out.graph.output] == ["y"]
    x = np.random.default_rng(0).normal(0, 6, (1, 6, 5)).astype(np.float32)
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for m in (out, model))  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_one_of_more_dims_than_the_sum_leaves_the_largest_probability_written_out() -> None:
    """1 / the sum broadcasts: a 1 of shape [1, 1, 1] over a [1, 6] sum (keepdims 0) gives [1, 1, 6], and the fused
    ReduceMax(Softmax(x)) gave [1, 6], another shape than the model declares (and any reader broadcasts)."""
    model = top_probability("unsqueeze")
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "one3"))
    model.graph.node[-1].CopyFrom(helper.make_node("Div", ["one3", "s"], ["y"]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6]))
    out = normalise(model, {}, "m.onnx")
    assert "Softmax" not in [n.op_type for n in out.graph.node]
    x = np.random.default_rng(0).normal(0, 6, (1, 6, 5)).astype(np.float32)
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for m in (out, model))  # fmt: skip
    assert got.shape == want.shape == (1, 1, 6)

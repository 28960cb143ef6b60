"""A QDQ model's weight that reaches its layer through data movement (quant/qdq_movement): PyTorch's Linear on a
3-D input is DequantizeLinear(W[out, in]) -> Transpose -> MatMul. Its grid must arrive on the moved weight, along
the axis its channels moved to, not be dropped by convert's folding."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from qtool.quant.qdq_movement import moved_axis, movement_chain
from qtool.quant.qdq_read import read_qdq

OUT, IN = 8, 16


def _qdq_linear(movement: list[onnx.NodeProto], stored: tuple[int, ...], extra: list[onnx.TensorProto] = (),
                opset: int = 17) -> tuple[onnx.ModelProto, np.ndarray]:  # fmt: skip
    """x[1,3,16] -> Q/DQ -> MatMul(., moved(DQ(w_q))) -> y, w_q int8 of `stored` shape per channel along axis 0;
    `movement` turns 'wd' into 'wt' ([16, 8]). Returns the model and the per-channel scales."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(OUT, IN)).astype(np.float32)
    scale = (np.abs(w).max(1) / 127).astype(np.float32)
    w_q = np.round(w / scale[:, None]).astype(np.int8).reshape(stored)
    inits = [nh.from_array(w_q, "w_q"), nh.from_array(scale, "w_s"), nh.from_array(np.zeros(OUT, np.int8), "w_z"),
             nh.from_array(np.float32(0.02), "x_s"), nh.from_array(np.uint8(128), "x_z"), *extra]  # fmt: skip
    nodes = [oh.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             oh.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
             oh.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=0),
             *movement, oh.make_node("MatMul", ["xd", "wt"], ["y"])]  # fmt: skip
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, IN])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, OUT])], inits)  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model, scale


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """In Q/DQ arithmetic: fused into integer kernels, a CPU without VNNI saturates (conftest.SATURATING_CPU)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_transposed_weight_keeps_its_grid_along_the_moved_axis() -> None:
    model, scale = _qdq_linear([oh.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0])], (OUT, IN))
    floated, found = read_qdq(model)
    assert set(found.params) == {"wt"}
    assert found.params["wt"].axis == 1  # a MatMul's weight [in, out]: its channels are its columns now
    np.testing.assert_allclose(found.params["wt"].scale, scale, rtol=1e-6)
    assert [n.op_type for n in floated.graph.node] == ["MatMul"]
    x = np.random.default_rng(1).normal(size=(1, 3, IN)).astype(np.float32)
    x = np.round(x / 0.02).clip(-128, 127) * 0.02  # on the input's grid: the float model computes the same
    np.testing.assert_allclose(_run(floated, x.astype(np.float32)), _run(model, x.astype(np.float32)), rtol=1e-5, atol=1e-5)


def test_a_weight_reshaped_and_transposed_keeps_its_grid() -> None:
    shape = nh.from_array(np.array([OUT, IN], np.int64), "shape")
    movement = [oh.make_node("Reshape", ["wd", "shape"], ["wr"]), oh.make_node("Transpose", ["wr"], ["wt"], perm=[1, 0])]
    model, _scale = _qdq_linear(movement, (OUT, 1, IN), [shape])
    floated, found = read_qdq(model)
    assert set(found.params) == {"wt"} and found.params["wt"].axis == 1
    assert "shape" not in {i.name for i in floated.graph.initializer}  # the Reshape's shape went with it


def test_a_reshape_that_splits_the_channels_leaves_the_grid_where_it_stands() -> None:
    """[8, 16] -> [16, 8] by Reshape mixes rows into columns: no one axis holds a channel, read as before."""
    shape = nh.from_array(np.array([IN, OUT], np.int64), "shape")
    model, _ = _qdq_linear([oh.make_node("Reshape", ["wd", "shape"], ["wt"])], (OUT, IN), [shape])
    floated, found = read_qdq(model)
    assert set(found.params) == {"wd"} and found.params["wd"].axis == 0
    assert [n.op_type for n in floated.graph.node] == ["Reshape", "MatMul"]


def test_a_squeezed_weight_keeps_its_grid() -> None:
    axes = nh.from_array(np.array([0], np.int64), "axes")
    movement = [oh.make_node("Squeeze", ["wd", "axes"], ["ws"]), oh.make_node("Transpose", ["ws"], ["wt"], perm=[1, 0])]
    model, _ = _qdq_linear(movement, (1, OUT, IN), [axes])
    model.graph.node[2].attribute[0].i = 1  # the DequantizeLinear's channels: axis 1 of [1, 8, 16]
    _, found = read_qdq(model)
    assert set(found.params) == {"wt"} and found.params["wt"].axis == 1


def test_squeeze_axes_by_attribute_before_opset_13() -> None:
    node = oh.make_node("Squeeze", ["w"], ["s"], axes=[0])
    chain, _, shapes = movement_chain("w", {"w": [(node, 0)]}, set(), {}.get, 11, (1, 4, 6))
    assert shapes == [(1, 4, 6), (4, 6)] and moved_axis(1, chain, shapes) == 0


def test_moved_axis_through_unsqueeze_and_flatten() -> None:
    graph = oh.make_graph(
        [oh.make_node("Unsqueeze", ["w", "axes"], ["u"]), oh.make_node("Flatten", ["u"], ["f"], axis=2)], "g", [], []
    )
    readers = {"w": [(graph.node[0], 0)], "u": [(graph.node[1], 0)], "f": []}
    axes = {"axes": np.array([0], np.int64)}
    chain, moves, shapes = movement_chain("w", readers, set(), axes.get, 13, (4, 6, 5))
    assert shapes == [(4, 6, 5), (1, 4, 6, 5), (4, 30)]
    assert moved_axis(0, chain, shapes) == 0  # [1, 4, 6, 5]: axis 1, then Flatten(2): [1 * 4, 6 * 5], axis 0
    assert moved_axis(1, chain, shapes) == -1  # axis 1 (6) merged with 5
    assert moved_axis(None, chain, shapes) is None
    assert moves[1](np.zeros((1, 4, 6, 5))).shape == (4, 30)


def test_flatten_with_a_negative_axis_counts_it_from_the_back() -> None:
    """Flatten(axis=-1) of [4, 6, 5] is [24, 5]: read as axis 3 (past the end), the weight became [120, 1], and
    convert's model of a DequantizeLinear -> Flatten(-1) -> MatMul weight failed to load (MatMul's dims)."""
    node = oh.make_node("Flatten", ["w"], ["f"], axis=-1)
    chain, moves, shapes = movement_chain("w", {"w": [(node, 0)]}, set(), {}.get, 13, (4, 6, 5))
    assert shapes == [(4, 6, 5), (24, 5)] and moves[0](np.zeros((4, 6, 5))).shape == (24, 5)
    assert moved_axis(2, chain, shapes) == 1
    for past in (4, -4):  # outside [-3, 3]: the node stays, for onnxruntime to refuse
        node = oh.make_node("Flatten", ["w"], ["f"], axis=past)
        assert movement_chain("w", {"w": [(node, 0)]}, set(), {}.get, 13, (4, 6, 5))[0] == []


def test_repeated_or_out_of_range_axes_are_no_movement() -> None:
    """Unsqueeze(axes=[0, 0]) crashed the reader ('generator raised StopIteration': qtool's internal error, exit 1);
    an axis past the rank wrapped round. onnxruntime refuses such a node: it stays, and convert says so."""
    axes = {"twice": np.array([0, 0], np.int64), "past": np.array([3], np.int64)}
    for op, name in (("Unsqueeze", "twice"), ("Unsqueeze", "past"), ("Squeeze", "twice"), ("Squeeze", "past")):
        node = oh.make_node(op, ["w", name], ["u"])
        assert movement_chain("w", {"w": [(node, 0)]}, set(), axes.get, 13, (1, 4))[0] == [], (op, name)


def test_convert_carries_the_transposed_weight_grid_into_quantize(tmp_path) -> None:
    model, scale = _qdq_linear([oh.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0])], (OUT, IN))
    source, converted, quantized = tmp_path / "q.onnx", tmp_path / "c.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(source))
    result = run_cli(["convert", "-i", source, "-o", converted])
    assert result.exit_code == 0, result.output
    assert "removed" not in result.output  # no imported grid dropped
    carried = json.loads({p.key: p.value for p in onnx.load(str(converted)).metadata_props}["qtool.quantization_overrides"])
    assert len(carried["param_encodings"]["wt"]) == OUT
    rng = np.random.default_rng(2)
    feeds = write_feeds(tmp_path, [{"x": rng.normal(size=(1, 3, IN)).astype(np.float32)} for _ in range(4)])
    result = run_cli(["quantize", "-i", converted, "--input_list", feeds, "-o", quantized, "--use_per_channel_quantization"])
    assert result.exit_code == 0, result.output
    written = {i.name: nh.to_array(i) for i in onnx.load(str(quantized)).graph.initializer}
    assert any(v.dtype == np.float32 and v.shape == (OUT,) and np.allclose(v, scale, rtol=1e-6) for v in written.values())


def _fake_quantized_linear(transposed: bool) -> tuple[onnx.ModelProto, np.ndarray]:
    """PyTorch's QAT export without constant folding: QuantizeLinear(W float) -> DequantizeLinear [-> Transpose]."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(OUT, IN) if transposed else (IN, OUT)).astype(np.float32)
    axis = 0 if transposed else 1
    scale = (np.abs(w).max(1 - axis) / 127).astype(np.float32)
    inits = [nh.from_array(w, "w"), nh.from_array(scale, "w_s"), nh.from_array(np.zeros(OUT, np.int8), "w_z")]
    nodes = [oh.make_node("QuantizeLinear", ["w", "w_s", "w_z"], ["wq"], axis=axis),
             oh.make_node("DequantizeLinear", ["wq", "w_s", "w_z"], ["wd" if transposed else "wt"], axis=axis),
             *([oh.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0])] if transposed else []),
             oh.make_node("MatMul", ["x", "wt"], ["y"])]  # fmt: skip
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, IN])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, OUT])], inits)  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), scale


def test_a_fake_quantized_weight_is_read_as_a_weight_with_its_channels(tmp_path) -> None:
    """Its grid was read as an activation's on the initializer: quantize then gave the weight a per-tensor uint8
    grid of its own (scale 0.017, zero point 137) under --use_per_channel_quantization, the QAT grid lost."""
    for transposed in (False, True):
        model, scale = _fake_quantized_linear(transposed)
        floated, found = read_qdq(model)
        name = "wt" if transposed else "w"
        assert not found.activations and set(found.params) == {name}
        assert found.params[name].axis == 1
        np.testing.assert_allclose(found.params[name].scale, scale, rtol=1e-6)
        assert [n.op_type for n in floated.graph.node] == ["MatMul"]
    source, converted, quantized = tmp_path / "q.onnx", tmp_path / "c.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(source))
    assert run_cli(["convert", "-i", source, "-o", converted]).exit_code == 0
    rng = np.random.default_rng(2)
    feeds = write_feeds(tmp_path, [{"x": rng.normal(size=(1, 3, IN)).astype(np.float32)} for _ in range(4)])
    result = run_cli(["quantize", "-i", converted, "--input_list", feeds, "-o", quantized, "--use_per_channel_quantization"])
    assert result.exit_code == 0, result.output
    written = [nh.to_array(i) for i in onnx.load(str(quantized)).graph.initializer]
    assert any(v.dtype == np.float32 and v.shape == (OUT,) and np.allclose(v, scale, rtol=1e-6) for v in written)


def test_a_fake_quantized_weight_comes_back_on_its_grid_and_a_cast_zero_point_is_a_constant() -> None:
    """The float model computes what the QAT network computes (the weight on its grid, as a constant-folded
    export's DequantizeLinear(int8) gives it); PyTorch's unfolded export casts each zero point, which was refused
    ('the zero point ... is not a constant')."""
    model, scale = _fake_quantized_linear(transposed=True)
    w = nh.to_array(model.graph.initializer[0])
    zero = model.graph.initializer.pop()  # w_z, as Cast(Constant int32)
    model.graph.node.insert(0, oh.make_node("Constant", [], ["z32"], value=nh.from_array(nh.to_array(zero).astype(np.int32))))
    model.graph.node.insert(1, oh.make_node("Cast", ["z32"], ["w_z"], to=TensorProto.INT8))
    onnx.checker.check_model(model)
    floated, found = read_qdq(model)
    assert [n.op_type for n in floated.graph.node] == ["MatMul"]
    on_grid = (np.clip(np.round(w / scale[:, None]), -128, 127) * scale[:, None]).T
    np.testing.assert_allclose(nh.to_array(floated.graph.initializer[0]), on_grid, rtol=1e-6, atol=1e-7)
    assert found.params["wt"].axis == 1


def test_a_large_fake_quantized_weight_is_spilled_to_scratch_like_a_dequantized_one(tmp_path, monkeypatch) -> None:
    """A QAT model's float copy keeps its weights out of memory as the DequantizeLinear(int8) path does."""
    from qtool.graph import external_data

    monkeypatch.setattr(external_data, "LAZY_BYTES", 64)  # the 512-byte weight counts as large
    model, _ = _fake_quantized_linear(transposed=True)
    floated, _ = read_qdq(model, scratch=str(tmp_path / "weights.bin"))
    weight = next(i for i in floated.graph.initializer if i.name == "wt")
    assert weight.data_location == TensorProto.EXTERNAL and (tmp_path / "weights.bin").stat().st_size >= OUT * IN * 4

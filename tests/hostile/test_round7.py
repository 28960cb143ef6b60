"""Hostile round seven (helper-58): constants that other ops than Expand, Tile, Pad and ConstantOfShape blow up.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.errors import ModelError
from qtool.graph import model as graph_model


def _i64(values, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _f32(values, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.float32), name)


def _loop_body(scan: bool) -> onnx.GraphProto:
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])]
    if scan:
        nodes.append(helper.make_node("Identity", ["row"], ["scan"]))
        outputs.append(helper.make_tensor_value_info("scan", TensorProto.FLOAT, [40000]))
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])]  # fmt: skip
    return helper.make_graph(nodes, "body", inputs, outputs, [_f32([1.0], "one"), _f32(np.ones(40000), "row")])


def _loop(trips: int, scan: bool) -> tuple[list, list]:
    outputs = ["v", "big"] if scan else ["big"]
    node = helper.make_node("Loop", ["M", "cond", "v0"], outputs, body=_loop_body(scan))
    return [node], [_i64(trips, "M"), numpy_helper.from_array(np.array(True), "cond"), _f32([0.0], "v0")]


def _doubling(count: int) -> tuple[list, list]:
    nodes = [helper.make_node("Concat", [f"c{k}", f"c{k}"], [f"c{k + 1}"], axis=0) for k in range(count)]
    return [*nodes, helper.make_node("Identity", [f"c{count}"], ["big"])], [_f32([1.0], "c0")]


# (nodes, initializers) of a bomb, and of the same graph at a size real models have
BOMBS = {
    "Resize": lambda n: ([helper.make_node("Resize", ["c", "", "s"], ["big"], mode="nearest")],
                         [_f32(np.ones((1, 1, 1, 1)), "c"), _f32([1, 1, n, n], "s")]),
    "Range": lambda n: ([helper.make_node("Range", ["a", "b", "d"], ["big"])], [_f32(0, "a"), _f32(n * n, "b"), _f32(1, "d")]),
    "OneHot": lambda n: ([helper.make_node("OneHot", ["i", "depth", "v"], ["big"])],
                         [_i64(np.zeros(n // 10), "i"), _i64(n * 10, "depth"), _f32([0, 1], "v")]),
    "ConstantOfShape": lambda n: ([helper.make_node("Concat", ["a", "b"], ["shape"], axis=0),
                                   helper.make_node("ConstantOfShape", ["shape"], ["big"])], [_i64([n], "a"), _i64([n], "b")]),
    "Tile": lambda n: ([helper.make_node("Mul", ["a", "b"], ["reps"]), helper.make_node("Tile", ["c", "reps"], ["big"])],
                       [_i64([n // 100, n // 100], "a"), _i64([100, 100], "b"), _f32(np.ones((1, 1)), "c")]),
    "MatMul": lambda n: ([helper.make_node("MatMul", ["a", "b"], ["big"])], [_f32(np.ones((n, 1)), "a"), _f32(np.ones((1, n)), "b")]),
    "Where": lambda n: ([helper.make_node("Where", ["k", "a", "b"], ["big"])],
                        [numpy_helper.from_array(np.ones((n, 1), bool), "k"), _f32(np.ones((1, n)), "a"), _f32(0, "b")]),
    "Concat": lambda n: _doubling(31 if n > 1000 else 12),
    "Loop": lambda n: _loop(10**12 if n > 1000 else 1000, scan=False),
    "Loop scan": lambda n: _loop(n, scan=True),
}


def _model(nodes: list, initializers: list) -> onnx.ModelProto:
    """The tensor is a graph output declared [1] beside a Relu: no declared shape tells its size."""
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]), helper.make_tensor_value_info("big", TensorProto.FLOAT, [1])]
    graph = helper.make_graph([*nodes, helper.make_node("Relu", ["x"], ["y"])], "bomb",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], outputs, initializers)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op", sorted(BOMBS))
def test_a_gigavalue_constant_any_op_makes_from_small_constants_is_refused_when_read(tmp_path: Path, op: str) -> None:
    """convert, quantize and inspect built each (an outer-product MatMul 6.2 GB, 31 doubling Concats 7.2 GB and an
    internal error; a Resize, Range, Where or OneHot with every sample, 4-64 GB) or, a Loop of 10^12 iterations
    of one Add, never ended: the check sized only Expand, Tile, Pad and a ConstantOfShape of an initializer."""
    path = tmp_path / "m.onnx"
    onnx.save(_model(*BOMBS[op](40000)), str(path))
    with pytest.raises(ModelError, match=r"m\.onnx") as raised:
        graph_model.load(path)
    named = {"Concat": "c21", "Loop scan": "v"}.get(op, "big")
    assert raised.value.message.startswith(f"node '{named}' ({op.split()[0]})"), raised.value.message
    onnx.save(_model(*BOMBS[op](400)), str(path))
    graph_model.load(path)  # the same graph at a real model's size loads


def test_convert_refuses_a_range_of_two_billion_values_naming_the_node(tmp_path: Path) -> None:
    onnx.save(_model(*BOMBS["Range"](50000)), str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 3 and "node 'big' (Range) makes a constant of 2,500,000,000 values" in result.stderr, result.stderr
    assert not (tmp_path / "c.onnx").exists()


def test_a_weight_transposed_is_not_a_constant_made(monkeypatch) -> None:
    """A node that reads a large weight makes no more values than the model already holds."""
    from qtool.graph import constant_size

    monkeypatch.setattr(constant_size, "LIMIT_VALUES", 1000)
    assert constant_size.huge_constant(_model([helper.make_node("Transpose", ["w"], ["big"])], [_f32(np.ones((64, 64)), "w")])) is None
    assert "(MatMul)" in (constant_size.huge_constant(_model(*BOMBS["MatMul"](40))) or "")


def test_a_negative_input_dim_is_dynamic_as_onnxruntime_reads_it(tmp_path: Path) -> None:
    """dim_value -1 (how some exporters write a dynamic batch): convert kept it, and quantize then asked the
    sample file for '-16 (float32[-1, 4])' bytes; onnxruntime runs it as a dynamic dim."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.arange(4, dtype=np.float32).tofile(tmp_path / "x.raw")
    (tmp_path / "list.txt").write_text("x.raw\n")
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.stderr
    assert [d.dim_value for d in onnx.load(str(tmp_path / "q.onnx")).graph.input[0].type.tensor_type.shape.dim] == [1, 4]
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -1
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 3 and "input 'x' dim 1 (-1)" in result.stderr and "--input_dim x 1,N" in result.stderr, result.stderr


def _doubled(first: onnx.NodeProto, count: int, initializers: list) -> onnx.ModelProto:
    """`first` makes c0; each Concat doubles it; y = x + its sum."""
    nodes = [first, *(helper.make_node("Concat", [f"c{k}", f"c{k}"], [f"c{k + 1}"], axis=0) for k in range(count))]
    nodes += [helper.make_node("ReduceSum", [f"c{count}"], ["r"], keepdims=1), helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT),
              helper.make_node("Add", ["x", "f"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializers)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("source", ["Shape", "constant"])
def test_shape_arithmetic_onnx_would_hold_value_by_value_is_refused_when_read(tmp_path: Path, source: str) -> None:
    """onnx's data propagation holds each value of a 1-D tensor computed from shapes and constants (~150 bytes):
    30 Concats doubling a Shape took convert and quantize past 8 GB and 120 s, inspect to 7.1 GB and an internal
    error; 23 doubling a one-value constant (8 M values, far below LIMIT_VALUES) took convert to 1.3 GB."""
    first = helper.make_node("Shape", ["x"], ["c0"]) if source == "Shape" else helper.make_node("Identity", ["one"], ["c0"])
    one = [_i64([1], "one")]
    onnx.save(_doubled(first, 30, one), str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="computes 2,097,152 values of shape arithmetic") as raised:
        graph_model.load(tmp_path / "m.onnx")
    assert raised.value.message.startswith("node 'c20' (Concat)" if source == "Shape" else "node 'c21' (Concat)")
    onnx.save(_doubled(first, 8, one), str(tmp_path / "m.onnx"))
    graph_model.load(tmp_path / "m.onnx")


def test_a_causal_mask_sized_constant_is_not_shape_arithmetic() -> None:
    """A 2-D outer Sub of two 2048-value ranges (relative positions, 4 M values) is no 1-D shape vector."""
    from qtool.graph.constant_size import huge_constant

    nodes = [helper.make_node("Sub", ["a", "b"], ["big"])]
    assert huge_constant(_model(nodes, [_f32(np.ones((2048, 1)), "a"), _f32(np.ones((1, 2048)), "b")])) is None


def test_a_huge_constant_an_inputs_shape_makes_once_its_dims_are_fixed_is_refused_by_convert(tmp_path: Path) -> None:
    """ConstantOfShape(Shape(x) * [40000, 10000]) is a constant only once convert fixes x's batch: convert wrote the
    model (which qtool then refused to read), and quantize of the raw model had onnxruntime build 6.4 GB a sample."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Mul", ["s", "k"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("ReduceSum", ["big"], ["r"], keepdims=1),
             helper.make_node("Add", ["x", "r"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [_i64([40000, 10000], "k")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 3 and "m.onnx as converted: node" in result.stderr, result.stderr
    assert "(ConstantOfShape) makes a constant of 1,600,000,000 values" in result.stderr and not (tmp_path / "c.onnx").exists()


def _stored(tensor: onnx.TensorProto, case: str) -> None:
    if case == "short raw data":
        tensor.raw_data = tensor.raw_data[:12]
    elif case == "long raw data":
        tensor.raw_data += b"\0" * 4
    elif case == "negative dims":
        tensor.dims[:] = [-d for d in tensor.dims]
    else:  # float_data short of the dims
        tensor.ClearField("raw_data")
        tensor.float_data.extend([1.0] * 3)


@pytest.mark.parametrize("case", ["short raw data", "long raw data", "negative dims", "short float_data"])
def test_a_weight_whose_values_do_not_fill_its_dims_is_a_model_error_in_inspect_too(tmp_path: Path, case: str) -> None:
    """onnx.checker refuses these in convert and quantize; inspect does not run it, and numpy's reshape of the
    weight failed in its MAC count and lint (ValueError, an internal error, exit 1)."""
    model = _model([helper.make_node("MatMul", ["x", "w"], ["big"])], [_f32(np.ones((1, 4)), "w")])
    _stored(model.graph.initializer[0], case)
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["inspect", tmp_path / "m.onnx"])
    assert result.exit_code == 3 and "m.onnx: not a valid ONNX model: tensor 'w': " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_loop_whose_trip_count_constants_multiply_to_10_to_the_12_is_refused() -> None:
    """M = 10^6 * 10^6: the Mul's output is one value, so nothing computed it, and the Loop was not sized."""
    from qtool.graph.constant_size import huge_constant

    nodes, initializers = _loop(1, scan=False)
    nodes[0].input[0] = "trips"
    nodes.insert(0, helper.make_node("Mul", ["a", "a"], ["trips"]))
    said = huge_constant(_model(nodes, [*initializers, _i64(10**6, "a")]))
    assert said is not None and "would run 1,000,000,000,000 times" in said, said

"""QDQ models whose Q/DQ parameters do not make sense (helper-36's mutants): export, inspect and convert's import
read them, and each refuses with one line naming the model and the node (exit 3), never an internal error or an
encodings file holding NaN. A scale a Constant node makes, as exporters write it, is read like an initializer."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import helper, numpy_helper


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Workspace, onnx.ModelProto]:
    ws = make_workspace(tmp_path_factory.mktemp("qdq"))
    result = ws.quantize("-o", ws.root / "q.onnx", "--use_per_channel_quantization")
    assert result.exit_code == 0, result.stderr
    return ws, onnx.load(str(ws.root / "q.onnx"))


def _weight_dq(model: onnx.ModelProto) -> onnx.NodeProto:
    inits = {i.name for i in model.graph.initializer}
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                and len(model.graph.initializer[[i.name for i in model.graph.initializer].index(n.input[1])].dims))  # fmt: skip


def _set(model: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(init).dtype), name))


def _mutant(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dq = _weight_dq(m)
    scale = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == dq.input[1]))
    if kind in ("nan", "zero", "negative"):
        bad = scale.copy()
        bad[1] = {"nan": np.nan, "zero": 0.0, "negative": -bad[1]}[kind]
        _set(m, dq.input[1], bad)
    elif kind == "empty":
        _set(m, dq.input[1], scale[:0])
    elif kind == "axis":
        kept = [a for a in dq.attribute if a.name != "axis"]
        del dq.attribute[:]
        dq.attribute.extend([*kept, helper.make_attribute("axis", 7)])
    elif kind == "count":
        _set(m, dq.input[1], scale[:-1])
        _set(m, dq.input[2], numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == dq.input[2]))[:-1])
    elif kind == "zero_point":
        _set(m, dq.input[2], np.zeros((), np.int8))
    elif kind == "blocks":
        dq.attribute.append(helper.make_attribute("block_size", 7))
    elif kind == "graph_input":
        m.graph.input.append(helper.make_tensor_value_info("scale_in", onnx.TensorProto.FLOAT, list(scale.shape)))
        dq.input[1] = "scale_in"
    return m


# a negative scale is the grid mirrored, as onnxruntime's block quantizer writes it (test_round16: read, not refused)
@pytest.mark.parametrize("kind", ["nan", "zero", "empty", "axis", "count", "zero_point", "blocks", "graph_input"])
def test_a_dequantize_linear_that_does_not_make_sense_is_refused_by_every_reader(quantized, kind: str) -> None:
    ws, model = quantized
    path = ws.root / f"{kind}.onnx"
    onnx.save(_mutant(model, kind), str(path))
    before = ws.snapshot()
    for args in (["export", "-i", path, "-o", ws.root / "x", "--format", "encodings"], ["inspect", path],
                 ["convert", "-i", path, "-o", ws.root / "c.onnx"]):  # fmt: skip
        assert_refused(ws, before, ws.run(*args), 3, f"{kind}.onnx", "DequantizeLinear")


def test_a_scale_a_constant_node_makes_is_read_and_the_node_goes_with_its_pair(quantized) -> None:
    ws, model = quantized
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dq = _weight_dq(m)
    init = next(i for i in m.graph.initializer if i.name == dq.input[1])
    m.graph.node.insert(0, helper.make_node("Constant", [], ["made_scale"], value=init))
    dq.input[1] = "made_scale"
    path = ws.root / "constant.onnx"
    onnx.save(m, str(path))
    plain = ws.run("export", "-i", ws.root / "q.onnx", "-o", ws.root / "a", "--format", "encodings", "--format", "stripped")
    made = ws.run("export", "-i", path, "-o", ws.root / "b", "--format", "encodings", "--format", "stripped")
    assert plain.exit_code == made.exit_code == 0, made.stderr
    assert json.loads((ws.root / "a" / "q.encodings.json").read_text()) == json.loads(
        (ws.root / "b" / "constant.encodings.json").read_text()
    )
    stripped = onnx.load(str(ws.root / "b" / "constant.stripped.onnx"))
    assert not any(n.op_type == "Constant" for n in stripped.graph.node)


def test_deeply_nested_lpbq_metadata_is_a_warning_not_a_crash(quantized) -> None:
    ws, model = quantized
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.metadata_props.add(key="qtool.lpbq", value="[" * 100_000 + "]" * 100_000)
    path = ws.root / "deep.onnx"
    onnx.save(m, str(path))
    result = ws.run("inspect", path)
    assert result.exit_code == 0 and "qtool.lpbq" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("constant", [False, True])
def test_an_int8_zero_point_a_constant_node_makes_keeps_its_sign(tmp_path, constant: bool) -> None:
    """The zero point's type says the grid (int8 here, not uint8): read off a Constant node too."""
    scale, zero = numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(-10, np.int8), "z")
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in (scale, zero)] if constant else []
    nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
              helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
              helper.make_node("Relu", ["xd"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
                              [] if constant else [scale, zero])  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ws = Workspace(tmp_path)
    assert ws.run("export", "-i", path, "-o", tmp_path / "x", "--format", "encodings").exit_code == 0
    (entry,) = json.loads((tmp_path / "x" / "m.encodings.json").read_text())["activation_encodings"]["x"]
    assert entry["offset"] == -118 and abs(entry["min"] + 5.9) < 1e-6  # (q + 10) * 0.05 over int8's [-128, 127]


def test_a_per_channel_axis_counted_from_the_end_is_read(quantized) -> None:
    ws, model = quantized
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dq = _weight_dq(m)
    rank = len(next(i for i in m.graph.initializer if i.name == dq.input[0]).dims)
    kept = [a for a in dq.attribute if a.name != "axis"]
    del dq.attribute[:]
    dq.attribute.extend([*kept, helper.make_attribute("axis", -rank)])  # axis 0, counted from the end
    path = ws.root / "negative.onnx"
    onnx.save(m, str(path))
    for name, source in (("a", ws.root / "q.onnx"), ("b", path)):
        assert ws.run("export", "-i", source, "-o", ws.root / name, "--format", "encodings").exit_code == 0
    assert json.loads((ws.root / "a" / "q.encodings.json").read_text()) == json.loads(
        (ws.root / "b" / "negative.encodings.json").read_text()
    )


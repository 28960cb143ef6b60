"""Graph outputs that declare an element type and no shape (848e9cf) in the graphs inference alone could not shape:
an input returned as it is given ('return x, y': inference leaves it, and all that reads it, unshaped) and nodes
listed out of topological order (inference reads them in the order listed); and --input_dim dims no node takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli, save_model
from onnx import TensorProto, helper, numpy_helper


def _bare(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _model(nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "g", [x], [_bare(o) for o in outputs], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _converted_dims(tmp_path: Path, model: onnx.ModelProto) -> dict[str, list[int]]:
    save_model(model, tmp_path / "m.onnx")
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 0, result.output
    outputs = onnx.load(tmp_path / "c.onnx").graph.output
    return {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in outputs}


def test_an_input_returned_unshaped_takes_its_declared_shape(tmp_path: Path) -> None:
    """'output 'x' declares no shape (any rank)', exit 3, of an input declared [1, 4]; y = MatMul(x, w) too."""
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], ["x", "y"])
    assert _converted_dims(tmp_path, model) == {"x": [1, 4], "y": [1, 3]}


def test_an_unsorted_graph_shapes_its_bare_output(tmp_path: Path) -> None:
    """Relu listed before the MatMul that writes its input: 'output 'y' declares no shape', exit 3."""
    model = _model([helper.make_node("Relu", ["m"], ["y"]), helper.make_node("MatMul", ["x", "w"], ["m"])], ["y"])
    assert _converted_dims(tmp_path, model) == {"y": [1, 3]}


def test_input_dims_that_do_not_fit_are_named(tmp_path: Path) -> None:
    """x and y declared without a shape, --input_dim x 2,5 for x @ w[4, 3]: inference fails, and the error blamed
    the output, "output 'y' declares no shape (any rank) ... (declare its dims in the model ...)"."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [_bare("y")], [w])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "2,5"])
    assert result.exit_code == 3, result.output
    assert "output 'y' takes no shape from --input_dim x 2,5: (op_type:MatMul)" in result.output, result.output
    assert "Incompatible dimensions" in result.output and not (tmp_path / "c.onnx").exists()

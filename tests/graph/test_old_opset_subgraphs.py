"""graph/old_opset_meaning: nodes onnx's version converter asserts on, set aside in an If's branches as in the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper


def _cast5(source: str, out: str, name: str) -> onnx.NodeProto:
    node = helper.make_node("Cast", [source], [out], name=name)
    node.attribute.append(helper.make_attribute("to", "INT32"))  # Cast-1..5 name their type
    return node


def test_a_cast_of_opset_5_in_an_if_branch_converts(tmp_path: Path) -> None:
    """94a9356 set aside an opset-5 Cast of the main graph only: one in an If's branch still stopped convert with
    'No Adapter From Version $5 for Cast', exit 3. Both branches' Casts now come back as Cast(to=6)."""
    branches = [helper.make_graph([_cast5("x", tag, f"c_{tag}")], tag, [], [helper.make_tensor_value_info(tag, TensorProto.INT32, [1, 4])])
                for tag in ("t", "e")]  # fmt: skip
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=branches[0], else_branch=branches[1])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                    helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 5)], ir_version=3), str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 0, result.output
    converted = onnx.load(str(tmp_path / "c.onnx"))
    assert [o.domain for o in converted.opset_import] == [""]
    x = np.array([[-1.7, 2.6, 3.2, 0.4]], np.float32)
    session = ort.InferenceSession(str(tmp_path / "c.onnx"))
    for cond in (True, False):
        assert session.run(None, {"x": x, "cond": np.array(cond)})[0].tolist() == [[-1, 2, 3, 0]]

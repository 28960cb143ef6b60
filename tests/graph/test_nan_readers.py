"""input_specs marks an input whose every reader takes NaN for a missing value (graph/model._nan_read): each
reader counted, an If's branch among them, and the nodes walked once, not once an input (cebb5ec walked every node's
subgraphs for each input: 64 inputs of a 4000-node graph took 0.9 s a call, and quantize calls it ten times)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from qtool.graph import model as gm


def _imputer(x: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Imputer", [x], [out], domain="ai.onnx.ml", imputed_value_floats=[0.0],
                            replaced_value_float=float("nan"))  # fmt: skip


def _model(nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [1, 4]) for i in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _missing(model: onnx.ModelProto) -> dict[str, bool]:
    return {s.name: s.nan_is_missing for s in gm.input_specs(model)}


def test_an_input_an_if_branch_reads_beside_an_imputer_keeps_the_refusal() -> None:
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [_imputer("x", "f"), _imputer("z", "g"),
             helper.make_node("If", ["c"], ["picked"], then_branch=branch, else_branch=branch)]  # fmt: skip
    model = _model(nodes, ["x", "z", "c", "unread"], ["f", "g", "picked"])
    assert _missing(model) == {"x": False, "z": True, "c": False, "unread": False}


def test_the_readers_are_found_in_one_pass_over_the_nodes(monkeypatch) -> None:
    inputs = [f"in{i}" for i in range(16)]
    nodes, last = [], "in0"
    for k in range(64):
        nodes.append(helper.make_node("Add", [last, inputs[k % 16]], [f"t{k}"]))
        last = f"t{k}"
    calls = []
    reads = gm.reads
    monkeypatch.setattr(gm, "reads", lambda node: calls.append(node) or reads(node))
    assert not any(_missing(_model(nodes, inputs, [last])).values())
    assert len(calls) == len(nodes)  # 16 x 64 before

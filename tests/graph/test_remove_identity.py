"""RemoveIdentityPass through `qtool convert`: an If branch returning a main-graph tensor through Identity
keeps that tensor's name (onnx-ir's IdentityEliminationPass renamed it to the branch output's name)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

ATOL, RTOL = 1e-6, 1e-6


def _if_model() -> onnx.ModelProto:
    """x -> Sigmoid -> s; y = If(mean(x) > 0, then: Neg(x), else: Identity(s)) (openWakeWord's score)."""

    def branch(node: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph(
            [node], node.output[0], [], [helper.make_tensor_value_info(node.output[0], 1, [1, 16])]
        )

    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "limit"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch(helper.make_node("Neg", ["x"], ["b_then"])),
                         else_branch=branch(helper.make_node("Identity", ["s"], ["b_else"]))),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "limit")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    return {v.name for v in graph.input} | {v.name for v in graph.output} | {o for n in graph.node for o in n.output}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_an_if_branch_returning_a_main_graph_tensor_keeps_its_name(tmp_path: Path) -> None:
    source, converted = tmp_path / "m.onnx", tmp_path / "m.conv.onnx"
    onnx.save(_if_model(), str(source))
    assert run_cli(["convert", "-i", source, "-o", converted]).exit_code == 0
    out = onnx.load(str(converted))
    onnx.checker.check_model(out, full_check=True)
    assert _names(out) == _names(_if_model())  # s stays s (it came out as b_else)
    assert next(n.output[0] for n in out.graph.node if n.op_type == "Sigmoid") == "s"
    for x in (np.full((1, 16), -2.0, np.float32), np.linspace(-1, 3, 16, dtype=np.float32)[None]):  # both branches
        np.testing.assert_allclose(_run(converted, x), _run(source, x), atol=ATOL, rtol=RTOL)

    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        (tmp_path / f"{i}.raw").write_bytes(rng.normal(0, 2, (1, 16)).astype(np.float32).tobytes())
        lines.append(str(tmp_path / f"{i}.raw"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    overrides = {"activation_encodings": {"s": [{"bitwidth": 8, "min": 0.0, "max": 4.0}]}, "param_encodings": {}}
    (tmp_path / "ov.json").write_text(json.dumps(overrides))
    quant = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", converted, "--input_list", tmp_path / "list.txt", "-o", quant,
                      "--quantization_overrides", tmp_path / "ov.json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    acts = json.loads(quant.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert np.isclose(acts["s"][0]["max"], 4.0, atol=0.05)  # the override, not Sigmoid's calibrated max of 1

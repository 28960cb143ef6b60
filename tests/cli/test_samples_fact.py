"""quantize's report says why no calibration sample ran where a list was given ('samples 0' beside the 6 samples
the evaluation read looked like a list qtool had not read), in a fact of its own: 'samples' stays a number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper


def _tree() -> onnx.ModelProto:
    """One decision stump (ai.onnx.ml): no tensor qtool quantizes."""
    stump = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=1, nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0], nodes_values=[0.0, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[1.0, 2.0],
    )  # fmt: skip
    graph = helper.make_graph([stump], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 3)])


def _relu() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize(
    "model, flags, said",
    [(_tree, [], "no activation to calibrate; 6 samples listed"), (_relu, ["--act_bitwidth", "32"], "weight-only, "
     "--act_bitwidth 32; 6 samples listed"), (_relu, [], None)],
)  # fmt: skip
def test_the_samples_fact_says_why_none_was_calibrated(tmp_path: Path, model, flags: list[str], said) -> None:
    onnx.save(model(), str(tmp_path / "m.onnx"))
    for k in range(6):
        np.random.default_rng(k).normal(size=(1, 4)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"s{k}.raw\n" for k in range(6)))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt", "-o",
                      tmp_path / "q.onnx", "--json", *flags])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == (6 if said is None else 0) and report["evaluated samples"] == 6
    assert report.get("not calibrated") == said

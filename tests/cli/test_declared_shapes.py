"""Shapes come from the graph, not from declarations that exporters get wrong (issue 21).

On a399be9 a CTC model declaring its output [1, seqlen] (really [20, 1, 8210]) failed calibration:
qtool's own reductions were concatenated by declared rank. Casts to double broke them the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import corrected_outputs


def lying_model() -> onnx.ModelProto:
    """x[1,20,8] -> MatMul -> Cast(double) -> Relu -> Cast(float) -> Transpose -> Softmax -> y[20,1,12],
    declared y[1,20], with value_info of the wrong sizes."""
    w = np.random.default_rng(0).normal(0, 1, (8, 12)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Cast", ["h"], ["hd"], to=TensorProto.DOUBLE),
        helper.make_node("Relu", ["hd"], ["rd"]),
        helper.make_node("Cast", ["rd"], ["r"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Softmax", ["t"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "lying",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20])],
        [numpy_helper.from_array(w, "w")],
        value_info=[
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [5, 5, 5]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [7, 3, 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "m.onnx"
    onnx.save(lying_model(), str(model))
    rng = np.random.default_rng(1)
    lines = []
    for i in range(4):
        (tmp_path / f"{i}.raw").write_bytes(rng.normal(0, 1, (1, 20, 8)).astype(np.float32).tobytes())
        lines.append(str(tmp_path / f"{i}.raw"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return model, tmp_path / "list.txt"


def test_a_model_with_wrong_declared_shapes_and_double_casts_quantizes(tmp_path: Path) -> None:
    model, listing = _workspace(tmp_path)
    for method in ("min-max", "sqnr"):
        result = run_cli(["quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "q.onnx",
                          "--act_quantizer_calibration", method, "--json"])  # fmt: skip
        assert result.exit_code == 0, result.stderr
    result = run_cli(["inspect", tmp_path / "q.onnx", "--reference", model, "--input_list", listing])
    assert result.exit_code == 0, result.stderr


def test_convert_corrects_and_reports_a_wrong_output_declaration(tmp_path: Path) -> None:
    model, _ = _workspace(tmp_path)
    result = run_cli(["convert", "-i", model, "-o", tmp_path / "c.onnx", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "y [1, 20] -> [20, 1, 12]" in result.stdout
    (output,) = onnx.load(str(tmp_path / "c.onnx")).graph.output
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [20, 1, 12]


def test_inspect_lints_declarations_the_graph_contradicts_and_convert_clears_them(tmp_path: Path) -> None:
    model, _ = _workspace(tmp_path)
    result = run_cli(["inspect", model, "--json"])
    assert result.exit_code == 0, result.stderr
    found = {f["where"]: f for f in json.loads(result.stdout)["findings"] if f["lint"] == "declared-shape"}
    assert set(found) == {"tensor 'y'", "tensor 'h'", "tensor 'r'"}
    assert "declared [1, 20] but the graph computes [20, 1, 12]" in found["tensor 'y'"]["why"]
    assert run_cli(["convert", "-i", model, "-o", tmp_path / "c.onnx"]).exit_code == 0
    result = run_cli(["inspect", tmp_path / "c.onnx", "--json"])
    assert not [f for f in json.loads(result.stdout)["findings"] if f["lint"] == "declared-shape"]


def test_shapes_inferred_from_a_wrong_output_declaration_are_corrected_with_it() -> None:
    """LORE's table-structure model (lineless_table_rec 0.0.3) reads N cells [1, N, 256]; its output logic_axis,
    which later layers read too, is declared at the traced N = 54. With --input_dim N = 12 convert's shape
    inference passed the 54 on to the layers after it (value_info), corrected_outputs set the output alone, and
    onnxruntime refused the model ('Concat_354: Can't merge shape info ... Inferred=12 Declared=54', exit 3)."""
    w = np.random.default_rng(0).normal(0, 1, (4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["axis"]), helper.make_node("Relu", ["axis"], ["r"]),
         helper.make_node("Concat", ["r", "x"], ["y"], axis=2)],
        "traced",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, 4])],
        [helper.make_tensor_value_info("axis", TensorProto.FLOAT, [1, 54, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 8])],
        [numpy_helper.from_array(w, "w")],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 54, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert corrected_outputs(model) == {"axis": ([1, 54, 4], [1, 12, 4])}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*model.graph.value_info, *model.graph.output]}
    assert shapes == {"r": [1, 12, 4], "axis": [1, 12, 4], "y": [1, 12, 8]}

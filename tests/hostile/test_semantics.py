"""Trusted metadata and semantic gaps: marks bound to their graph, overrides applied or warned about.

Issue 19, class 5, and class 6's package data.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from hostile_env import Workspace, assert_refused, make_workspace

from qtool import config
from qtool.graph import model as gm


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _overrides(ws: Workspace, activations: dict) -> Path:
    path = ws.root / "ov.json"
    path.write_text(json.dumps({"activation_encodings": activations, "param_encodings": {}}))
    return path


def test_a_forged_converted_mark_does_not_skip_the_checks(ws: Workspace) -> None:
    model = onnx.load(str(ws.model))
    del model.graph.output[:]
    gm.set_metadata(model, gm.METADATA_CONVERTED, "1")
    onnx.save(model, str(ws.model))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 3, "no outputs")


def test_a_mark_from_another_graph_does_not_skip_normalisation(ws: Workspace) -> None:
    """The tiny model has a BatchNorm and a dynamic batch: a stale mark must not keep them."""
    model = onnx.load(str(ws.model))
    gm.set_metadata(model, gm.METADATA_CONVERTED, "0" * 64)
    onnx.save(model, str(ws.model))
    assert ws.quantize("-o", ws.out, "--evaluate_samples", "2").exit_code == 0
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(ws.out)).graph.node}


def test_converts_mark_holds_for_its_own_graph(ws: Workspace) -> None:
    converted = ws.root / "c.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted).exit_code == 0
    assert gm.is_converted(onnx.load(str(converted)))


@pytest.mark.parametrize("bitwidth", [32, 16])
def test_a_float_override_on_a_graph_input_writes_a_valid_model(ws: Workspace, bitwidth: int) -> None:
    overrides = _overrides(ws, {"x": [{"bitwidth": bitwidth, "dtype": "float"}]})
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert result.exit_code == 0, result.stderr
    ort.InferenceSession(str(ws.out), providers=["CPUExecutionProvider"])


def test_an_override_on_a_squashed_tensor_moves_to_the_relu(ws: Workspace) -> None:
    converted = ws.root / "c.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted).exit_code == 0
    model = onnx.load(str(converted))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    overrides = _overrides(ws, {relu.input[0]: [{"bitwidth": 16, "dtype": "int", "is_symmetric": "False"}]})
    result = ws.run("quantize", "-i", converted, "--input_list", ws.listing, "-o", ws.out,
                    "--quantization_overrides", overrides, "-v")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"applies to {relu.output[0]!r}" in result.stderr
    written = json.loads(ws.out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert written[relu.output[0]][0]["bitwidth"] == 16


def test_an_empty_range_override_is_warned_about(ws: Workspace) -> None:
    overrides = _overrides(ws, {"x": [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0, "max": 0}]})
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert result.exit_code == 0
    assert "override for 'x' has an empty range" in result.stderr


def test_algorithms_without_calibration_data_say_so(ws: Workspace) -> None:
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--apply_algorithms", "adaround", "--enable_float_fallback")
    assert_refused(ws, before, result, 2, "adaround needs --input_list")


def test_the_presets_are_package_data() -> None:
    """`pip install .` (not editable) must carry them: they live inside the package."""
    import qtool

    folder = config.configs_dir()
    assert folder == Path(qtool.__file__).parent / "configs"
    assert {"qnn-htp", "tidl", "vitis-dpu", "ort-cpu"} <= set(config.presets())
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'qtool = ["configs/*.yaml"]' in pyproject


def test_a_range_qtool_wrote_for_an_all_zero_tensor_is_not_warned_about_when_read_back(tmp_path: Path) -> None:
    """A tensor that held one value in calibration gets QNN's widened range; converted back from the QDQ model
    that range holds every value the tensor takes, so a second quantization has nothing to warn of."""
    from conftest import run_cli, save_model, write_samples
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sub", ["x", "x"], ["zero"]), helper.make_node("Add", ["zero", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save_model(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, model, 4)
    first = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx"])
    assert first.exit_code == 0, first.stderr
    written = json.loads((tmp_path / "q.encodings.json").read_text())["activation_encodings"]
    assert written["zero"][0]["max"] - written["zero"][0]["min"] <= 1.001e-4  # the widened empty range
    assert run_cli(["convert", "-i", tmp_path / "q.onnx", "-o", tmp_path / "back.onnx"]).exit_code == 0
    again = run_cli(["quantize", "-i", tmp_path / "back.onnx", "--input_list", listing, "-o", tmp_path / "q2.onnx"])
    assert again.exit_code == 0, again.stderr
    assert "empty range" not in again.stderr, again.stderr


def _integer_tensors_model() -> onnx.ModelProto:
    """x -> Conv -> Reshape(shape) -> Gather(idx) -> y: `shape` and `idx` are int64 constants."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((2, 3, 3, 3), 0.1, np.float32), "W"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
             numpy_helper.from_array(np.array([0, 5, 7], np.int64), "idx")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Reshape", ["c", "shape"], ["flat"]),
             helper.make_node("Gather", ["flat", "idx"], ["y"], axis=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("command", ["convert", "quantize"])
@pytest.mark.parametrize("name", ["idx", "shape"])
def test_an_override_of_an_integer_tensor_is_refused_not_dropped(tmp_path: Path, command: str, name: str) -> None:
    """A Gather's indices or a Reshape's shape take no grid: their overrides were accepted (exit 0) and dropped
    without a word, neither carried by convert nor in quantize's encodings (hostile input, round 9)."""
    from conftest import save_model, write_samples

    ws = Workspace(tmp_path)
    save_model(_integer_tensors_model(), ws.model)
    write_samples(tmp_path, _integer_tensors_model(), 2)
    overrides = _overrides(ws, {name: [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0, "max": 9}]})
    before = ws.snapshot()
    extra = ["--input_list", ws.listing] if command == "quantize" else []
    result = ws.run(command, "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides, *extra)
    assert_refused(ws, before, result, 4, "ov.json", f"'{name}', which is int64")


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_32_bit_override_on_a_weight_is_refused(tmp_path: Path, command: str) -> None:
    """A MatMul weight given 32 bits was written (exit 0) as an int32 DequantizeLinear that onnxruntime fuses into a
    QLinearMatMul and then refuses to load ('tensor(int32)' ... is invalid); weights take 4, 8 or 16 bits."""
    import numpy as np
    from conftest import save_model, write_samples
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.full((8, 4), 0.25, np.float32), "W")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ws = Workspace(tmp_path)
    save_model(model, ws.model)
    write_samples(tmp_path, model, 2)
    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {
        "W": [{"bitwidth": 32, "dtype": "int", "is_symmetric": "True", "min": -1, "max": 1}]}}))  # fmt: skip
    before = ws.snapshot()
    extra = ["--input_list", ws.listing] if command == "quantize" else []
    result = ws.run(command, "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides, *extra)
    assert_refused(ws, before, result, 4, "'W'", "32-bit integer encoding on a weight")

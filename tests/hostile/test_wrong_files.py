"""Files given where another kind goes, pairs that do not match, versions and fields qtool cannot read, and flags
that contradict each other (helper-36's second round): one error line, the documented exit code, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.parametrize("command", ["export", "inspect", "convert", "quantize"])
def test_a_folder_given_as_the_model_is_a_data_error_as_the_readme_says(ws: Workspace, command: str) -> None:
    folder = ws.root / "models"
    folder.mkdir()
    before = ws.snapshot()
    args = {"export": ["export", "-i", folder, "-o", ws.root / "x"], "inspect": ["inspect", folder],
            "convert": ["convert", "-i", folder, "-o", ws.root / "c.onnx"],
            "quantize": ["quantize", "-i", folder, "--input_list", ws.listing, "-o", ws.out]}[command]  # fmt: skip
    assert_refused(ws, before, ws.run(*args), 4, "models", "folder")


def test_an_encodings_file_given_as_the_model_is_one_line_that_says_where_it_goes(ws: Workspace) -> None:
    assert ws.quantize("-o", ws.out).exit_code == 0
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.run("inspect", ws.out.with_suffix(".encodings.json")), 3, "not an ONNX model")
    assert "--quantization_overrides" in line


def test_a_reference_with_other_inputs_is_named_as_not_the_float_model(ws: Workspace) -> None:
    assert ws.quantize("-o", ws.out).exit_code == 0
    other = onnx.load(str(ws.model))
    other.graph.input[0].name = "renamed"
    for node in other.graph.node:
        node.input[:] = ["renamed" if i == ws_input(ws) else i for i in node.input]
    onnx.save(other, str(ws.root / "other.onnx"))
    before = ws.snapshot()
    result = ws.run("inspect", ws.out, "--reference", ws.root / "other.onnx", "--input_list", ws.listing)
    assert_refused(ws, before, result, 2, "other.onnx", "not MODEL's float model")


def ws_input(ws: Workspace) -> str:
    return onnx.load(str(ws.model)).graph.input[0].name


def test_16_bit_tensors_with_float_activations_is_a_usage_error(ws: Workspace) -> None:
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "--act_16bit_tensors", ws_input(ws))
    assert_refused(ws, before, result, 2, "--act_16bit_tensors", "--act_bitwidth 32")


@pytest.mark.parametrize("version", ["9.9.9", "3.0", 2])
def test_an_encodings_version_qtool_does_not_read_is_refused(ws: Workspace, version: object) -> None:
    path = ws.root / "enc.json"
    path.write_text(json.dumps({"version": version, "encodings": []}))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--quantization_overrides", path), 4, "enc.json", "version")


@pytest.mark.parametrize("length", ["-5", "1000000000000"])
def test_an_external_data_length_that_is_not_the_tensors_names_the_field(ws: Workspace, length: str) -> None:
    model = onnx.load(str(ws.model))
    onnx.save(model, str(ws.model), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(str(ws.model), load_external_data=False)
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == "length")
    entry.value = length
    onnx.save(model, str(ws.model))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 3, "model.onnx", f"length {length}")


def test_a_bad_key_in_a_section_of_an_algorithm_not_asked_for_is_still_refused(ws: Workspace) -> None:
    """A typo in the adaround section of a shared --config waited, silent, for the run that asked for adaround."""
    config = ws.root / "c.yaml"
    config.write_text("adaround:\n  num_iterations: -5\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "num_iterations", "adaround")

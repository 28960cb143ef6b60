"""User files that were accepted silently or echoed whole: overrides checked against the graph (axes,
symmetry flags, duplicates, per-channel counts at convert), stats numbers, input_list output directives,
a long list's memory, and error lines that repeat user text of any length.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace

from qtool.api.common import check_output_names, read_labels
from qtool.errors import DataError
from qtool.io.encodings import parse_encodings
from qtool.io.input_list import parse_input_list

MAX_ERROR_LINE = 1000  # characters: any error line stays readable whatever the user's text


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _write(ws: Workspace, doc: dict, name: str = "ov.json") -> Path:
    path = ws.root / name
    path.write_text(json.dumps(doc))
    return path


def _v2_weight(axis: int, channels: int = 4) -> dict:
    """A 2.0.0 per-channel override of the tiny model's Conv weight W [4, 3, 3, 3] (channel axis 0)."""
    return {"version": "2.0.0", "encodings": [{"name": "W", "output_dtype": "int8", "y_scale": [0.1] * channels,
                                               "axis": axis}]}  # fmt: skip


# --- 1a: a stated per-channel axis is range-checked and must be the one the plan quantizes along -------


@pytest.mark.parametrize(("axis", "words"), [(99, "out of range"), (-7, "out of range"), (2, "along axis 0")])
def test_a_per_channel_axis_the_plan_cannot_honour_is_refused(ws: Workspace, axis: int, words: str) -> None:
    overrides = _write(ws, _v2_weight(axis))
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("-o", ws.out, "--quantization_overrides", overrides), 4, words, "'W'")
    assert f"'axis' {axis}" in line


@pytest.mark.parametrize("axis", [0, -4])
def test_the_weights_channel_axis_is_accepted_however_written(ws: Workspace, axis: int) -> None:
    result = ws.quantize("-o", ws.out, "--quantization_overrides", _write(ws, _v2_weight(axis)))
    assert result.exit_code == 0, result.stderr


def test_convert_refuses_a_stated_axis_too(ws: Workspace) -> None:
    overrides = _write(ws, _v2_weight(3))
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", ws.out, "-q", overrides), 4, "along axis 0")


# --- 1b: is_symmetric / is_sym take only the spellings AIMET writes -----------------------------------


def _legacy(is_symmetric: object) -> dict:
    entry = {"bitwidth": 8, "dtype": "int", "min": -1.0, "max": 1.0, "is_symmetric": is_symmetric}
    return {"activation_encodings": {"x": [entry]}, "param_encodings": {}}


def _v1(is_sym: object) -> dict:
    entry = {"name": "x", "dtype": "INT", "bw": 8, "scale": [0.01], "offset": [-128], "is_sym": is_sym}
    return {"version": "1.0.0", "activation_encodings": [entry], "param_encodings": []}


@pytest.mark.parametrize("value", ["maybe", None, "yes", 1, 0, "TRUE", [True]])
@pytest.mark.parametrize("document", [_legacy, _v1])
def test_a_symmetry_flag_aimet_never_writes_is_refused(document, value: object) -> None:
    with pytest.raises(DataError, match="must be true or false") as info:
        parse_encodings(document(value), "ov.json")
    assert "'x'" in str(info.value)


@pytest.mark.parametrize(("value", "symmetric"), [(True, True), (False, False), ("True", True), ("false", False)])
@pytest.mark.parametrize("document", [_legacy, _v1])
def test_aimets_symmetry_spellings_are_read(document, value: object, symmetric: bool) -> None:
    assert parse_encodings(document(value), "ov.json").activations["x"].is_symmetric is symmetric


def test_an_absent_symmetry_flag_means_asymmetric() -> None:
    doc = _legacy(False)
    del doc["activation_encodings"]["x"][0]["is_symmetric"]
    assert parse_encodings(doc, "ov.json").activations["x"].is_symmetric is False


def test_a_bad_symmetry_flag_fails_the_command(ws: Workspace) -> None:
    overrides = _write(ws, _legacy("maybe"))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--quantization_overrides", overrides), 4, "is_symmetric")


# --- 1c: a tensor named twice ------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["activation_encodings", "param_encodings"])
def test_a_tensor_listed_twice_in_a_1_0_0_list_is_refused(section: str) -> None:
    entry = _v1(True)["activation_encodings"][0]
    doc = {"version": "1.0.0", "activation_encodings": [], "param_encodings": []}
    doc[section] = [entry, {**entry, "scale": [0.5]}]
    with pytest.raises(DataError, match="tensor 'x' is listed twice") as info:
        parse_encodings(doc, "ov.json")
    assert str(info.value).startswith(f"ov.json: {section}[1]: ")


@pytest.mark.parametrize("layout", ["encodings", "param_encodings"])
def test_a_tensor_listed_twice_in_a_2_0_0_list_is_refused(layout: str) -> None:
    entry = {"name": "x", "output_dtype": "int8", "y_scale": 0.01}
    doc = {"version": "2.0.0", layout: [entry, {**entry, "y_scale": 0.5}]}
    if layout != "encodings":
        doc["activation_encodings"] = []
    with pytest.raises(DataError, match="tensor 'x' is listed twice"):
        parse_encodings(doc, "ov.json")


@pytest.mark.parametrize("version", ["0.6.1", "1.0.0", "2.0.0"])
def test_a_tensor_in_both_sections_is_refused(version: str) -> None:
    """Round 9: the param section's entry won over the activation section's, silently (exit 0)."""
    legacy = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0, "max": 1}]
    entry = {"1.0.0": _v1(True)["activation_encodings"][0], "2.0.0": {"name": "x", "output_dtype": "uint8", "y_scale": 0.01}}
    body = {"x": legacy} if version == "0.6.1" else [entry[version]]
    doc = {"version": version, "activation_encodings": body, "param_encodings": json.loads(json.dumps(body))}
    with pytest.raises(DataError, match="tensor 'x' is in both activation_encodings and param_encodings"):
        parse_encodings(doc, "ov.json")


# --- 1d: convert checks per-channel counts as quantize does --------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_convert_refuses_a_per_channel_count_the_weight_does_not_have(ws: Workspace, version: str) -> None:
    if version == "2.0.0":
        doc = _v2_weight(0, channels=3)
    else:
        entry = {"name": "W", "dtype": "INT", "bw": 8, "is_sym": True, "enc_type": "PER_CHANNEL",
                 "scale": [0.1] * 3, "offset": [-128] * 3}  # fmt: skip
        doc = {"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}
    overrides = _write(ws, doc)
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "-q", overrides)
    assert_refused(ws, before, result, 4, "3 per-channel encodings", "4 channels")


def test_convert_still_carries_a_matching_per_channel_override(ws: Workspace) -> None:
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "-q", _write(ws, _v2_weight(0)))
    assert result.exit_code == 0, result.stderr
    assert "overrides carried   1" in result.stdout


# --- 1e: saved stats hold JSON numbers -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "inf", "1e3"])
def test_a_stats_range_given_as_a_string_is_refused(ws: Workspace, value: str) -> None:
    stats = ws.root / "s.stats"
    assert ws.quantize("-o", ws.out, "--save_stats", stats).exit_code == 0
    doc = json.loads(stats.read_text())
    tensor = sorted(doc["tensors"])[0]
    doc["tensors"][tensor]["hi"] = value
    stats.write_text(json.dumps(doc))
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--load_stats", stats, "-o", ws.root / "again.onnx")
    assert_refused(ws, before, result, 4, "'lo' and 'hi' must be numbers")


# --- 2: output directives name something in the model ---------------------------------------------------


def _listed_model(ws: Workspace) -> onnx.ModelProto:
    model = onnx.load(str(ws.model))
    model.graph.node[0].name = "conv"
    return model


@pytest.mark.parametrize(
    ("directives", "words"),
    [("#nonexistent_layer", "layer (node) 'nonexistent_layer'"), ("%nonexistent_tensor", "tensor 'nonexistent_tensor'"),
     ("#conv\n%y nope", "tensor 'nope'"), ("#c", "layer (node) 'c'")],
)  # fmt: skip
def test_an_output_directive_naming_nothing_in_the_model_is_refused(ws: Workspace, directives: str, words: str) -> None:
    listing = parse_input_list(f"{directives}\n/data/a.raw\n", Path("/lists/l.txt"))
    with pytest.raises(DataError, match="which the model does not have") as info:
        check_output_names(listing, _listed_model(ws))
    assert words in str(info.value)
    assert str(info.value).startswith(f"/lists/l.txt:{directives.count(chr(10)) + 1}: ")


def test_a_comment_line_read_as_an_output_directive_says_so(ws: Workspace) -> None:
    """Round 9: '# calibration set' was refused as naming layer 'calibration', nothing saying '#' is no comment."""
    listing = parse_input_list("# calibration set\n/data/a.raw\n", Path("/lists/l.txt"))
    with pytest.raises(DataError, match="'#' lines ask for outputs: they are not comments"):
        check_output_names(listing, _listed_model(ws))
    near = parse_input_list("# cone layers\n/data/a.raw\n", Path("/lists/l.txt"))  # 'cone' is close to 'conv'
    with pytest.raises(DataError, match=r"did you mean 'conv'.*; '#' lines ask for outputs: they are not comments"):
        check_output_names(near, _listed_model(ws))


def test_output_directives_naming_a_node_and_tensors_are_accepted(ws: Workspace) -> None:
    listing = parse_input_list("#conv\n%c y x W\n/data/a.raw\n", Path("/lists/l.txt"))
    check_output_names(listing, _listed_model(ws))


def test_quantize_refuses_an_output_directive_naming_nothing(ws: Workspace) -> None:
    ws.listing.write_text("#nonexistent_layer\n" + ws.listing.read_text())
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "nonexistent_layer")


# --- 3: a long list is held in little memory -----------------------------------------------------------


def test_a_long_input_list_keeps_little_memory_per_sample(tmp_path: Path) -> None:
    """3 million lines of a few files must not take gigabytes: a Path and a "list:7" string per line did
    (600 bytes a line, 2 GB); kept as shared path strings and line numbers it is about 12."""
    count = 200_000
    text = "".join(f"calib/calib_{i % 64:03d}.raw\n" for i in range(count))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        parsed = parse_input_list(text, tmp_path / "list.txt")
        kept = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert len(parsed.samples) == count and len(parsed.files()) == 64
    assert kept / count < 40, f"{kept / count:.0f} bytes a sample"
    assert parsed.samples[70].where == f"{tmp_path / 'list.txt'}:71"
    assert parsed.samples[70].positional == (tmp_path / "calib" / "calib_006.raw",)


# --- 4: error lines quote user text cut short ----------------------------------------------------------


def _one_short_line(ws: Workspace, result, code: int) -> str:
    line = assert_refused(ws, ws.snapshot(), result, code)
    assert len(line) < MAX_ERROR_LINE, f"{len(line)} characters"
    return line


def test_a_10mb_input_list_line_gives_a_short_error(ws: Workspace) -> None:
    ws.listing.write_text("calib/" + "a" * 10_000_000 + ".raw\n")
    line = _one_short_line(ws, ws.quantize("-o", ws.out), 4)
    assert "aaa..." in line


def test_a_10mb_malformed_named_entry_gives_a_short_error(ws: Workspace) -> None:
    ws.listing.write_text(":=" + "b" * 10_000_000 + "\n")
    _one_short_line(ws, ws.quantize("-o", ws.out), 4)


def test_a_10mb_label_gives_a_short_error(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("x" * 10_000_000 + "\n")
    with pytest.raises(DataError) as info:
        read_labels(labels)
    assert len(str(info.value)) < MAX_ERROR_LINE


@pytest.mark.parametrize(
    "doc",
    [
        {"activation_encodings": {"n" * 100_000: [{"bitwidth": 8, "dtype": "int"}]}, "param_encodings": {}},
        {"activation_encodings": {"n" * 100_000: [{"bitwidth": 3}]}, "param_encodings": {}},
        {"version": "2.0.0", "encodings": [{"name": "n" * 100_000, "output_dtype": "int7"}]},
        {"version": "1.0.0", "activation_encodings": [{"name": "n" * 100_000, "bw": 8, "is_sym": "yes"}],
         "param_encodings": []},
    ],
    ids=["unknown-name", "0.6.1-bad-bitwidth", "2.0.0-bad-dtype", "1.0.0-bad-flag"],
)  # fmt: skip
def test_a_100kb_tensor_name_gives_a_short_error(ws: Workspace, doc: dict) -> None:
    overrides = _write(ws, doc)
    _one_short_line(ws, ws.quantize("-o", ws.out, "--quantization_overrides", overrides), 4)

"""Flag and config values a careless user writes: each one line and exit 2, none silently taken otherwise.

Hostile round three. Each case failed before its fix: a config's `quiet: 2` or
`use_per_channel_quantization: 1` was an internal error (click's bool type calls .strip() on an int);
`cle: []` said "unknown key 'cle'"; `--op_types_to_quantize conv` quantized nothing with a warning that
blamed the model; `--input_dim` took '1_0', '+1' and Arabic-Indic digits (int() does) and a second
--input_dim/--input_value for one input silently replaced the first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.parametrize("text", ["quiet: 2\n", "as_json: 0\n", "use_per_channel_quantization: 1\n",
                                  "external_data: 1.5\n"])  # fmt: skip
def test_a_flag_set_to_a_number_in_a_config_is_a_usage_error(ws: Workspace, text: str) -> None:
    config = ws.root / "c.yaml"
    config.write_text(text)
    before = ws.snapshot()
    key = text.split(":")[0]
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", f"{key} must be true or false")


def test_a_flag_set_to_true_or_a_word_in_a_config_is_read(ws: Workspace) -> None:
    config = ws.root / "c.yaml"
    config.write_text("use_per_channel_quantization: true\nquiet: 'yes'\n")
    assert ws.quantize("-o", ws.out, "--config", config).exit_code == 0


@pytest.mark.parametrize("value", ["[]", "null", "3"])
def test_an_algorithm_section_that_is_not_a_mapping_says_so(ws: Workspace, value: str) -> None:
    config = ws.root / "c.yaml"
    config.write_text(f"cle: {value}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "'cle' must be a mapping of cle's settings")


@pytest.mark.parametrize(("name", "hint"), [("conv", "did you mean 'Conv'"), ("Foo", "not an ONNX op type"), ("", "''")])
def test_an_op_type_onnx_does_not_have_is_refused(ws: Workspace, name: str, hint: str) -> None:
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--op_types_to_quantize", "Conv", "--op_types_to_quantize", name)
    assert_refused(ws, before, result, 2, "--op_types_to_quantize", hint)


def test_known_op_types_are_checked_without_listing_every_schema(ws: Workspace, monkeypatch) -> None:
    """Each schema's Python object was built to check the names, given or not: 4 MB the heap kept, of a small
    model's ~95 MB peak. Asked by name; the list is built only to suggest the op meant."""
    import onnx.defs

    monkeypatch.setattr(onnx.defs, "get_all_schemas_with_history", lambda: pytest.fail("every schema listed"))
    assert ws.quantize("-o", ws.out).exit_code == 0
    assert ws.quantize("-o", ws.out, "--op_types_to_quantize", "Conv", "--op_types_to_quantize", "Relu").exit_code == 0


def test_the_ort_cpu_presets_op_types_are_all_onnx_ops(ws: Workspace) -> None:
    assert ws.quantize("-o", ws.out, "--target", "ort-cpu").exit_code == 0


@pytest.mark.parametrize("dims", ["1_0,3,8,8", "+1,3,8,8", "\u0661,3,8,8", " 1,3,8,8"])
def test_input_dims_are_ascii_digits(ws: Workspace, dims: str) -> None:
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--input_dim", "x", dims)
    assert_refused(ws, before, result, 2, "DIMS must be integers")


@pytest.mark.parametrize(("flag", "first", "second"), [("--input_dim", "1,3,8,8", "2,3,8,8"), ("--input_value", "1", "2")])
def test_an_input_given_twice_is_refused_not_silently_the_last(ws: Workspace, flag: str, first: str, second: str) -> None:
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, flag, "x", first, flag, "x", second)
    assert_refused(ws, before, result, 2, flag, "given twice")

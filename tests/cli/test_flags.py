"""Flags as a newcomer types them: the README's own spellings, qairt's, a misspelt one, and --help's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import conv_bn_model, run_cli, save_model, write_samples


@pytest.fixture
def quantized(tmp_path: Path) -> tuple[Path, Path]:
    model = conv_bn_model()
    source = save_model(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, model, 4)
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", source, "--input_list", listing, "-o", out, "-s", "x", "1,3,8,8"])
    assert result.exit_code == 0, result.output
    return source, out


def test_quantize_takes_q_and_s_as_convert_does(quantized: tuple[Path, Path], tmp_path: Path) -> None:
    # the README's `--enable_float_fallback -q enc.json --float_bitwidth 16` was "No such option '-q'"
    source, out = quantized
    args = ["quantize", "-i", source, "--enable_float_fallback", "-q", out.with_suffix(".encodings.json")]
    result = run_cli([*args, "--float_bitwidth", "16", "-o", tmp_path / "again.onnx"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again.onnx").is_file()


@pytest.mark.parametrize(
    ("command", "flag", "says"),
    [
        ("quantize", "--keep_weights_quantized", "--act_bitwidth 32"),  # click guessed --act_quantizer
        ("quantize", "--dump_encoding_json", "always writes <output>.encodings.json"),
        ("quantize", "--restrict_quantization_steps", "qairt flag qtool has no counterpart"),
        ("quantize", "--export_format", "a flag of qtool convert"),
        ("convert", "--input_list", "a flag of qtool inspect and quantize"),
        ("quantize", "--apply_algorithm", "'--apply_algorithms'"),
    ],
)
def test_an_unknown_flag_says_what_qtool_has(command: str, flag: str, says: str, tmp_path: Path) -> None:
    source = save_model(conv_bn_model(), tmp_path / "m.onnx")
    result = run_cli([command, "-i", source, flag, "-o", tmp_path / "out.onnx"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qtool: error: No such option '{flag}'.") and says in line, line
    assert "--algorithm_config" not in line  # a hidden option is no guess to offer


def test_help_shows_no_range_for_unbounded_numbers() -> None:
    # --target_sqnr and --min_sqnr read `[x<=None]`
    result = run_cli(["quantize", "--help"])
    assert result.exit_code == 0
    assert "None]" not in result.output and "actsearch, mean_correction, bc (run in that order)" in " ".join(result.output.split())


def test_an_override_off_the_power_of_2_grid_is_warned_of(tmp_path: Path) -> None:
    # the demo's samples/overrides.json (an input in [0, 1], scale 1/255) under --target vitis-dpu: kept silently,
    # and export --format fixpoint then refused the model
    model = conv_bn_model()
    source = save_model(model, tmp_path / "m.onnx")
    overrides = tmp_path / "o.json"
    entry = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0.0, "max": 1.0}
    overrides.write_text(json.dumps({"activation_encodings": {"x": [entry]}, "param_encodings": {}}))
    args = ["quantize", "-i", source, "-l", write_samples(tmp_path, model, 4), "-q", overrides, "-s", "x", "1,3,8,8"]
    result = run_cli([*args, "--target", "vitis-dpu", "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.output
    assert ("'x' keeps its override's scale 0.00392157, not a power of 2: export --format fixpoint refuses it (drop the "
            "entry, or --ignore_quantization_overrides)") in result.stderr  # the way out, not only the fact
    export = ["export", "--format", "fixpoint", "-o", tmp_path / "out"]
    refused = run_cli([*export, "-i", tmp_path / "q.onnx"])
    assert refused.exit_code == 2 and "drop its entry, or quantize with --ignore_quantization_overrides" in refused.stderr
    result = run_cli([*args, "--target", "vitis-dpu", "--ignore_quantization_overrides", "-o", tmp_path / "q2.onnx"])
    assert result.exit_code == 0 and run_cli([*export, "-i", tmp_path / "q2.onnx"]).exit_code == 0, result.output


def test_every_default_in_help_reads_default_and_no_preset_folder_a_wheel_lacks() -> None:
    """--help said '[99.99]', '[32]' beside click's '[default: 8]', '[default: (off)]' (a string show_default, which click
    parenthesises), and '--target: Target preset from configs/', a folder an installed wheel does not have."""
    from qtool.cli import main

    for name, command in main.commands.items():
        text = run_cli([name, "--help"]).output
        assert "[default: (" not in text and "from configs/" not in text, name
        assert "FINITE FLOAT" not in text, name  # click's type name as a metavar: '--max_cosine_drop FINITE FLOAT'
        for option in (p for p in command.params if p.help):
            bracket = option.help.rstrip(".").rpartition("[")[2]
            assert option.help.rstrip(".")[-1:] != "]" or bracket.startswith(("default:", "preset:")), option.help


def test_qtool_help_lists_each_command_whole_in_80_columns() -> None:
    """'qtool --help' cut every command's line ('convert   Validate and normalise a float model: opset >= 13, batch
    1,...') at any width: click shortens a docstring's first sentence to the width left beside the names."""
    from qtool.cli import main

    width = 80 - 2 - 6 - max(map(len, main.commands))  # click's format_commands: the formatter's width is 80 - 2
    cut = {name: c.get_short_help_str(width) for name, c in main.commands.items() if c.get_short_help_str(width).endswith("...")}
    assert not cut, cut


def test_every_option_with_a_default_value_shows_it() -> None:
    """--num_threads (0) and convert's --export_format ('default') took a value unasked and --help did not say it."""
    import click

    from qtool.cli import main

    for name, command in main.commands.items():
        for option in (p for p in command.params if isinstance(p, click.Option) and not (p.is_flag or p.count)):
            if option.default is not None and option.default != () and "UNSET" not in repr(option.default):
                assert option.show_default or "default" in (option.help or "").lower(), (name, option.opts)


@pytest.mark.parametrize(("bits", "key", "value", "said"), [(4, "param_quantizer_calibration", "mse", "mse at 4 bits"),
                                                            (16, "param_quantizer_schema", "symmetric", "symmetric at 16 bits")])  # fmt: skip
def test_help_names_the_weight_defaults_a_bitwidth_changes(bits: int, key: str, value: str, said: str) -> None:
    """--help said 'Weight range method [default: min-max]' while 4-bit weights default to mse (the README says so)."""
    from qtool.config import QuantizeOptions

    assert getattr(QuantizeOptions.from_params({"input_network": "m.onnx", "weights_bitwidth": bits}), key) == value
    assert said in " ".join(run_cli(["quantize", "--help"]).output.split())

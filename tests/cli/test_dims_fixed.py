"""convert says which dynamic dims it fixed on its own: a model with a dynamic batch came out with batch 1 and the
report said only 'inputs x float32[1,3,8,8]', where inspect's dynamic-shape lint says 'qtool convert fixes a dynamic
batch to 1'."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import conv_bn_model, run_cli, save_model


def test_convert_names_the_dynamic_batch_it_fixed(tmp_path: Path) -> None:
    source = save_model(conv_bn_model(), tmp_path / "m.onnx")  # x[N,3,8,8]
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "c.onnx", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dynamic dims fixed"] == "x dim 0 'N' -> 1"


def test_dims_an_input_dim_gives_are_not_said_again(tmp_path: Path) -> None:
    source = save_model(conv_bn_model(), tmp_path / "m.onnx")
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "c.onnx", "--json", "--input_dim", "x", "2,3,8,8"])
    assert result.exit_code == 0, result.output
    assert "dynamic dims fixed" not in json.loads(result.stdout)

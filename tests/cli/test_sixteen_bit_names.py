"""The 16-bit flags' names are checked where quantize starts (quant/overrides.check_sixteen_bit_names): refused after
calibration, a mistyped name cost the whole pass (u2netp at 320x320, 32 samples: 357 s for
'--params_16bit_tensors 2258', its Conv's weight, where the layer's output '2257' goes)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hostile_env import assert_refused, make_workspace

api = importlib.import_module("qtool.api.quantize")  # the module: qtool.api names its function so too


@pytest.mark.parametrize(
    ("flag", "name", "wanted"),
    [
        ("--params_16bit_tensors", "FW", "a weight, where a layer's output tensor goes"),
        ("--act_16bit_tensors", "FW", "a weight, not an activation"),
        ("--act_16bit_tensors", "rr", "not a tensor of the graph"),
        ("--params_16bit_tensors", "f", "whose producer has no weights"),
    ],
)
def test_a_16bit_name_is_refused_before_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, name: str, wanted: str
) -> None:
    def calibrate(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated before the 16-bit flags' names were checked")

    monkeypatch.setattr(api, "calibrate", calibrate)
    ws = make_workspace(tmp_path)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--act_quantizer_calibration", "min-max", flag, name)
    assert_refused(ws, before, result, 2, f"{flag} names {name!r}", wanted)


def test_good_16bit_names_still_quantize(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    result = ws.quantize("-o", ws.out, "--act_quantizer_calibration", "min-max", "--params_16bit_tensors", "y",
                         "--act_16bit_tensors", "r")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert ws.out.is_file()

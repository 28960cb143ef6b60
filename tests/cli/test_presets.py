"""Target presets: each preset's output satisfies its constraints; precedence CLI > config > preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qnn_models import qtool, three_conv_model, write_case

from qtool.encoding import fix_point
from qtool.io.encodings import read_encodings


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    return write_case(tmp_path / "case", three_conv_model())


def quantize(case: tuple[Path, Path], *flags: str):
    model, listing = case
    out = model.parent / "q.onnx"
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, *flags)
    assert code == 0, err
    return read_encodings(out.with_suffix(".encodings.json"))


def test_qnn_htp_is_asymmetric_u8_with_s8_per_channel_weights_and_int32_bias(case: tuple[Path, Path]) -> None:
    enc = quantize(case, "--target", "qnn-htp")
    assert all(not e.is_symmetric and e.bitwidth == 8 for e in enc.activations.values())
    weight, bias = enc.params["conv1_w_0"], enc.params["conv1_b_0"]
    assert weight.is_symmetric and len(weight.scale) == 4 and set(weight.offset) == {-128}
    assert bias.bitwidth == 32
    assert all(e.max[0] - e.min[0] >= 1e-4 for e in enc.activations.values())


def test_tidl_uses_symmetric_power_of_2_activations(case: tuple[Path, Path]) -> None:
    enc = quantize(case, "--target", "tidl")
    for name, e in enc.activations.items():
        assert e.is_symmetric and fix_point(e) is not None, name


def test_vitis_dpu_is_signed_int8_power_of_2_everywhere_with_per_tensor_weights(case: tuple[Path, Path]) -> None:
    enc = quantize(case, "--target", "vitis-dpu")
    for name, e in {**enc.activations, **{k: v for k, v in enc.params.items() if "_w_" in k}}.items():
        assert e.is_symmetric and e.bitwidth == 8 and fix_point(e) is not None, name
    assert all(len(enc.params[w].scale) == 1 for w in ("conv1_w_0", "conv2_w_0", "conv3_w_0"))


def test_ort_cpu_is_u8_activations_s8_per_channel_weights(case: tuple[Path, Path]) -> None:
    enc = quantize(case, "--target", "ort-cpu")
    assert all(not e.is_symmetric for e in enc.activations.values())
    weight = enc.params["conv2_w_0"]
    assert weight.is_symmetric and len(weight.scale) == 4 and weight.axis in (0, None)
    bias = enc.params["conv2_b_0"]
    expected = enc.activations["conv1_1"].scale[0] * np.asarray(weight.scale)
    np.testing.assert_allclose(bias.scale, expected, rtol=1e-6)


def test_cli_beats_config_beats_preset(case: tuple[Path, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("act_bitwidth: 16\nuse_per_channel_quantization: false\n")
    enc = quantize(case, "--target", "qnn-htp", "--config", config)
    assert enc.activations["data_0"].bitwidth == 16 and len(enc.params["conv1_w_0"].scale) == 1
    enc = quantize(case, "--config", config, "--target", "qnn-htp", "--act_bitwidth", "8")
    assert enc.activations["data_0"].bitwidth == 8


def test_unknown_preset_key_or_value_names_the_closest(case: tuple[Path, Path], tmp_path: Path) -> None:
    model, listing = case
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "--target", "qnn-hpt")
    assert code == 2 and "qnn-htp" in err
    config = tmp_path / "c.yaml"
    config.write_text("act_bitwith: 16\n")
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "--config", config)
    assert code == 2 and "act_bitwidth" in err
    config.write_text("act_quantizer_schema: asymetric\n")
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "--config", config)
    assert code == 2 and "asymmetric" in err


def test_a_flag_on_the_command_line_replaces_what_the_preset_set_with_it(case: tuple[Path, Path]) -> None:
    """'--target qnn-htp --act_quantizer enhanced' (a QNN script's legacy flag) was refused for mixing with
    --act_quantizer_schema, which only the preset named; '--target tidl --act_quantizer_calibration sqnr' for the
    preset's --percentile_calibration_value. Mixed on the command line itself they are still refused."""
    model, listing = case
    legacy = quantize(case, "--target", "qnn-htp", "--act_quantizer", "enhanced")
    assert legacy == quantize(case, "--target", "qnn-htp", "--act_quantizer_calibration", "sqnr")
    quantize(case, "--target", "tidl", "--act_quantizer_calibration", "sqnr")
    quantize(case, "--target", "tidl", "--act_quantizer", "tf")
    for flags in (["--act_quantizer", "tf", "--act_quantizer_schema", "symmetric"],
                  ["--percentile_calibration_value", "99", "--act_quantizer_calibration", "sqnr"]):  # fmt: skip
        code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", model.parent / "r.onnx", *flags)
        assert code == 2 and ("cannot be mixed" in err or "only allowed with percentile" in err), err

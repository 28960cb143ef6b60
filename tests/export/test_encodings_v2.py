"""AIMET encodings 2.0.0 (FORMATS.md b.2): golden entries, the offset sign, round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import conv_bn_model, run_cli
from export_models import quantize

from qtool import encoding as enc
from qtool.errors import DataError
from qtool.io import encodings as encio
from qtool.io.encodings import Encodings, parse_encodings, read_encodings, to_json
from qtool.quant.qdq_read import read_qdq

SEED = enc.tf(-1.8, 0.5, 8)  # the seed's worked example: scale 2.3/255, AIMET offset -200


def _doc(encodings: Encodings) -> dict:
    return json.loads(to_json(encodings, "2.0.0"))


def test_seed_example_is_uint8_with_zero_point_200() -> None:
    doc = _doc(Encodings({"input": SEED}))
    assert doc["version"] == "2.0.0" and doc["param_names"] == []
    (entry,) = doc["encodings"]
    assert entry["name"] == "input" and entry["output_dtype"] == "uint8" and entry["y_zero_point"] == 200
    assert entry["y_scale"] == pytest.approx(2.3 / 255)  # a scalar for per-tensor encodings
    assert SEED.offset == (-200,)  # y_zero_point = -offset on the unsigned grid


def test_symmetric_per_channel_weight_is_int8_without_zero_point() -> None:
    weight = enc.symmetric([-0.70666, -0.52692], [0.70112, 0.52281], 8, axis=0)
    (entry,) = _doc(Encodings(params={"conv.weight": weight}))["encodings"]
    assert entry["output_dtype"] == "int8" and entry["axis"] == 0 and "y_zero_point" not in entry
    assert entry["y_scale"] == pytest.approx([0.70666 / 127, 0.52692 / 127])


def test_bias_is_int32_and_16_bit_is_uint16() -> None:
    bias = enc.bias_int32(0.01, enc.symmetric(-1, 1, 8), np.array([0.5]))
    doc = _doc(Encodings({"a16": enc.tf(-1, 3, 16)}, {"b": bias}))
    dtypes = {e["name"]: e["output_dtype"] for e in doc["encodings"]}
    assert dtypes == {"a16": "uint16", "b": "int32"} and doc["param_names"] == ["b"]


def test_float_encodings_have_no_entry() -> None:
    doc = _doc(Encodings({"x": SEED, "h": enc.float_encoding(16)}, {"w": enc.float_encoding(32)}))
    assert [e["name"] for e in doc["encodings"]] == ["x"] and doc["param_names"] == []


def test_round_trip_gives_the_same_encodings() -> None:
    original = Encodings(
        {"input": SEED, "u": enc.unsigned_symmetric(0, 4, 8), "s16": enc.symmetric(-2, 2, 16), "req": enc.Encoding(16)},
        {
            "w": enc.symmetric([-1, -2, -3], [1, 2, 3], 8, axis=0),
            "w4": enc.tf(-0.3, 0.2, 4),
            "b": enc.bias_int32(0.02, enc.symmetric([-1, -2, -3], [1, 2, 3], 8, axis=0), np.ones(3)),
        },
    )
    back = parse_encodings(json.loads(to_json(original, "2.0.0")), "test")
    assert back == original


def test_round_trip_of_a_quantized_model(tmp_path) -> None:
    _, qdq = quantize(tmp_path, conv_bn_model(), use_per_channel_quantization=True, bias_bitwidth=32)
    _, found = read_qdq(onnx.load(str(qdq)))
    path = tmp_path / "enc.json"
    path.write_text(to_json(found, "2.0.0"))
    assert read_encodings(path) == found


def test_aimet_file_without_param_names() -> None:
    """aimet_onnx writes one `encodings` list; per-channel entries are weights, the rest activations."""
    data = {
        "version": "2.0.0",
        "encodings": [
            {"name": "input", "output_dtype": "uint8", "y_scale": 0.009019608, "y_zero_point": 200},
            {"name": "conv.weight", "output_dtype": "int8", "y_scale": [0.0055206, 0.0041166], "axis": 0},
        ],
    }
    found = parse_encodings(data, "aimet.json")
    assert list(found.activations) == ["input"] and list(found.params) == ["conv.weight"]
    assert found.activations["input"].offset == (-200,)
    assert found.params["conv.weight"].is_symmetric and found.params["conv.weight"].offset == (-128, -128)


def test_signed_asymmetric_entry_moves_to_the_unsigned_grid() -> None:
    e = parse_encodings(
        {"version": "2.0.0", "encodings": [{"name": "x", "output_dtype": "int8", "y_scale": 0.1, "y_zero_point": -28}]},
        "t",
    )
    x = e.activations["x"]
    assert not x.is_symmetric and x.offset == (-100,)  # -(zp + 128): the same real grid
    assert x.min[0] == pytest.approx(-10.0) and x.max[0] == pytest.approx(15.5)


def test_sectioned_layout_is_read_too() -> None:
    data = {
        "version": "2.0.0",
        "activation_encodings": [{"name": "x", "output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 3}],
        "param_encodings": [{"name": "w", "output_dtype": "int8", "y_scale": 0.5}],
    }
    found = parse_encodings(data, "t")
    assert list(found.activations) == ["x"] and list(found.params) == ["w"] and found.params["w"].is_symmetric


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "output_dtype": "int2", "y_scale": 0.1}, "output_dtype \"int2\" is not supported"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": -0.1}, "every y_scale must be positive"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": [[0.1]], "axis": 0}, "per-block"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": 0.1, "block_size": 32}, "per-block"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": [0.1, 0.2]}, "need an 'axis'"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 300}, "must lie in [0, 255]"),
        ({"name": "x", "output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 1.5}, "must be an integer"),
        (
            {"name": "x", "output_dtype": "int8", "y_scale": [0.1, 0.2], "y_zero_point": [0, 0, 0], "axis": 0},
            "3 zero points",
        ),
        ({"output_dtype": "uint8", "y_scale": 0.1}, "with a 'name'"),
    ],
)
def test_bad_entries_name_the_file_and_tensor(entry: dict, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(")) as caught:
        parse_encodings({"version": "2.0.0", "encodings": [entry]}, "o.json")
    assert str(caught.value).startswith("o.json: encodings[0]")


def test_duplicate_names_are_an_error() -> None:
    entry = {"name": "x", "output_dtype": "uint8", "y_scale": 0.1}
    with pytest.raises(DataError, match="listed twice"):
        parse_encodings({"version": "2.0.0", "encodings": [entry, entry]}, "o.json")


def test_formats_tuple_offers_2_0_0() -> None:
    assert encio.FORMATS == ("legacy", "1.0.0", "2.0.0")


def test_quantize_writes_2_0_0_and_takes_it_back_as_overrides(tmp_path) -> None:
    """quantize --encodings_format 2.0.0, then the stripped model plus that file rebuilds the model."""
    _, qdq = quantize(tmp_path, conv_bn_model(), encodings_format="2.0.0", bias_bitwidth=32)
    written = qdq.with_suffix(".encodings.json")
    assert json.loads(written.read_text())["version"] == "2.0.0"
    export = tmp_path / "export"
    assert run_cli(["export", "-i", qdq, "-o", export, "--format", "stripped"]).exit_code == 0
    again = tmp_path / "again.onnx"
    args = ["quantize", "-i", export / "model.quant.stripped.onnx", "-o", again, "-f"]
    result = run_cli([*args, "--quantization_overrides", written, "--encodings_format", "2.0.0"])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == qdq.read_bytes()


def test_convert_takes_2_0_0_overrides(tmp_path) -> None:
    source = tmp_path / "m.onnx"
    onnx.save(conv_bn_model(), str(source))
    overrides = tmp_path / "o.json"
    overrides.write_text(to_json(Encodings({"x": SEED}), "2.0.0"))
    result = run_cli(["convert", "-i", source, "-q", overrides, "-o", tmp_path / "m.conv.onnx"])
    assert result.exit_code == 0, result.output
    carried = onnx.load(str(tmp_path / "m.conv.onnx")).metadata_props
    assert encio.parse_encodings_json(next(p.value for p in carried if p.key.endswith("overrides"))).activations == {
        "x": SEED
    }

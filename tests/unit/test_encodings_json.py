"""AIMET encodings / quantization_overrides JSON (FORMATS.md b.2, qtool/io/encodings.py):
legacy 0.6.1 and 1.0.0 reading and writing, round trips, and every error message."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import DataError
from qtool.io.encodings import Encodings, parse_encodings, parse_encodings_json, read_encodings, to_json

WHERE = "ov.json"

# FORMATS.md b.2, the 0.6.1 example (input, act_fp, conv.weight per-channel), verbatim
FORMATS_061 = {
    "version": "0.6.1",
    "activation_encodings": {
        "input": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "False",
                "min": -1.803922,
                "max": 0.496078,
                "scale": 0.009019608,
                "offset": -200,
            }
        ],
        "act_fp": [{"bitwidth": 16, "dtype": "float"}],
    },
    "param_encodings": {
        "conv.weight": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "True",
                "min": -0.70666,
                "max": 0.70112,
                "scale": 0.0055206,
                "offset": -128,
            },
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "True",
                "min": -0.52692,
                "max": 0.52281,
                "scale": 0.0041166,
                "offset": -128,
            },
        ]
    },
    "quantizer_args": {"activation_bitwidth": 8, "dtype": "int", "is_symmetric": "True", "param_bitwidth": 8},
}


def doc(acts: dict | list | None = None, params: dict | list | None = None) -> dict:
    return {"version": "0.6.1", "activation_encodings": acts or {}, "param_encodings": params or {}}


def entry(**kw) -> dict:
    base = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -1.0, "max": 1.0}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def assert_close(a: Encoding, b: Encoding, rel: float = 1e-12) -> None:
    assert (a.bitwidth, a.dtype, a.is_symmetric, a.offset, a.axis) == (
        b.bitwidth,
        b.dtype,
        b.is_symmetric,
        b.offset,
        b.axis,
    )
    for field in ("min", "max", "scale"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=rel, atol=0)


# --- reading -----------------------------------------------------------------------------------


def test_formats_061_example() -> None:
    got = parse_encodings(copy.deepcopy(FORMATS_061), WHERE)
    assert set(got.activations) == {"input", "act_fp"} and set(got.params) == {"conv.weight"}
    assert_close(got.activations["input"], enc.tf(-1.8, 0.5, 8), rel=1e-6)
    assert got.activations["input"].offset == (-200,)
    assert got.activations["act_fp"] == enc.float_encoding(16)
    weight = got.params["conv.weight"]
    assert weight.axis == 0 and weight.is_symmetric and weight.offset == (-128, -128)
    np.testing.assert_allclose(weight.scale, [0.0055206, 0.0041166], rtol=1e-4)
    assert len(got) == 3


def test_seed_per_channel_example_offsets_as_floats() -> None:
    # QNN seed, "Per-channel quantization overrides", Case 2 (offset written as -128.0)
    channels = [
        (0.7011175155639648, -0.7066381259227362, 0.005520610358771377),
        (0.5228064656257629, -0.5269230519692729, 0.004116586343509945),
        (0.7368279099464417, -0.7426297045129491, 0.005801794566507415),
    ]
    body = [
        {"bitwidth": 8, "is_symmetric": "True", "max": hi, "min": lo, "offset": -128.0, "scale": s}
        for hi, lo, s in channels
    ]
    weight = parse_encodings(doc(params={"features.8.conv.3.weight": body}), WHERE).params["features.8.conv.3.weight"]
    assert weight.axis == 0 and weight.offset == (-128, -128, -128) and weight.is_symmetric
    np.testing.assert_allclose(weight.scale, [c[2] for c in channels], rtol=1e-9)
    np.testing.assert_allclose(weight.max, [c[0] for c in channels], rtol=1e-9)


def test_legacy_scale_and_offset_are_recomputed_from_min_max() -> None:
    # the QNN guide's example carries a positive offset (140); min/max are authoritative
    body = [{"bitwidth": 8, "min": -2.1006477158567995, "max": 1.700559472933134, "offset": 140, "scale": 99.0}]
    got = parse_encodings(doc({"Conv2d/weights": body}), WHERE).activations["Conv2d/weights"]
    want = enc.tf(-2.1006477158567995, 1.700559472933134, 8)
    assert_close(got, want)
    assert got.offset[0] <= 0


def test_legacy_scale_and_offset_that_give_min_and_max_are_kept_to_the_last_bit() -> None:
    # GTCRN's hidden state as quantize wrote it: (max - min) / 255 is 0.007843112010581823, one ulp off its scale
    body = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "max": 1.0039183373544733,
             "min": -0.9960752253438913, "offset": -127, "scale": 0.007843112010581821}]  # fmt: skip
    got = parse_encodings(doc({"h": body}), WHERE).activations["h"]
    assert got.scale == (0.007843112010581821,) and got.offset == (-127,)
    assert got == enc.from_scale_offset(0.007843112010581821, -127, 8, symmetric=False)


def test_version_and_quantizer_args_are_optional_and_ignored() -> None:
    data = doc({"x": [entry()]})
    del data["version"]
    plain = parse_encodings(data, WHERE)
    data["quantizer_args"] = {"anything": "True"}
    assert parse_encodings(data, WHERE) == plain


@pytest.mark.parametrize("sym", ["True", "true", True])
def test_is_symmetric_spellings(sym) -> None:
    got = parse_encodings(doc({"x": [entry(is_symmetric=sym, min=-0.5, max=1.0)]}), WHERE).activations["x"]
    assert got.is_symmetric and got.offset == (-128,)
    assert got.max[0] == pytest.approx(1.0)


def test_precision_only_int_entries_are_accepted() -> None:
    data = doc(
        {"a16": [{"bitwidth": 16, "dtype": "int"}], "asym": [{"bitwidth": 8, "is_symmetric": "True"}]},
        {"w4": [{"bitwidth": 4, "dtype": "int"}]},
    )
    got = parse_encodings(data, WHERE)
    assert got.activations["a16"] == Encoding(bitwidth=16)
    assert got.activations["asym"] == Encoding(bitwidth=8, is_symmetric=True)
    assert got.params["w4"] == Encoding(bitwidth=4)
    assert got.activations["a16"].scale == ()  # calibration fills the range


@pytest.mark.parametrize("bw", [16, 32])
def test_float_entries(bw: int) -> None:
    legacy = parse_encodings(doc({"x": [{"bitwidth": bw, "dtype": "float"}]}), WHERE).activations["x"]
    v1 = parse_encodings(doc([{"name": "x", "dtype": "FLOAT", "bw": bw}]), WHERE).activations["x"]
    assert legacy == v1 == enc.float_encoding(bw)


def test_v1_per_tensor_and_per_channel() -> None:
    data = {
        "version": "1.0.0",
        "activation_encodings": [
            {
                "name": "in",
                "enc_type": "PER_TENSOR",
                "dtype": "INT",
                "bw": 8,
                "is_sym": False,
                "scale": [2.3 / 255],
                "offset": [-200],
            }
        ],
        "param_encodings": [
            {
                "name": "w",
                "enc_type": "PER_CHANNEL",
                "dtype": "INT",
                "bw": 8,
                "is_sym": True,
                "scale": [0.005520610358771377, 0.004116586343509945],
                "offset": [-128.0, -128.0],  # AIMET writes floats here (FORMATS.md)
            }
        ],
        "excluded_layers": [],
    }
    got = parse_encodings(data, WHERE)
    assert got.activations["in"] == enc.tf(-1.8, 0.5, 8)
    w = got.params["w"]
    assert w.axis == 0 and w.offset == (-128, -128) and w.is_symmetric
    assert w.min[0] == pytest.approx(-0.7066381259227362, rel=1e-12)


# --- round trips -------------------------------------------------------------------------------


def _sample_encodings() -> Encodings:
    return Encodings(
        activations={
            "input": enc.tf(-1.8, 0.5, 8),
            "act16": enc.tf(-3.0, 7.5, 16),
            "relu": enc.tf(0.0, 6.0, 8),
            "fp": enc.float_encoding(16),
        },
        params={
            "conv.weight": enc.symmetric(np.array([-0.7, -0.5, -1.0]), np.array([0.2, 0.52, 0.1]), 8, axis=0),
            "conv.bias": enc.symmetric(-3.0, 2.0, 32),
            "fc.weight": enc.tf(-0.35, 0.36, 8),
            "w4": enc.symmetric(-1.0, 1.0, 4),
        },
    )


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0"])
def test_round_trip(fmt: str) -> None:
    original = _sample_encodings()
    back = parse_encodings(json.loads(to_json(original, fmt)), WHERE)
    assert set(back.activations) == set(original.activations)
    assert set(back.params) == set(original.params)
    for name, e in original.all().items():
        if fmt == "1.0.0":
            assert back.all()[name] == e  # scale/offset are authoritative: exact
        else:
            assert_close(back.all()[name], e)  # min/max authoritative: recomputed, equal to ~1 ulp


@given(
    st.floats(-1e4, 0.0, allow_nan=False),
    st.floats(0.0, 1e4, allow_nan=False),
    st.sampled_from([4, 8, 16, 32]),
    st.booleans(),
    st.sampled_from(["legacy", "1.0.0"]),
)
def test_round_trip_property(lo: float, hi: float, bitwidth: int, symmetric: bool, fmt: str) -> None:
    e = (enc.symmetric if symmetric else enc.tf)(lo, hi, bitwidth)
    back = parse_encodings(json.loads(to_json(Encodings({"t": e}, {"w": e}), fmt)), WHERE)
    assert_close(back.activations["t"], e, rel=1e-9)
    assert_close(back.params["w"], e, rel=1e-9)


def test_to_json_legacy_layout() -> None:
    data = json.loads(to_json(_sample_encodings(), "legacy", quantizer_args={"per_channel_quantization": "True"}))
    assert data["version"] == "0.6.1"
    assert list(data["activation_encodings"]) == sorted(data["activation_encodings"])
    (inp,) = data["activation_encodings"]["input"]
    assert inp == {
        "bitwidth": 8,
        "dtype": "int",
        "is_symmetric": "False",
        "max": pytest.approx(0.496078, abs=1e-6),
        "min": pytest.approx(-1.803922, abs=1e-6),
        "offset": -200,
        "scale": pytest.approx(0.009019608, abs=1e-9),
    }
    assert data["activation_encodings"]["fp"] == [{"bitwidth": 16, "dtype": "float"}]
    assert [c["offset"] for c in data["param_encodings"]["conv.weight"]] == [-128] * 3
    assert data["param_encodings"]["conv.weight"][0]["is_symmetric"] == "True"
    assert data["quantizer_args"] == {"per_channel_quantization": "True"}


def test_to_json_v1_layout() -> None:
    data = json.loads(to_json(_sample_encodings(), "1.0.0"))
    assert data["version"] == "1.0.0" and data["excluded_layers"] == []
    by_name = {e["name"]: e for e in data["param_encodings"]}
    assert by_name["conv.weight"]["enc_type"] == "PER_CHANNEL" and len(by_name["conv.weight"]["scale"]) == 3
    assert by_name["fc.weight"]["enc_type"] == "PER_TENSOR" and by_name["fc.weight"]["is_sym"] is False
    assert by_name["conv.weight"]["dtype"] == "INT" and by_name["conv.weight"]["is_sym"] is True
    acts = {e["name"]: e for e in data["activation_encodings"]}
    assert acts["fp"] == {"name": "fp", "enc_type": "PER_TENSOR", "dtype": "FLOAT", "bw": 16}
    assert all(o <= 0 for e in data["activation_encodings"] for o in e.get("offset", []))


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0"])
def test_to_json_is_deterministic(fmt: str) -> None:
    a = _sample_encodings()
    b = Encodings(dict(reversed(a.activations.items())), dict(reversed(a.params.items())))
    assert to_json(a, fmt) == to_json(b, fmt)
    assert to_json(a, fmt).endswith("\n")


def test_read_and_parse_json_text(tmp_path: Path) -> None:
    path = tmp_path / "ov.json"
    path.write_text(to_json(_sample_encodings()))
    assert set(read_encodings(path).all()) == set(_sample_encodings().all())
    assert len(parse_encodings_json(None)) == 0
    assert len(parse_encodings_json(to_json(_sample_encodings()))) == 8


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["activation_encodings", "param_encodings"])
def test_missing_section(missing: str) -> None:
    data = doc()
    del data[missing]
    with pytest.raises(DataError) as info:
        parse_encodings(data, WHERE)
    assert str(info.value) == f"{WHERE}: missing section {missing!r} (both sections are required; either may be empty)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(entry(bitwidth=None), "'conv_out'[0]: missing 'bitwidth'", id="no-bitwidth"),
        pytest.param(entry(min=None), "'conv_out'[0]: missing 'min' (bitwidth, min and max are required)", id="no-min"),
        pytest.param(entry(max=None), "'conv_out'[0]: missing 'max' (bitwidth, min and max are required)", id="no-max"),
        pytest.param(entry(min=2.0, max=1.0), "'conv_out'[0]: min 2.0 is greater than max 1.0", id="min-gt-max"),
        pytest.param(entry(bitwidth=7), "'conv_out'[0]: bitwidth 7 is not supported for dtype 'int'", id="bw-7"),
        pytest.param(entry(bitwidth=8.5), "'conv_out'[0]: bitwidth 8.5 is not supported", id="bw-float"),
        pytest.param(entry(bitwidth=True), "'conv_out'[0]: bitwidth true is not supported", id="bw-bool"),
        pytest.param(entry(bitwidth="8"), "'conv_out'[0]: bitwidth \"8\" is not supported", id="bw-string"),
        pytest.param(
            {"bitwidth": 8, "dtype": "float"}, "'conv_out'[0]: bitwidth 8 is not supported for dtype 'float'", id="fp8"
        ),
        pytest.param(entry(dtype="double"), "'conv_out'[0]: dtype \"double\" must be 'int' or 'float'", id="dtype"),
        pytest.param(entry(min="-1"), "'conv_out'[0]: 'min' must be a finite number, got \"-1\"", id="min-string"),
        pytest.param(entry(max=float("nan")), "'conv_out'[0]: 'max' must be a finite number", id="max-nan"),
        pytest.param(entry(max=float("inf")), "'conv_out'[0]: 'max' must be a finite number", id="max-inf"),
    ],
)
def test_legacy_entry_errors_name_the_tensor(body: dict, message: str) -> None:
    with pytest.raises(DataError) as info:
        parse_encodings(doc({"conv_out": [body]}), WHERE)
    text = str(info.value)
    assert text.startswith(f"{WHERE}: activation_encodings: 'conv_out'[0]: ")
    assert message in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param([], "must be a non-empty list of encodings", id="empty-list"),
        pytest.param({"bitwidth": 8}, "must be a non-empty list of encodings", id="not-a-list"),
        pytest.param(["8"], "each encoding must be a JSON object", id="not-an-object"),
        pytest.param(
            [entry(is_symmetric="True"), entry(is_symmetric="True", bitwidth=16)],
            "per-channel entries must share dtype, bitwidth and is_symmetric",
            id="mixed-channels",
        ),
        pytest.param(
            [{"bitwidth": 8}, {"bitwidth": 8}], "per-channel encodings need min and max", id="per-channel-no-range"
        ),
    ],
)
def test_legacy_list_errors_name_the_tensor(body, message: str) -> None:
    with pytest.raises(DataError) as info:
        parse_encodings(doc(params={"conv.weight": body}), WHERE)
    text = str(info.value)
    assert "'conv.weight'" in text and text.startswith(f"{WHERE}: param_encodings: ")
    assert message in text


V1_OK = {"name": "t", "dtype": "INT", "bw": 8, "is_sym": False, "scale": [0.1], "offset": [-3]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"bw": None}, "missing 'bitwidth'", id="no-bw"),
        pytest.param({"bw": 12}, "bitwidth 12 is not supported", id="bw-12"),
        pytest.param({"dtype": "BF16"}, "dtype \"BF16\" must be 'int' or 'float'", id="dtype"),
        pytest.param({"scale": [0.1, 0.2]}, "needs equal-length non-empty 'scale' and 'offset' lists", id="lengths"),
        pytest.param({"scale": None}, "needs equal-length non-empty 'scale' and 'offset' lists", id="no-scale"),
        pytest.param({"scale": [0.0]}, "every scale must be a finite positive number", id="zero-scale"),
        pytest.param({"scale": [-0.1]}, "every scale must be a finite positive number", id="negative-scale"),
        pytest.param({"offset": [5]}, "offsets must be integers in", id="positive-offset"),
    ],
)
def test_v1_entry_errors_name_the_tensor(change: dict, message: str) -> None:
    body = {k: v for k, v in {**V1_OK, **change}.items() if v is not None}
    with pytest.raises(DataError) as info:
        parse_encodings(doc(params=[body]), WHERE)
    text = str(info.value)
    assert text.startswith(f"{WHERE}: param_encodings[0]: 't': ")
    assert message in text


def test_v1_entry_without_name() -> None:
    with pytest.raises(DataError, match=r"param_encodings\[1\]: each 1.0.0 encoding must be an object with a 'name'"):
        parse_encodings(doc(params=[V1_OK, {"bw": 8}]), WHERE)


@pytest.mark.parametrize("data", [[], "x", None])
def test_top_level_must_be_an_object(data) -> None:
    with pytest.raises(DataError, match=f"{WHERE}: top level must be a JSON object"):
        parse_encodings(data, WHERE)


def test_section_must_be_object_or_list() -> None:
    with pytest.raises(DataError, match="'param_encodings' must be an object or a list"):
        parse_encodings(doc(params="nope") | {"param_encodings": "nope"}, WHERE)


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ov.json"
    path.write_text('{\n  "activation_encodings": {,\n}')
    with pytest.raises(DataError) as info:
        read_encodings(path)
    assert str(info.value).startswith(f"{path}: not valid JSON: ")
    assert "line 2 column" in str(info.value)


@pytest.mark.parametrize("text", ["image:\n  bitwidth: 8\n", ""])
def test_an_overrides_file_that_is_not_json_says_what_it_should_hold(tmp_path: Path, text: str) -> None:
    """A YAML overrides file (or an empty one) read 'not valid JSON: Expecting value at line 1 column 1' alone."""
    path = tmp_path / "ov.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_encodings(path)
    assert info.value.hint == 'an encodings file is AIMET\'s JSON: {"activation_encodings": {...}, "param_encodings": {...}}'


def test_an_encoding_given_as_an_object_is_told_to_be_a_list() -> None:
    """AIMET 0.6.1 holds a list a tensor, one entry per channel: an object said 'must be a non-empty list' alone."""
    with pytest.raises(DataError) as info:
        parse_encodings(doc({"conv_out": {"bitwidth": 8, "min": 0.0, "max": 1.0}}), WHERE)
    assert info.value.hint == "one entry in [...] a tensor, one a channel for a per-channel weight"


def test_missing_encodings_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="encodings file not found"):
        read_encodings(tmp_path / "nope.json")


def test_carried_overrides_malformed() -> None:
    with pytest.raises(DataError, match="model metadata: carried overrides are not valid JSON"):
        parse_encodings_json("{nope")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_v1_infinite_scale_is_rejected() -> None:
    with pytest.raises(DataError, match="'t'"):
        parse_encodings(doc(params=[{**V1_OK, "scale": [float("inf")]}]), WHERE)


def test_v1_offset_outside_the_grid_is_rejected() -> None:
    with pytest.raises(DataError, match="'t'"):
        parse_encodings(doc(params=[{**V1_OK, "offset": [-300]}]), WHERE)


@pytest.mark.parametrize("offset", [127, 1, -256])
def test_legacy_scale_and_offset_without_min_max_outside_the_grid_is_rejected(offset: int) -> None:
    """The QNN guide writes zero points (127) as offsets: without min/max, {scale 0.01, offset 127} was read as
    [1.27, 3.82], widened to [0, 3.82], a scale of 0.015 the file never gave, without a word (exit 0)."""
    body = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "scale": 0.01, "offset": offset}]
    with pytest.raises(DataError, match=r"'t'.*'offset'"):
        parse_encodings({"activation_encodings": {"t": body}, "param_encodings": {}}, WHERE)


@pytest.mark.parametrize("entry", [
    {"is_symmetric": "True", "scale": 0.01, "offset": -10},  # symmetric, its offset not -128: not the stated grid
    {"is_symmetric": "False", "scale": 1e-12, "offset": -10},  # a range below MIN_RANGE: widened, not stated
], ids=["symmetric", "narrow"])  # fmt: skip
def test_legacy_scale_and_offset_without_min_max_off_the_stated_grid_read(entry: dict) -> None:
    """3782804's warning of a scale that min/max overrule looked up min/max in an entry of scale and offset alone
    whose grid was not kept as stated: KeyError 'max', a traceback, where e5cf01c read the entry."""
    body = [{"bitwidth": 8, "dtype": "int", **entry}]
    for weight in (False, True):
        got = parse_encodings(doc(**{"params" if weight else "acts": {"t": body}}), WHERE).all()["t"]
        assert got.bitwidth == 8 and got.min[0] <= 0 <= got.max[0]


def test_a_per_channel_weights_asymmetric_entries_as_aimet_writes_them_are_not_warned_of(caplog) -> None:
    """3782804 warned of AIMET's own per-channel asymmetric weight entries, whose scale and offset give their min/max:
    "'w'[0]: scale 0.00588235 and offset -85 give the grid [-0.5, 1], not its min/max's [-1.00787, 1] ...: for that
    grid, set min -0.5 and max 1", min and max they already had. qtool makes such a weight symmetric, a grid neither
    the scale nor min/max give, so setting min/max would not help; likewise AIMET's unsigned symmetric activation
    (offset 0), which qtool reads as signed. An edited scale is still named."""
    body = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": float(e.min[0]), "max": float(e.max[0]),
             "scale": float(e.scale[0]), "offset": int(e.offset[0])} for e in (enc.tf(-0.5, 1.0, 8), enc.tf(-2.0, 0.3, 8))]  # fmt: skip
    got = parse_encodings(doc(params={"w": body}), WHERE).params["w"]
    assert got.is_symmetric and got.axis == 0 and not caplog.text
    unsigned = {"bitwidth": 8, "dtype": "int", "is_symmetric": "True", "min": 0.0, "max": 2.55, "scale": 0.01, "offset": 0}
    parse_encodings(doc(acts={"u": [unsigned]}), WHERE)  # AIMET's unsigned symmetric: made signed, no min/max give it
    assert not caplog.text
    parse_encodings(doc(acts={"r": [{**body[0], "scale": body[0]["scale"] * 5}]}), WHERE)
    assert "'r': scale 0.0294118 and offset -85 give the grid" in caplog.text


def test_excluded_layers_that_are_not_read_are_warned_of(caplog) -> None:
    """Round 9: a 1.0.0 file's non-empty excluded_layers was ignored without a word, its layers quantized."""
    doc = {"version": "1.0.0", "activation_encodings": [], "param_encodings": [], "excluded_layers": ["/conv1/Conv"]}
    parse_encodings(doc, WHERE)
    assert "'excluded_layers' is not read" in caplog.text
    caplog.clear()
    parse_encodings({**doc, "excluded_layers": []}, WHERE)
    assert not caplog.text


def test_v1_non_integral_offset_is_rejected() -> None:
    with pytest.raises(DataError, match="'t'"):
        parse_encodings(doc(params=[{**V1_OK, "offset": [-3.5]}]), WHERE)


def test_a_version_that_disagrees_with_its_layout_is_read_with_a_warning(caplog) -> None:
    """qairt reads by the version and would refuse these; qtool reads the layout and says so (helper-41)."""
    import logging

    from qtool.io.encodings import parse_encodings

    legacy = {"u": [{"bitwidth": 8, "dtype": "int", "min": -1.0, "max": 1.0}]}
    listed = [{"name": "u", "enc_type": "PER_TENSOR", "dtype": "INT", "bw": 8, "is_sym": False,
               "scale": [0.01], "offset": [-128]}]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert "u" in parse_encodings({"version": "1.0.0", "activation_encodings": legacy, "param_encodings": {}}, "a.json").activations
        assert "u" in parse_encodings({"version": "0.6.1", "activation_encodings": listed, "param_encodings": []}, "b.json").activations
    assert "a.json: version 1.0.0" in caplog.text and "as 0.6.1 writes it" in caplog.text
    assert "b.json: version 0.6.1" in caplog.text and "as 1.0.0 writes it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        parse_encodings({"version": "0.6.1", "activation_encodings": legacy, "param_encodings": {}}, "c.json")
    assert "version" not in caplog.text

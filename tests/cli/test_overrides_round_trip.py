"""The round trip qtool promises: quantize, then quantize again with the `.encodings.json` the first run wrote as
--quantization_overrides (with calibration, or --enable_float_fallback without), gives the same encodings, tensor by
tensor (scale, offset, bitwidth; the same tensors float). The models put ranges far apart where a Concat
or a Slice would join them, where the first run keeps them on grids of their own (plan.wide_concats, wide_slices):
read back, the file's own encodings must keep them apart (VoiceFilter-Lite's speaker vector fell onto the log-mel
grid, 6 levels; GTCRN's split Concat went float)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, save_model, write_feeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qnn_models import concat_of_inputs, small_second_input, split_concat


def _entries(path: Path) -> dict[tuple[str, str], list[tuple]]:
    doc = json.loads(path.read_text())
    return {
        (section, name): [(e["dtype"], e["bitwidth"], e.get("is_symmetric"), e.get("offset"),
                           e.get("scale")) for e in entries]
        for section in ("activation_encodings", "param_encodings")
        for name, entries in doc[section].items()
    }  # fmt: skip


def _quantize(tmp_path: Path, tag: str, model: Path, *args: object) -> tuple[dict, str]:
    out = tmp_path / f"{tag}.onnx"
    result = run_cli(["quantize", "-i", model, "-o", out, "--use_per_channel_quantization", *args])
    assert result.exit_code == 0, result.stderr
    return _entries(out.with_suffix(".encodings.json")), result.stderr


def _round_trip(tmp_path: Path, model, feeds) -> dict:
    """The first run's encodings; asserts both reruns reproduce them, without a warning about a group."""
    path = save_model(model, tmp_path / "m.onnx")
    listing = write_feeds(tmp_path, feeds)
    first, _ = _quantize(tmp_path, "first", path, "--input_list", listing)
    written = tmp_path / "first.encodings.json"
    for tag, args in (("fallback", ["--enable_float_fallback"]), ("calibrated", ["--input_list", listing])):
        again, stderr = _quantize(tmp_path, tag, path, "--quantization_overrides", written, *args)
        differ = {k: (first.get(k), again.get(k)) for k in first.keys() | again.keys() if first.get(k) != again.get(k)}
        assert not differ, f"{tag}: {differ}"
        assert "differ" not in stderr, stderr
    return first


SCALE = st.sampled_from([0.01, 0.2, 1.0, 3.0, 40.0])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scales=st.lists(SCALE, min_size=2, max_size=4))
def test_a_concat_of_inputs_of_different_ranges_round_trips(tmp_path_factory, scales: list[float]) -> None:
    _round_trip(tmp_path_factory.mktemp("concat"), *concat_of_inputs(scales))


@pytest.mark.parametrize("small", [0.24, 3.0])
def test_a_small_second_input_feeding_a_shared_op_keeps_its_own_grid(tmp_path: Path, small: float) -> None:
    first = _round_trip(tmp_path, *small_second_input(small))
    d, mel = first[("activation_encodings", "d")][0], first[("activation_encodings", "mel")][0]
    assert (d[4] < mel[4] / 16) == (small < 1)  # the speaker vector's own grid, when it is far finer


@pytest.mark.parametrize("gain", [1.0, 60.0])
def test_a_split_concat_round_trips(tmp_path: Path, gain: float) -> None:
    first = _round_trip(tmp_path, *split_concat(gain))
    assert first[("activation_encodings", "o")][0][0] == "float"  # the split Concat that leaves the model

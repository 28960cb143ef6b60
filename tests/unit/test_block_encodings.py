"""Per-block and LPBQ encodings: hand-computed golden vectors, AIMET 1.0.0 / 2.0.0 entries, round
trips through both formats (hypothesis) and the errors a bad file or a misplaced entry gives."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import DataError, UsageError
from qtool.io.encodings import Encodings, carried_json, parse_encodings, to_json
from qtool.quant import blocks


def _matmul_weight() -> np.ndarray:
    """[K=32, N=2]: channel 0's blocks reach 11.2 and 3.5, channel 1's 0.7 and 1.4 (block size 16)."""
    w = np.zeros((32, 2))
    w[:16, 0] = np.linspace(-11.2, 5.0, 16)
    w[16:, 0] = np.linspace(-1.0, 3.5, 16)
    w[:16, 1] = np.linspace(-0.7, 0.7, 16)
    w[16:, 1] = np.linspace(1.4, -0.2, 16)
    return w


def test_block_scales_are_absmax_over_7_in_the_weights_layout() -> None:
    """4-bit min-max: scale = block absmax / 7, flattened as the [K/B, N] scale tensor."""
    e = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")
    np.testing.assert_allclose(e.scale, [11.2 / 7, 0.7 / 7, 3.5 / 7, 1.4 / 7])
    assert (e.axis, e.blocks.axis, e.blocks.shape, e.offset) == (1, 0, (2, 2), (-8,) * 4)
    q = e.quantize(_matmul_weight())
    assert q[0, 0] == -7 and q[15, 0] == round(5.0 / 1.6) and q[31, 0] == 7 and q[16, 1] == 7
    np.testing.assert_allclose(e.dequantize(q)[:16, 0], np.rint(np.linspace(-11.2, 5.0, 16) / 1.6) * 1.6, rtol=1e-6)


def test_asymmetric_blocks_take_each_blocks_min_and_max_on_the_tf_grid() -> None:
    """--use_asymmetric_blocks, min-max: block (lo, hi) = (min, max) with 0 inside, scale (hi − lo) / 15, offset
    lo / scale rounded half away (enc.tf); the searched ranges (mse) never have more weight error."""
    w = _matmul_weight()
    e = blocks.block_encoding(w, 1, 0, 16, 4, method="min-max", asymmetric=True)
    lo, hi = np.array([-11.2, -0.7, -1.0, -0.2]), np.array([5.0, 0.7, 3.5, 1.4])
    np.testing.assert_allclose(e.scale, (hi - lo) / 15)
    assert not e.is_symmetric and e.offset == tuple(int(v) for v in np.sign(lo) * np.floor(np.abs(lo) / ((hi - lo) / 15) + 0.5))
    assert (e.axis, e.blocks.axis, e.blocks.shape) == (1, 0, (2, 2))
    searched = blocks.block_encoding(w, 1, 0, 16, 4, method="mse", asymmetric=True)
    sym = blocks.block_encoding(w, 1, 0, 16, 4, method="mse")
    error = {k: float(np.sum((x.dequantize(x.quantize(w)) - w) ** 2)) for k, x in (("mm", e), ("mse", searched), ("sym", sym))}
    assert error["mse"] <= error["mm"] and error["mse"] < error["sym"]


def test_a_gemm_weight_with_transb_has_channel_major_scales() -> None:
    e = blocks.block_encoding(_matmul_weight().T, 0, 1, 16, 4, method="min-max")
    np.testing.assert_allclose(e.scale, [11.2 / 7, 3.5 / 7, 0.7 / 7, 1.4 / 7])
    assert e.blocks.shape == (2, 2) and e.blocks.axis == 1


def test_lpbq_splits_scales_into_a_channel_scale_and_integers() -> None:
    """Channel 0: block scales 1.6 and 0.5 -> channel scale 1.6/16 = 0.1, integers 16 and 5 (the
    smallest that clips nothing under min-max); channel 1: 0.2 and 0.1 -> 0.0125, 16 and 8."""
    e = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max", lpbq=True)
    b = e.blocks
    np.testing.assert_allclose(b.channel_scale, [0.1, 0.0125], rtol=1e-7)
    assert b.channel_scale[0] == float(np.float32(0.1))  # float32, so a QDQ model's scales give it back
    assert b.int_scale == (16, 8, 5, 16) and b.decompressed_bw == 8 and e.bitwidth == 4
    np.testing.assert_allclose(e.scale, [1.6, 0.1, 0.5, 0.2], rtol=1e-7)


def test_lpbq_searches_the_channel_scale_by_weight_error() -> None:
    """mse: one channel [112, 1] in blocks of 16: block A the integers -7..7 (and a 0), six blocks B 0.51 x the
    same; each block's searched scale is exact (A 1, B 0.51). AIMET's channel scale 1/16 leaves A exact but puts B
    at 8.16 steps: k = 8 (scale 0.5, error (0.01 n)² summed over n = -7..7: 0.028) or 9 (worse), 0.168 in all.
    Channel scale 1.01/16: A's scale 1.01 costs (0.01 n)² summed, 0.028, B's 8 x 1.01/16 = 0.505 costs (0.005 n)²
    summed, 0.007 each: 0.070 in all, the least (1.02/16 puts B exactly at 8 but costs A 0.112; 0.99/16: B 0.063
    each)."""
    n = np.append(np.arange(-7.0, 8.0), 0.0)
    w = np.concatenate([n] + [0.51 * n] * 6)[:, None]
    e = blocks.block_encoding(w, 1, 0, 16, 4, method="mse", lpbq=True)
    assert e.blocks.int_scale == (16,) + (8,) * 6 and e.blocks.channel_scale[0] == float(np.float32(1.01 / 16))
    np.testing.assert_allclose(e.scale, np.float32(1.01 / 16) * np.array([16] + [8] * 6))  # exact LPBQ scales
    error = float(np.sum((e.fake_quantize(w) - w) ** 2))
    aimet = dataclasses.replace(e, scale=(1.0,) + (0.5,) * 6)  # the old rule: 1/16, k = 16, 8 x 6
    assert error == pytest.approx(0.070, rel=1e-3) and float(np.sum((aimet.fake_quantize(w) - w) ** 2)) == pytest.approx(0.168, rel=1e-3)


def test_conv_blocks_span_the_kernel_and_repeat_in_the_onnx_tensor() -> None:
    w = np.random.default_rng(0).normal(size=(4, 32, 3, 3))
    e = blocks.block_encoding(w, 0, 1, 16, 8, method="min-max")
    assert e.blocks.shape == (4, 2, 1, 1)
    np.testing.assert_allclose(e.scale_array().reshape(4, 2), np.abs(w.reshape(4, 2, -1)).max(axis=2) / 127)
    assert blocks.onnx_array(e.scale_array(), e, w.shape).shape == (4, 2, 3, 3)


def test_mse_never_does_worse_than_min_max_on_its_block() -> None:
    w = np.random.default_rng(1).standard_t(3, size=(256, 8))
    errors = []
    for method in ("min-max", "mse"):
        e = blocks.block_encoding(w, 1, 0, 32, 4, method=method)
        errors.append(float(np.sum((e.fake_quantize(w) - w) ** 2)))
    assert errors[1] <= errors[0]


def _doc(e: Encoding, fmt: str) -> dict:
    return json.loads(to_json(Encodings(params={"W": e}), fmt))


def test_aimet_1_0_0_entries() -> None:
    plain = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")
    (entry,) = _doc(plain, "1.0.0")["param_encodings"]
    assert {k: entry[k] for k in ("enc_type", "dtype", "bw", "is_sym", "block_size", "offset")} == {
        "enc_type": "PER_BLOCK", "dtype": "INT", "bw": 4, "is_sym": True, "block_size": 16, "offset": [-8] * 4,
    }  # fmt: skip
    lpbq = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max", lpbq=True)
    (entry,) = _doc(lpbq, "1.0.0")["param_encodings"]
    assert {k: entry[k] for k in ("enc_type", "bw", "compressed_bw", "offset", "per_block_int_scale")} == {
        "enc_type": "LPBQ", "bw": 8, "compressed_bw": 4, "offset": [-128, -128], "per_block_int_scale": [16, 8, 5, 16],
    }  # fmt: skip
    assert entry["scale"] == list(lpbq.blocks.channel_scale)


def test_aimet_2_0_0_entries_nest_the_scale_tensor() -> None:
    plain = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")
    (entry,) = _doc(plain, "2.0.0")["encodings"]
    assert (entry["output_dtype"], entry["axis"], entry["block_size"], "y_zero_point" in entry) == ("int4", 0, 16, False)
    np.testing.assert_allclose(entry["y_scale"], [[1.6, 0.1], [0.5, 0.2]])
    lpbq = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max", lpbq=True)
    (entry,) = _doc(lpbq, "2.0.0")["encodings"]
    assert entry["per_block_int_scale"] == [[16, 8], [5, 16]] and "y_scale" not in entry
    assert np.shape(entry["per_channel_float_scale"]) == (1, 2) and "decompressed_bw" not in entry


@given(
    st.integers(1, 4),
    st.integers(1, 5),
    st.sampled_from([16, 32]),
    st.sampled_from([(4, True), (4, False), (8, False)]),
    st.booleans(),
    st.sampled_from(["min-max", "mse"]),
    st.integers(0, 2**31),
)
def test_round_trip_through_1_0_0_and_2_0_0(count, channels, size, kind, transposed, method, seed) -> None:
    """Written, read back and placed on its weight again, an entry is the same encoding."""
    bitwidth, lpbq = kind
    shape = (channels, count * size) if transposed else (count * size, channels)
    w = np.random.default_rng(seed).normal(size=shape) * np.random.default_rng(seed + 1).uniform(0.01, 10, shape)
    channel_axis, axis = (0, 1) if transposed else (1, 0)
    e = blocks.block_encoding(w, channel_axis, axis, size, bitwidth, method=method, lpbq=lpbq)
    for fmt in ("1.0.0", "2.0.0"):
        back = parse_encodings(_doc(e, fmt), fmt).params["W"]
        assert blocks.place(back, shape, channel_axis, axis, "W") == e


def test_an_aimet_lpbq_entry_with_float_offsets_is_read() -> None:
    entry = {"name": "W", "enc_type": "LPBQ", "dtype": "INT", "bw": 8, "compressed_bw": 4, "is_sym": True,
             "scale": [0.1, 0.0125], "offset": [-128.0, -128.0], "block_size": 16, "per_block_int_scale": [16, 8, 5, 16]}  # fmt: skip
    found = parse_encodings({"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}, "a.json")
    placed = blocks.place(found.params["W"], (32, 2), 1, 0, "W")
    np.testing.assert_allclose(placed.scale, [1.6, 0.1, 0.5, 0.2])


def test_the_legacy_format_cannot_hold_blocks() -> None:
    e = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")
    with pytest.raises(UsageError, match=r"legacy \(0\.6\.1\) encodings format cannot express the per-block encoding of 'W'"):
        to_json(Encodings(params={"W": e}), "legacy")
    legacy = {"version": "0.6.1", "activation_encodings": {},
              "param_encodings": {"W": [{"bitwidth": 4, "min": -1, "max": 1, "block_size": 16}]}}  # fmt: skip
    with pytest.raises(DataError, match=r"a 0\.6\.1 file cannot express per-block"):
        parse_encodings(legacy, "o.json")


V1_LPBQ = {"name": "W", "enc_type": "LPBQ", "dtype": "INT", "bw": 8, "compressed_bw": 4, "is_sym": True,
           "scale": [0.1], "offset": [-128], "block_size": 16, "per_block_int_scale": [16, 5]}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"per_block_int_scale": [16, 17]}, r"integer in \[1, 16\]"),
        ({"scale": [0.1, 0.2], "offset": [-128, -128], "per_block_int_scale": [16, 5, 3]}, "a multiple of 2 integers"),
        ({"offset": [-127]}, "LPBQ is symmetric"),
        ({"compressed_bw": 8}, "below 'bw' 8"),
        ({"block_size": 0}, "'block_size' must be a positive integer"),
        ({"enc_type": "VECTOR"}, "enc_type \"VECTOR\" is not PER_TENSOR"),
        ({"enc_type": "PER_CHANNEL"}, "block_size needs PER_BLOCK or LPBQ"),
    ],
)
def test_bad_1_0_0_block_entries(change: dict, message: str) -> None:
    doc = {"version": "1.0.0", "activation_encodings": [], "param_encodings": [{**V1_LPBQ, **change}]}
    with pytest.raises(DataError, match=message) as caught:
        parse_encodings(doc, "o.json")
    assert str(caught.value).startswith("o.json: param_encodings[0]: 'W'")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"y_scale": [[0.1, 0.2], [0.3]], "axis": 0, "block_size": 16}, "rectangular"),
        ({"y_scale": [[0.1, 0.2]], "block_size": 16}, "needs an integer 'axis'"),
        ({"y_scale": [[0.1, -0.2]], "axis": 0, "block_size": 16}, "must be positive"),
        ({"y_scale": [[0.1, 0.2]], "axis": 0, "block_size": 16, "y_zero_point": [[0, 300]]}, r"\[-8, 7\]"),
        ({"per_block_int_scale": [[16, 3]], "per_channel_float_scale": [[0.1]], "axis": 0, "block_size": 16},
         "'per_channel_float_scale' must be positive, of shape"),
        ({"per_block_int_scale": [[16, 3]], "per_channel_float_scale": [[0.1, 0.2]], "axis": 0, "block_size": 16,
          "y_zero_point": [[0, 0]]}, "LPBQ is symmetric"),
    ],
)  # fmt: skip
def test_bad_2_0_0_block_entries(entry: dict, message: str) -> None:
    doc = {"version": "2.0.0", "encodings": [{"name": "W", "output_dtype": "int4", **entry}]}
    with pytest.raises(DataError, match=message):
        parse_encodings(doc, "o.json")


def test_placing_checks_the_weight() -> None:
    e = blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")
    unplaced = parse_encodings(_doc(e, "1.0.0"), "o").params["W"]
    with pytest.raises(DataError, match=r"4 block scales, but the weight \[48, 2\] has 6 blocks of 16"):
        blocks.place(unplaced, (48, 2), 1, 0, "override 'W'")
    with pytest.raises(DataError, match="block_size 16 does not divide the weight's 40 inputs"):
        blocks.place(unplaced, (40, 2), 1, 0, "override 'W'")
    with pytest.raises(DataError, match="only to 2-D Gemm/MatMul and Conv weights"):
        blocks.place(unplaced, (32, 2), 1, None, "override 'W'")
    nested = parse_encodings(_doc(e, "2.0.0"), "o").params["W"]
    with pytest.raises(DataError, match=r"block scales of shape \[2, 2\] on axis 0; the weight \[2, 32\] needs"):
        blocks.place(nested, (2, 32), 0, 1, "override 'W'")


def test_flag_checks() -> None:
    for args, message in [
        ((24, 4, False, "1.0.0"), "must be a power of two from 16 to 256"),
        ((32, 16, False, "1.0.0"), "needs --weights_bitwidth 4 or 8"),
        ((32, 4, False, "legacy"), "cannot express per-block scales"),
        ((None, 4, True, "1.0.0"), "--use_lpbq needs --weights_block_size"),
        ((32, 8, True, "1.0.0"), "--use_lpbq needs --weights_bitwidth 4"),
    ]:
        with pytest.raises(UsageError, match=message):
            blocks.check_options(*args)
    blocks.check_options(256, 8, False, "2.0.0")


def test_carried_overrides_switch_to_1_0_0_only_for_blocks() -> None:
    plain = Encodings({"x": enc.tf(-1.8, 0.5, 8)}, {"b": enc.Encoding(bitwidth=16, is_symmetric=True)})
    assert json.loads(carried_json(plain))["version"] == "0.6.1"
    blocked = Encodings(dict(plain.activations), {**plain.params, "W": blocks.block_encoding(_matmul_weight(), 1, 0, 16, 4, method="min-max")})
    doc = json.loads(carried_json(blocked))
    assert doc["version"] == "1.0.0"
    back = parse_encodings(doc, "carried")
    assert back.params["b"] == enc.Encoding(bitwidth=16, is_symmetric=True)  # a precision request survives 1.0.0
    assert back.activations == plain.activations


def test_a_weights_blocks_are_searched_once_per_values_and_scheme(monkeypatch) -> None:
    searches = []
    search = blocks._searched
    monkeypatch.setattr(blocks, "_searched", lambda *a: searches.append(a[1:]) or search(*a))
    w = _matmul_weight()
    with blocks.remembered():
        first = blocks.block_encoding(w, 1, 0, 16, 4, method="mse")
        assert blocks.block_encoding(w.copy(), 1, 0, 16, 4, method="mse") is first  # equal values: not searched again
        assert len(searches) == 1
        blocks.block_encoding(w, 1, 0, 16, 4, method="min-max")  # another scheme
        changed = w.copy()
        changed[3, 0] += 0.25  # a weight adaround moved
        again = blocks.block_encoding(changed, 1, 0, 16, 4, method="mse")
        assert len(searches) == 3 and again is not first
    assert blocks._SEARCHED is None  # nothing kept past the run
    blocks.block_encoding(w, 1, 0, 16, 4, method="mse")
    assert len(searches) == 4


def test_per_channel_mse_scores_each_channel_on_its_values() -> None:
    """A column of one huge weight among small ones (MiniLM's FFN-down column 99: 7.9 among values under 0.38)
    keeps its whole range (the small ones round to 0); a histogram's scale²/12 model clipped the 7.9 to 2.2.
    No channel has more error than min-max's range, nor than the histogram search's."""
    from qtool.quant.observers import observe_values
    from qtool.quant.plan import PlanOptions, _per_channel_encoding

    w = np.random.default_rng(0).normal(0, 0.04, size=(1536, 3))
    w[99, 0] = 7.9
    error = {}
    for method in ("min-max", "mse", "sqnr"):
        e = _per_channel_encoding(w, 1, 3, 4, PlanOptions(weights_bitwidth=4, param_calibration=method))
        error[method] = np.sum((e.fake_quantize(w) - w) ** 2, axis=0)
    histogram = enc.with_schema("symmetric", *zip(*[observe_values("mse", c, 4, "symmetric") for c in w.T], strict=True), 4, 1)
    error["histogram"] = np.sum((histogram.fake_quantize(w) - w) ** 2, axis=0)
    assert np.all(error["mse"] <= error["min-max"] * (1 + 1e-6)) and np.all(error["mse"] <= error["histogram"] * (1 + 1e-6))
    assert error["mse"][0] < error["histogram"][0] / 5 and error["sqnr"][0] < error["histogram"][0] / 5
    e = _per_channel_encoding(w, 1, 3, 4, PlanOptions(weights_bitwidth=4, param_calibration="mse"))
    assert e.scale[0] == pytest.approx(7.9 / 7, rel=1e-6)


def test_block_scales_are_one_array_a_field_read_as_tuples() -> None:
    """A 2.35 GB decoder's 18 M block encodings were four tuples of Python floats each (2.3 GB in the plan, as
    much again read back from the QDQ model). Now each field is one read-only array (enc.Values) that reads as
    the tuple it replaces: equal to it, the same hash, Python numbers, np.asarray without a copy."""
    import pickle
    import tracemalloc

    w = np.random.default_rng(4).normal(0, 0.02, (1024, 256)).astype(np.float32)  # 8192 blocks of 32
    tracemalloc.start()
    try:
        e = blocks.block_encoding(w, 1, 0, 32, 4, method="min-max")
        lpbq = blocks.block_encoding(w, 1, 0, 32, 4, method="min-max", lpbq=True)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * (4 + 1) * 8 * 8192 + 100_000  # 8 bytes a number; tuples of floats were 4x that
    assert len(e.scale) == 8192 and isinstance(e.scale, enc.Values) and isinstance(lpbq.blocks.int_scale, enc.Values)
    as_tuple = tuple(e.scale)
    assert isinstance(as_tuple[5], float) and e.scale[5] == as_tuple[5] and isinstance(e.offset[0], int)
    assert e.scale == as_tuple and as_tuple == e.scale and hash(e.scale) == hash(as_tuple)
    assert e == dataclasses.replace(e, scale=as_tuple) and e.scale != as_tuple[:-1]
    assert np.shares_memory(np.asarray(e.scale), e.scale.array) and not e.scale.array.flags.writeable
    assert pickle.loads(pickle.dumps(e)) == e and repr(e.offset[:2]) == "(-8, -8)"
    assert np.asarray(lpbq.blocks.int_scale).dtype == np.int64


@pytest.mark.parametrize("method", ["sqnr", "mse"])
def test_the_block_search_picks_what_the_plain_expression_picks(method: str) -> None:
    """_absmax's in-place float64 arithmetic (the chunk made float64 once, clipped errors weighted in place) keeps
    the plain expression's numbers to the bit: each block's candidate of least error, float32 weights."""
    from qtool.quant.range_search import GAMMA

    x = np.random.default_rng(6).standard_t(3, (300, 32)).astype(np.float32)  # heavy tails: clipping matters
    absmax = np.abs(x).max(axis=1).astype(np.float64)
    candidates = absmax[None, :] * blocks.BLOCK_FACTORS[:, None]
    scale = (candidates / 7)[..., None]
    q = np.clip(np.rint(x[None] / scale), -8, 7) * scale
    weight = np.where((x[None] < -8 * scale) | (x[None] > 7 * scale), GAMMA[method], 1.0)
    errors = ((q - x[None]) ** 2 * weight).sum(axis=-1)
    expected = candidates[np.argmin(errors, axis=0), np.arange(len(x))]
    np.testing.assert_array_equal(blocks._absmax(x, 4, method), expected)


@pytest.mark.parametrize("chunk", [1, 40, 1 << 22])
def test_the_squared_rounding_error_is_summed_a_chunk_of_rows_at_a_time(chunk: int) -> None:
    """squared_error is Σ (x - fake_quantize(x))², whatever the chunk (a value, a few rows, the whole weight), for
    blocks along either axis, LPBQ, per channel along either axis and per tensor: the layer ranking's weight noise,
    without a whole weight's float64 copies (1.5 GB for a 250 MB LM head)."""
    w = np.random.default_rng(7).standard_t(3, (64, 48)).astype(np.float32)
    grids = [blocks.block_encoding(w, 1, 0, 16, 4, method="min-max"), blocks.block_encoding(w.T, 0, 1, 16, 4, method="mse"),
             blocks.block_encoding(w, 1, 0, 16, 4, method="min-max", lpbq=True),
             enc.symmetric(-np.abs(w).max(0), np.abs(w).max(0), 4, axis=1), enc.tf(w.min(1), w.max(1), 8, axis=0),
             enc.tf(float(w.min()), float(w.max()), 8)]  # fmt: skip
    for e in grids:
        x = w.T if e.blocks is not None and e.blocks.axis == 1 else w
        whole = float(np.sum((x.astype(np.float64) - e.fake_quantize(x)) ** 2))
        assert e.squared_error(x, chunk) == pytest.approx(whole, rel=1e-12) and whole > 0

"""An encodings file's long lists of numbers (a 2.35 GB decoder's 18 M block scales) are decoded into float64 arrays
as each entry is finished (files.load_json's number_arrays), not kept as Python floats: read from a file, an entry
gives the very encoding its lists give, and a bad value among them the same error, word for word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtool.errors import DataError
from qtool.io.encodings import NUMBER_LISTS, parse_encodings, read_encodings
from qtool.io.files import NUMBER_ARRAY_FROM, load_json
from qtool.quant import blocks

BLOCKS = NUMBER_ARRAY_FROM  # a [32 x BLOCKS // 2, 2] MatMul weight at blocks of 16 has BLOCKS scales


def _doc(entry: dict, fmt: str = "1.0.0") -> dict:
    if fmt == "2.0.0":
        return {"version": "2.0.0", "encodings": [entry]}
    return {"version": "1.0.0", "activation_encodings": [], "param_encodings": [entry]}


def _per_block(scales: list, offsets: list | None = None) -> dict:
    return {"name": "W", "enc_type": "PER_BLOCK", "dtype": "INT", "bw": 4, "is_sym": True, "block_size": 16,
            "scale": scales, "offset": [-8] * len(scales) if offsets is None else offsets}  # fmt: skip


def _lpbq(ints: list) -> dict:
    return {"name": "W", "enc_type": "LPBQ", "dtype": "INT", "bw": 8, "compressed_bw": 4, "is_sym": True,
            "block_size": 16, "scale": [0.5, 0.25], "offset": [-128, -128], "per_block_int_scale": ints}  # fmt: skip


def _read(tmp_path: Path, doc: dict) -> object:
    path = tmp_path / "o.json"
    path.write_text(json.dumps(doc))
    return read_encodings(path)


def test_only_a_named_objects_long_lists_of_finite_numbers_become_arrays() -> None:
    long, short = [0.5] * BLOCKS, [0.5] * (BLOCKS - 1)
    doc = {"name": "W", "scale": long, "offset": short, "y_scale": [*long[1:], True], "per_block_int_scale": [*long, 1e400],
           "min": long, "inner": {"scale": long}}  # fmt: skip
    found = load_json(json.dumps(doc), "o.json", number_arrays=NUMBER_LISTS)
    assert isinstance(found["scale"], np.ndarray) and found["scale"].dtype == np.float64 and found["scale"].tolist() == long
    assert [type(found[k]) for k in ("offset", "y_scale", "per_block_int_scale", "min")] == [list] * 4
    assert type(found["inner"]["scale"]) is list  # no name: not an encodings entry
    assert type(load_json(json.dumps(doc), "o.json")["scale"]) is list  # not asked for


@settings(max_examples=10, deadline=None)
@given(scales=st.lists(st.floats(2.0**-20, 16.0, width=32), min_size=1, max_size=3))
def test_a_long_per_block_entry_reads_as_its_lists_give_it(scales: list[float]) -> None:
    """The whole weight placed as the plan places it: the same scales, offsets, ranges and layout, list or array."""
    values = (scales * BLOCKS)[:BLOCKS]
    doc = _doc(_per_block(values))
    from_lists = parse_encodings(doc, "o.json").params["W"]
    from_text = parse_encodings(load_json(json.dumps(doc), "o.json", number_arrays=NUMBER_LISTS), "o.json").params["W"]
    assert from_text == from_lists
    shape = (16 * BLOCKS // 2, 2)
    assert blocks.place(from_text, shape, 1, 0, "W") == blocks.place(from_lists, shape, 1, 0, "W")


def test_a_long_lpbq_entry_reads_as_its_lists_give_it(tmp_path: Path) -> None:
    ints = (list(range(1, 17)) * BLOCKS)[:BLOCKS]
    from_file = _read(tmp_path, _doc(_lpbq(ints))).params["W"]
    assert from_file == parse_encodings(_doc(_lpbq(ints)), "o.json").params["W"]
    placed = blocks.place(from_file, (16 * BLOCKS // 2, 2), 1, 0, "W")
    np.testing.assert_array_equal(placed.scale, np.array(ints) * np.tile([0.5, 0.25], BLOCKS // 2))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_per_block([0.1] * (BLOCKS - 1) + [-0.1]), "every scale must be a finite positive number"),
        (_per_block([0.1] * (BLOCKS - 1) + ["0.1"]), "every scale must be a finite positive number"),
        (_per_block([0.1] * (BLOCKS - 1) + [1e-300]), r"scale 1e-300 is past float32's range"),
        (_per_block([0.1] * BLOCKS, [-8] * (BLOCKS - 1) + [-8.5]), r"offsets must be integers in \[-15, 0\]"),
        (_per_block([0.1] * BLOCKS, [-8] * (BLOCKS - 1) + [10**400]), r"offsets must be integers in \[-15, 0\]"),
        (_per_block([0.1] * BLOCKS, [-8] * (BLOCKS - 1)), "needs equal-length non-empty 'scale' and 'offset' lists"),
        (_lpbq([16] * (BLOCKS - 1) + [17]), r"every per_block_int_scale must be an integer in \[1, 16\]"),
        (_lpbq([16] * (BLOCKS - 1) + [2.5]), r"every per_block_int_scale must be an integer in \[1, 16\]"),
        (_lpbq([16] * (BLOCKS - 1) + ["3"]), "every 'per_block_int_scale' value must be a number, got \"3\""),
        (_lpbq([16] * (BLOCKS - 1) + [True]), "every 'per_block_int_scale' value must be a number, got true"),
        (_lpbq([16] * (BLOCKS + 1)), "'per_block_int_scale' must be a list of a multiple of 2 integers"),
    ],
)
def test_a_bad_value_in_a_long_list_is_refused_as_in_a_short_one(tmp_path: Path, entry: dict, message: str) -> None:
    where = str(tmp_path / "o.json")
    for read in (lambda: parse_encodings(_doc(entry), where), lambda: _read(tmp_path, _doc(entry))):
        with pytest.raises(DataError, match=message) as caught:
            read()
        assert str(caught.value).startswith(f"{where}: param_encodings[0]: 'W'")


def test_a_long_2_0_0_per_channel_entry_reads_as_its_lists_give_it(tmp_path: Path) -> None:
    scales = np.linspace(0.01, 1.0, BLOCKS).tolist()
    entry = {"name": "W", "output_dtype": "uint8", "y_scale": scales, "y_zero_point": [3] * BLOCKS, "axis": 1}
    from_file = _read(tmp_path, _doc(entry, "2.0.0")).params["W"]
    assert from_file == parse_encodings(_doc(entry, "2.0.0"), "o.json").params["W"]
    entry["y_zero_point"] = [3] * (BLOCKS - 1) + [3.5]
    with pytest.raises(DataError, match=r"every 'y_zero_point' value must be an integer, got 3\.5"):
        _read(tmp_path, _doc(entry, "2.0.0"))

"""Round 23 (helper h-hostile33): round 22's leftovers (a 0.6.1 file of 10^6 entries, a dangling ZipMap, a float16
QDQ model through every export format, external data released per weight), then odd inputs to every command,
probed on an installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_env import Workspace, make_workspace

from qtool.io import encodings as encodings_io


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a 0.6.1 file of very many entries: checked as columns ---------------------------------------------------------


def test_a_large_legacy_file_is_checked_a_key_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.6.1 file of 10^6 entries took 33 s of CPU to read after round 22: every entry was checked on its own, a
    dozen Python calls each, and each tensor's grid made its own Encoding by the frozen __init__. Now the entries of
    the shape AIMET writes are checked a key at a time over all of them (io/legacy_columns), and only a tensor of
    another shape goes through _legacy_tensor; every encoding is the one the tensor's own reading gives, to the bit,
    and its warnings and refusals are as before."""
    from test_round22 import _legacy_document

    data, expected = _legacy_document(600)
    data["activation_encodings"]["odd"] = [{"bitwidth": 8, "scale": 0.5, "offset": -3}]  # scale and offset alone
    expected["odd"] = encodings_io.min_max_encoding([-1.5], [126.0], 8, symmetric=False)
    checked = []
    one = encodings_io._legacy_tensor
    monkeypatch.setattr(encodings_io, "_legacy_tensor", lambda name, *a: checked.append(name) or one(name, *a))
    found = encodings_io.parse_encodings(data, "o.json")
    assert checked == ["odd"]
    assert found.all() == expected
    assert {n: e.axis for n, e in found.all().items()} == {n: e.axis for n, e in expected.items()}
    assert list(found.activations) == sorted(found.activations) and list(found.params) == sorted(found.params)
    data["activation_encodings"]["t0"][0]["max"] = -9.0  # a bad entry among plain ones: its own words, as before
    with pytest.raises(Exception, match=r"o.json: activation_encodings: 't0'\[0\]: min .* is greater than max -9.0"):
        encodings_io.parse_encodings(data, "o.json")

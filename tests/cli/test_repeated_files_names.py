"""The refusal of two overrides files, or of a -q beside a --config's, shows each path cut at its start, keeping the
file name that tells them apart (io/files.clipped_path): cut at 80 characters from the end, two shards deep in one
folder both read '.../dddd...' and the message named neither file, and pytest's own tmp paths (81 characters once
its run counter passed 999) failed tests/cli/test_repeated_files.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from test_repeated_files import _overrides

from qtool.io.files import QUOTE_LIMIT, clipped_path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def test_each_file_given_twice_is_named_by_its_file_name(ws: Workspace) -> None:
    acts, params = _overrides(ws.root / ("d" * 200))
    config = ws.root / "c.yaml"
    config.write_text(f"quantization_overrides: {acts}\n")
    before = ws.snapshot()
    for args in (["-q", acts, "-q", params], ["--config", config, "-q", params]):
        line = assert_refused(ws, before, ws.quantize("-o", ws.out, *args), 2, "--quantization_overrides is given twice",
                              "d/shard_acts.json", "d/shard_params.json")  # fmt: skip
        assert str(acts) not in line and "...ddd" in line  # cut at the start: a hostile config's path may be megabytes


def test_a_path_within_the_limit_is_shown_whole() -> None:
    path = "/" + "p" * (QUOTE_LIMIT - 1)
    assert clipped_path(path) == path and clipped_path(path + "/x.json") == "..." + (path + "/x.json")[-QUOTE_LIMIT + 3 :]
    assert len(clipped_path(path + "/x.json")) == QUOTE_LIMIT

"""Round 15 (helper h-hostile): the auto calibration default beside the algorithms its trials run, overrides that
leave it nothing to choose, stats replays given a percentile, and lists that feed an input --input_value pins,
probed on an installed wheel as a careless user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import conv_bn_model, write_samples
from hostile_env import Workspace, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- auto's trials speak of the list they were given -------------------------------------------------------------


def test_auto_trials_do_not_warn_of_adaround_samples_the_list_has(ws: Workspace) -> None:
    """--apply_algorithms adaround on a list of 8: auto's trials (adaround on each half) warned 'adaround:
    num_batches 16, but the input_list has 4 samples', of a list of 8 the user never cut in half."""
    write_samples(ws.root, conv_bn_model(), 8)
    result = ws.quantize("-o", ws.out, "--apply_algorithms", "adaround")
    assert result.exit_code == 0, result.stderr
    assert "calibration auto" in result.stdout
    warned = [line for line in result.stderr.splitlines() if "adaround: num_batches" in line]
    assert warned == ["qtool: WARNING: adaround: num_batches 32, but the input_list has 8 samples"], warned

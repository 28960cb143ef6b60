"""An .npy file whose dims are the input's in another order (NHWC data for an NCHW input) is read in order into
the input's shape, as any shape of the right count is, and said so: it had calibrated on scrambled pixels without
a word."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from qtool.io.raw import InputSpec, load_tensor

SPEC = InputSpec("image", np.dtype(np.float32), (1, 3, 8, 8))


def _load(tmp_path: Path, shape: tuple[int, ...], warned: set[str], name: str = "x.npy") -> np.ndarray:
    path = tmp_path / name
    np.save(path, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    return load_tensor(path, SPEC, "list.txt:1", warned=warned)


def test_nhwc_data_for_an_nchw_input_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qtool.io.raw"):
        array = _load(tmp_path, (1, 8, 8, 3), set())
    assert array.shape == SPEC.shape  # still read, in order, as before
    assert [r.getMessage() for r in caplog.records] == [
        f"list.txt:1: {tmp_path / 'x.npy'} holds shape [1, 8, 8, 3], input 'image' takes [1, 3, 8, 8]: its values "
        "are read in order into that shape, not transposed (NHWC data for an NCHW input? np.transpose it to the "
        "input's layout first)"]  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (3, 8, 8), (192,), (1, 3, 64)])
def test_a_shape_in_the_input_order_is_read_without_a_word(tmp_path: Path, caplog, shape) -> None:
    with caplog.at_level(logging.WARNING, logger="qtool.io.raw"):
        _load(tmp_path, shape, set())
    assert not caplog.records


def test_a_list_of_such_files_names_three(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    warned: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="qtool.io.raw"):
        for k in range(5):
            _load(tmp_path, (1, 8, 8, 3), warned, f"x{k}.npy")
    assert len(caplog.records) == 3 and caplog.records[-1].getMessage().endswith("; further files like it are not named")

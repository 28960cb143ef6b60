"""Outputs kept for the evaluation: in memory up to a budget, then one .npy file per output, never a pickle."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, scalar_dtypes

from qtool.io import kept_outputs
from qtool.io.kept_outputs import KeptOutputs


def _store(folder: Path, memory: int, disk: int = 1 << 30) -> KeptOutputs:
    return KeptOutputs(memory, lambda name: str(folder / name), disk)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(arrays(scalar_dtypes(), array_shapes(max_dims=3, max_side=4)), min_size=1, max_size=3),
                min_size=1, max_size=5), st.integers(0, 200))  # fmt: skip
def test_what_comes_back_is_what_went_in_wherever_it_was_kept(tmp_path_factory, samples, memory: int) -> None:
    folder = tmp_path_factory.mktemp("kept")
    kept = _store(folder, memory)
    assert all(kept.append(outputs) for outputs in samples)
    assert len(kept) == len(samples)
    for got, want in zip(kept, samples, strict=True):
        assert all(g.dtype == w.dtype and np.array_equal(g, w, equal_nan=True) for g, w in zip(got, want, strict=True))
    assert len(kept[1:]) == len(samples) - 1


def test_past_the_disk_budget_nothing_is_kept_and_its_files_are_gone(tmp_path: Path) -> None:
    kept = _store(tmp_path, memory=8, disk=16)
    assert kept.append([np.zeros(2, np.float32)])  # 8 bytes: memory
    assert kept.append([np.zeros(4, np.float32)])  # 16 bytes: a file
    assert len(list(tmp_path.iterdir())) == 1
    assert not kept.append([np.zeros(1, np.float32)])  # the disk budget is spent
    assert len(kept) == 0 and not list(tmp_path.iterdir())


def test_a_value_np_save_would_pickle_is_not_spilled(tmp_path: Path) -> None:
    kept = _store(tmp_path, memory=0)
    assert not kept.append([np.array(["a", None], dtype=object)])
    assert not kept.append([[np.zeros(2)]])  # a sequence output
    assert not list(tmp_path.iterdir())


def test_a_nearly_full_scratch_file_system_streams_instead(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(kept_outputs, "FREE_MARGIN", 1 << 62)
    kept = _store(tmp_path, memory=0)
    assert not kept.append([np.zeros(4, np.float32)])
    assert not list(tmp_path.iterdir())


def test_a_write_that_fails_streams_instead(tmp_path: Path) -> None:
    kept = _store(tmp_path / "missing", memory=0)  # np.save into a folder that is not there: OSError
    assert not kept.append([np.zeros(4, np.float32)])


def test_the_files_go_with_the_store(tmp_path: Path) -> None:
    kept = _store(tmp_path, memory=0)
    assert kept.append([np.ones(3), np.zeros((2, 2), np.int8)])
    assert len(list(tmp_path.iterdir())) == 2
    del kept
    gc.collect()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("memory", [0, 1 << 20])
def test_index_past_the_end_is_an_index_error(tmp_path: Path, memory: int) -> None:
    kept = _store(tmp_path, memory)
    kept.append([np.ones(2)])
    with pytest.raises(IndexError):
        kept[1]


def test_the_disk_budget_bounds_every_store_of_the_process_together(tmp_path: Path, monkeypatch) -> None:
    """Calibration's, mixed precision's and auto's stores could each hold DISK_BYTES (helper-72's review)."""
    monkeypatch.setattr(kept_outputs, "DISK_BYTES", 24)
    first, second = _store(tmp_path, memory=0), _store(tmp_path, memory=0)
    assert first.append([np.zeros(4, np.float32)])  # 16 bytes on disk
    assert not second.append([np.zeros(4, np.float32)])  # 32 together
    del first
    gc.collect()
    assert second.append([np.zeros(4, np.float32)])

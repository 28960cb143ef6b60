"""A model's outputs on the evaluation samples, kept for the comparisons that follow: in memory up to a budget,
past it one .npy file per output in a scratch folder, so that a model with large outputs is not run a second time.

Streaming the float model beside the quantized one instead costs a float pass and a second session's arena at
once: platedet's YOLOv8-seg (3.6 MB of outputs a sample, 64 samples) evaluated in 22 s at 526 MB peak with its
outputs kept, 40 s at 701 MB with both models streamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import weakref
from collections.abc import Callable, Sequence

import numpy as np

DISK_BYTES = 4 << 30  # past this the outputs are streamed again: a scratch folder is not the user's disk to fill
_SPILLED = [0]  # bytes every live store of the process holds on disk: DISK_BYTES bounds them all, not each
FREE_MARGIN = 1 << 30  # what a spill leaves free on the scratch file system


class KeptOutputs(Sequence):
    """Per sample, the list of a model's outputs, `append`ed in order. `append` is False, and the store empty,
    once they would pass `disk_bytes` on disk (or leave the scratch file system nearly full, or hold values
    np.save would pickle): the caller then streams the model instead."""

    def __init__(self, memory_bytes: int, scratch: Callable[[str], str], disk_bytes: int = DISK_BYTES) -> None:
        self.memory_bytes, self.disk_bytes, self._scratch = memory_bytes, disk_bytes, scratch
        self.held = self.written = 0
        self._samples: list[list[np.ndarray | str]] = []
        self._files: list[tuple[str, int]] = []  # (path, bytes)
        weakref.finalize(self, _remove, self._files)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return [np.load(v, allow_pickle=False) if isinstance(v, str) else v for v in self._samples[index]]

    def append(self, outputs: list) -> bool:
        size = sum(_nbytes(v) for v in outputs)
        if self.held + size <= self.memory_bytes:
            self.held += size
            self._samples.append([_owned(v) for v in outputs])
            return True
        if not self._spill(outputs, size):
            self.clear()
            return False
        return True

    def _spill(self, outputs: list, size: int) -> bool:
        if self.written + size > self.disk_bytes or _SPILLED[0] + size > DISK_BYTES or not all(_plain(v) for v in outputs):
            return False
        kept: list[np.ndarray | str] = []
        try:
            path = self._scratch(f"outputs-{id(self):x}-{len(self._samples)}")
            if shutil.disk_usage(os.path.dirname(path)).free < size + FREE_MARGIN:
                return False
            for k, value in enumerate(outputs):
                self._files.append((f"{path}-{k}.npy", value.nbytes))
                _SPILLED[0] += value.nbytes
                np.save(self._files[-1][0], value, allow_pickle=False)
                kept.append(self._files[-1][0])
        except OSError:  # the scratch file system full after all: stream
            return False
        self.written += size
        self._samples.append(kept)
        return True

    def clear(self) -> None:
        _remove(self._files)
        self._samples.clear()
        self.held = self.written = 0


def _remove(files: list[tuple[str, int]]) -> None:
    for path, size in files:
        _SPILLED[0] -= size
        with contextlib.suppress(OSError):
            os.remove(path)
    files.clear()


def _plain(value: object) -> bool:
    """An array np.save writes without pickling (a sequence output, a list, is kept in memory or not at all)."""
    return isinstance(value, np.ndarray) and not value.dtype.hasobject


def _nbytes(value: object) -> int:
    return sum(_nbytes(v) for v in value) if isinstance(value, list) else np.asarray(value).nbytes


def _owned(value: object) -> object:
    """A copy: an array onnxruntime returned keeps the session's arena alive (SLANet: 300 MB past calibration)."""
    return [_owned(v) for v in value] if isinstance(value, list) else np.array(value, copy=True)

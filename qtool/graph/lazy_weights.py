"""Lazy weights: initializers that stay in their external-data file until a step reads them (issue 22:
memory grows with the largest layer, not with copies of the model).

`external_data.load` makes a model's external initializers of LAZY_BYTES or more lazy: their `location`
is rewritten in memory to the data file's absolute path (qtool checked it lies in the model's folder;
an absolute location never reaches a written model). Copies of the proto share them for free.
`array` maps them read-only (one `mmap` a file), onnxruntime maps them itself (`on_disk` gives it
relative locations and their folder), `external_data.write` streams them into an output's data file.
`release` drops the mapped pages from the process's resident set between stages: they stay in the
page cache, and the kernel maps them again if a later step reads them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import mmap
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph import trial_memo
from qtool.io import staging

logger = logging.getLogger(__name__)
_MAPS: dict[str, tuple[tuple[int, int, int], mmap.mmap]] = {}  # path -> (its stat key, its mapping)


def is_lazy(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL and os.path.isabs(fields(tensor).get("location", ""))


def fields(tensor: onnx.TensorProto) -> dict[str, str]:
    return dict(entries(tensor))


def entries(tensor: onnx.TensorProto) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in tensor.external_data]


def span(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    """A lazy tensor's (file, offset, length)."""
    f = fields(tensor)
    return f["location"], int(f["offset"]), int(f["length"])


def lazy(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in model.graph.initializer if is_lazy(t)]


PACKED = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.FLOAT4E2M1})


def point(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def _mapping(path: str) -> mmap.mmap:
    """One read-only mapping per file (and per version of it: a file replaced since is mapped anew)."""
    st = os.stat(path)
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _MAPS.get(path)
    if cached is None or cached[0] != key:
        with open(path, "rb") as f:
            _MAPS[path] = (key, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    return _MAPS[path][1]


def array(tensor: onnx.TensorProto) -> np.ndarray:
    """A tensor as numpy; a lazy one is a read-only view of its file (no copy)."""
    if not is_lazy(tensor):
        return trial_memo.remember("array", (tensor,), lambda: numpy_helper.to_array(tensor))
    path, offset, length = span(tensor)
    if tensor.data_type in PACKED or tensor.data_type == onnx.TensorProto.STRING:
        with materialized([tensor]):
            return numpy_helper.to_array(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    values = np.frombuffer(_mapping(path), dtype=dtype, count=length // dtype.itemsize, offset=offset)
    return values.reshape(tuple(tensor.dims))


def raw(tensor: onnx.TensorProto) -> memoryview:
    path, offset, length = span(tensor)
    return memoryview(_mapping(path))[offset : offset + length]


def release(tensor: onnx.TensorProto | None = None) -> None:
    """Drop mapped pages from the resident set (they stay in the page cache): a lazy tensor's own where one is given
    (a step that reads weights one at a time; nothing for one in memory), else every file's. Every file's after each
    weight was N^2 madvise calls over a model stored a file per tensor (3000: 10.7 s of system time to quantize)."""
    if tensor is None:
        for _, mapped in _MAPS.values():
            mapped.madvise(mmap.MADV_DONTNEED)
        return
    if is_lazy(tensor) and (cached := _MAPS.get((where := span(tensor))[0])) is not None:
        _, offset, length = where
        start = offset - offset % mmap.PAGESIZE
        if (end := min(offset + length, len(cached[1]))) > start:
            cached[1].madvise(mmap.MADV_DONTNEED, start, end - start)


@contextmanager
def materialized(tensors_: list[onnx.TensorProto]) -> Iterator[None]:
    """Within the block, the lazy tensors among `tensors_` hold their bytes (for onnx's own readers)."""
    moved = []
    try:
        for tensor in tensors_:
            if is_lazy(tensor):
                fields = entries(tensor)
                data = bytes(raw(tensor))
                del tensor.external_data[:]
                tensor.ClearField("data_location")
                tensor.raw_data = data
                moved.append((tensor, fields))
        yield
    finally:
        for tensor, fields in moved:
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in fields)


@contextmanager
def on_disk(model: onnx.ModelProto) -> Iterator[str | None]:
    """Within the block, the lazy tensors' locations are relative to the folder yielded (None when
    there are none): what onnx's checker and onnxruntime (`session.model_external_initializers_file_folder_path`)
    accept, and a model that names its weights without holding them."""
    found = lazy(model)
    if not found:
        yield None
        return
    entries = [next(e for e in t.external_data if e.key == "location") for t in found]
    absolute = [e.value for e in entries]
    folder = os.path.commonpath([os.path.dirname(p) for p in absolute])
    try:
        for entry, path in zip(entries, absolute, strict=True):
            entry.value = os.path.relpath(path, folder)
        yield folder
    finally:
        for entry, path in zip(entries, absolute, strict=True):
            entry.value = path


def spilled(values: np.ndarray, name: str, scratch: str) -> onnx.TensorProto:
    """`values` as a lazy initializer, appended (page-aligned) to the file `scratch` (an absolute path in
    a temporary folder, see `forget`): a float copy of a quantized model without its weights in memory."""
    values = np.ascontiguousarray(values)
    tensor = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(values.dtype), dims=values.shape)
    point(tensor, scratch, _appended(scratch, memoryview(values).cast("B")), values.nbytes)
    return tensor


def spill(tensor: onnx.TensorProto, scratch: str) -> None:
    """An in-memory `tensor`'s raw bytes moved to the file `scratch` (as `spilled`'s), the tensor made lazy in place:
    any type, int4's packed bytes too."""
    data = tensor.raw_data
    point(tensor, scratch, _appended(scratch, data), len(data))


def _appended(scratch: str, data) -> int:
    """Appends `data` to `scratch` at a page boundary (onnxruntime maps such a tensor in place), and says where."""
    with open(scratch, "ab") as f:
        offset = f.seek(0, os.SEEK_END)
        f.write(b"\0" * (-offset % 4096))
        offset += -offset % 4096
        f.write(data)
    return offset


def forget(folder: str) -> None:
    """Stop mapping the files under `folder` (before it is removed: a mapping keeps a deleted file's blocks)."""
    for path in [p for p in _MAPS if p.startswith(os.path.join(folder, ""))]:
        _, mapped = _MAPS.pop(path)
        with contextlib.suppress(BufferError):  # arrays still view it: it closes when they go
            mapped.close()


def copy_fields(source, target, skip: str) -> None:
    """Every field of the message `source` but `skip` into `target` (no copy of the skipped field's data)."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


_SCRATCH: list[str] = []  # the process's scratch folder, made on first use
_SCRATCH_LOCK: list[int] = []  # a descriptor holding its lock's flock while the process lives
SCRATCH_PREFIX, SCRATCH_LOCK = "qtool-weights-", ".lock"


def scratch_file(name: str) -> str:
    """A file `name` in the process's scratch folder (removed when it exits), for `spilled`."""
    return os.path.join(_scratch(), name)


def _scratch() -> str:
    if not _SCRATCH:
        sweep_scratch(tempfile.gettempdir())
        folder = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
        lock = os.open(os.path.join(folder, SCRATCH_LOCK), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        staging.try_lock(lock)
        _SCRATCH_LOCK.append(lock)
        _SCRATCH.append(folder)
        atexit.register(_remove_scratch, folder)
    return _SCRATCH[0]


def sweep_scratch(parent: str) -> None:
    """Removes the scratch folders of runs that were killed (SIGKILL, the OOM killer: no atexit ran), spilled
    weights of up to a model's size each: this user's, whose lock no live run holds (the kernel dropped it
    with the run), unchanged for staging.FRESH_SECONDS. A folder with no lock file (a qtool from before it, or
    one between its creation and its lock) is left alone."""
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            if entry.name.startswith(SCRATCH_PREFIX):
                _remove_if_stale(entry.path)


def _remove_if_stale(folder: str) -> None:
    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or time.time() - st.st_mtime < staging.FRESH_SECONDS:
            return
        fd = os.open(os.path.join(folder, SCRATCH_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if staging.try_lock(fd):
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed %s, left by a qtool run that was killed", folder)
    finally:
        os.close(fd)


def _remove_scratch(folder: str) -> None:
    forget(folder)
    shutil.rmtree(folder, ignore_errors=True)

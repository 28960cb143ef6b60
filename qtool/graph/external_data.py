"""External data: the weights a model keeps in files beside it (ONNX `data_location: EXTERNAL`).

Every `location` must resolve inside the model's folder, symlinks followed: qtool checks this
itself before reading a byte, so that the answer does not depend on the installed onnx's loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO

import onnx
from onnx import external_data_helper

from qtool.errors import ModelError

PROTOBUF_LIMIT = 2**31 - 1  # protobuf cannot serialize (or even size) a message past this


def byte_size(model: onnx.ModelProto) -> int:
    """The model's serialized size, summed part by part: ModelProto.ByteSize() itself fails past 2 GiB."""
    graph = model.graph
    return sum(part.ByteSize() for part in (*graph.initializer, *graph.node, *graph.input, *graph.output))


def tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers and attribute tensors, subgraphs included."""
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def files(model: onnx.ModelProto, folder: Path, where: str) -> list[Path]:
    """The external-data files `model` names, each checked to lie inside `folder`."""
    root = Path(os.path.realpath(folder))
    found: dict[Path, None] = {}
    for tensor in tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or Path(location).is_absolute() or Path(location).drive:
            raise ModelError(f"tensor {tensor.name!r}: external data location {location!r} is not relative", where=where)
        resolved = Path(os.path.realpath(root / location))
        if not resolved.is_relative_to(root):
            raise ModelError(
                f"tensor {tensor.name!r}: external data location {location!r} leads outside the model's folder",
                where=where,
            )
        if not resolved.is_file():
            raise ModelError(f"tensor {tensor.name!r}: external data file {location!r} not found", where=where)
        found[resolved] = None
    return list(found)


def load(model: onnx.ModelProto, folder: Path, where: str) -> list[Path]:
    """Read every external tensor into `model` after checking its location; returns the files read."""
    checked = files(model, folder, where)
    if checked:
        try:
            external_data_helper.load_external_data_for_model(model, str(folder))
        except Exception as e:  # onnx raises ValueError/OSError/its own checker errors for bad offsets
            raise ModelError(f"cannot read external data: {str(e).splitlines()[0][:160]}", where=where) from e
    return checked


@contextmanager
def detached(model: onnx.ModelProto, min_bytes: int, location: str = "qtool-in-memory") -> Iterator[list]:
    """Within the block, the model's initializers of `min_bytes` or more have no data of their own (marked
    external at `location`), so that the rest serializes under protobuf's 2 GiB; yields [(tensor, raw)].
    The data is put back on exit."""
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    try:
        for tensor in model.graph.initializer:
            if _large_raw(tensor, min_bytes):
                moved.append((tensor, _externalise(tensor, location, 0)))
        yield moved
    finally:
        _restore(moved)


def _large_raw(tensor: onnx.TensorProto, min_bytes: int) -> bool:
    """Raw data of about `min_bytes` or more, in the model itself (sized without copying the bytes)."""
    return (
        tensor.HasField("raw_data")
        and tensor.data_location != onnx.TensorProto.EXTERNAL
        and tensor.ByteSize() >= min_bytes
    )


def _externalise(tensor: onnx.TensorProto, location: str, offset: int) -> bytes:
    """Take `tensor`'s bytes out and point it at `offset` in `location`; returns the bytes."""
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
        tensor.external_data.add(key=key, value=value)
    return raw


def _restore(moved: list[tuple[onnx.TensorProto, bytes]]) -> None:
    """Put the bytes `_externalise` took back: the caller's model is not ours to change."""
    for tensor, raw in moved:
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = raw


def infer_shapes(model: onnx.ModelProto, in_place: bool = False, **options: bool) -> onnx.ModelProto:
    """onnx's shape inference, also past 2 GiB: then it runs on the model with its weights detached
    (shapes need none of their bytes) and its types are copied onto `model` (`in_place`) or a copy."""
    if byte_size(model) < PROTOBUF_LIMIT:
        return onnx.shape_inference.infer_shapes(model, **options)
    with detached(model, 1 << 20):
        inferred = onnx.shape_inference.infer_shapes(model.SerializeToString(), **options)
    out = model if in_place else onnx.ModelProto()
    if not in_place:
        out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(inferred.graph.value_info)
    del out.graph.output[:]
    out.graph.output.extend(inferred.graph.output)
    return out


ALIGNMENT = 4096  # each tensor starts on a page boundary, so that onnxruntime can map it
INLINE_BYTES = 1024  # smaller tensors (scales, zero points, shapes) stay in the .onnx file


def write(
    model: onnx.ModelProto,
    path: Path,
    open_output: Callable[[Path, str], AbstractContextManager[IO]],
) -> None:
    """`path` plus `path.data`: every tensor of INLINE_BYTES or more with raw data goes to the data
    file (relative location, page-aligned, in graph order: the same model gives the same bytes), the
    rest stays inline. `model` is left as it was; `open_output` stages each file (outputs.atomic_write)."""
    location = f"{path.name}.data"
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    try:
        with open_output(path.with_name(location), "wb") as data:
            offset = 0
            for tensor in tensors(model.graph):
                if not _large_raw(tensor, INLINE_BYTES):
                    continue
                padding = -offset % ALIGNMENT
                data.write(b"\0" * padding)
                offset += padding
                raw = _externalise(tensor, location, offset)
                moved.append((tensor, raw))
                data.write(raw)
                offset += len(raw)
        with open_output(path, "wb") as handle:
            handle.write(model.SerializeToString(deterministic=True))
    finally:
        _restore(moved)

"""External data: the weights a model keeps in files beside it (ONNX `data_location: EXTERNAL`).

Every `location` must resolve inside the model's folder, symlinks followed: qtool checks this
itself before reading a byte, so that the answer does not depend on the installed onnx's loader.

Initializers of LAZY_BYTES or more stay in their file until a step reads them: `lazy_weights`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from qtool.errors import ModelError
from qtool.graph.lazy_weights import (  # re-exported: callers reach a tensor's bytes through this module
    PACKED,
    array,
    entries,
    fields,
    forget,
    is_lazy,
    lazy,
    materialized,
    on_disk,
    point,
    raw,
    release,
    scratch_file,
    span,
    spill,
    spilled,
)
from qtool.io.files import clipped, quoted

logger = logging.getLogger(__name__)
__all__ = ["array", "checkable", "forget", "is_lazy", "lazy", "materialized", "on_disk", "release"]

PROTOBUF_LIMIT = 2**31 - 1  # protobuf cannot serialize (or even size) a message past this
LAZY_BYTES = 1024  # smaller external tensors (shape constants shape inference reads) are loaded
# Below this, a model's integer weights cost less than a session's own memory: a scratch copy (in RAM where
# $TMPDIR is a tmpfs) and a model copy to save them would cost more than they give back
SPILL_BYTES = 64 << 20
_MEMORY = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # a tensor past it is refused (_extent)


def weight_tensor(values: np.ndarray, name: str, scratch: str) -> onnx.TensorProto:
    """`values` as the initializer `name`: a layer's weight (LAZY_BYTES or more) `spilled` to `scratch`, read lazily,
    so a float copy of a model does not hold its weights in memory; a smaller tensor in memory, and a weight the
    scratch file cannot take (a full disk, a file-size limit: export and inspect stopped on 'qtool: internal error',
    OSError) in memory too, said once."""
    if values.nbytes >= LAZY_BYTES:
        try:
            return spilled(values, name, scratch)
        except OSError as e:
            if not _UNSPILLED:
                logger.warning("cannot write the scratch file %s (%s): weights kept in memory instead (set TMPDIR to "
                               "a folder with room)", scratch, e.strerror or e)  # fmt: skip
            _UNSPILLED.append(scratch)
    return numpy_helper.from_array(values, name)


_UNSPILLED: list[str] = []  # scratch files that refused a weight: warned of once a process


def spilled_weights(model: onnx.ModelProto, at_least: int = SPILL_BYTES) -> onnx.ModelProto:
    """`model` with its in-memory initializers of LAZY_BYTES or more moved to a file of the process's scratch folder
    and read lazily from there (sessions map them, saves stream them), so that it holds no weight beside a session of
    it: a copy, since protobuf's arena keeps a cleared field's bytes until the whole message goes (`model`'s tensors
    are made lazy too). Where the folder cannot be written (a full disk, an unwritable $TMPDIR) those left stay, and
    below `at_least` bytes of them `model` is returned as it is."""
    if sum(len(t.raw_data) for t in model.graph.initializer if len(t.raw_data) >= LAZY_BYTES) < at_least:
        return model
    with contextlib.suppress(OSError):  # a tensor is made lazy only once its bytes are written
        scratch = scratch_file("spilled-weights.data")
        for tensor in model.graph.initializer:
            if len(tensor.raw_data) >= LAZY_BYTES:
                spill(tensor, scratch)
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def proto_size(model: onnx.ModelProto) -> int:
    """The in-memory model's serialized size, summed part by part (ModelProto.ByteSize() fails past 2 GiB)."""
    graph = model.graph
    return sum(part.ByteSize() for part in (*graph.initializer, *graph.node, *graph.input, *graph.output))


def byte_size(model: onnx.ModelProto) -> int:
    """The model's size once written: its proto plus its lazy weights."""
    return proto_size(model) + sum(span(t)[2] for t in lazy(model))


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


def files(model: onnx.ModelProto, folder: Path, where: str, linked: Path | None = None) -> list[Path]:
    """The external-data files `model` names, each checked to lie inside `folder`, or inside `linked`, the folder
    a symlinked model file lies in: Hugging Face's cache links model.onnx and model.onnx_data from a snapshot's
    folder to blobs/ beside each other, which onnxruntime reads and qtool refused ('leads outside')."""
    roots = [Path(os.path.realpath(f)) for f in (folder, linked) if f is not None]
    found: dict[Path, None] = {}
    for tensor in tensors(model.graph):
        if external_data_helper.uses_external_data(tensor):
            found[_resolved(tensor, roots, where)] = None
    return list(found)


def _resolved(tensor: onnx.TensorProto, roots: list[Path], where: str) -> Path:
    location = fields(tensor).get("location", "")
    if not location or Path(location).is_absolute() or Path(location).drive:
        raise ModelError(f"tensor {tensor.name!r}: external data location {location!r} is not relative", where=where)
    if "\0" in location:  # no file has such a name: os.path raises ValueError on it
        raise ModelError(f"tensor {tensor.name!r}: external data location {quoted(location)} has a NUL byte", where=where)
    resolved = Path(os.path.realpath(roots[0] / location))
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ModelError(
            f"tensor {tensor.name!r}: external data location {location!r} leads outside the model's folder", where=where
        )
    if not resolved.exists():
        raise ModelError(f"tensor {tensor.name!r}: external data file {location!r} not found", where=where)
    if not resolved.is_file():  # a FIFO or a device would block or never end
        raise ModelError(f"tensor {tensor.name!r}: external data file {location!r} is not a regular file", where=where)
    return resolved


def load(model: onnx.ModelProto, folder: Path, where: str, linked: Path | None = None) -> list[Path]:
    """Check every external tensor's location and extent (in `folder`, or `linked`: files'); load the small ones and
    make the initializers lazy (the module docstring); returns the files they live in."""
    checked = files(model, folder, where, linked)
    roots = [Path(os.path.realpath(f)) for f in (folder, linked) if f is not None]
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor):
            path = _resolved(tensor, roots, where)
            offset, length = _extent(tensor, path, where)
            if length >= LAZY_BYTES:
                point(tensor, str(path), offset, length)
    for tensor in tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor) or is_lazy(tensor):
            continue
        path = _resolved(tensor, roots, where)
        offset, length = _extent(tensor, path, where)
        try:  # read from the file it resolves to: onnx's reader refuses a symlink, which a linked model's data is
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as e:
            raise ModelError(f"cannot read external data: {clipped(str(e).splitlines()[0])}", where=where) from e
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = data
    return checked


def _extent(tensor: onnx.TensorProto, path: Path, where: str) -> tuple[int, int]:
    """(offset, length), checked against the file's size and the tensor's type and shape."""
    given, size = fields(tensor), path.stat().st_size
    try:
        offset = int(given.get("offset") or 0)
        length = int(given["length"]) if given.get("length") else size - offset
    except ValueError as e:
        raise ModelError(f"tensor {tensor.name!r}: bad external data offset or length", where=where) from e
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    count = math.prod(tensor.dims)  # Python ints: int64 wrapped [2^32, 2^32] to 0, read then as an empty tensor
    needed = (count + 1) // 2 if tensor.data_type in PACKED else count * itemsize
    if offset < 0 or (length != needed and given.get("length")):
        raise ModelError(
            f"tensor {tensor.name!r}: its external data says offset {offset}, length {length}; its shape and type "
            f"take {needed} bytes",
            where=where,
        )
    if needed > _MEMORY:  # every step reads a weight whole (its range, NaN scan): a 1 TiB sparse file ran for minutes
        raise ModelError(f"tensor {tensor.name!r} takes {needed / 2**30:.4g} GiB ({path.name}), more than this machine's "
                         f"{_MEMORY / 2**30:.3g} GiB of memory: no step can hold it", where=where)  # fmt: skip
    if length < needed or offset + length > size:
        raise ModelError(
            f"cannot read external data: tensor {tensor.name!r} needs {needed} bytes at offset {offset} of "
            f"{path.name}, which has {size}",
            where=where,
        )
    return offset, needed


LEFT_OUT = "qtool-in-memory"  # the location a weightless copy's stubs point at


def weightless(
    model: onnx.ModelProto, min_bytes: int, *, typed: bool = False
) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """A copy of `model` whose initializers of `min_bytes` or more held in memory are bodiless stubs marked
    external at LEFT_OUT, so that it serializes under protobuf's 2 GiB and onnx's C++ passes (shape inference,
    the version converter) copy no weights; and those initializers (the model's own). `model` is not touched:
    bytes taken out of a long-lived proto and put back stay in its arena, a copy of the weights per call
    (sequential GPTQ on MiniLM's blocks reached 4 GB that way). Only raw_data is taken out unless `typed`:
    values in float_data and the other typed fields too (tf2onnx's DTLN), for a caller that puts the
    initializers back whole (`transformed`; a session's OrtValues are read from raw_data)."""
    light, large = without_initializers(model), []
    for tensor in model.graph.initializer:
        if _large_raw(tensor, min_bytes) or (typed and _large_typed(tensor, min_bytes)):
            large.append(tensor)
            stub = light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
            point(stub, LEFT_OUT, 0, tensor.ByteSize())
        else:
            light.graph.initializer.add().CopyFrom(tensor)
    return light, large


HEAVY_BYTES = 1 << 20  # an in-memory weight this large is checked here, not serialized and parsed by onnx.checker
_TYPED = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` for onnx.checker: a copy whose lazy initializers (which it reads relative to the working folder) and
    in-memory raw ones of HEAVY_BYTES or more are graph inputs of the same type and shape. The checker serializes and
    parses what it is given, twice its weights (a 2.35 GB decoder's matmulnbits export peaked there, 1.7 GB over the
    model); qtool checked the lazy ones' data, and checks here what the checker checks of the others' (one value
    field, and the bytes their type and dims need), a weight at a time."""
    heavy = [t for t in model.graph.initializer if t.HasField("raw_data") and t.data_type != onnx.TensorProto.STRING
             and t.data_location != onnx.TensorProto.EXTERNAL and _nbytes(t) >= HEAVY_BYTES]  # fmt: skip
    found = [*lazy(model), *heavy]
    if not found:
        return model
    for tensor in heavy:
        need = (int(np.prod(tensor.dims, dtype=np.int64)) + 1) // 2 if tensor.data_type in PACKED else _nbytes(tensor)
        if any(len(getattr(tensor, f)) for f in _TYPED):
            raise onnx.checker.ValidationError(f"TensorProto (tensor name: {tensor.name}) should contain one and only one value field.")
        if (size := len(tensor.raw_data)) < need:
            raise onnx.checker.ValidationError(f"TensorProto (tensor name: {tensor.name}) raw_data size ({size} bytes) is "
                                               f"too small for the declared shape and type ({need} bytes required).")  # fmt: skip
    names = {t.name for t in found}
    out = without_initializers(model)
    out.graph.initializer.extend(t for t in model.graph.initializer if t.name not in names)
    inputs = {v.name for v in out.graph.input}
    out.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in found if t.name not in inputs)
    return out


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` but its initializers, for a caller that writes new ones: copied and then replaced,
    the old ones' bytes would stay in the copy's arena (a QDQ model held its float weights as well)."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip={"initializer"})
    return out


def transformed(
    model: onnx.ModelProto, transform: Callable[[onnx.ModelProto], onnx.ModelProto], min_bytes: int = 1024
) -> onnx.ModelProto:
    """transform(model) run on its weightless copy (the version converter serializes, copies and parses the
    whole model: MiniLM's 90 MB three times over for the opset block-wise weights need); the result's stubs
    get the weights back. Every initializer of a KB or more is left out, float_data ones too: the copies of a
    small model's weights were the peak of its quantize (the upgrade to opset 21 for 16-bit Q/DQ took 11 MB
    on Silero's 1.2 MB of weights, 16 MB on DTLN's 1.4 MB of float_data; 4 and 5.5 MB without them)."""
    light, large = weightless(model, min_bytes, typed=True)
    out, by_name = transform(light), {t.name: t for t in large}
    for tensor in out.graph.initializer:
        if fields(tensor).get("location") == LEFT_OUT:
            tensor.CopyFrom(by_name[tensor.name])
    return out


def copy_fields(source, target, skip: Collection[str]) -> None:
    """Every field set in `source` but those in `skip` copied into `target` (a message of the same type)."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        # protobuf 6 has is_repeated, older ones only label (which 7 dropped)
        if field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _large_raw(tensor: onnx.TensorProto, min_bytes: int) -> bool:
    """Raw data of about `min_bytes` or more, in the model itself (sized without copying the bytes)."""
    return (
        tensor.HasField("raw_data")
        and tensor.data_location != onnx.TensorProto.EXTERNAL
        and tensor.ByteSize() >= min_bytes
    )


def _large_typed(tensor: onnx.TensorProto, min_bytes: int) -> bool:
    """Values of about `min_bytes` or more in the typed fields (float_data, int64_data, ...), in the model itself."""
    return (
        not tensor.HasField("raw_data")
        and tensor.data_location != onnx.TensorProto.EXTERNAL
        and tensor.ByteSize() >= min_bytes
    )


def _externalise(tensor: onnx.TensorProto, location: str, offset: int) -> bytes:
    """Take `tensor`'s bytes out and point it at `offset` in `location`; returns the bytes."""
    data = tensor.raw_data
    point(tensor, location, offset, len(data))
    return data


def _restore(moved: list[tuple[onnx.TensorProto, bytes]]) -> None:
    """Put the bytes `_externalise` took back: the caller's model is not ours to change."""
    for tensor, data in moved:
        del tensor.external_data[:]
        tensor.ClearField("data_location")
        tensor.raw_data = data


def infer_shapes(model: onnx.ModelProto, in_place: bool = False, **options: bool) -> onnx.ModelProto:
    """onnx's shape inference run on `model`'s shape_probe, whose cost does not grow with its weights (a LightGBM
    tree ensemble's 194 MB of node attributes were serialized and parsed again on every run: 2.5 s and 1 GB each);
    the types found (value_info and outputs, subgraphs' inputs too) are copied onto `model` (`in_place`) or a copy."""
    found = probe_inferred(model, **options)
    out = model if in_place else onnx.ModelProto()
    if not in_place:
        out.CopyFrom(model)
    _copy_types(found.graph, out.graph)
    return out


def probe_inferred(model: onnx.ModelProto, **options: bool) -> onnx.ModelProto:
    """onnx's shape inference on `model`'s shape_probe: its types and shapes, without the large tensors' data."""
    with on_disk(model):  # lazy tensors named relative to their folder, as in a written model
        probe = shape_probe(model)
    return onnx.shape_inference.infer_shapes(probe, **options)


STUB_BYTES = 1024  # a tensor this large is a stub in a shape probe, but for a 1-D integer one (a shape, axes,
SHAPE_BYTES = 1 << 20  # indices) below this: shape inference and data propagation read those values
# ai.onnx.ml ops whose shape inference reads of their long lists (nodes_*, class_*, target_*) only that they are set
PRESENCE_LISTS = frozenset({"TreeEnsembleClassifier", "TreeEnsembleRegressor"})
_SHAPE_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})


def shape_probe(model: onnx.ModelProto, min_bytes: int = STUB_BYTES) -> onnx.ModelProto:
    """A copy of `model` for shape inference without the bytes it does not read: initializers and tensor attributes
    (a Constant's value) of `min_bytes` or more, in subgraphs too, but 1-D integer ones below SHAPE_BYTES, become
    bodiless stubs of the same type and dims marked external at LEFT_OUT; the long lists of a PRESENCE_LISTS op
    become empty lists of their type (its classlabels_*, which give its class count, stay). Nodes, graphs and their
    order are the model's."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip={"graph"})
    _probe_graph(model.graph, out.graph, min_bytes)
    return out


def _probe_graph(graph: onnx.GraphProto, out: onnx.GraphProto, min_bytes: int) -> None:
    copy_fields(graph, out, skip={"initializer", "node"})
    for tensor in graph.initializer:
        _probe_tensor(tensor, out.initializer.add(), min_bytes)
    for node in graph.node:
        trees = node.domain == "ai.onnx.ml" and node.op_type in PRESENCE_LISTS
        if not any(_is_large(a, min_bytes, trees) for a in node.attribute):
            out.node.add().CopyFrom(node)
            continue
        copy = out.node.add()
        copy_fields(node, copy, skip={"attribute"})
        for attr in node.attribute:
            _probe_attribute(attr, copy.attribute.add(), min_bytes, trees)


def _is_large(attr: onnx.AttributeProto, min_bytes: int, trees: bool) -> bool:
    """Whether the probe changes `attr` (a subgraph is looked into whatever its size)."""
    if attr.HasField("g") or attr.graphs:
        return True
    if any(_is_stubbed(t, min_bytes) for t in [*([attr.t] if attr.HasField("t") else []), *attr.tensors]):
        return True
    return trees and _dropped_list(attr, min_bytes)


def _dropped_list(attr: onnx.AttributeProto, min_bytes: int) -> bool:
    listed = 4 * len(attr.floats) + 8 * (len(attr.ints) + len(attr.strings))  # a string's bytes at least its length's
    return not attr.name.startswith("classlabels_") and listed >= min_bytes


def _probe_attribute(attr: onnx.AttributeProto, out: onnx.AttributeProto, min_bytes: int, trees: bool) -> None:
    lists = {"floats", "ints", "strings"} if trees and _dropped_list(attr, min_bytes) else set()
    skip = {"t", "tensors", "g", "graphs"} | lists
    copy_fields(attr, out, skip=skip)
    if attr.HasField("t"):
        _probe_tensor(attr.t, out.t, min_bytes)
    for tensor in attr.tensors:
        _probe_tensor(tensor, out.tensors.add(), min_bytes)
    if attr.HasField("g"):
        _probe_graph(attr.g, out.g, min_bytes)
    for graph in attr.graphs:
        _probe_graph(graph, out.graphs.add(), min_bytes)


def _probe_tensor(tensor: onnx.TensorProto, out: onnx.TensorProto, min_bytes: int) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or not _is_stubbed(tensor, min_bytes):
        out.CopyFrom(tensor)
        return
    out.name, out.data_type = tensor.name, tensor.data_type
    out.dims.extend(tensor.dims)
    point(out, LEFT_OUT, 0, _nbytes(tensor))


def _is_stubbed(tensor: onnx.TensorProto, min_bytes: int) -> bool:
    size = _nbytes(tensor)
    shape_like = tensor.data_type in _SHAPE_TYPES and len(tensor.dims) <= 1
    return size >= min_bytes and not (shape_like and size < max(min_bytes, SHAPE_BYTES))


def _nbytes(tensor: onnx.TensorProto) -> int:
    """A tensor's size from its type and dims (ByteSize() serializes the bytes it counts)."""
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):  # a type numpy has no dtype for
        itemsize = 1
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def _copy_types(source: onnx.GraphProto, target: onnx.GraphProto, subgraph: bool = False) -> None:
    """The types shape inference wrote into `source` (a probe of `target`) copied onto `target`, graph by graph:
    a subgraph's value_info, outputs and inputs (a Loop body's), the main graph's value_info and outputs."""
    for field in ("value_info", "output", "input") if subgraph else ("value_info", "output"):
        del getattr(target, field)[:]
        getattr(target, field).extend(getattr(source, field))
    for node, into in zip(source.node, target.node, strict=True):
        for attr, attr_into in zip(node.attribute, into.attribute, strict=True):
            if attr.HasField("g"):
                _copy_types(attr.g, attr_into.g, subgraph=True)
            for graph, graph_into in zip(attr.graphs, attr_into.graphs, strict=True):
                _copy_types(graph, graph_into, subgraph=True)


ALIGNMENT = 4096  # each tensor starts on a page boundary, so that onnxruntime can map it
INLINE_BYTES = 1024  # smaller tensors (scales, zero points, shapes) stay in the .onnx file
CHUNK = 64 << 20  # a lazy tensor is copied to the output this much at a time


def write(
    model: onnx.ModelProto,
    path: Path,
    open_output: Callable[[Path, str], AbstractContextManager[IO]],
) -> None:
    """`path` plus `path.data`: every tensor of INLINE_BYTES or more with data (in memory or lazy)
    goes to the data file (relative location, page-aligned, in graph order: the same model gives the
    same bytes), the rest stays inline. `model` is left as it was; `open_output` stages each file
    (outputs.atomic_write)."""
    location = f"{path.name}.data"
    moved: list[tuple[onnx.TensorProto, bytes]] = []
    pointed: list[tuple[onnx.TensorProto, list]] = []
    try:
        with open_output(path.with_name(location), "wb") as data:
            offset = 0
            for tensor in tensors(model.graph):
                if not (is_lazy(tensor) or _large_raw(tensor, INLINE_BYTES)):
                    continue
                padding = -offset % ALIGNMENT
                data.write(b"\0" * padding)
                offset += padding
                if is_lazy(tensor):
                    pointed.append((tensor, entries(tensor)))
                    length = _copy_lazy(tensor, data)
                    point(tensor, location, offset, length)
                    offset += length
                    continue
                chunk = _externalise(tensor, location, offset)
                moved.append((tensor, chunk))
                data.write(chunk)
                offset += len(chunk)
        with open_output(path, "wb") as handle:
            handle.write(model.SerializeToString(deterministic=True))
    finally:
        _restore(moved)
        for tensor, fields in pointed:
            del tensor.external_data[:]
            tensor.external_data.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in fields)


def _copy_lazy(tensor: onnx.TensorProto, out: IO) -> int:
    """Stream a lazy tensor's bytes to `out`, dropping each chunk's pages once written."""
    view = raw(tensor)
    for start in range(0, len(view), CHUNK):
        out.write(view[start : start + CHUNK])
    release(tensor)
    return len(view)

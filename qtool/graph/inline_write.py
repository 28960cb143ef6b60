"""Write a model with its weights inline without holding them: the protobuf encoding of a model whose
initializers are lazy (lazy_weights.py), assembled piece by piece and streamed from their files.

The bytes are those of `SerializeToString(deterministic=True)` on the model with its weights read in:
deterministic serialization writes fields in field-number order, so a message is the encoding of its
fields before one field, that field, then the rest (ModelProto.graph is field 7, GraphProto.initializer
field 5, TensorProto.raw_data field 9), each length-delimited field a tag, a varint length and its bytes.
"""

from __future__ import annotations

from typing import IO

import onnx

from qtool.graph.lazy_weights import copy_fields, is_lazy, raw, release
from qtool.graph.protobuf_wire import GRAPH, INITIALIZER, RAW_DATA, field_size, key, unknown_fields


def write_inline(model: onnx.ModelProto, out: IO) -> None:
    """`model` serialized deterministically, its lazy weights inline, written to `out` as it goes."""
    head, tail = _around(model, "graph")
    g_head, g_tail = _around(model.graph, "initializer")
    sizes = [_size(t) for t in model.graph.initializer]
    graph_size = len(g_head) + len(g_tail) + sum(field_size(INITIALIZER, n) for n in sizes)
    out.write(head + key(GRAPH, graph_size))
    _write_graph(model.graph, g_head, sizes, g_tail, out)
    out.write(tail)


def write_graph(graph: onnx.GraphProto, out: IO) -> None:
    """The graph's own deterministic encoding (what stats.model_hash hashes), its lazy weights inline, as it goes."""
    g_head, g_tail = _around(graph, "initializer")
    _write_graph(graph, g_head, [_size(t) for t in graph.initializer], g_tail, out)


def _write_graph(graph: onnx.GraphProto, g_head: bytes, sizes: list[int], g_tail: bytes, out: IO) -> None:
    out.write(g_head)
    for tensor, size in zip(graph.initializer, sizes, strict=True):
        out.write(key(INITIALIZER, size))
        write_tensor(tensor, out)
    out.write(g_tail)


def write_tensor(tensor: onnx.TensorProto, out: IO) -> None:
    """The tensor's deterministic encoding, lazy bytes inline: one tensor's encoding held at a time, its pages dropped."""
    before, data, after = _tensor(tensor)
    out.write(before)
    if data is not None:
        out.write(key(RAW_DATA, len(data)))
        out.write(data)
        release(tensor)
    out.write(after)


def _size(tensor: onnx.TensorProto) -> int:
    """The length of the tensor's encoding, its lazy bytes inline: a weight in memory is sized, not serialized
    (all of them serialized first held the model's weights twice: 389 MB more of PicoDet's in each session built)."""
    if not is_lazy(tensor):
        return tensor.ByteSize()
    before, data, after = _tensor(tensor)
    return len(before) + field_size(RAW_DATA, len(data)) + len(after)  # type: ignore[arg-type]


def _tensor(tensor: onnx.TensorProto) -> tuple[bytes, memoryview | None, bytes]:
    """(encoding before raw_data, the lazy bytes, encoding after) of a lazy tensor; (encoding, None, b"") else."""
    if not is_lazy(tensor):
        return tensor.SerializeToString(deterministic=True), None, b""
    bare = onnx.TensorProto()
    bare.CopyFrom(tensor)
    bare.ClearField("external_data")
    bare.ClearField("data_location")
    before, after = _split(bare.SerializeToString(deterministic=True), RAW_DATA)
    return before, raw(tensor), after


def _around(message, field: str) -> tuple[bytes, bytes]:
    """The deterministic encoding of `message` without `field`, split where `field` goes; the fields its schema
    does not know last, as serialization writes them (copy_fields copies the known ones only)."""
    bare = type(message)()
    copy_fields(message, bare, skip=field)
    head, tail = _split(bare.SerializeToString(deterministic=True), message.DESCRIPTOR.fields_by_name[field].number)
    return head, tail + unknown_fields(message)


def _split(encoded: bytes, number: int) -> tuple[bytes, bytes]:
    """`encoded` cut before its first field numbered above `number`."""
    pos = 0
    while pos < len(encoded):
        tag, end = _varint(encoded, pos)
        if tag >> 3 > number:
            break
        wire = tag & 7
        if wire == 0:
            end = _varint(encoded, end)[1]
        elif wire == 1:
            end += 8
        elif wire == 5:
            end += 4
        else:  # 2: length-delimited (groups, 3 and 4, are not in ONNX)
            length, end = _varint(encoded, end)
            end += length
        pos = end
    return encoded[:pos], encoded[pos:]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos

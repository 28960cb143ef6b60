"""Inline weights read in place: the large `raw_data` of a model file's initializers, found by walking
its protobuf encoding, are left out of what is parsed and mapped from the .onnx file itself, as external
data would be (lazy_weights.py). Parsing a whole file holds it twice, its bytes and the parsed message
(issue 22: quantize on a 403 MB inline model peaked at 2.1x its size).

The walk descends ModelProto.graph -> GraphProto.initializer -> TensorProto.raw_data and copies every
other field's bytes as they are, so the skeleton parses to the very model the file holds but for those
raw_data fields; protobuf's merging is kept (a repeated `graph` field merges, its initializers append).
It reads tags and lengths, and the fields it keeps; every length is checked against the end of the
message holding it before a byte is read or skipped. Anything it does not expect (a group or an unknown
wire type, a tensor with two raw_data fields, a field past its message's end) ends the walk with None:
the caller then parses the file whole, and protobuf's own verdict is what the user sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import onnx

from qtool.graph.lazy_weights import point
from qtool.graph.protobuf_wire import (
    FIXED32,
    FIXED64,
    GRAPH,
    INITIALIZER,
    LENGTH_DELIMITED,
    MAX_VARINT_BYTES,
    RAW_DATA,
    VARINT,
    key,
)

MAX_TAG_BYTES = 5  # a 32-bit varint

Span = tuple[int, int, int]  # (index among the graph's initializers, offset in the file, length)


@dataclass
class Skeleton:
    encoded: bytes  # the file's encoding without the raw_data in `spans`
    spans: list[Span]
    initializers: int  # how many the graph has: what the parsed skeleton must agree with


class _Unexpected(Exception):
    """The file holds something the walk leaves to protobuf's parser."""


def skeleton(path: str | os.PathLike[str], min_bytes: int) -> Skeleton | None:
    """The file's encoding without the initializers' raw_data of `min_bytes` or more, and where each
    of those lies in the file; None when the walk meets anything it does not expect (module docstring)."""
    with open(path, "rb") as f:
        walk = _Walk(f, min_bytes)
        try:
            encoded = walk.model(os.fstat(f.fileno()).st_size)
        except _Unexpected:
            return None
    return Skeleton(encoded, walk.spans, walk.initializers)


def is_message(path: str | os.PathLike[str]) -> bool:
    """The file's top level parses as protobuf fields (tags, wire types, lengths within the file), its values
    skipped: what a file of zeros or noise fails within its first bytes, without reading the rest."""
    with open(path, "rb") as f:
        walk = _Walk(f, 0)
        try:
            for _ in walk._fields(0, os.fstat(f.fileno()).st_size):
                pass
        except _Unexpected:
            return False
    return True


# the fields that lead from a model to its graphs' subgraphs: ModelProto.graph, GraphProto.node, NodeProto.attribute,
# then AttributeProto.g or .graphs (an If's branches, a Loop's or Scan's body), each a graph one level deeper
_TOWARD_SUBGRAPHS = {("model", GRAPH): "graph", ("graph", 1): "node", ("node", 5): "attribute",
                     ("attribute", 6): "graph", ("attribute", 11): "graph"}  # fmt: skip


def subgraph_depth(path: str | os.PathLike[str]) -> int | None:
    """How many graphs deep the file's subgraphs nest (1: a graph without any), read from its tags alone, without
    recursion (what protobuf's parser stops at: 100 message levels, 3 for each subgraph); None where it misreads."""
    deepest = 0
    with open(path, "rb") as f:
        walk, todo = _Walk(f, 0), [(0, os.fstat(f.fileno()).st_size, "model", 0)]
        try:
            while todo:
                begin, end, kind, depth = todo.pop()
                for number, wire, _, body, stop in walk._fields(begin, end):
                    inner = _TOWARD_SUBGRAPHS.get((kind, number)) if wire == LENGTH_DELIMITED else None
                    if inner is not None:
                        todo.append((body, stop, inner, depth + (inner == "graph")))
                        deepest = max(deepest, depth + (inner == "graph"))
        except _Unexpected:
            return None
    return deepest


def read_in_place(model: onnx.ModelProto, found: Skeleton, path: str) -> None:
    """Point each initializer the walk took raw_data from at its bytes in the file `path` (absolute): a
    lazy weight. As a whole parse would have it, external data a tensor names wins over its raw_data
    (external_data.load read it), and a tensor keeping stray external_data entries keeps its bytes."""
    with open(path, "rb") as f:
        for index, offset, length in found.spans:
            tensor = model.graph.initializer[index]
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue
            if tensor.external_data:
                f.seek(offset)
                tensor.raw_data = f.read(length)
            else:
                point(tensor, path, offset, length)


class _Walk:
    def __init__(self, f: IO[bytes], min_bytes: int) -> None:
        self.f, self.min_bytes = f, min_bytes
        self.spans: list[Span] = []
        self.initializers = 0  # initializers seen so far, over every occurrence of the graph field

    def model(self, end: int) -> bytes:
        out = bytearray()
        for number, wire, start, body, stop in self._fields(0, end):
            if number == GRAPH and wire == LENGTH_DELIMITED:
                graph = self._graph(body, stop)
                out += key(GRAPH, len(graph)) + graph
            else:
                out += self._read(start, stop)
        return bytes(out)

    def _graph(self, begin: int, end: int) -> bytes:
        out = bytearray()
        for number, wire, start, body, stop in self._fields(begin, end):
            if number == INITIALIZER and wire == LENGTH_DELIMITED:
                tensor = self._tensor(body, stop)
                out += key(INITIALIZER, len(tensor)) + tensor
                self.initializers += 1
            else:
                out += self._read(start, stop)
        return bytes(out)

    def _tensor(self, begin: int, end: int) -> bytes:
        fields = list(self._fields(begin, end))
        raws = [f for f in fields if f[0] == RAW_DATA and f[1] == LENGTH_DELIMITED]
        if all(f[4] - f[3] < self.min_bytes for f in raws):
            return self._read(begin, end)
        if len(raws) > 1:  # the last one counts: rare enough to leave to protobuf
            raise _Unexpected
        _, _, _, body, stop = raws[0]
        self.spans.append((self.initializers, body, stop - body))
        return b"".join(self._read(f[2], f[4]) for f in fields if f is not raws[0])

    def _fields(self, begin: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
        """(number, wire type, start, value start, end) of each field in [begin, end)."""
        pos = begin
        while pos < end:
            self.f.seek(pos)
            tag, body = self._varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0 or tag >> 32 or body - pos > MAX_TAG_BYTES:  # what protobuf refuses as a tag
                raise _Unexpected
            if wire == VARINT:
                stop = self._varint(body, end)[1]
            elif wire in (FIXED64, FIXED32):
                stop = body + (8 if wire == FIXED64 else 4)
            elif wire == LENGTH_DELIMITED:
                length, body = self._varint(body, end)
                stop = body + length
            else:
                raise _Unexpected
            if stop > end:
                raise _Unexpected
            yield number, wire, pos, body, stop
            pos = stop

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        """The varint at `pos` (the file's position) and where it ends; it must end before `end`."""
        value = 0
        for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
            if pos >= end:
                break
            byte = self.f.read(1)
            if not byte:
                break
            pos += 1
            value |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                return value, pos
        raise _Unexpected

    def _read(self, start: int, stop: int) -> bytes:
        self.f.seek(start)
        data = self.f.read(stop - start)
        if len(data) != stop - start:  # the file shrank under us
            raise _Unexpected
        return data

"""The few pieces of protobuf's wire format qtool writes and reads itself (graph/inline_write.py,
graph/inline_weights.py): a field is a varint tag (number << 3 | wire type), then a varint (type 0),
8 or 4 bytes (types 1, 5) or a varint length and that many bytes (type 2). ONNX uses no groups (3, 4).
"""

from __future__ import annotations

import onnx

GRAPH = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number  # 7
INITIALIZER = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number  # 5
RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number  # 9
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10  # a 64-bit value


def encode(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def unknown_fields(message) -> bytes:
    """The encoding of the fields of `message` its schema does not know (a newer ONNX's), as serialization writes them
    after the known ones: a message rebuilt from its known fields (inline_write) loses them."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    out = bytearray()
    for field in UnknownFieldSet(message):
        out += encode(field.field_number << 3 | field.wire_type)
        if field.wire_type == LENGTH_DELIMITED:
            out += encode(len(field.data)) + field.data
        else:  # ONNX has no groups (3, 4)
            out += encode(field.data) if field.wire_type == VARINT else field.data.to_bytes(
                8 if field.wire_type == FIXED64 else 4, "little")  # fmt: skip
    return bytes(out)


def key(number: int, length: int) -> bytes:
    """The tag and length that start a length-delimited field."""
    return encode(number << 3 | LENGTH_DELIMITED) + encode(length)


def field_size(number: int, length: int) -> int:
    return len(key(number, length)) + length

"""A node's attribute values, by name, with the default the op's schema gives where the node leaves one out."""

from __future__ import annotations

import onnx
from onnx import helper


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of `node`'s attribute `name` as onnx's helper reads it (an int, float, bytes, list, tensor), else
    `default`."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)

"""graph/inline_weights.py: a model file parsed without its large inline raw_data, read in place instead.

The walk is a parser of user files: whatever the bytes, it answers None (protobuf then parses the file
whole) or a skeleton that parses to exactly what protobuf makes of the file once the removed raw_data are
put back, and it refuses the file exactly when protobuf does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from qtool.errors import ModelError
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.inline_weights import is_message, read_in_place, skeleton
from qtool.graph.protobuf_wire import key


def _walked(data: bytes, min_bytes: int):
    with tempfile.TemporaryDirectory(prefix="qtool-walk-") as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(data)
        return skeleton(path, min_bytes)


def _parsed(data: bytes) -> onnx.ModelProto | None:
    try:
        return onnx.ModelProto.FromString(data)
    except Exception:  # DecodeError, and whatever upb raises on odd bytes
        return None


def _put_back(found, data: bytes) -> onnx.ModelProto | None:
    """The skeleton parsed, its removed raw_data restored from `data`: what protobuf makes of `data`."""
    model = _parsed(found.encoded)
    if model is None:
        return None
    assert len(model.graph.initializer) == found.initializers
    for index, offset, length in found.spans:
        model.graph.initializer[index].raw_data = data[offset : offset + length]
    return model


def _model(sizes: list[int], float_data: bool, doc: str) -> onnx.ModelProto:
    """Initializers of `sizes` float32 values each (raw_data), one more in float_data, fields around them."""
    inits = []
    for k, n in enumerate(sizes):
        tensor = numpy_helper.from_array(np.arange(n, dtype=np.float32) * (k + 1), f"w{k}")
        tensor.doc_string = doc  # a field after raw_data (12 > 9)
        inits.append(tensor)
    if float_data:
        inits.append(helper.make_tensor("f", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))
    node = helper.make_node("Identity", ["x"], ["y"], doc_string=doc)
    value = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([node], "g", [value], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    model.metadata_props.add(key="after the graph", value=doc)
    return model


models = st.builds(
    _model,
    st.lists(st.integers(0, 600), max_size=5),
    st.booleans(),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(models, min_size=1, max_size=3), st.integers(1, 2000))
def test_the_skeleton_plus_the_spans_is_the_file(pieces, min_bytes) -> None:
    """Pieces concatenated merge (a second `graph` field appends its initializers): the walk keeps that."""
    data = b"".join(m.SerializeToString() for m in pieces)
    found = _walked(data, min_bytes)
    assert found is not None
    assert all(length >= min_bytes for _, _, length in found.spans)
    assert _put_back(found, data) == onnx.ModelProto.FromString(data)
    assert len(found.encoded) <= len(data)


def _mutated(data: bytes, edits: list[tuple[int, int, int]], cut: int) -> bytes:
    """`data` with bytes overwritten (0), deleted (1) or inserted (2) at the given places, then cut."""
    out = bytearray(data)
    for kind, where, value in edits:
        where %= len(out) + 1
        if kind == 0 and where < len(out):
            out[where] = value
        elif kind == 1:
            del out[where : where + 1]
        else:
            out[where:where] = bytes([value])
    return bytes(out[: len(out) - cut % (len(out) + 1)] if cut else out)


VALID = _model([300, 20, 500], True, "doc").SerializeToString()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(VALID)), st.integers(0, 255)), max_size=4), st.integers(0, 40))
def test_hostile_bytes_are_refused_exactly_when_protobuf_refuses_them(edits, cut) -> None:
    data = _mutated(VALID, edits, cut if cut % 4 == 0 else 0)
    found = _walked(data, 64)
    if found is None:  # left to protobuf, whose verdict the user then sees
        return
    assert _put_back(found, data) == _parsed(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data) -> None:
    found = _walked(data, 1)
    if found is not None:
        assert _put_back(found, data) == _parsed(data)


def test_what_the_walk_leaves_to_protobuf() -> None:
    tensor = numpy_helper.from_array(np.ones(100, np.float32), "w").SerializeToString()
    twice = tensor + key(9, 4) + b"abcd"  # a second raw_data: the last one counts
    graph = key(5, len(twice)) + twice
    assert _walked(key(7, len(graph)) + graph, 64) is None
    assert _walked(bytes([7 << 3 | 3]), 1) is None  # a group
    assert _walked(bytes([0, 0]), 1) is None  # field number 0
    assert _walked(bytes([7 << 3 | 2, 0x80]), 1) is None  # a varint cut short
    assert _walked(bytes([7 << 3 | 2, 5, 1]), 1) is None  # a length past the end
    assert _walked(b"", 1) is not None and _walked(b"", 1).encoded == b""


def _inline_model(tmp_path: Path) -> Path:
    model = _model([1000, 10], False, "d")
    model.graph.initializer[0].external_data.add(key="stray", value="entry")  # not EXTERNAL: the bytes count
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_a_model_read_in_place_is_the_model_parsed_whole(tmp_path, monkeypatch) -> None:
    path = _inline_model(tmp_path)
    whole = gm.load(path)
    monkeypatch.setenv(gm.SPILL_ENV, "1")
    model = gm.load(path)
    assert not external_data.lazy(model)  # the stray entries keep w0's bytes in memory
    del whole.graph.initializer[0].external_data[:]
    path.write_bytes(whole.SerializeToString())
    model = gm.load(path)
    assert [t.name for t in external_data.lazy(model)] == ["w0"]
    assert np.array_equal(external_data.array(model.graph.initializer[0]), numpy_helper.to_array(whole.graph.initializer[0]))
    with external_data.materialized(external_data.lazy(model)):
        assert model == whole


def test_external_data_a_tensor_names_wins_over_its_raw_data(tmp_path) -> None:
    """As in onnx's own loader: a tensor marked EXTERNAL reads its file, whatever raw_data it carries."""
    model = _model([1000], False, "")
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    found = skeleton(path, 64)
    parsed = onnx.ModelProto.FromString(found.encoded)
    read_in_place(parsed, found, str(path))
    assert not parsed.graph.initializer[0].external_data and not parsed.graph.initializer[0].raw_data


def test_a_large_file_that_is_no_protobuf_message_is_refused_before_a_whole_parse(tmp_path, monkeypatch) -> None:
    """A 2 GB sparse file given as a model was parsed whole by onnx.load to say so (2.16 GB, 12 s)."""
    monkeypatch.setenv(gm.SPILL_ENV, "1")
    zeros, noise = tmp_path / "zeros.onnx", tmp_path / "noise.onnx"
    with zeros.open("wb") as f:
        f.truncate(1 << 20)
    noise.write_bytes(bytes([0xFF]) * 64)  # a tag whose varint never ends
    for path in (zeros, noise):
        assert not is_message(path)
        with pytest.raises(ModelError, match="not a protobuf message"):
            gm.load(path)
    assert is_message(_inline_model(tmp_path))

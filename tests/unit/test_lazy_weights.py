"""Lazy weights (issue 22): what large models rely on, checked on small arrays."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qtool import encoding as enc
from qtool import runtime
from qtool.graph import external_data, lazy_weights
from qtool.quant import blocks, qdq


def test_a_spilled_tensor_reads_back_and_its_folder_can_go(tmp_path) -> None:
    values = np.arange(3000, dtype=np.float32).reshape(30, 100)
    scratch = str(tmp_path / "w.data")
    first = lazy_weights.spilled(values, "a", scratch)
    second = lazy_weights.spilled(-values, "b", scratch)
    assert lazy_weights.is_lazy(first) and lazy_weights.span(second)[1] % 4096 == 0
    assert np.array_equal(external_data.array(first), values) and np.array_equal(external_data.array(second), -values)
    with external_data.materialized([second]):
        assert np.array_equal(numpy_helper.to_array(second), -values)
    assert lazy_weights.is_lazy(second) and not second.raw_data
    external_data.forget(str(tmp_path))
    assert not [p for p in lazy_weights._MAPS if p.startswith(str(tmp_path))]


def test_slices_quantize_exactly_as_the_whole_array() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((300, 5000)).astype(np.float32)
    for axis in (None, 0, 1):
        if axis is None:
            e = enc.with_schema("asymmetric", float(values.min()), float(values.max()), 8)
        else:
            lo, hi = values.min(axis=1 - axis), values.max(axis=1 - axis)
            e = enc.with_schema("symmetric", lo, hi, 8, axis)
        whole = e.quantize(values).astype(np.int8)
        assert np.array_equal(qdq.sliced("quantize", e, values, np.int8), whole)
        assert np.array_equal(qdq.sliced("dequantize", e, whole, np.float32), e.dequantize(whole))


def test_quantizing_a_weight_holds_a_chunk_of_temporaries_not_the_weights() -> None:
    """e.quantize computes in float64 and returns int64: 16 bytes an element. A 1152 x 256 Dense (MTCNN ONet's)
    quantized at once held 4.7 MB of them, the peak of a ~96 MB process; in 64K-element chunks, 1 MB."""
    import tracemalloc

    values = np.random.default_rng(2).standard_normal((256, 1152)).astype(np.float32)
    e = enc.with_schema("symmetric", values.min(axis=1), values.max(axis=1), 8, 0)
    tracemalloc.start()  # numpy reports its arrays' data to tracemalloc
    try:
        quantized = qdq.sliced("quantize", e, values, np.int8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < quantized.nbytes + (1 << 20) + (256 << 10), peak  # the int8 result, a chunk's 16 B/element, slack
    assert np.array_equal(quantized, e.quantize(values).astype(np.int8))


@pytest.mark.parametrize("channel_axis, options", [(0, {}), (1, {}), (1, {"lpbq": True}), (0, {"asymmetric": True})])
def test_block_weights_slice_by_channel_exactly_as_the_whole_array(channel_axis: int, options: dict) -> None:
    # an embedding table (tokens x features, blocks along the features) or a MatMul weight [K, N]
    values = np.random.default_rng(1).standard_normal((640, 2048)).astype(np.float32)
    e = blocks.block_encoding(values, channel_axis, 1 - channel_axis, 32, 4, method="mse", **options)
    whole = e.quantize(values)
    assert values.size > qdq.QUANTIZE_CHUNK  # sliced, not at once
    assert np.array_equal(qdq.sliced("quantize", e, values, np.int8), whole.astype(np.int8))
    assert np.array_equal(qdq.sliced("dequantize", e, whole, np.float32), e.dequantize(whole))
    per_element = e.expand(e.scale_array(), values.shape)  # the repeated scales the grid view replaces
    assert np.array_equal(e.dequantize(whole), ((whole - e.expand(e.zero_point(), values.shape)) * per_element).astype(np.float32))


def test_a_weights_dequantization_runs_just_before_its_reader() -> None:
    nodes = [
        helper.make_node("DequantizeLinear", ["w1q", "s"], ["w1"]),
        helper.make_node("DequantizeLinear", ["w2q", "s"], ["w2"]),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    order = runtime.late_constants(nodes, {"w1q", "w2q", "s"})
    assert [n.output[0] for n in order] == ["w1", "h", "w2", "y"]


def test_pruned_drops_initializers_its_nodes_do_not_read() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[1,4] x) => (float[1,4] y) {
        h = Add (x, a)
        y = Mul (h, b)
    }
    """)
    model.graph.initializer.extend(numpy_helper.from_array(np.ones(4, np.float32), n) for n in "ab")
    assert [i.name for i in runtime.pruned(model, ["h"]).graph.initializer] == ["a"]


def test_an_inline_write_and_the_stats_hash_stream_lazy_weights_into_the_very_bytes_of_serialization(tmp_path, monkeypatch) -> None:
    import hashlib
    import io

    from qtool.graph import model as gm
    from qtool.graph.inline_write import write_graph, write_inline
    from qtool.quant import stats

    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[1,64] x) => (float[1,16] y) {
        y = MatMul (x, w)
    }
    """)
    weight = numpy_helper.from_array(np.linspace(-1, 1, 1024, dtype=np.float32).reshape(64, 16), "w")
    weight.doc_string = "after raw_data (field 12)"
    weight.metadata_props.add(key="k", value="v")
    model.graph.initializer.append(weight)
    model.graph.doc_string, model.doc_string = "graph", "model"
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = gm.load(tmp_path / "m.onnx")
    assert external_data.lazy(loaded)
    written, graph = io.BytesIO(), io.BytesIO()
    write_inline(loaded, written)
    write_graph(loaded.graph, graph)  # what a stats file's model_sha256 is of: ranges files written before must load
    hashed = stats.model_hash(loaded)
    monkeypatch.setattr(external_data, "PROTOBUF_LIMIT", 0)  # past 2 GiB the hash is of its parts, one at a time
    parts = stats.model_hash(loaded)
    with external_data.materialized(external_data.lazy(loaded)):
        assert written.getvalue() == loaded.SerializeToString(deterministic=True)
        assert graph.getvalue() == loaded.graph.SerializeToString(deterministic=True)
        assert hashed == hashlib.sha256(graph.getvalue()).hexdigest()
        g = loaded.graph
        whole = b"".join(p.SerializeToString(deterministic=True) for p in (*g.node, *g.input, *g.output, *g.initializer))
        assert parts == hashlib.sha256(whole).hexdigest() == stats.model_hash(loaded)


def test_a_transform_runs_without_the_large_weights_and_leaves_the_model_alone() -> None:
    big = numpy_helper.from_array(np.arange(512 * 1024, dtype=np.float32).reshape(512, 1024), "w")
    small = numpy_helper.from_array(np.ones(4, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1024])], [big, small],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="p")
    before = model.SerializeToString()
    seen = []

    def convert(light: onnx.ModelProto) -> onnx.ModelProto:
        seen.append(light.ByteSize())
        return onnx.version_converter.convert_version(light, 21)

    out = external_data.transformed(model, convert)
    assert seen[0] < 10_000  # the 2 MB weight was not in what the converter got
    assert model.SerializeToString() == before
    assert out.opset_import[0].version == 21 and out.producer_name == "p"
    assert [numpy_helper.to_array(t).tobytes() for t in out.graph.initializer] == [
        numpy_helper.to_array(t).tobytes() for t in (big, small)
    ]
    onnx.checker.check_model(out)


def test_a_killed_runs_scratch_folder_is_swept_and_a_live_ones_is_not(tmp_path) -> None:
    """SIGKILL skips atexit: the spilled weights (up to a model's size) stayed in $TMPDIR for good."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "import sys, time; from qtool.graph import lazy_weights as w; print(w._scratch(), flush=True); time.sleep(60)"
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    killed, live = (run.stdout.readline().strip() for run in runs)
    runs[0].send_signal(signal.SIGKILL)
    runs[0].wait()
    old_run = tmp_path / "qtool-weights-older"  # a qtool from before the lock file: nobody can tell it is dead
    old_run.mkdir()
    fifo = tmp_path / "qtool-weights-fifo"  # a FIFO for a lock must not block the sweep
    fifo.mkdir()
    os.mkfifo(fifo / lazy_weights.SCRATCH_LOCK)
    for folder in (killed, live, old_run, fifo):
        os.utime(folder, (1, 1))
    try:
        lazy_weights.sweep_scratch(str(tmp_path))
        assert not os.path.exists(killed) and os.path.isdir(live) and old_run.is_dir()
    finally:
        runs[1].kill()
        runs[1].wait()


def test_the_unusable_weight_check_leaves_no_lazy_weights_pages_resident(tmp_path) -> None:
    """It reads every float weight: kept mapped, a lazy model's pages all stayed in the resident set until a later
    stage released them (a 512 MB external-data model's quantize peak 1066 -> 1289 MB)."""
    from qtool.quant.weight_values import unusable_weight

    def resident_file_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))

    scratch = str(tmp_path / "w.data")
    inits = [lazy_weights.spilled(np.full((1024, 1024), k, np.float32), f"w{k}", scratch) for k in range(8)]  # 4 MB
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=inits))
    external_data.release()
    before = resident_file_kb()
    assert unusable_weight(model) is None
    assert resident_file_kb() - before < 4096  # not one weight's 4 MB; all eight's 32 MB without the release


def test_a_saved_model_is_the_very_bytes_of_serialization_written_a_weight_at_a_time(tmp_path) -> None:
    """gm.save writes in-memory weights one at a time (write_inline), not the model serialized whole: the bytes must
    be SerializeToString's, whatever the fields around the initializers (a branch's own, typed values, metadata)."""
    from qtool.graph import model as gm

    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[1,64] x, bool c) => (float[1,16] y) {
        z = MatMul (x, w)
        y = If (c) <then_branch = g1 () => (float[1,16] t) { t = Add (z, b) },
                    else_branch = g2 () => (float[1,16] e) { e = Identity (z) }>
    }
    """)
    weight = numpy_helper.from_array(np.linspace(-1, 1, 1024, dtype=np.float32).reshape(64, 16), "w")
    weight.doc_string = "after raw_data (field 12)"
    typed = helper.make_tensor("b", onnx.TensorProto.FLOAT, [16], np.arange(16, dtype=np.float32).tolist())
    model.graph.node[1].attribute[0].g.initializer.append(typed)  # the branch's own, in float_data
    model.graph.initializer.extend([weight, numpy_helper.from_array(np.arange(3, dtype=np.int64), "unread")])
    model.graph.value_info.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 16]))
    model.metadata_props.add(key="k", value="v")
    model.graph.doc_string, model.doc_string = "graph", "model"
    gm.save(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString(deterministic=True)


def test_a_saved_model_keeps_the_fields_its_onnx_does_not_know(tmp_path) -> None:
    """A model written by a newer ONNX carries fields this one's schema lacks; protobuf keeps them as unknown fields
    and SerializeToString writes them back, but write_inline rebuilt the model and its graph from their known fields
    and dropped them (9 bytes of a 91-byte model)."""
    from qtool.graph import model as gm
    from qtool.graph.protobuf_wire import encode

    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    m (float[4] x) => (float[4] y) { y = Add (x, w) }
    """)
    model.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    every_wire_type = (encode(99 << 3 | 0) + encode(300) + encode(98 << 3 | 1) + bytes(range(8))
                       + encode(97 << 3 | 5) + bytes(4) + encode(96 << 3 | 2) + encode(3) + b"new")  # fmt: skip
    graph = model.graph.SerializeToString() + every_wire_type
    model.ParseFromString(model.SerializeToString() + every_wire_type)
    model.graph.ParseFromString(graph)
    gm.save(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString(deterministic=True)
    assert (tmp_path / "m.onnx").read_bytes().count(b"new") == 2

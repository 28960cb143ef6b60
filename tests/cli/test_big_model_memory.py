"""What a large model's quantize holds at once (issue 22), checked on small models: the quantized model's integer
weights beside the evaluation's session, and the float weights the per-layer ranking reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import quantize_model, write_samples
from onnx import TensorProto, helper, numpy_helper

from qtool import encoding as enc
from qtool import runtime
from qtool.graph import external_data, lazy_weights
from qtool.graph import model as gm
from qtool.inspect import layers
from qtool.io.encodings import Encodings
from qtool.quant.graph_facts import GraphFacts


def _chain(count: int, size: int, seed: int = 0) -> onnx.ModelProto:
    """`count` MatMuls of [size, size] random weights, a Tanh after each."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(count):
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        inits.append(numpy_helper.from_array(rng.normal(0, 1 / size**0.5, (size, size)).astype(np.float32), f"w{i}"))
        x = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, size])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_spilled_weights_are_read_from_scratch_and_saved_as_the_very_same_bytes(tmp_path: Path, monkeypatch) -> None:
    """quantize evaluates a copy of its model whose integer weights are in a scratch file: held in memory beside the
    session, which folds them to float, they were a quarter of a 2.35 GB decoder more. Same outputs, same file."""
    quantized = onnx.load(str(quantize_model(tmp_path, _chain(2, 64), "--act_quantizer_calibration", "min-max")))
    int4 = np.tile(np.arange(-8, 8), 128).reshape(64, 32)
    packed = numpy_helper.from_array(int4.astype(ml_dtypes.int4), "w4")  # 1 KB of packed bytes
    quantized.graph.initializer.append(packed)  # int4: spilled as its packed bytes, read back as the same values
    assert external_data.spilled_weights(quantized) is quantized  # a small model's 5 KB stay where they are
    spilled = external_data.spilled_weights(quantized, at_least=0)
    lazy = {t.name for t in spilled.graph.initializer if lazy_weights.is_lazy(t)}
    assert lazy == {"w0_quantized", "w1_quantized", "w4"}  # 4 KB and 1 KB; their scales (and all else) stay
    assert np.array_equal(external_data.array(spilled.graph.initializer[-1]), int4)
    del quantized.graph.initializer[-1], spilled.graph.initializer[-1]  # no op reads it
    feed = {"x": np.random.default_rng(1).normal(size=(1, 4, 64)).astype(np.float32)}
    original = onnx.load(str(tmp_path / "q.onnx"))
    run = [runtime.session(m, optimized=True, integer_kernels=False).run(None, feed)[0] for m in (original, spilled)]
    assert np.array_equal(*run)
    gm.save(spilled, tmp_path / "spilled.onnx")
    assert (tmp_path / "spilled.onnx").read_bytes() == (tmp_path / "q.onnx").read_bytes()
    monkeypatch.setattr(external_data, "scratch_file", lambda name: str(tmp_path / "missing" / name))
    kept = external_data.spilled_weights(original, at_least=0)  # the scratch folder cannot be written: all of it stays in memory
    assert not lazy_weights.lazy(kept) and kept.SerializeToString() == original.SerializeToString()


def test_the_layer_ranking_leaves_no_float_weight_resident(tmp_path: Path) -> None:
    """The ranking reads each layer's whole float weight (its channels' spread, its rounding): left mapped, every page
    of every weight stayed resident until it ended (a 2.35 GB decoder's quantize peaked there, at 2x the model)."""

    def resident_file_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))

    model = _chain(8, 512)  # eight 1 MB weights
    quantized = onnx.load(str(quantize_model(tmp_path, model, "--act_quantizer_calibration", "min-max")))
    onnx.save(model, str(tmp_path / "float.onnx"), save_as_external_data=True, location="float.data")
    reference = gm.load(tmp_path / "float.onnx")
    assert len(lazy_weights.lazy(reference)) == 8
    listing = write_samples(tmp_path, model, 2, seed=3, list_name="ranked.txt")
    feeds = [{"x": np.fromfile(p, np.float32).reshape(1, 4, 512)} for p in listing.read_text().split()]
    errors = layers.stream(reference, quantized, iter(feeds))
    external_data.release()
    before = resident_file_kb()
    rows = layers.rank(errors, reference, quantized)
    assert sum(r.fix.startswith("upstream") or "16-bit" in r.fix for r in rows) >= 8  # every MatMul's weight was read
    assert resident_file_kb() - before < 4096  # not the weights' 8 MB


def test_a_weights_rounding_noise_is_summed_without_float64_copies_of_both() -> None:
    """weight_nsr's ΔW in one float64 array: the weight and its rounding each copied to float64 as well held 1 GB
    at once for a 250 MB LM head."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.05, (512, 512)).astype(np.float32)  # 1 MB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [numpy_helper.from_array(w, "w")])  # fmt: skip
    facts = GraphFacts.of(helper.make_model(graph))
    e = enc.symmetric(-np.abs(w).max(axis=0), np.abs(w).max(axis=0), 8, 1)
    node = facts.producers["y"]
    source = layers.LayerError(layers.Probe("x", "x", None, None), signal=512.0, count=512)
    out = layers.LayerError(layers.Probe("y", "y", node, None), signal=2.0 * 512, count=512)
    facts.array("w")  # read before tracing
    tracemalloc.start()
    try:
        nsr = layers.weight_nsr(out, facts, Encodings(params={"w": e}), {"x": source, "y": out})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    delta = w.astype(np.float64) - e.fake_quantize(w).astype(np.float64)
    assert nsr == pytest.approx(float(np.dot(delta.ravel(), delta.ravel())) / 512 / 2.0, rel=1e-12)
    assert peak < 3.5 * w.nbytes  # the rounding's float64 pass and ΔW; 7 MB before


def test_an_encodings_file_is_written_an_entry_at_a_time(tmp_path: Path) -> None:
    """A 2.35 GB decoder's 18 M 4-bit blocks made a 478 MB encodings file, which quantize held whole (twice, as it
    was joined) before writing it. Now an entry at a time: the same bytes, at a fraction of the file in memory."""
    import dataclasses

    from qtool.encoding import Blocks
    from qtool.io import encodings as encio
    from qtool.io.outputs import write_text

    rng = np.random.default_rng(5)
    params = {}
    for i in range(64):
        absmax = rng.uniform(0.01, 1.0, 8192)  # a [256, 1024] weight's blocks of 32 along its inputs
        params[f"w{i}"] = dataclasses.replace(enc.symmetric(-absmax, absmax, 4, 1), blocks=Blocks(32, 0, (8, 1024)))
    found = Encodings(params=params)
    path = tmp_path / "q.encodings.json"
    tracemalloc.start()
    try:
        write_text(path, encio.json_pieces(found, "1.0.0"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = path.read_text()
    assert text == encio.to_json(found, "1.0.0") and len(text) > 10_000_000
    assert peak < len(text) / 4  # one entry and its line (a seventh of the file); before, 3x the file


def test_the_plan_leaves_no_float_weight_resident(tmp_path: Path) -> None:
    """The plan reads each float weight once (its range search); left mapped, every page of every weight stayed
    resident to its end: a 2.35 GB decoder's W4 blocks plan grew by the whole model (3.3 GB sampled)."""
    from qtool.quant.plan import PlanOptions, build_plan

    def resident_file_kb() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))

    model = _chain(8, 512)  # eight 1 MB weights
    onnx.save(model, str(tmp_path / "float.onnx"), save_as_external_data=True, location="float.data")
    lazy = gm.load(tmp_path / "float.onnx")
    assert len(lazy_weights.lazy(lazy)) == 8
    external_data.release()
    before = resident_file_kb()
    options = PlanOptions(act_bitwidth=32, weights_bitwidth=4, weights_block_size=32)
    plan = build_plan(GraphFacts.of(lazy), {}, Encodings(), options)
    assert all(plan.params[f"w{i}"].blocks is not None for i in range(8))  # every weight was read
    assert resident_file_kb() - before < 4096  # not the weights' 8 MB

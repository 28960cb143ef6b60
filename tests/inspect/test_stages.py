"""The per-layer comparison in stages (issue 22) gives exactly the whole-graph figures: forced down
to a stage per weighted layer (QTOOL_COMPARE_BYTES=0), frontiers in files, or one stage."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import onnx
import pytest
from attention_models import attention_model, outlier_block_model, write_attention_samples, write_block_samples
from conftest import run_cli, write_samples
from inspect_models import clean, save

from qtool import api, runtime
from qtool.config import QuantizeOptions
from qtool.graph import model as gm
from qtool.inspect import layers, stages
from qtool.io.feeds import iter_feeds
from qtool.io.input_list import read_input_list

MODELS = {
    "cnn": (clean, lambda folder: write_samples(folder, clean(), 6, seed=2)),
    "attention": (attention_model, lambda folder: write_attention_samples(folder, 6, seed=2)),
    "residual block": (outlier_block_model, lambda folder: write_block_samples(folder, 6, seed=2)),
}


def _quantized(tmp_path: Path, name: str, **flags) -> tuple[onnx.ModelProto, onnx.ModelProto, Path]:
    factory, samples = MODELS[name]
    source = save(factory(), tmp_path / "float.onnx")
    calib = samples(tmp_path / "calib")
    out = tmp_path / "quant.onnx"
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=out, **flags))
    return gm.load(source), gm.load(out), samples(tmp_path / "val")


def _feeds(model: onnx.ModelProto, listing: Path):
    return iter_feeds(read_input_list(listing), gm.input_specs(model), False)


def _whole_graph(reference: onnx.ModelProto, quantized: onnx.ModelProto, listing: Path) -> np.ndarray:
    """The comparison as it was before stages: one session per model exposing every probe, the
    quantized model's weights dequantized on every run."""
    errors = [layers.LayerError(p) for p in layers.probes(reference, quantized)]
    run_ref = runtime.runner(reference, [e.probe.tensor for e in errors])
    run_quant = runtime.runner(quantized, list(dict.fromkeys(e.probe.quant_name for e in errors)))
    for feed in _feeds(quantized, listing):
        ref, quant = run_ref(feed), run_quant(feed)
        for e in errors:
            e.update(ref[e.probe.tensor], quant[e.probe.quant_name])
    return _figures(errors)


def _figures(errors: list[layers.LayerError]) -> np.ndarray:
    return np.array([[e.signal, e.noise, e.local_noise] for e in errors])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("spill", [False, True])
def test_stages_give_the_whole_graph_figures(tmp_path, monkeypatch, name, spill):
    reference, quantized, val = _quantized(tmp_path, name, use_per_channel_quantization=True)
    expected = _whole_graph(reference, quantized, val)
    monkeypatch.setenv(stages.COMPARE_ENV, "0")  # a stage per weighted layer
    frontier = 0 if spill else stages.FRONTIER_BYTES  # 0: every sample's frontier in a file
    tensors = [p.tensor for p in layers.probes(reference, quantized)]
    assert len(stages.cut(reference, tensors, stages.compare_bytes())) >= 3
    for apart in (False, True):  # apart: the reference over every sample first, then the quantized model
        staged = layers.stream(reference, quantized, _feeds(quantized, val), frontier_budget=frontier, apart=apart)
        assert np.array_equal(_figures(staged), expected)
    monkeypatch.delenv(stages.COMPARE_ENV)
    assert len(stages.cut(reference, tensors, stages.compare_bytes())) == 1
    assert np.array_equal(_figures(layers.stream(reference, quantized, _feeds(quantized, val))), expected)
    # apart, a stage fetches half a sample's probed values at most: a small model runs in two stages or more
    assert np.array_equal(_figures(layers.stream(reference, quantized, _feeds(quantized, val), apart=True)), expected)


def test_apart_cuts_a_small_model_into_stages(tmp_path, monkeypatch):
    reference, quantized, val = _quantized(tmp_path, "cnn")
    built, original = [], runtime.runner
    monkeypatch.setattr(stages.runtime, "runner", lambda *a, **k: built.append(1) or original(*a, **k))
    layers.stream(reference, quantized, _feeds(quantized, val))
    assert len(built) == 2  # one stage: both models' sessions
    built.clear()
    layers.stream(reference, quantized, _feeds(quantized, val), apart=True)
    assert len(built) >= 4


def _skip_chain(rng, count: int, skip: str, head: list | None = None) -> onnx.ModelProto:
    """x -> `head` nodes -> `count` MatMuls h0..h{count-1} of random [16, 16] weights -> Add(last, `skip`) -> y."""
    info = onnx.helper.make_tensor_value_info
    nodes, inits, x = list(head or []), [], head[-1].output[0] if head else "x"
    for i in range(count):
        inits.append(onnx.numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), f"w{i}"))
        nodes.append(onnx.helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    nodes.append(onnx.helper.make_node("Add", [x, skip], ["y"]))
    graph = onnx.helper.make_graph(nodes, "g", [info("x", 1, [1, 16])], [info("y", 1, [1, 16])], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_a_value_carried_past_many_stages_is_written_once(tmp_path, monkeypatch):
    """A skip connection read at the end of a chain of stages: spilled frontiers store it once, not again at
    every stage it passes (czann's U-Net rewrote 64 MB skip tensors at each of a hundred stages)."""
    rng = np.random.default_rng(0)
    model = _skip_chain(rng, 6, "skip", [onnx.helper.make_node("Tanh", ["x"], ["skip"])])
    groups = [[(t, t)] for t in ["skip", *(f"h{i}" for i in range(6)), "y"]]
    saved, original = [], np.save

    def counting(path, value):
        saved.append(path)
        original(path, value)

    monkeypatch.setattr(stages.np, "save", counting)
    monkeypatch.setenv(stages.COMPARE_ENV, "0")  # a sweep per stage: [skip], [h0], ..., [h5], [y]
    feeds = [{"x": rng.normal(size=(1, 16)).astype(np.float32)} for _ in range(3)]
    last = [ref["y"] for g, ref, _ in stages.run_stages(model, model, groups, feeds, frontier_budget=0) if g == 7]
    whole = runtime.runner(model, ["y"])
    assert all(np.array_equal(y, whole(feed)["y"]) for y, feed in zip(last, feeds, strict=True))
    # per sample and model: x, skip, then h0..h5, each once (stored when made, not again when carried)
    assert len(saved) == 3 * 2 * 8


def test_a_sweep_passes_values_between_its_stages_in_memory(monkeypatch):
    """Stages cut by the fetch budget alone run a sample through one after another: nothing they pass on is
    written, only the graph input the frontier keeps (u2netp's 67-stage ranking wrote 13 GB for 8 samples)."""
    rng = np.random.default_rng(1)
    model = _skip_chain(rng, 4, "h0")
    tensors = [*(f"h{i}" for i in range(4)), "y"]
    groups = stages.cut(model, tensors, stages.compare_bytes(), dict.fromkeys(tensors, 64), 64)
    assert len(groups) == 5 and stages.sweeps(model, groups, stages.compare_bytes()) == [[0, 1, 2, 3, 4]]
    saved, original = [], np.save
    monkeypatch.setattr(stages.np, "save", lambda path, value: saved.append(path) or original(path, value))
    feeds = [{"x": rng.normal(size=(1, 16)).astype(np.float32)} for _ in range(3)]
    pairs = [[(t, t) for t in group] for group in groups]
    whole = runtime.runner(model, tensors)
    for apart in (False, True):
        saved.clear()
        order, got = [], {}
        for g, ref, _ in stages.run_stages(model, model, pairs, feeds, frontier_budget=0, apart=apart):
            order.append(g)
            got.update({(t, (len(order) - 1) // 5): ref[t] for t, _ in pairs[g]})
        assert order == [0, 1, 2, 3, 4] * 3  # sample by sample, each through the sweep
        assert all(np.array_equal(got[t, k], whole(feed)[t]) for t in tensors for k, feed in enumerate(feeds))
        # the input x per sample and model (apart: the reference's values of each group wait in the store too)
        assert len(saved) == 2 * 3 + (3 * 5 if apart else 0)


def _alive_at_quantized_builds(monkeypatch) -> list[int]:
    """Reference runners alive each time a quantized model's runner is built, as stages build them."""
    built, alive, original = [], [], runtime.runner

    def tracked(model, fetch, threads, where, *args, **kwargs):
        if where == "quantized model":
            alive.append(sum(ref() is not None for ref in built))
        run = original(model, fetch, threads, where, *args, **kwargs)
        if where == "reference model":
            built.append(weakref.ref(run))
        return run

    monkeypatch.setattr(stages.runtime, "runner", tracked)
    return alive


def _quantized_model(tmp_path: Path, nodes: list, x: list[int], y: list[int], weights: list[np.ndarray]):
    """The float model of `nodes` (weights w0, w1, ...), quantized on 4 samples: (float, quantized, samples)."""
    info = onnx.helper.make_tensor_value_info
    inits = [onnx.numpy_helper.from_array(w.astype(np.float32), f"w{k}") for k, w in enumerate(weights)]
    graph = onnx.helper.make_graph(nodes, "g", [info("x", 1, x)], [info("y", 1, y)], inits)
    source = save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    calib = write_samples(tmp_path / "calib", gm.load(source), 4, seed=1)
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=tmp_path / "q.onnx"))
    return gm.load(source), gm.load(tmp_path / "q.onnx"), calib


@pytest.mark.parametrize("apart", [False, True])
def test_apart_runs_one_session_at_a_time(tmp_path, monkeypatch, apart):
    """apart: a stage's reference sessions are gone before its quantized ones are built (the quality warning's
    ranking held both, and a sample's values of both, at Silero VAD's peak); the default runs the two side by side.
    Three 128x128 MatMuls: 192 KiB of weights against 3 KiB of values a sample."""
    rng = np.random.default_rng(5)
    nodes = [onnx.helper.make_node("MatMul", ["x", "w0"], ["h0"]), onnx.helper.make_node("Tanh", ["h0"], ["t0"]),
             onnx.helper.make_node("MatMul", ["t0", "w1"], ["h1"]), onnx.helper.make_node("Tanh", ["h1"], ["t1"]),
             onnx.helper.make_node("MatMul", ["t1", "w2"], ["y"])]  # fmt: skip
    reference, quantized, calib = _quantized_model(tmp_path, nodes, [1, 128], [1, 128], list(rng.normal(size=(3, 128, 128))))
    monkeypatch.setenv(stages.COMPARE_ENV, "0")
    alive = _alive_at_quantized_builds(monkeypatch)
    layers.stream(reference, quantized, _feeds(quantized, calib), apart=apart)
    assert len(alive) >= 2  # two stages or more
    assert max(alive) == (0 if apart else 1)


def test_apart_is_side_by_side_where_a_sample_outweighs_the_weights(tmp_path, monkeypatch):
    """A 64x64 map through two 3x3 Convs: 48 KiB of values a sample against 72 bytes of weights. Apart, every
    sample's reference values would wait in files (u2netp: 4.8 GB for 8 samples) to save holding a second session
    of 72 bytes of weights: the two run side by side, with the same figures."""
    rng = np.random.default_rng(4)
    nodes = [onnx.helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Relu", ["c0"], ["r0"]),
             onnx.helper.make_node("Conv", ["r0", "w1"], ["y"], pads=[1, 1, 1, 1])]  # fmt: skip
    shape = [1, 1, 64, 64]
    reference, quantized, calib = _quantized_model(tmp_path, nodes, shape, shape, list(rng.normal(size=(2, 1, 1, 3, 3))))
    expected = _whole_graph(reference, quantized, calib)
    alive = _alive_at_quantized_builds(monkeypatch)
    assert np.array_equal(_figures(layers.stream(reference, quantized, _feeds(quantized, calib), apart=True)), expected)
    assert alive and min(alive) >= 1  # each quantized session built beside the reference's


def test_cut_keeps_each_group_within_the_budget():
    """Four 64x64 float MatMuls (16 KiB each): a 32 KiB budget takes two layers a stage."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(4):
        inits.append(onnx.numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), f"w{i}"))
        nodes += [
            onnx.helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]),
            onnx.helper.make_node("Tanh", [f"h{i}"], [f"t{i}"]),
        ]
        x = f"t{i}"
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(nodes, "g", [info("x", 1, [1, 64])], [info(x, 1, [1, 64])], inits)
    tensors = ["x"] + [t for i in range(4) for t in (f"h{i}", f"t{i}")]
    groups = stages.cut(onnx.helper.make_model(graph), tensors, 32 << 10)
    assert groups == [["x", "h0", "t0", "h1", "t1"], ["h2", "t2", "h3", "t3"]]


def test_cut_keeps_each_group_within_the_fetch_budget():
    """Probed values count too: four 1x64 float outputs (256 bytes each a sample) under a 600-byte budget
    take two a stage, whatever the weights; a value of unknown size counts as nothing."""
    tensors = ["h0", "t0", "h1", "t1", "h2"]
    graph = onnx.helper.make_graph([], "g", [], [])
    sizes = {name: 256 for name in tensors[:4]}
    groups = stages.cut(onnx.helper.make_model(graph), tensors, 1 << 30, sizes, 600)
    assert groups == [["h0", "t0"], ["h1", "t1", "h2"]]
    assert stages.cut(onnx.helper.make_model(graph), tensors, 1 << 30) == [tensors]


def test_value_bytes_counts_static_shapes_only():
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [], "g", [info("x", onnx.TensorProto.FLOAT, [2, 3])], [info("y", onnx.TensorProto.INT64, ["n", 3])]
    )
    graph.value_info.append(info("z", onnx.TensorProto.FLOAT16, [4]))
    assert stages.value_bytes(onnx.helper.make_model(graph)) == {"x": 24, "z": 8}


def test_inspect_report_is_the_same_in_stages(tmp_path, monkeypatch):
    _quantized(tmp_path, "attention")
    args = ["inspect", tmp_path / "quant.onnx", "--reference", tmp_path / "float.onnx"]
    args += ["--input_list", tmp_path / "val" / "list.txt", "--json"]
    whole = run_cli(args)
    monkeypatch.setenv(stages.COMPARE_ENV, "0")
    staged = run_cli(args)
    assert whole.exit_code == staged.exit_code == 0
    assert json.loads(staged.stdout) == json.loads(whole.stdout)


def test_a_bad_stage_size_is_one_error_line(tmp_path, monkeypatch):
    _quantized(tmp_path, "cnn")
    monkeypatch.setenv(stages.COMPARE_ENV, "lots")
    args = ["inspect", tmp_path / "quant.onnx", "--reference", tmp_path / "float.onnx"]
    result = run_cli([*args, "--input_list", tmp_path / "val" / "input_list.txt"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"qtool: error: {stages.COMPARE_ENV}='lots' must be a number of bytes, at least 0"
    ]


def _resize_model() -> onnx.ModelProto:
    """Conv → Relu → Resize (its `scales` an empty Constant made first in the graph, as paddle2onnx
    writes it, `sizes` an initializer) → Conv: the Constant's stage is not the Resize's."""
    rng = np.random.default_rng(3)
    weight = lambda name: onnx.numpy_helper.from_array(rng.normal(size=(2, 2, 3, 3)).astype(np.float32), name)  # noqa: E731
    sizes = onnx.numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "sizes")
    empty = onnx.helper.make_tensor("none", onnx.TensorProto.FLOAT, [0], [])
    nodes = [
        onnx.helper.make_node("Constant", [], ["scales"], value=empty),
        onnx.helper.make_node("Constant", [], ["roi"], value=empty),
        onnx.helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c0"], ["r0"]),
        onnx.helper.make_node("Resize", ["r0", "roi", "scales", "sizes"], ["up"], mode="nearest"),
        onnx.helper.make_node("Conv", ["up", "w1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        nodes, "g", [info("x", 1, [1, 2, 4, 4])], [info("y", 1, [1, 2, 8, 8])], [weight("w0"), weight("w1"), sizes]
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_a_constant_is_made_by_each_stage_that_reads_it_not_fed(tmp_path, monkeypatch):
    """Fed to the Resize's stage as an input, the empty `scales` has an unknown size and onnxruntime
    refused the stage's model ("Either `sizes` or `scales` must be provided, but not both"): SLANet's
    quantize ended in exit 3 once its quality warning ranked layers in stages."""
    source = save(_resize_model(), tmp_path / "float.onnx")
    calib = write_samples(tmp_path / "calib", gm.load(source), 4, seed=1)
    out = tmp_path / "quant.onnx"
    api.quantize(QuantizeOptions(input_network=source, input_list=calib, output_path=out))
    reference, quantized = gm.load(source), gm.load(out)
    expected = _whole_graph(reference, quantized, calib)
    monkeypatch.setenv(stages.COMPARE_ENV, "0")  # a stage per weighted layer: the Resize is in the second
    tensors = [p.tensor for p in layers.probes(reference, quantized)]
    assert len(stages.cut(reference, tensors, stages.compare_bytes())) >= 2
    for frontier in (stages.FRONTIER_BYTES, 0):
        for apart in (False, True):
            staged = layers.stream(reference, quantized, _feeds(quantized, calib), frontier_budget=frontier, apart=apart)
            assert np.array_equal(_figures(staged), expected)

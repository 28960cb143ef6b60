"""Frontier: layer inputs pass by pass from each sample's kept tensors equal a full run from the inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool import runtime
from qtool.quant.algorithms import frontier as frontier_module
from qtool.quant.algorithms.frontier import Frontier, Replay

LAYERS = [("conv_a", "x_dq"), ("conv_b", "r"), ("conv_c", "s")]  # (node, the input it reads)


def _model(seed: int = 0, size: tuple = (6, 6), shared: bool = False) -> onnx.ModelProto:
    """x -> Q -> DQ -> conv_a -> Relu = r -> conv_b = b; s = r + b (a skip past conv_b) -> conv_c."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"w_{n}") for n in "abc"]
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "zero")
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"]),
        helper.make_node("Conv", ["x_dq", "w_a"], ["a1"], name="conv_a", **conv),
        helper.make_node("Conv", ["x_dq", "w_b" if shared else "w_a"], ["a2"], **conv),  # shared: w_b also here
        helper.make_node("Add", ["a1", "a2"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w_b"], ["b"], name="conv_b", **conv),
        helper.make_node("Add", ["r", "b"], ["s"]),
        helper.make_node("Conv", ["s", "w_c"], ["y"], name="conv_c", **conv),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, *size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], [*weights, scale, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _feeds(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(1, 4, 6, 6)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize(
    "budget, shared",
    [(1 << 30, False), (0, False), (600, False), (1 << 30, True)],
    ids=["all kept", "none kept", "some kept", "a weight shared with an earlier node"],
)
def test_each_pass_gives_what_a_full_run_gives_with_the_weights_changed_on_the_way(budget: int, shared: bool) -> None:
    feeds, model = _feeds(5), _model(shared=shared)
    frontier = Frontier(feeds, budget=budget)
    for step, (name, wanted) in enumerate(LAYERS):
        value = frontier.advance(model, _node(model, name), wanted)
        got = [value(i) for i in range(len(feeds))]
        full = runtime.runner(model, [wanted])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(got[i], full(feed)[wanted])
        # as adaround rounds the layer it just reached: the next pass must use the new weights
        weight = next(t for t in model.graph.initializer if t.name == _node(model, name).input[1])
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * (2.0 + step), weight.name))
    in_memory = [live for live in frontier.live if isinstance(live, dict)]
    assert len(in_memory) == {1 << 30: 5, 0: 0, 600: 1}[budget]  # one sample's s: 4*6*6 floats = 576 bytes
    assert all(live is not None for live in frontier.live)  # the rest in scratch files
    assert frontier.held() <= budget


def test_marks_are_counted_in_the_same_budget() -> None:
    """A pass that restarts keeps its live sets as the marks: the same arrays, counted once against the one budget
    (live sets and marks each had 256 MB of their own: dnsmos's bc reached 1.1 GB)."""
    feeds, model = _feeds(5), _model()
    frontier = Frontier(feeds, budget=1300)  # two samples' r or s (576 bytes), not three
    for step, (name, wanted) in enumerate(LAYERS):
        value = frontier.advance(model, _node(model, name), wanted)
        full = runtime.runner(model, [wanted])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(value(i), full(feed)[wanted])
            assert frontier.held() <= 1300
        if step == 1:  # a weight before the frontier: the next pass restarts, and its live sets are the marks
            weight = next(t for t in model.graph.initializer if t.name == "w_a")
            weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2.0, weight.name))
    assert frontier.mark is not None and all(m is k for m, k in zip(frontier.marks, frontier.live, strict=True))
    assert [isinstance(m, dict) for m in frontier.marks].count(True) == 2 and frontier.held() == 2 * 576


@pytest.mark.parametrize("disk", [True, False], ids=["past the budget in files", "the disk refuses them"])
def test_feeds_read_again_where_nothing_is_kept_give_the_values_of_feeds_held(disk: bool, monkeypatch) -> None:
    feeds, model, read = _feeds(5), _model(), []
    if not disk:
        monkeypatch.setattr(frontier_module, "_spilled", lambda live: None)

    def source():
        for i, feed in enumerate(feeds):
            read.append(i)
            yield {"x": feed["x"].copy()}

    replayed, held = Frontier(Replay(source, len(feeds)), budget=600), Frontier(feeds, budget=600)
    for name, wanted in LAYERS:
        mine, theirs = replayed.advance(model, _node(model, name), wanted), held.advance(model, _node(model, name), wanted)
        for i in range(len(feeds)):
            np.testing.assert_array_equal(mine(i), theirs(i))
    # each pass reads the list again for the samples it keeps nothing for (1-4; sample 0 is read past, kept)
    assert read == [0, 1, 2, 3, 4] + ([] if disk else [0, 1, 2, 3, 4] * 2)
    with pytest.raises(IndexError):
        Replay(source, 5)[5]


def test_a_dequantized_input_is_kept_as_its_integers() -> None:
    feeds, model = _feeds(2), _model()
    frontier = Frontier(feeds)
    value = frontier.advance(model, _node(model, "conv_a"), "x_dq")
    value(0)
    assert {name: v.dtype for name, v in frontier.live[0].items()} == {"x_q": np.uint8}


def _int4_input(model: onnx.ModelProto, zero_point: bool) -> onnx.ModelProto:
    """_model with x on a 4-bit grid: its zero point int4, or none and QuantizeLinear's output_dtype (opset 21)."""
    model.opset_import[0].version = 21
    del model.graph.initializer[-1]  # zero
    if zero_point:
        model.graph.initializer.append(helper.make_tensor("zero", TensorProto.INT4, [], [0]))
    for node in model.graph.node[:2]:
        del node.input[2:]
        node.input.extend(["zero"] if zero_point else [])
    if not zero_point:
        model.graph.node[0].attribute.append(helper.make_attribute("output_dtype", TensorProto.INT4))
    return model


@pytest.mark.parametrize("zero_point", [True, False], ids=["int4 zero point", "output_dtype int4, no zero point"])
def test_a_4_bit_input_is_kept_dequantized(zero_point: bool) -> None:
    """onnxruntime returns no array of an int4 tensor ('No corresponding Numpy type for Tensor Type. Int4x2'): the
    DequantizeLinear's input type decides, which a QuantizeLinear without a zero point gives by output_dtype."""
    feeds, model = _feeds(2), _int4_input(_model(), zero_point)
    frontier = Frontier(feeds)
    value = frontier.advance(model, _node(model, "conv_a"), "x_dq")
    np.testing.assert_array_equal(value(0), runtime.runner(model, ["x_dq"])(feeds[0])["x_dq"])
    assert {name: v.dtype for name, v in frontier.live[0].items()} == {"x_dq": np.float32}


def test_going_back_to_an_earlier_layer_starts_again_from_the_inputs() -> None:
    feeds, model = _feeds(3), _model()
    frontier = Frontier(feeds)
    for name, wanted in [LAYERS[2], LAYERS[1]]:
        value = frontier.advance(model, _node(model, name), wanted)
        full = runtime.runner(model, [wanted])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(value(i), full(feed)[wanted])


def test_samples_of_different_sizes_share_a_pass_where_the_model_allows_it() -> None:
    model, rng = _model(size=("h", "w")), np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(1, 4, side, side)).astype(np.float32)} for side in (6, 9, 7)]
    frontier = Frontier(feeds)
    for name, wanted in LAYERS:
        value = frontier.advance(model, _node(model, name), wanted)
        full = runtime.runner(model, [wanted])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(value(i), full(feed)[wanted])


def _chain(layers: int = 5) -> onnx.ModelProto:
    """x -> Q -> DQ -> conv0 -> Relu -> conv1 -> Relu -> ... -> conv{layers-1}."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "zero"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["h0"])]  # fmt: skip
    for k in range(layers):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), f"w{k}"))
        nodes.append(
            helper.make_node("Conv", [f"h{k}", f"w{k}"], [f"c{k}"], name=f"conv{k}", kernel_shape=[3, 3], pads=[1] * 4)
        )
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"h{k + 1}"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    graph = helper.make_graph(
        nodes, "chain", [x], [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _scale(model: onnx.ModelProto, name: str) -> None:
    weight = next(t for t in model.graph.initializer if t.name == name)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, name))


def test_a_restart_runs_from_the_last_restart_unless_the_change_reaches_before_it(monkeypatch) -> None:
    """bc re-fits the biases it corrected so far onto new grids: the kept activations go stale, and the next pass
    starts from those kept where the last restart was (the biases re-fitted since are all after it), not from the
    inputs; a change before that point starts from the inputs. Every value is a full run's."""
    feeds, model = _feeds(3), _chain()
    starts, real = [], runtime.runner
    monkeypatch.setattr(
        runtime,
        "runner",
        lambda m, names, threads=0, given=None, **k: starts.append(sorted(given)) or real(m, names, threads, given=given, **k),
    )
    frontier = Frontier(feeds)
    # (layer, weight changed once it is reached, where its pass starts): w0 is behind conv1's frontier, a restart
    # from the inputs (no mark yet) whose frontier at conv2 is the mark; w2 is behind conv3's frontier, not behind
    # the mark (a restart from h2), whose frontier at conv4 is the next; w1 is behind that (from the inputs)
    steps = [(0, None, "x"), (1, "w0", "x_q"), (2, None, "x"), (3, "w2", "h2"), (4, "w1", "h2"), (5, None, "x")]
    model.graph.node.append(helper.make_node("Relu", ["h5"], ["h6"], name="conv5"))  # reads h5: a 6th "layer"
    for k, changed, start in steps:
        starts.clear()
        value = frontier.advance(model, _node(model, f"conv{k}"), f"h{k}")
        full = real(model, [f"h{k}"])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(value(i), full(feed)[f"h{k}"])
        assert starts == [[start]], (k, starts)
        if changed:
            _scale(model, changed)


def test_a_model_s_nodes_are_read_once_for_all_its_passes_its_weights_changed_between(monkeypatch) -> None:
    """bc and adaround change weights in place between passes, never nodes: what the passes read of the nodes (which
    tensors are activations, what a changed weight reaches) is found once, not three node scans a pass (311 passes over
    a U-Net's 7234 QDQ nodes were most of bc's time). The values are a full run's still."""
    feeds, model = _feeds(2), _chain(layers=6)
    scans, real = [], runtime.downstream
    monkeypatch.setattr(runtime, "downstream", lambda nodes, sources: scans.append(1) or real(nodes, sources))
    frontier = Frontier(feeds)
    for k in range(6):
        value = frontier.advance(model, _node(model, f"conv{k}"), f"h{k}")
        full = runtime.runner(model, [f"h{k}"])
        for i, feed in enumerate(feeds):
            np.testing.assert_array_equal(value(i), full(feed)[f"h{k}"])
        _scale(model, f"w{k}")  # the weight of the layer just reached, as bc's corrected bias
        if k == 3:
            _scale(model, "w1")  # one behind the frontier: the kept activations are stale
    assert len(scans) == 1

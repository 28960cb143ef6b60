"""runtime.runner: a tensor costs only the part of the model it depends on."""

import weakref

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool import runtime


def _value(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])


def _branch(k: int) -> onnx.GraphProto:
    """out_k = a * k, where `a` comes from the enclosing graph."""
    constant = helper.make_tensor(f"k{k}", TensorProto.FLOAT, [1], [float(k)])
    node = helper.make_node("Mul", ["a", f"k{k}"], [f"out{k}"])
    return helper.make_graph([node], f"branch{k}", [], [_value(f"out{k}")], [constant])


def _model() -> onnx.ModelProto:
    """x -> a = x+1 -> b = If(flag){a*2}{a*3}; c = Exp(x) does not feed b."""
    nodes = [
        helper.make_node("Add", ["x", "one"], ["a"]),
        helper.make_node("If", ["flag"], ["b"], then_branch=_branch(2), else_branch=_branch(3)),
        helper.make_node("Exp", ["x"], ["c"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [_value("x"), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [_value("b"), _value("c")],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pruned_keeps_what_a_subgraph_reads_from_outside():
    pruned = runtime.pruned(_model(), ["b"])
    assert [n.op_type for n in pruned.graph.node] == ["Add", "If"]  # Exp dropped, Add kept for the branch
    onnx.checker.check_model(pruned)
    feed = {"x": np.array([1.0, 2.0], np.float32), "flag": np.array(True)}
    np.testing.assert_allclose(runtime.runner(_model(), ["b"])(feed)["b"], [4.0, 6.0])


def test_pruned_is_built_from_its_parts_and_keeps_the_models_own_fields():
    model = _model()
    model.graph.initializer.append(helper.make_tensor("unused", TensorProto.FLOAT, [1], [5.0]))
    model.graph.value_info.append(_value("a"))
    model.functions.append(helper.make_function("local", "Twice", ["v"], ["w"],
                                                [helper.make_node("Add", ["v", "v"], ["w"])],
                                                [helper.make_opsetid("", 17)]))  # fmt: skip
    helper.set_model_props(model, {"qtool.rewritten": "a"})
    model.graph.doc_string = "kept"
    before = model.SerializeToString()
    index = ({"a": 0, "b": 1, "c": 2}, {t.name: t for t in model.graph.initializer})
    pruned = runtime.pruned(model, ["a", "b"], index=index)
    assert model.SerializeToString() == before  # the source is not touched
    assert [o.name for o in pruned.graph.output] == ["a", "b"]
    assert [t.name for t in pruned.graph.initializer] == ["one"] and not pruned.graph.value_info
    assert (pruned.opset_import, pruned.ir_version, pruned.functions) == (model.opset_import, model.ir_version, model.functions)
    assert pruned.metadata_props == model.metadata_props and pruned.graph.doc_string == "kept"
    given = {"a": np.zeros(2, np.float32)}
    fed = runtime.pruned(model, ["b"], given)
    assert [n.op_type for n in fed.graph.node] == ["If"] and [i.name for i in fed.graph.input] == ["flag", "a"]


def test_runner_returns_intermediate_tensors_by_name():
    feed = {"x": np.array([0.0, 1.0], np.float32), "flag": np.array(False)}
    found = runtime.runner(_model(), ["a", "c"])(feed)
    np.testing.assert_allclose(found["a"], [1.0, 2.0])
    np.testing.assert_allclose(found["c"], np.exp([0.0, 1.0]), rtol=1e-6)


def _qdq_chain(layers: int = 4) -> onnx.ModelProto:
    """x -> [Q/DQ -> MatMul by a DequantizeLinear weight -> Relu] x layers, every dequantized activation and
    MatMul output also a graph output (as the per-layer check probes them), weights listed late_constants' way."""
    rng = np.random.default_rng(0)
    nodes, inits, x, outputs = [], [numpy_helper.from_array(np.array(0.05, np.float32), "s")], "x", []
    inits.append(numpy_helper.from_array(np.array(0, np.uint8), "z"))
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.integers(-8, 8, (16, 16)).astype(np.int8), f"q{i}"),
                  numpy_helper.from_array(np.array(0.01, np.float32), f"ws{i}")]  # fmt: skip
        nodes += [
            helper.make_node("QuantizeLinear", [x, "s", "z"], [f"xq{i}"], name=f"qa{i}"),
            helper.make_node("DequantizeLinear", [f"xq{i}", "s", "z"], [f"xd{i}"], name=f"dqa{i}"),
            helper.make_node("DequantizeLinear", [f"q{i}", f"ws{i}"], [f"w{i}"], name=f"dqw{i}"),
            helper.make_node("MatMul", [f"xd{i}", f"w{i}"], [f"m{i}"], name=f"mm{i}"),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        outputs += [f"xd{i}", f"m{i}"]
        x = f"r{i}"
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_an_unoptimized_session_dequantizes_each_weight_just_before_its_layer(tmp_path, monkeypatch):
    """Fetching a dequantized activation made onnxruntime's QDQ handling duplicate its DequantizeLinear and
    append the copy to the node list: in the priority order every weight's DequantizeLinear then ran before
    the first MatMul (a float copy of all weights at once). runtime.session's unoptimized sessions keep the
    list order (profiled), and compute what onnxruntime's default session computes, bit for bit."""
    import json
    from pathlib import Path

    import onnxruntime as ort

    class Profiled(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling, self.profile_file_prefix = True, str(tmp_path / "profile")

    model = _qdq_chain()
    feed = {"x": np.linspace(-1, 1, 16, dtype=np.float32)[None]}
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    monkeypatch.setattr(runtime.ort, "SessionOptions", Profiled)
    sess = runtime.session(model)
    for got, want in zip(sess.run(None, feed), reference, strict=True):
        assert np.array_equal(got, want)
    profile = json.loads(Path(sess.end_profiling()).read_text())
    events = [e for e in profile if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    order = [e["name"].removesuffix("_kernel_time") for e in sorted(events, key=lambda e: e["ts"])]
    for i in range(1, 4):
        assert order.index(f"dqw{i}") > order.index(f"mm{i - 1}"), order


def test_calibration_and_comparisons_give_back_their_heap_once_their_sessions_are_gone(monkeypatch):
    """Auto's trials calibrate and compare a dozen times, and each call's sessions left their heap to the next
    (MTCNN P-Net's peak RSS 121 -> 112 MB once given back): each call gives it back when it returns, its sessions
    freed by then (held, there would be nothing to give back)."""
    from qtool.inspect import compare
    from qtool.quant.calibrate import calibrate

    sessions, freed_at_give_back = [], []
    built = runtime.session

    def session(*args, **kwargs):
        made = built(*args, **kwargs)
        sessions.append(weakref.ref(made))
        return made

    monkeypatch.setattr(runtime, "session", session)
    monkeypatch.setattr(runtime, "give_back", lambda: freed_at_give_back.append([s() is None for s in sessions]))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [_value("x")], [_value("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.array([-1.0, 2.0], np.float32)}, {"x": np.array([3.0, -4.0], np.float32)}]
    calibrate(model, ["x", "y"], [(f"sample {k}", feed) for k, feed in enumerate(feeds)])
    kept = compare.reference_outputs(model, iter(feeds))
    compare.compare_outputs(model, model, iter(feeds), cached=kept)
    assert freed_at_give_back == [[True], [True, True], [True, True, True]]


def test_a_session_keeps_no_copy_of_the_serialized_model():
    """onnxruntime's InferenceSession kept the bytes it was built from, to rebuild itself on another provider:
    a copy of the model per live session (Silero's 1.2 MB, two sessions at a time in a comparison). onnxruntime
    parsed them into its own copy, so the session runs the same without them."""
    import gc

    sess = runtime.session(_model())
    assert not [name for name, value in vars(sess).items() if isinstance(value, bytes)]
    gc.collect()
    junk = [bytes([7]) * (1 << 16) for _ in range(64)]  # the freed bytes' memory taken and overwritten
    out = sess.run(["b", "c"], {"x": np.array([1.0, 2.0], np.float32), "flag": np.array(True)})
    del junk
    assert np.allclose(out[0], [4.0, 6.0]) and np.allclose(out[1], np.exp([1.0, 2.0]))


def test_a_session_reads_its_model_from_a_scratch_file_written_tensor_by_tensor(monkeypatch):
    """From bytes, onnxruntime's pybind11 layer copies them into a std::string before parsing: the weights three
    times over at once (Silero VAD's 1.2 MB session built at +6.3 MB, from a file at +3.0). The file goes once
    the session is built, and the session runs as one built from bytes."""
    import os

    sources = []

    class Recording(runtime.ort.InferenceSession):
        def __init__(self, source, *args, **kwargs):
            sources.append(source)
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", Recording)
    model = _model()
    model.graph.initializer.append(numpy_helper.from_array(np.arange(4096, dtype=np.float32), "big"))
    sess = runtime.session(model)
    assert len(sources) == 1 and isinstance(sources[0], str) and sources[0].endswith(".onnx")
    assert not os.path.exists(sources[0])
    out = sess.run(["b", "c"], {"x": np.array([1.0, 2.0], np.float32), "flag": np.array(False)})
    assert np.allclose(out[0], [6.0, 9.0]) and np.allclose(out[1], np.exp([1.0, 2.0]))


def test_a_session_whose_scratch_file_cannot_be_written_is_built_from_bytes(monkeypatch):
    def full(name):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime, "scratch_file", full)
    out = runtime.runner(_model(), ["b"])({"x": np.array([1.0, 2.0], np.float32), "flag": np.array(True)})
    np.testing.assert_allclose(out["b"], [4.0, 6.0])


def test_a_model_onnxruntime_refuses_is_named_without_the_scratch_file():
    """Read from a file, onnxruntime's error starts 'Load model from /tmp/qtool-weights-.../session-0.onnx
    failed:': the load is retried from bytes, whose error names nothing the user never gave."""
    import pytest

    from qtool.errors import ModelError

    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"])], "g", [_value("x")], [_value("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError) as refused:
        runtime.session(model, where="m.onnx")
    assert "No Op registered for Foo" in str(refused.value)
    assert "Load model from" not in str(refused.value) and "session-" not in str(refused.value)


def test_a_shared_runner_reads_the_models_own_weights_and_gives_the_copys_values(monkeypatch):
    """bc's sessions read the model's weight bytes as OrtValues, only those the pruned part reads (onnxruntime
    refuses an initializer the graph lacks), not a pruned copy's serialization: the same values."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["b"]), helper.make_node("MatMul", ["x", "w2"], ["c"])]  # fmt: skip
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("b", "c")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])], outs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    seen = []
    session = runtime.session
    monkeypatch.setattr(runtime, "session", lambda *a, weights=None, **k: seen.append(weights) or session(*a, weights=weights, **k))
    feed = {"x": rng.normal(size=(1, 32)).astype(np.float32)}
    for names, start, read in [(["a", "b"], feed, ["w0", "w1"]), (["b"], {"r": np.ones((1, 32), np.float32)}, ["w1"])]:
        given_now = start if "r" in start else None
        shared = runtime.runner(model, names, given=given_now, shared=True)(start)
        copied = runtime.runner(model, names, given=given_now)(start)
        assert [t.name for t in seen[-2]] == read and seen[-1] is None
        for name in names:
            np.testing.assert_array_equal(shared[name], copied[name])

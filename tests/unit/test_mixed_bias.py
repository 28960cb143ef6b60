"""The mixed-precision search raises a layer's 8-bit bias with its weights: QNN's default biases are 8-bit,
and a 16-bit layer's bias left on an 8-bit grid capped pipecat's smart-turn (a Whisper encoder) at 29.6 dB
with every candidate raised."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.io.encodings import Encodings
from qtool.quant import mixed_precision as mp
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import MinMax
from qtool.quant.plan import PlanOptions, build_plan


def _linear(op: str) -> GraphFacts:
    """y = x·w + b: a MatMul with its bias Add (one layer, GraphFacts.bias_add), or a Gemm."""
    rng = np.random.default_rng(0)
    nodes = (
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
        if op == "MatMul"
        else [helper.make_node("Gemm", ["x", "w", "b"], ["y"])]
    )
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", 1, [4, 16])], [helper.make_tensor_value_info("y", 1, [4, 8])],
        [numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return GraphFacts.of(onnx.shape_inference.infer_shapes(model))


def _observers() -> dict[str, MinMax]:
    observers = {t: MinMax(t) for t in ("x", "y")}
    for t, (lo, hi) in {"x": (-3.0, 3.0), "y": (-9.0, 9.0)}.items():
        observers[t].observe(lo, hi, None)
    return observers


def test_raising_a_layers_weights_gives_its_8_bit_bias_int32_on_the_accumulators_grid() -> None:
    for op in ("MatMul", "Gemm"):
        facts = _linear(op)
        plan = build_plan(facts, _observers(), Encodings(), PlanOptions())
        assert plan.params["b"].bitwidth == 8  # QNN's default
        cands, _ = mp.candidates(facts, plan)
        with_weights = [c for c in cands if c.weights]
        assert with_weights and all(c.biases == ["b"] for c in with_weights)
        raised = mp.raise_precision(Encodings(), with_weights)
        replanned = build_plan(facts, _observers(), raised, PlanOptions())
        bias, weight, x = replanned.params["b"], replanned.params["w"], replanned.activations["x"]
        assert (bias.bitwidth, bias.dtype, weight.bitwidth) == (32, "int", 16)
        assert np.allclose(bias.scale, x.scale[0] * np.asarray(weight.scale))  # input scale x weight scale


def test_a_32_bit_bias_is_no_candidate() -> None:
    facts = _linear("Gemm")
    plan = build_plan(facts, _observers(), Encodings(), PlanOptions(bias_bitwidth=32))
    assert all(not c.biases for c in mp.candidates(facts, plan)[0])

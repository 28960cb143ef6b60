"""A Sigmoid output cut off by its grid is named as clipped, not as a Sigmoid to raise to 16 bits: its 16-bit grid keeps
the end that cuts it (inspect/layers._fix, _clipped)."""

from __future__ import annotations

import numpy as np
import onnx

from qtool.encoding import tf
from qtool.inspect import layers
from qtool.inspect.layers import LayerError
from qtool.quant.graph_facts import GraphFacts


def _score() -> tuple[onnx.NodeProto, GraphFacts]:
    gemm = onnx.helper.make_node("Gemm", ["x", "w"], ["logit"])
    sigmoid = onnx.helper.make_node("Sigmoid", ["logit"], ["p"])
    model = onnx.helper.make_model(onnx.helper.make_graph([gemm, sigmoid], "g", [], []),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])  # fmt: skip
    return sigmoid, GraphFacts.of(model)


def test_a_score_past_its_grid_is_named_clipped() -> None:
    """alexa_v0.1's case: calibrated on negatives alone (grid [0, 1e-4]), a held-out window scored 0.0027."""
    sigmoid, facts = _score()
    grid = tf(0.0, 1e-4, 8)
    ref = np.array([1e-6, 3e-5, 8e-5, 0.0027], np.float32)
    quant = grid.fake_quantize(ref)
    error = LayerError(layers.Probe("p", "p_dq", sigmoid, grid))
    error.update(ref, quant)
    fix = layers.suggest(error, error.local_nsr, facts, None)
    assert fix.startswith("clipped: values reach 27.0x its grid's end (0.0027 against 0.0001)"), fix
    assert "an overrides file (an end past 0.0027" in fix and "--act_16bit_tensors p alone keeps its end" in fix
    assert "exclude" not in fix  # 16 bits on [0, 1e-4] still read 0.0027 as 1e-4


def test_a_score_inside_its_grid_is_still_the_sigmoid_to_raise() -> None:
    sigmoid, facts = _score()
    grid = tf(0.0, 1.0, 8)
    ref = np.linspace(0.001, 0.999, 64).astype(np.float32)
    error = LayerError(layers.Probe("p", "p_dq", sigmoid, grid))
    error.update(ref, grid.fake_quantize(ref))
    fix = layers.suggest(error, error.local_nsr, facts, None)
    assert fix.endswith("exclude: keep this Sigmoid in float or 16-bit (--act_16bit_tensors p)"), fix


def _regression(peak: float) -> tuple[LayerError, GraphFacts]:
    """A regression head's output on a grid [-260, 102], met by held-out values down to `peak` (svm_regressor's
    surrogate: -499, 1.92x its end, the whole of its 8.4 dB)."""
    add = onnx.helper.make_node("Add", ["m", "b"], ["y"])
    facts = GraphFacts.of(onnx.helper.make_model(onnx.helper.make_graph([add], "g", [], []),
                                                 opset_imports=[onnx.helper.make_opsetid("", 17)]))  # fmt: skip
    grid = tf(-260.0, 102.0, 8)
    ref = np.append(np.linspace(-250, 100, 200), [peak]).astype(np.float32)
    error = LayerError(layers.Probe("y", "y_dq", add, grid))
    error.update(ref, grid.fake_quantize(ref))
    return error, facts


def test_an_output_met_at_twice_its_end_less_a_little_is_named_clipped() -> None:
    error, facts = _regression(-499.0)
    fix = layers.suggest(error, error.local_nsr, facts, None)
    assert fix.startswith("clipped: values reach 1.9x its grid's end (-499 against -259.8)"), fix
    error, facts = _regression(-330.0)  # 1.27x: what any range fitted to its samples meets; the old fix stands
    assert not layers.suggest(error, error.local_nsr, facts, None).startswith("clipped")

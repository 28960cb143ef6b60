"""bc behind a ReLU or Clip matches the mean of what the rectifier passes on (algorithms/bias_correction.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.quant.algorithms import bias_correction
from qtool.quant.graph_facts import GraphFacts


class _Frontier:
    """Frontier.advance's contract, with the quantized layer's values given."""

    def __init__(self, values: list[np.ndarray]):
        self.values, self.feeds = values, [{}] * len(values)

    def advance(self, model, node, wanted):
        return lambda i: self.values[i]


def _layer(reader: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])]
    inits = [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")]
    if reader == "Clip":
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    else:
        nodes.append(helper.make_node(reader, ["c"], ["y"]))
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _scale_error(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pre-activations mostly negative (-4 .. 1), quantized with a 10 % scale error: the error's mean is
    set by the negative values a ReLU discards."""
    rng = np.random.default_rng(seed)
    floats = [rng.uniform(-4, 1, (1, 2, 4, 4)) for _ in range(8)]
    return floats, [1.1 * f for f in floats]


def _rectified_mean(values: list[np.ndarray], low: float, high: float) -> np.ndarray:
    return np.mean([np.clip(v, low, high).mean(axis=(0, 2, 3)) for v in values], axis=0)


def test_behind_a_relu_the_passed_values_mean_is_matched() -> None:
    model = _layer("Relu")
    rectifier = bias_correction._rectifier(GraphFacts.of(model), "c")
    assert rectifier == ("y", 0.0, np.inf)
    floats, quantized = _scale_error()
    float_means = {"c": np.mean([f.mean(axis=(0, 2, 3)) for f in floats], axis=0), "y": _rectified_mean(floats, 0, np.inf)}
    delta = bias_correction._correction(_Frontier(quantized), model, "c", 1, float_means, "c", rectifier)
    corrected = [q + delta.reshape(1, -1, 1, 1) for q in quantized]
    before = np.abs(_rectified_mean(quantized, 0, np.inf) - float_means["y"])
    after = np.abs(_rectified_mean(corrected, 0, np.inf) - float_means["y"])
    assert (after < before / 3).all()
    # the whole output's mean would shift the kept values up, past float (10 % too negative below zero)
    whole = float_means["c"] - np.mean([q.mean(axis=(0, 2, 3)) for q in quantized], axis=0)
    assert (whole > 0).all() and (_rectified_mean([q + whole.reshape(1, -1, 1, 1) for q in quantized], 0, np.inf) > float_means["y"] + before).all()


def test_clip_bounds_and_other_readers() -> None:
    assert bias_correction._rectifier(GraphFacts.of(_layer("Clip")), "c") == ("y", 0.0, 6.0)
    assert bias_correction._rectifier(GraphFacts.of(_layer("Sigmoid")), "c") is None


def test_a_channel_the_relu_never_passes_gets_no_correction() -> None:
    model = _layer("Relu")
    dead = [np.full((1, 2, 4, 4), -3.0)] * 4
    float_means = {"c": np.array([-2.0, -2.0]), "y": np.zeros(2)}
    rectifier = bias_correction._rectifier(GraphFacts.of(model), "c")
    delta = bias_correction._correction(_Frontier(dead), model, "c", 1, float_means, "c", rectifier)
    assert np.array_equal(delta, np.zeros(2))

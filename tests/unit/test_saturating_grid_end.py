"""A Tanh on an asymmetric 8-bit grid over [-1, 1] holds 0 by ending at -1.0039, past the op's own bound: its input is
still flat below the same half step (quant/rules.saturates_outside). pyfrspell 0.1.1's lemmatiser (new-model sweep
round 19) feeds its decoder's first state through Gemm -> Tanh; quantize cut the Gemm's grid at [-3.15, 3.13], and
inspect --reference, reading the Tanh's written grid as never flat below, named that Gemm first: 'clipped: values
reach 2.4x its grid's end (-7.467 against -3.153)' (added 11.2 dB); following it moved the held-out output 0.08 dB."""

from __future__ import annotations

import math

import numpy as np
import onnx

from qtool.encoding import tf
from qtool.inspect import layers
from qtool.inspect.layers import LayerError
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import encoding_grid, live_interval
from qtool.quant.rules import saturates_outside

TANH = onnx.helper.make_node("Tanh", ["h"], ["t"])


def test_a_tanh_grid_ending_past_minus_one_is_flat_at_both_ends() -> None:
    lo, hi, step = encoding_grid(tf(-1.0, 1.0, 8))
    assert lo < -1.0  # the grid's end lies past tanh's bound
    first, last = saturates_outside(TANH, lo, hi, step)
    assert math.isclose(first, math.atanh(-1.0 + step / 2)), first
    assert math.isclose(last, math.atanh(hi - step / 2)), last


def test_a_sigmoid_grid_reaching_below_zero_is_flat_where_its_zero_level_reads() -> None:
    sigmoid = onnx.helper.make_node("Sigmoid", ["h"], ["s"])
    lo, hi, step = encoding_grid(tf(-0.1, 1.0, 8))  # a grid shared with a tensor below 0
    first, _ = saturates_outside(sigmoid, lo, hi, step)
    assert math.isclose(first, math.log((step / 2) / (1 - step / 2))), first


def test_a_gemm_cut_where_its_tanh_saturates_is_not_named_clipped() -> None:
    gemm = onnx.helper.make_node("Gemm", ["x", "w"], ["h"])
    model = onnx.helper.make_model(onnx.helper.make_graph([gemm, TANH], "g", [], []),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])  # fmt: skip
    facts = GraphFacts.of(model)
    tanh_grid = encoding_grid(tf(-1.0, 1.0, 8))
    live = live_interval(facts, ["h"], lambda t: tanh_grid if t == "t" else None)
    grid = tf(-3.1529, 3.1283, 8)  # the cut quantize gave pyfrspell's bridge
    ref = np.append(np.linspace(-3.0, 3.0, 120), [-7.467, -5.2, 4.1]).astype(np.float32)
    error = LayerError(layers.Probe("h", "h_dq", gemm, grid, live))
    error.update(ref, grid.fake_quantize(ref))
    fix = layers.suggest(error, error.local_nsr, facts, None)
    assert not fix.startswith("clipped"), fix

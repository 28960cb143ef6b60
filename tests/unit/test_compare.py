"""Drift between outputs whose shapes differ (a decoder loop that stops at another step when quantized)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from qtool.inspect.compare import Drift, common_shape
from qtool.inspect.layers import LayerError


def test_outputs_of_different_lengths_compare_with_the_missing_steps_as_error() -> None:
    ref = np.ones((1, 5, 3), np.float32)
    quant = np.ones((1, 4, 3), np.float32)  # stopped one step early
    drift = Drift()
    drift.update(ref, quant, None)
    assert drift.signal == 15 and drift.noise == 3  # the missing step's three values
    a, b = common_shape(np.arange(6.0).reshape(2, 3), np.arange(4.0))
    assert a.shape == b.shape == (6,) and b[4:].tolist() == [0.0, 0.0]


def test_a_mask_minus_infinity_in_both_models_adds_no_error() -> None:
    layer = LayerError(SimpleNamespace(encoding=None, live=None))  # a probe without an encoding: no local error
    ref = np.array([0.5, -np.inf, 1.0], np.float32)
    layer.update(ref, np.array([0.5, -np.inf, 1.25], np.float32))
    assert layer.noise == 0.0625

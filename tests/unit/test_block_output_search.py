"""Weight ranges by output error (clipsearch, issue 23): the search over the same clipped-absmax candidates
as the weight-error search, scored by the output error eᵀ G e; golden cases small enough to check by hand."""

from __future__ import annotations

import numpy as np

from qtool.quant import blocks
from qtool.quant import encoding as enc


def _rounded(rows: np.ndarray, absmax: np.ndarray, size: int, bitwidth: int = 4) -> np.ndarray:
    scale = np.repeat(enc.symmetric_scale(absmax, bitwidth), size, axis=1)
    return np.clip(np.rint(rows / scale), -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) * scale


def test_with_an_identity_gram_it_is_the_weight_error_search() -> None:
    """G = I: output error is weight error, so the ranges are block_encoding's `mse` ones."""
    rows = np.random.default_rng(0).normal(size=(6, 64))
    searched = blocks.output_ranges(rows, np.eye(64), 32, 4)
    planned = blocks.block_encoding(rows, 0, 1, 32, 4, method="mse")
    np.testing.assert_allclose(searched.ravel(), planned.max, rtol=1e-12)


def test_only_the_inputs_that_matter_are_fitted() -> None:
    """One row [1.0, 0.3] (a block of 2), G = diag(0, 1): only the second weight reaches the output. The
    weight-error search keeps absmax 1.0 (0.3 lands 0.0143 off its grid point 2/7); by output error a range
    of 0.42 (scale 0.06) or 0.7 (0.1) hits 0.3 exactly (to float rounding) and clips the first weight."""
    rows = np.array([[1.0, 0.3]])
    assert blocks.output_ranges(rows, np.eye(2), 2, 4)[0, 0] == 1.0
    chosen = blocks.output_ranges(rows, np.diag([0.0, 1.0]), 2, 4)
    assert np.isclose(chosen[0, 0], 0.42) or np.isclose(chosen[0, 0], 0.7), chosen
    np.testing.assert_allclose(_rounded(rows, chosen, 2)[0, 1], 0.3, atol=1e-12)


def test_per_channel_is_one_block_of_the_whole_row_and_never_worse_than_the_weight_search() -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(16, 96))
    x = rng.normal(size=(400, 96)) * np.where(np.arange(96) % 17 == 0, 12.0, 1.0)  # outlier input channels
    gram = x.T @ x / len(x)

    def output_error(absmax: np.ndarray, size: int) -> float:
        e = _rounded(rows, absmax, size) - rows
        return float(np.einsum("nk,kj,nj->", e, gram, e))

    for size in (96, 32):
        weight_search = blocks.output_ranges(rows, np.eye(96), size, 4)
        searched = blocks.output_ranges(rows, gram, size, 4)
        assert searched.shape == (16, 96 // size)
        # per channel (one block) the search minimises exactly this, per block by coordinate descent
        assert output_error(searched, size) < 0.8 * output_error(weight_search, size)


def test_lpbq_integers_by_output_error() -> None:
    """Channel scale = largest block scale / 16, that block keeps 16, the others their integer of least
    output error; here the second block's inputs carry no signal, so any integer is as good and the
    first (1) is taken; the weight-error search would give it about its absmax's ratio."""
    rows = np.concatenate([np.linspace(-2.0, 2.0, 16), np.linspace(-0.5, 0.5, 16)])[None]
    gram = np.diag(np.r_[np.ones(16), np.zeros(16)])
    absmax, channel, ints = blocks.output_lpbq(rows, gram, 16)
    np.testing.assert_allclose(channel, np.float32(enc.symmetric_scale(absmax.max(), 4) / 16))
    assert ints.tolist() == [[16, 1]]
    ints_identity = blocks.output_lpbq(rows, np.eye(32), 16)[2]
    assert ints_identity[0, 0] == 16 and 3 <= ints_identity[0, 1] <= 5


def test_output_encoding_keeps_the_layout() -> None:
    """A MatMul weight [K=64, N=6] (rows = its transpose): per-block, LPBQ and per-channel encodings come
    back in the plan's layout, only their ranges changed."""
    w = np.random.default_rng(2).normal(size=(64, 6))
    gram = np.diag(np.linspace(0.1, 5.0, 64))
    for lpbq in (False, True):
        planned = blocks.block_encoding(w, 1, 0, 32, 4, method="mse", lpbq=lpbq)
        searched = blocks.output_encoding(planned, w.T, gram, w.shape)
        assert searched.blocks.shape == planned.blocks.shape == (2, 6)
        assert searched.blocks.is_lpbq == lpbq and searched.axis == planned.axis == 1
        assert len(searched.scale) == 12
    per_channel = enc.symmetric(-np.abs(w).max(axis=0), np.abs(w).max(axis=0), 4, 1)
    searched = blocks.output_encoding(per_channel, w.T, gram, w.shape)
    assert searched.axis == 1 and len(searched.scale) == 6 and searched.blocks is None

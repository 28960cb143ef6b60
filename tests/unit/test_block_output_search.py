"""Weight ranges by output error (clipsearch, issue 23): the search over the same clipped-absmax candidates
as the weight-error search, scored by the output error eᵀ G e; golden cases small enough to check by hand."""

from __future__ import annotations

import numpy as np

from qtool import encoding as enc
from qtool.quant import blocks


def _rounded(rows: np.ndarray, absmax: np.ndarray, size: int, bitwidth: int = 4) -> np.ndarray:
    scale = np.repeat(enc.symmetric_scale(absmax, bitwidth), size, axis=1)
    return np.clip(np.rint(rows / scale), -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) * scale


def test_with_an_identity_gram_it_is_the_weight_error_search() -> None:
    """G = I: output error is weight error, so the ranges are block_encoding's `mse` ones."""
    rows = np.random.default_rng(0).normal(size=(6, 64))
    searched = blocks.output_ranges(rows, np.eye(64), 32, 4)
    planned = blocks.block_encoding(rows, 0, 1, 32, 4, method="mse")  # its scales the float32s a QDQ model holds
    np.testing.assert_array_equal(enc.symmetric_scale(searched.ravel(), 4).astype(np.float32), planned.scale_array())


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
    """The largest block keeps 16; its scale (16 x the channel scale) is f x its searched range's for the f in
    LPBQ_FACTORS of least output error (here only the first block's inputs carry signal, so that is the f
    whose grid fits linspace(-2, 2, 16) best); the second block's inputs carry no signal, so any integer is
    as good and the first (1) is taken; the weight-error search would give it about its absmax's ratio."""
    rows = np.concatenate([np.linspace(-2.0, 2.0, 16), np.linspace(-0.5, 0.5, 16)])[None]
    gram = np.diag(np.r_[np.ones(16), np.zeros(16)])
    absmax, channel, ints = blocks.output_lpbq(rows, gram, 16)
    assert ints.tolist() == [[16, 1]]
    tried = [np.float32(enc.symmetric_scale(absmax.max(), 4) * f / 16) for f in blocks.LPBQ_FACTORS]

    def error(c: float) -> float:
        first = rows[0, :16]
        return float(np.sum((np.clip(np.rint(first / (16 * c)), -8, 7) * 16 * c - first) ** 2))

    assert float(channel[0]) == min(tried, key=error)
    assert error(channel[0]) < error(tried[list(blocks.LPBQ_FACTORS).index(1.0)])  # better than AIMET's here
    ints_identity = blocks.output_lpbq(rows, np.eye(32), 16)[2]
    assert ints_identity[0, 0] == 16 and 3 <= ints_identity[0, 1] <= 5


def test_lpbq_channel_scale_search_gains_on_outlier_inputs() -> None:
    """Rows meeting a few 20x input channels: searching the channel scale (LPBQ_FACTORS) is never worse per
    row than AIMET's alone (f = 1) and recovers most of what LPBQ loses to free block scales (0.2 of 0.22 dB
    here)."""
    rng = np.random.default_rng(5)
    rows = rng.standard_t(5, size=(32, 128)) * rng.uniform(0.5, 2, (1, 128))
    x = rng.normal(size=(500, 128)) * np.where(np.arange(128) % 23 == 0, 20.0, 1.0)
    gram = x.T @ x / len(x)

    def errors(channel: np.ndarray, ints: np.ndarray) -> np.ndarray:
        scale = np.repeat(channel[:, None] * ints, 32, axis=1)
        e = np.clip(np.rint(rows / scale), -8, 7) * scale - rows
        return np.einsum("nk,kj,nj->n", e, gram, e)

    searched = errors(*blocks.output_lpbq(rows, gram, 32)[1:])
    factors, blocks.LPBQ_FACTORS = blocks.LPBQ_FACTORS, np.array([1.0])
    try:
        aimet = errors(*blocks.output_lpbq(rows, gram, 32)[1:])
    finally:
        blocks.LPBQ_FACTORS = factors
    free = errors(np.ones(32), enc.symmetric_scale(blocks.output_ranges(rows, gram, 32, 4), 4))
    assert np.all(searched <= aimet)
    assert 10 * np.log10(aimet.sum() / searched.sum()) > 0.15
    assert 10 * np.log10(aimet.sum() / free.sum()) < 0.25  # what LPBQ could gain at most, about


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

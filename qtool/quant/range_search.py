"""Choosing a clipped range from a histogram: SQNR/MSE search, percentile, and KL entropy.

Every candidate range is turned into an encoding by `encoding.py` (vectorised over candidates),
so the grid a candidate is scored on is exactly the one the writer will use.

- sqnr / mse: expected noise of a candidate = in-range rounding noise (scale²/12 per value) +
  gamma · clipping noise (Σ count · (x − clamp(x))²); gamma = 1 for mse and 3 for sqnr, which
  weighs clipped outliers heavier (QNN's "enhanced", qairt's `sqnr`). The signal is fixed, so the
  candidate with the least noise has the highest SQNR.
- percentile: the q-th and (100 − q)-th percentiles of the histogram.
- entropy: TensorRT's calibration: the |x| threshold whose 128-level quantized distribution has
  the least KL divergence from the clipped reference distribution.
"""

from __future__ import annotations

import numpy as np

from qtool.quant import encoding as enc

_FACTORS = np.linspace(0.02, 1.0, 50)
GAMMA = {"mse": 1.0, "sqnr": 3.0}


def _noise(centers: np.ndarray, counts: np.ndarray, e: enc.Encoding, gamma: float) -> np.ndarray:
    lo, hi = np.asarray(e.min)[:, None], np.asarray(e.max)[:, None]
    scale = np.asarray(e.scale)[:, None]
    clipped = np.clip(centers[None, :], lo, hi)
    inside = (centers[None, :] >= lo) & (centers[None, :] <= hi)
    rounding = (inside * counts[None, :]).sum(axis=1) * scale[:, 0] ** 2 / 12
    clipping = (counts[None, :] * (centers[None, :] - clipped) ** 2).sum(axis=1)
    return rounding + gamma * clipping


def search(centers: np.ndarray, counts: np.ndarray, bitwidth: int, schema: str, method: str) -> tuple[float, float]:
    """The (lo, hi) among clipped candidates of the observed range that minimises the noise."""
    lo, hi = float(min(centers[counts > 0].min(), 0.0)), float(max(centers[counts > 0].max(), 0.0))
    if schema in ("symmetric", "unsignedsymmetric"):
        absmax = max(abs(lo), abs(hi))
        cand_lo = np.where(lo < 0, -absmax * _FACTORS, 0.0)
        cand_hi = absmax * _FACTORS
    else:
        grid_lo, grid_hi = np.meshgrid(lo * _FACTORS, hi * _FACTORS, indexing="ij")
        cand_lo, cand_hi = grid_lo.ravel(), grid_hi.ravel()
    candidates = enc.with_schema(schema, cand_lo, cand_hi, bitwidth, axis=0)
    best = int(np.argmin(_noise(centers, counts.astype(np.float64), candidates, GAMMA[method])))
    return float(cand_lo[best]), float(cand_hi[best])


def percentile(edges: np.ndarray, counts: np.ndarray, q: float) -> tuple[float, float]:
    cdf = np.cumsum(counts) / max(counts.sum(), 1)
    lo_idx = int(np.searchsorted(cdf, (100 - q) / 100, side="left"))
    hi_idx = int(np.searchsorted(cdf, q / 100, side="left"))
    return float(edges[min(lo_idx, len(counts) - 1)]), float(edges[min(hi_idx, len(counts) - 1) + 1])


def _kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    p = reference / reference.sum()
    q = candidate / max(candidate.sum(), 1e-12)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def _merged(part: np.ndarray, levels: int) -> np.ndarray:
    """`part` squeezed to `levels` bins and expanded back over its non-empty bins (TensorRT's Q)."""
    starts = np.linspace(0, len(part), levels + 1).astype(np.int64)[:-1]
    nonzero = (part > 0).astype(np.float64)
    sums = np.add.reduceat(part, starts)
    filled = np.add.reduceat(nonzero, starts)
    lengths = np.diff(np.append(starts, len(part)))
    mean = np.divide(sums, filled, out=np.zeros_like(sums), where=filled > 0)
    return np.repeat(mean, lengths) * nonzero


def entropy(abs_counts: np.ndarray, abs_edges: np.ndarray, levels: int = 128) -> float:
    """TensorRT-style KL threshold on an |x| histogram; returns the threshold.

    The first bin (values at or next to 0, where a ReLU's zeros pile up) is left out of the
    divergence: that spike would otherwise pull the threshold far below the data's real spread.
    """
    counts = abs_counts.astype(np.float64).copy()
    counts[0] = 0.0
    bins = len(counts)
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, max(1, (bins - levels) // 256)):
        reference = counts[:i].copy()
        reference[-1] += counts[i:].sum()
        if reference.sum() == 0:
            continue
        divergence = _kl(reference, _merged(counts[:i], levels))
        if divergence < best_kl:
            best_kl, best_i = divergence, i
    return float(abs_edges[best_i])

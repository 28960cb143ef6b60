"""Weight SQNR of every 2-D MatMul/Gemm weight at W4 per channel, B64 and B32 under several grids (issue 23:
does qtool's per-block range choice leave gain on the table?). Weights only: no data, nothing held out.

    .venv/bin/python bench/block_grids.py bench/.cache/runs/all_minilm_l6_v2/qtool.conv.onnx ...

Grids (a block's values x; SQNR = Σx² / Σ(x − q(x))² over all weights):
- `minmax`: symmetric, scale = absmax / 7 (levels −8..7);
- `mse (qtool)`: symmetric, the clipped absmax of least squared error among 0.4–1.0 × absmax in 0.02 steps
  (qtool's `mse`, blocks.BLOCK_FACTORS);
- `mse fine`: the same in 0.0025 steps from 0.3;
- `mse + LS refit`: qtool's, then the scale refitted to its integers by least squares (3 rounds, kept if better);
- `asym minmax`: a zero point per block, 16 levels over [min, max];
- `asym mse`: min and max each shrunk by 0.5–1.0 (0.05 steps), the pair of least squared error
  (`--use_asymmetric_blocks`).

How much blocks can gain over per-channel scales is set by the weights' tails, not by the grid: each model's line
gives its rows' median kurtosis (3 for a normal distribution), and `--synthetic` studies 768x768 matrices drawn
from a normal, a Laplace (kurtosis 6) and a Student-t with 3 degrees of freedom (heavy tails, as large trained
LLMs' weights have) for reference.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def weights(path: str) -> list[np.ndarray]:
    """(output channels, inputs) views of the model's 2-D MatMul / Gemm weights."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            if w.ndim == 2:
                trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
                found.append(w if trans_b else w.T)
    return found


def symmetric(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x / scale), -8, 7) * scale


def searched(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Per row the scale (factor · absmax / 7) of least squared error."""
    absmax = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12)
    best, error = absmax / 7, np.full((len(x), 1), np.inf)
    for f in factors:
        scale = f * absmax / 7
        e = ((x - symmetric(x, scale)) ** 2).sum(axis=1, keepdims=True)
        best, error = np.where(e < error, scale, best), np.minimum(e, error)
    return best


def refit(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    for _ in range(3):
        q = np.clip(np.rint(x / scale), -8, 7)
        new = (x * q).sum(axis=1, keepdims=True) / np.maximum((q * q).sum(axis=1, keepdims=True), 1e-30)
        new = np.where(new > 0, new, scale)
        better = ((x - symmetric(x, new)) ** 2).sum(axis=1) < ((x - symmetric(x, scale)) ** 2).sum(axis=1)
        scale = np.where(better[:, None], new, scale)
    return scale


def asymmetric(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    scale = np.maximum(hi - lo, 1e-12)[:, None] / 15
    zero = np.clip(np.rint(-lo[:, None] / scale), 0, 15)
    return (np.clip(np.rint(x / scale) + zero, 0, 15) - zero) * scale


def asymmetric_searched(x: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(x.min(axis=1), 0), np.maximum(x.max(axis=1), 0)
    best, error = None, np.full(len(x), np.inf)
    for a in np.linspace(0.5, 1.0, 11):
        for b in np.linspace(0.5, 1.0, 11):
            q = asymmetric(x, lo * a, hi * b)
            e = ((x - q) ** 2).sum(axis=1)
            best = q if best is None else np.where((e < error)[:, None], q, best)
            error = np.minimum(e, error)
    return best


def grids(x: np.ndarray) -> dict[str, np.ndarray]:
    qtool = searched(x, np.linspace(0.4, 1.0, 31))
    return {
        "minmax": symmetric(x, np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12) / 7),
        "mse (qtool)": symmetric(x, qtool),
        "mse fine": symmetric(x, searched(x, np.linspace(0.3, 1.0, 281))),
        "mse + LS refit": symmetric(x, refit(x, qtool)),
        "asym minmax": asymmetric(x, np.minimum(x.min(axis=1), 0), np.maximum(x.max(axis=1), 0)),
        "asym mse": asymmetric_searched(x),
    }


def kurtosis(w: np.ndarray) -> float:
    """The median over rows of E[z^4] (3 for normal rows, more the heavier their tails)."""
    z = (w - w.mean(axis=1, keepdims=True)) / np.maximum(w.std(axis=1, keepdims=True), 1e-30)
    return float(np.median((z**4).mean(axis=1)))


def synthetic() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (768, 768)
    return {
        "normal": [rng.standard_normal(shape)],
        "laplace": [rng.laplace(size=shape)],
        "student-t(3)": [rng.standard_t(3, size=shape)],
    }


def study(path: str, ws: list[np.ndarray] | None = None) -> None:
    ws = weights(path) if ws is None else ws
    print(f"{path}: {len(ws)} weights, {sum(w.size for w in ws) / 1e6:.2f} M values, "
          f"median row kurtosis {np.median([kurtosis(w) for w in ws]):.1f}")
    table: dict[str, dict[str, float]] = {}
    for granularity in ("per-channel", "B64", "B32"):
        signal, noise = 0.0, {}
        for w in ws:
            size = w.shape[1] if granularity == "per-channel" else int(granularity[1:])
            x = w.reshape(-1, size if w.shape[1] % size == 0 else w.shape[1])
            signal += float((x**2).sum())
            for name, q in grids(x).items():
                noise[name] = noise.get(name, 0.0) + float(((x - q) ** 2).sum())
        table[granularity] = {name: 10 * np.log10(signal / n) for name, n in noise.items()}
    print(f"{'grid':16s} {'per-channel':>12s} {'B64':>8s} {'B32':>8s} {'B32-pc':>8s}")
    for name in table["B32"]:
        row = [table[g][name] for g in table]
        print(f"{name:16s} {row[0]:12.2f} {row[1]:8.2f} {row[2]:8.2f} {row[2] - row[0]:8.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    for arg in sys.argv[1:]:
        if arg == "--synthetic":
            for name, ws in synthetic().items():
                study(name, ws)
        else:
            study(arg)

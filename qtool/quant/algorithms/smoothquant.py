"""SmoothQuant (Xiao et al. 2022, arXiv:2211.10438): move activation outlier channels into the weights.

A transformer's residual stream has a few channels 20-100x larger than the rest; one 8-bit grid
over all of them leaves the others a handful of levels. Where the tensor X is a LayerNormalization's
output, or a MatMul's (bias Add included), and feeds only MatMuls with 2-D weights W_k [K, N]:

    s_j = max|X_j|^α / max_k max|W_k[j, :]|^(1−α)      (α: `alpha` in the YAML section, default 0.5)
    X·W_k = (X·diag(1/s)) · (diag(s)·W_k)               exactly, for every k

The 1/s folds into the LayerNormalization's γ and β, or into the producing MatMul's weight columns
and bias; the s into the rows of every W_k. max|X_j| comes from `num_batches` calibration samples.
A gated MLP's product X = act(x·W0) ⊙ (x·W1 + b1) (T5 v1.1, Llama) takes the 1/s in W1's columns and b1:
flan-t5-small's has one unit 1900 against a median near 2 (W8A8 + --use_per_channel_residual, held out:
4.5 -> 5.6 dB).

In a post-LN block (BERT) the LayerNormalization's output also feeds the next residual Add, which needs X
itself: the LayerNormalization is then duplicated, one copy with γ/s, β/s for the MatMuls and one with the
original γ, β for its other readers (`<output>_unsmoothed`), so the smoothed grid serves the MatMuls while
the residual reads the unsmoothed values (with `--use_per_channel_residual`, on a grid per channel).
With `keep: auto` (default) the change is kept only when the quantized output SQNR improves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from qtool import encoding as enc
from qtool import runtime
from qtool.errors import UsageError
from qtool.graph.model import copy
from qtool.quant.algorithms import AlgorithmContext, check_config, kept_if_better
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import matmul_weight_grid

logger = logging.getLogger(__name__)
Grid = Callable[[np.ndarray], np.ndarray]  # values -> the same values put on a quantization grid

STAGE = "float"
SETTINGS = frozenset({"alpha", "num_batches", "keep"})  # --config keys
SCALE_LIMITS = (1e-5, 1e5)
AUTO_ALPHAS = tuple(np.round(np.arange(0.3, 0.951, 0.05), 2).tolist())  # `alpha: auto` picks one per site
AUTO_ROWS = 1024  # rows of each site's input `alpha: auto` scores on
# A site whose largest channel is under this many times its median channel has no outliers to move: one 8-bit
# grid loses under 1.6 bits to it, and smoothing would only reshuffle the weights around ranges fitted to the
# calibration samples (random-weight Phi, max/median 1.7-1.9: 30.6 -> 30.7 dB on its calibration samples,
# 28.5 -> 24.2 dB on held-out decode steps). BERT-style post-LN encoders reach 4-18 (MiniLM).
MIN_OUTLIER_RATIO = 3.0


@dataclass(frozen=True)
class Site:
    """A smoothable tensor: `producer` writes it (a LayerNormalization, or a MatMul and its bias Add, or a gated
    MLP's MatMul through the product), and every node in `consumers` is a MatMul reading it as input 0 with a 2-D
    weight. `scaled`: the tensors smoothing divides by s, the site's back to the producer's output."""

    tensor: str
    producer: onnx.NodeProto
    bias: str | None  # the producing MatMul's bias constant (an Add after it), if any
    consumers: tuple[onnx.NodeProto, ...]
    others: tuple[onnx.NodeProto, ...] = ()  # readers that are not such MatMuls (a LayerNormalization's only)
    scaled: tuple[str, ...] = ()


def _only_user(facts: GraphFacts, name: str, node: onnx.NodeProto) -> bool:
    """`node` alone reads `name`, and the graph does not output it (scaled, the model's output would change)."""
    return [u.name for u in facts.consumers.get(name, [])] == [node.name] and name not in facts.graph_outputs


def _weight_2d(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    weight = node.input[1] if len(node.input) > 1 else ""
    return weight in facts.initializers and len(facts.initializers[weight].dims) == 2 and _only_user(facts, weight, node)


def _producer(facts: GraphFacts, tensor: str) -> tuple[onnx.NodeProto, str | None, tuple[str, ...]] | None:
    """(the node the 1/s folds into, its bias, the tensors from `tensor` back to the node's output that smoothing
    divides by s), or None."""
    node = facts.producers.get(tensor)
    if node is None:
        return None
    if node.op_type == "LayerNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        params = [i for i in node.input[1:] if i]
        ok = axis == -1 and all(p in facts.initializers and _only_user(facts, p, node) for p in params)
        return (node, None, (tensor,)) if ok else None
    if node.op_type == "Mul":  # a gated MLP's product, act(x·W0) ⊙ (x·W1): the 1/s goes into W1's columns
        for gate in node.input:  # read once (x⊙x would scale by 1/s²), by this Mul only, N > 1 columns (no broadcast)
            found = _producer(facts, gate) if list(node.input).count(gate) == 1 and _only_user(facts, gate, node) else None
            if found is not None and found[0].op_type == "MatMul" and facts.initializers[found[0].input[1]].dims[1] > 1:
                return found[0], found[1], (tensor, *found[2])
        return None
    if node.op_type == "Add":  # MatMul + bias, as exporters split a Linear
        fused = facts.bias_add(node)
        if fused is None or not _only_user(facts, fused[1], node):
            return None
        node, found_bias = fused
    else:
        found_bias = None
    if node.op_type == "MatMul" and _weight_2d(facts, node):
        return node, found_bias, tuple(dict.fromkeys((tensor, node.output[0])))
    return None


def find_sites(facts: GraphFacts) -> list[Site]:
    sites = []
    for tensor, users in facts.consumers.items():
        matmuls = tuple(u for u in users if u.op_type == "MatMul" and u.input[0] == tensor and _weight_2d(facts, u))
        others = tuple(u for u in users if u not in matmuls)
        found = _producer(facts, tensor) if matmuls else None
        if found is None or tensor in facts.graph_outputs or (others and found[0].op_type != "LayerNormalization"):
            continue
        sites.append(Site(tensor, found[0], found[1], matmuls, others, found[2]))
    return sites


def _unsmoothed_copy(ctx: AlgorithmContext, site: Site) -> None:
    """A second LayerNormalization with the original γ and β, read by the site's other readers."""
    norm = site.producer
    copy_node = onnx.NodeProto()
    copy_node.CopyFrom(norm)
    copy_node.name = f"{norm.name or site.tensor}_unsmoothed"
    del copy_node.output[:]
    copy_node.output.append(f"{site.tensor}_unsmoothed")
    for k, name in enumerate(norm.input[1:3], start=1):
        if name:
            copy_node.input[k] = f"{name}_unsmoothed"
            ctx.set_array(copy_node.input[k], ctx.array(name))
    for reader in site.others:
        for k, name in enumerate(reader.input):
            if name == site.tensor:
                reader.input[k] = copy_node.output[0]
    nodes = ctx.model.graph.node
    at = next(k for k, n in enumerate(nodes) if n.output and n.output[0] == site.tensor)
    nodes.insert(at + 1, copy_node)
    ctx.declare(copy_node.output[0], like=site.tensor)


def _channel_max(
    ctx: AlgorithmContext, sites: list[Site], samples: int, keep_rows: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each site's max|X_j| over `samples` calibration samples, and (`keep_rows`) about that many of its rows,
    evenly spaced through every sample."""
    run = runtime.runner(ctx.model, [s.tensor for s in sites], ctx.threads, "float model")
    peaks: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {}
    for i, (_, feed) in enumerate(ctx.samples()):
        if i == samples:
            break
        for name, value in run(feed).items():
            value = value.reshape(-1, value.shape[-1])
            peak = np.abs(value).max(axis=0).astype(np.float64)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
            if keep_rows:
                step = max(1, len(value) * samples // keep_rows)
                rows.setdefault(name, []).append(value[::step].astype(np.float32))
    return peaks, {name: np.concatenate(found) for name, found in rows.items()}


def _fake_quantized(x: np.ndarray, axis: int | None) -> np.ndarray:
    """x on an 8-bit grid: asymmetric over the whole tensor (axis None, an activation) or symmetric per slice
    along `axis` (a weight's output columns)."""
    if axis is None:
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        step = max(hi - lo, 1e-12) / 255
        zero = np.round(-lo / step)
        return (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
    step = np.maximum(np.abs(x).max(axis=axis, keepdims=True), 1e-12) / 127
    return np.clip(np.round(x / step), -127, 127) * step


def _scales(peak: np.ndarray, w_peak: np.ndarray, alpha: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.power(peak, alpha) / np.power(np.maximum(w_peak, 1e-12), 1 - alpha)
    return np.clip(np.where(np.isfinite(s) & (peak > 0), s, 1.0), *SCALE_LIMITS)


def _weight_peak(weights: list[np.ndarray]) -> np.ndarray:
    return np.max([np.abs(w).max(axis=1) for w in weights], axis=0)


def _w8a8(x: np.ndarray) -> np.ndarray:
    return _fake_quantized(x, None)


def best_alpha(
    x: np.ndarray, weights: list[np.ndarray], peak: np.ndarray, act_grid: Grid = _w8a8, weight_grid: Grid | None = None
) -> float | None:
    """The α of AUTO_ALPHAS whose smoothing gives the site's MatMuls the least output error on the rows `x` of
    its input, with the activation on `act_grid` and each weight on `weight_grid`: the plan's own grids when
    the context knows them (4-bit blocks, float activations: weight-only), else W8A8 (the activation on one
    8-bit grid, each weight column on its own). Scored at W8A8, weight-only MiniLM W4 per column went 9.1 ->
    7.2 dB: the α that spares an 8-bit activation grid is not the one a 4-bit weight grid wants. None: no α
    beats leaving the site alone (a per-column 4-bit grid, whose scaled-up rows coarsen every other row)."""
    x, weights = x.astype(np.float32), [w.astype(np.float32) for w in weights]  # an error to rank, not to report
    reference = [x @ w for w in weights]
    w_peak = _weight_peak(weights)
    weight_grid = weight_grid or (lambda w: _fake_quantized(w, 0))

    def error(alpha: float | None) -> float:
        s = _scales(peak, w_peak, alpha) if alpha is not None else np.ones_like(peak)
        xq = act_grid(x / s)
        return sum(float(np.sum((xq @ weight_grid(w * s[:, None]) - r) ** 2)) for w, r in zip(weights, reference, strict=True))

    return min([*AUTO_ALPHAS, None], key=error)


def _grids(ctx: AlgorithmContext) -> tuple[Grid, Grid | None]:
    """(activation grid, weight grid) the plan will use, where the context says what it will be."""
    o = ctx.plan_options
    if o is None:
        return _w8a8, None
    if o.weight_only:
        act: Grid = lambda x: x  # noqa: E731
    elif o.act_bitwidth == 16:
        act = lambda x: enc.with_schema("asymmetric", min(float(x.min()), 0.0), max(float(x.max()), 0.0), 16).fake_quantize(x)  # noqa: E731
    else:
        act = _w8a8
    return act, matmul_weight_grid(o)


def _outlier_ratio(peak: np.ndarray) -> float:
    return float(peak.max() / max(np.median(peak), 1e-12))


def _smooth(ctx: AlgorithmContext, site: Site, peak: np.ndarray, alpha: float) -> np.ndarray:
    weights = [ctx.array(u.input[1]) for u in site.consumers]
    s = _scales(peak, _weight_peak(weights), alpha)
    for user, w in zip(site.consumers, weights, strict=True):
        ctx.set_array(user.input[1], w * s[:, None])
    producer = site.producer
    if site.others:
        _unsmoothed_copy(ctx, site)
    if producer.op_type == "LayerNormalization":
        for name in (i for i in producer.input[1:3] if i):
            ctx.set_array(name, ctx.array(name) / s)
    else:
        ctx.set_array(producer.input[1], ctx.array(producer.input[1]) / s[None, :])
        if site.bias is not None:
            ctx.set_array(site.bias, ctx.array(site.bias) / s)
    return s


def run(ctx: AlgorithmContext) -> list[str]:
    check_config("smoothquant", ctx.config, SETTINGS)
    alpha, keep = ctx.config.get("alpha", 0.5), ctx.config.get("keep", "auto")
    if alpha != "auto" and (isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1):
        raise UsageError(f"smoothquant: alpha must be a number in [0, 1] or auto, not {alpha!r}", where="--config")
    sites = find_sites(GraphFacts.of(ctx.model))
    if not sites:
        logger.warning("smoothquant: no LayerNormalization or MatMul output feeding MatMuls; nothing smoothed")
        return ["smoothquant: no matching pattern"]
    peaks, rows = _channel_max(ctx, sites, int(ctx.config.get("num_batches", 32)), AUTO_ROWS * (alpha == "auto"))
    before = copy(ctx.model)
    layers, even, unhelped, grids, rewritten = [], 0, 0, _grids(ctx), []
    for site in sites:
        if site.tensor in peaks:
            peak = peaks[site.tensor]
            if _outlier_ratio(peak) < MIN_OUTLIER_RATIO:
                even += 1
                continue
            weights = [ctx.array(u.input[1]) for u in site.consumers]
            chosen = alpha if alpha != "auto" else best_alpha(rows[site.tensor], weights, peak, *grids)
            if chosen is None:
                unhelped += 1
                continue
            s = _smooth(ctx, site, peak, float(chosen))
            rewritten += site.scaled
            ratio, after = _outlier_ratio(peak), _outlier_ratio(peak / s)
            layers.append(f"{site.tensor} ({f'alpha {chosen:g}, ' if alpha == 'auto' else ''}max/median {ratio:.1f} -> {after:.1f})")
            logger.info("smoothquant: %s: alpha %g, channel max/median %.1f -> %.1f", site.tensor, chosen, ratio, after)
    left = f"{even} without outlier channels (max/median under {MIN_OUTLIER_RATIO:g}) left alone" if even else ""
    if unhelped:
        left += f"{'; ' if left else ''}{unhelped} whose MatMuls no alpha brings closer to float left alone"
    if not layers:
        logger.warning("smoothquant: nothing smoothed: %s", left)
        return [f"smoothquant: {left}"]
    note = f"smoothquant (alpha {alpha if alpha == 'auto' else format(alpha, 'g')}): {len(layers)} tensors smoothed: " + ", ".join(layers)
    note += f"; {left}" if left else ""
    return kept_if_better(ctx, "smoothquant", before, note, keep, rewritten)

"""Cross-layer equalization (Nagel et al. 2019, arXiv:1906.04721) with high-bias absorption.

For Conv1 -> [ReLU] -> Conv2 on a single branch (QNN seed: "outputs cannot be consumed by more
than one op"), output channel i of Conv1 and input channel i of Conv2 are rescaled by
s_i = sqrt(r1_i / r2_i) (r = max |w| over the channel): W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i,
which ReLU's positive homogeneity leaves exact. A depthwise Conv2 scales its own channel i. Through a
HardSwish into a depthwise Conv, with the HardSwish written as x · HardSigmoid(x): cle_hardswish.py.
Pairs are swept until the scales settle, so Conv -> DW -> Conv chains equalize both joints.
ReLU6/Clip(0, 6) becomes ReLU followed by a per-channel Min(x, 6/s_i), exactly the same function.
High-bias absorption (paper §4.2) uses the folded BatchNorm's β, γ recorded by convert: c_i =
max(0, β_i - 3γ_i) moves from b1 into b2 (b2 += W2 · c).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from qtool.graph import model as gm
from qtool.graph.model import copy
from qtool.quant.algorithms import AlgorithmContext, check_config, cle_hardswish
from qtool.quant.graph_facts import GraphFacts

logger = logging.getLogger(__name__)
STAGE = "float"
SETTINGS = frozenset({"sweeps", "high_bias_absorption", "keep"})  # --config keys
SWEEPS = 20


@dataclass
class Pair:
    first: onnx.NodeProto
    act: onnx.NodeProto | None
    second: onnx.NodeProto

    @property
    def joint(self) -> str:  # the tensor whose channels are rescaled
        return self.first.output[0]


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _is_relu6(node: onnx.NodeProto, facts: GraphFacts) -> bool:
    if node.op_type != "Clip" or len(node.input) < 3:
        return False
    bounds = [facts.array(n) if n in facts.initializers else None for n in node.input[1:3]]
    return all(b is not None for b in bounds) and float(bounds[0]) == 0.0 and float(bounds[1]) == 6.0


def _single_user(facts: GraphFacts, name: str) -> onnx.NodeProto | None:
    users = facts.consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in facts.graph_outputs else None


def _conv_weight(node: onnx.NodeProto | None, facts: GraphFacts) -> bool:
    return node is not None and node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in facts.initializers


def find_pairs(facts: GraphFacts) -> list[Pair]:
    pairs = []
    for first in facts.model.graph.node:
        if not _conv_weight(first, facts):
            continue
        user = _single_user(facts, first.output[0])
        act = user if user is not None and (user.op_type == "Relu" or _is_relu6(user, facts)) else None
        second = _single_user(facts, act.output[0]) if act is not None else user
        if not _conv_weight(second, facts) or second.input[0] != (act.output[0] if act else first.output[0]):
            continue
        w2_shape = facts.initializers[second.input[1]].dims
        if _group(second) != 1 and not (_group(second) == w2_shape[0] and w2_shape[1] == 1):
            continue  # grouped but not depthwise: channel i does not map to one input slice
        pairs.append(Pair(first, act, second))
    return pairs


def equalizable(facts: GraphFacts, quantized: onnx.ModelProto | None = None) -> set[str]:
    """Outputs of the Convs cle rescales (both ends of each pair, through a HardSwish too): advice names cle only
    there. It takes no MatMul or Gemm, and no Conv without a single-reader Conv beside it. `quantized`: made from
    `facts`' model, where quantize's default equalization rewrote a HardSwish pair, renaming its tensors, cle has
    nothing left to do (trueocr's detector: 'cle: --apply_algorithms cle' wrote the same bytes)."""
    written = {o for n in quantized.graph.node for o in n.output} if quantized is not None else None
    hardswish = [p for p in cle_hardswish.find_pairs(facts, set()) if written is None or p.act.output[0] in written]
    pairs = [*find_pairs(facts), *hardswish]
    return {n.output[0] for p in pairs for n in (p.first, p.second)}


def _depthwise(node: onnx.NodeProto, w: np.ndarray) -> bool:
    return _group(node) > 1 and w.shape[1] == 1


def _equalize(ctx: AlgorithmContext, pair: Pair) -> np.ndarray:
    w1, w2 = ctx.array(pair.first.input[1]), ctx.array(pair.second.input[1])
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
    dw = _depthwise(pair.second, w2)
    r2 = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1) if dw else np.abs(w2).max(axis=(0, *range(2, w2.ndim)))
    scale = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1)), 1.0)
    shape1 = (-1,) + (1,) * (w1.ndim - 1)
    ctx.set_array(pair.first.input[1], w1 / scale.reshape(shape1))
    if len(pair.first.input) > 2 and pair.first.input[2]:
        ctx.set_array(pair.first.input[2], ctx.array(pair.first.input[2]) / scale)
    shape2 = shape1 if dw else (1, -1) + (1,) * (w2.ndim - 2)
    ctx.set_array(pair.second.input[1], w2 * scale.reshape(shape2))
    return scale


def _uncap_relu6(pairs: list[Pair]) -> list[Pair]:
    """ReLU6 does not commute with a per-channel scale, ReLU does: Clip(0, 6) becomes Relu here and
    gets its cap back afterwards as Min(x, 6/s_i) per channel, so the float function is exact
    (the paper's, the seed's and AIMET's plain ReLU6 -> ReLU swap changes it: EfficientNet-Lite's
    logits move by up to 3.0)."""
    capped = []
    for pair in pairs:
        if pair.act is not None and pair.act.op_type == "Clip":
            relu = helper.make_node("Relu", [pair.act.input[0]], [f"{pair.act.output[0]}_uncapped"], name=pair.act.name)
            pair.act.CopyFrom(relu)
            capped.append(pair)
    return capped


def _recap(ctx: AlgorithmContext, capped: list[Pair], caps: dict[str, np.ndarray]) -> None:
    """Insert Min(relu, cap) right after each uncapped ReLU; it writes the tensor the ReLU6 wrote."""
    after = {id(p.act): p for p in capped}
    nodes = []
    for node in ctx.model.graph.node:
        nodes.append(node)
        pair = after.get(id(node))
        if pair is None:
            continue
        original = node.output[0].removesuffix("_uncapped")
        cap_name = f"{original}_cle_cap"
        cap = (
            caps[pair.joint].astype(np.float32).reshape(1, -1, *([1] * (len(ctx.array(pair.first.input[1]).shape) - 2)))
        )
        ctx.set_array(cap_name, cap)
        nodes.append(helper.make_node("Min", [node.output[0], cap_name], [original], name=f"{node.name}_cap"))
    del ctx.model.graph.node[:]
    ctx.model.graph.node.extend(nodes)


def _absorb_high_bias(ctx: AlgorithmContext, pair: Pair, stats: dict, scale: np.ndarray) -> np.ndarray | None:
    """Paper §4.2: c = max(0, β − 3γ) leaves b1 and enters b2 as W2·c; returns c."""
    bn = stats.get(pair.joint)
    if bn is None or pair.act is None or len(pair.first.input) < 3:
        return None
    beta, gamma = np.asarray(bn["beta"]) / scale, np.abs(np.asarray(bn["gamma"])) / scale
    absorbed = np.maximum(0.0, beta - 3 * gamma)
    if not absorbed.any():
        return None
    ctx.set_array(pair.first.input[2], ctx.array(pair.first.input[2]) - absorbed)
    w2 = ctx.array(pair.second.input[1])
    if _depthwise(pair.second, w2):
        added = w2.reshape(w2.shape[0], -1).sum(axis=1) * absorbed
    else:  # every output o sees Σ_i Σ_k W2[o, i, k] · c_i (exact away from zero padding)
        added = w2.reshape(w2.shape[0], w2.shape[1], -1).sum(axis=2) @ absorbed
    if len(pair.second.input) > 2 and pair.second.input[2]:
        bias2 = pair.second.input[2]
        current = ctx.array(bias2)
    else:
        bias2, current = f"{pair.second.input[1]}_cle_bias", np.zeros(w2.shape[0], np.float32)
        del pair.second.input[2:]
        pair.second.input.append(bias2)
    ctx.set_array(bias2, current + added)
    bn["beta"] = list(beta - absorbed)
    return absorbed


def run(ctx: AlgorithmContext) -> list[str]:
    check_config("cle", ctx.config, SETTINGS)
    keep = ctx.config.get("keep", "auto")
    facts = GraphFacts.of(ctx.model)
    pairs = find_pairs(facts)
    hardswish = cle_hardswish.find_pairs(facts, set(ctx.overrides.activations))
    if not pairs and not hardswish:
        logger.warning("cle: no Conv -> [ReLU] -> Conv pair (or Conv -> HardSwish -> depthwise Conv) on a single "
                       "branch; nothing equalized")  # fmt: skip
        return ["cle: no matching pattern"]
    before = copy(ctx.model)
    # the HardSwish pairs first: their rewrite replaces the graph's nodes, and the depthwise Conv's weights it
    # rescales are what the Conv -> [ReLU] -> Conv pairs after it balance
    notes = [f"cle: {line}" for line in cle_hardswish.equalize(ctx, hardswish)] if hardswish else []
    if notes:
        facts = GraphFacts.of(ctx.model)
        pairs = find_pairs(facts)
    equalized, capped = _equalize_all(ctx, facts, pairs) if pairs else ([], 0)
    notes = equalized + notes
    if not notes:
        return ["cle: no HardSwish channel to widen"]
    kept = keep == "always" or ctx.trial is None
    if not kept:
        plain, equalized = ctx.trial(before), ctx.trial(ctx.model)
        kept, notes = equalized >= plain, ["; ".join(notes) + f"; output SQNR {plain:.1f} -> {equalized:.1f} dB"]
    if kept:
        # an uncapped ReLU6 writes <name>_uncapped and its Min the ReLU6's own name, both rescaled
        acts = [p.act.output[0] for p in pairs if p.act is not None]
        ctx.rewritten.update([p.joint for p in pairs] + acts + [a.removesuffix("_uncapped") for a in acts])
        if capped:
            logger.warning(
                "cle: %d ReLU6 now ReLU + a per-channel Min (6/s), which keeps the float model exact", capped
            )
        return notes
    ctx.model.CopyFrom(before)
    why = "per-channel weights gain little from it; `cle: {keep: always}` applies it anyway"
    logger.warning("cle: not applied: it lowers the output SQNR from %.1f to %.1f dB (%s)", plain, equalized, why)
    return [f"cle: not applied (output SQNR {equalized:.1f} dB with it, {plain:.1f} dB without)"]


def _equalize_all(ctx: AlgorithmContext, facts: GraphFacts, pairs: list[Pair]) -> tuple[list[str], int]:
    """Equalize every pair in place; the report lines and how many ReLU6 became ReLU + Min."""
    capped = _uncap_relu6(pairs)
    total = {p.joint: np.ones(facts.initializers[p.first.input[1]].dims[0]) for p in pairs}
    for _ in range(int(ctx.config.get("sweeps", SWEEPS))):
        moved = 0.0
        for pair in pairs:
            scale = _equalize(ctx, pair)
            total[pair.joint] *= scale
            moved = max(moved, float(np.abs(np.log(scale)).max()))
        if moved < 1e-4:
            break
    stats = gm.batchnorm_record(ctx.model)
    absorbed: dict[str, np.ndarray] = {}
    if ctx.config.get("high_bias_absorption", True):
        for pair in pairs:
            c = _absorb_high_bias(ctx, pair, stats, total[pair.joint])
            if c is not None:
                absorbed[pair.joint] = c
    caps = {p.joint: 6.0 / total[p.joint] - absorbed.get(p.joint, 0.0) for p in capped}
    _recap(ctx, capped, caps)
    names = [f"{p.first.name}->{p.second.name}" for p in pairs]
    logger.info("cle: equalized %s; high bias absorbed at %s", ", ".join(names), ", ".join(absorbed) or "none")
    note = f"cle: equalized {len(pairs)} pairs ({', '.join(names)}); high-bias absorption on {len(absorbed)}"
    return [note], len(capped)

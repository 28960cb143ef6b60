"""Per-tensor weights measured against per-channel ones on auto's held-out halves, and named where they lose.

qtool keeps qairt's default of one scale a weight unless --use_per_channel_quantization (Conv) or
--use_per_row_quantization (Gemm, MatMul, an embedding's Gather) is given: an encodings file replayed in qairt means
what it says there. Its quality warning names those flags only below QUALITY_SQNR_DB, so pyfrspell's GRU lemmatiser
(0.1.1, its Gemms shipped per-column int8) quantized to 30.0 dB held out without a word while per row gave 36.3.
So where auto's folds ran, the range method chosen is scored once more with the flags not given set (on the
histograms and float outputs the folds kept: one pair of quantize-and-score more, no calibration pass), and the
report names them where they gain AUTO_MARGIN_DB pooled and on the median sample, the rule a range method or bc
must meet (an output that lost in a fold is named). Nothing is applied: the flags change what the encodings are.
"""

from __future__ import annotations

from qtool.api.auto_calibration import held_out_gain
from qtool.config import QuantizeOptions
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.rules import rule_for

FLAGS = ("use_per_channel_quantization", "use_per_row_quantization")


def flags_off(o: QuantizeOptions, facts: GraphFacts) -> list[str]:
    """The per-channel flags not given whose layers read a constant weight of two or more dims (none under a
    --target preset, which chose its own, nor with --weights_block_size, whose blocks are per channel already)."""
    if o.target is not None or o.weights_block_size is not None or o.weights_bitwidth == 32:
        return []
    wanted = set()
    for node in facts.model.graph.node:
        rule = rule_for(node)
        weights = [node.input[i] for i in rule.weights if i < len(node.input) and node.input[i] in facts.initializers]
        if any(len(facts.initializers[w].dims) >= 2 for w in weights):
            wanted.add(FLAGS[rule.per_row])
    return [flag for flag in FLAGS if flag in wanted and not getattr(o, flag)]


def advice(method: str, flags: list[str], plain: tuple[list, list, list], wider: tuple[list, list, list]) -> str:
    """The report's line where `flags` gained on the held-out halves (each checked sample's output SQNR, each
    fold's, and each fold's per output, of `method`'s ranges with weights per tensor and per channel), else ''."""
    if not plain[1] or len(wider[1]) != len(plain[1]):
        return ""
    g = held_out_gain(plain, wider)
    if not g.gains:
        return ""
    named = " ".join(f"--{flag}" for flag in flags)
    # said, not applied, so a loss elsewhere is named rather than silencing the line: pyfrspell's lemmatiser's
    # code_logits went 37.9 -> 37.3 dB in a fold while its worst output gained 4.5 (held out both gained)
    lost_line = f"; {g.lost_words}" if g.lost else ""
    return (f"weights per tensor (qairt's default): {named} gains on the held-out halves of the list (output SQNR, "
            f"{method} ranges: {g.pooled:.1f} -> {g.pooled_after:.1f} dB ({g.each}); median sample "
            f"{g.median_sample:+.1f} dB{lost_line})")

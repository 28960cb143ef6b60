"""`--apply_algorithms auto` (the default): bias correction where auto's held-out halves say it gains.

On the zoo, auto ranges followed by bc (TIDL's default, calibrationOption) gained a median 5.3 dB over
onnxruntime's quantize_static held out against 1.85 without it (dnsmos 6.1 -> 16.0, UVDoc 30.8 -> 37.1), yet lost
on some (platedet 16.0 -> 14.8, hey_mycroft 23.4 -> 22.9): its corrections are measured through upstream noise.
So once auto has chosen the ranges, the method chosen is scored once more with bc in each fold (the corrections
computed on the half that calibrates, scored on the other), one pair of folds beyond auto's six, and bc stays
only where it wins by AUTO_MARGIN_DB pooled and on the median sample, as a range method must beat min-max.
Where auto's folds do not run (a method named, too few samples, --mixed_precision auto) nothing decides it and
bc is not run, said in one line; so too at other than 8-bit activations, where it was not measured, and past
MAX_BYTES of weights.
"""

from __future__ import annotations

from qtool.api.auto_calibration import AUTO_MARGIN_DB, held_out_gain
from qtool.errors import UsageError
from qtool.quant.algorithms.layers import matmul_bias
from qtool.quant.graph_facts import GraphFacts

# past this the pair is not run: each bc fold corrects a copy of the weights, and a kept bc a working copy too (the
# zoo's largest, ddddocr's CTC, is 52 MB; a 1 GB decoder's folds would hold 2 GB more beside auto's sessions)
MAX_BYTES = 256 << 20


def asked(names: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """(the algorithms named, whether bc is the held-out halves' to decide): `auto` decides bc unless bc is named
    too; `none`, or a --config's empty list, runs none."""
    if "none" in names and len(set(names)) > 1:
        others = " ".join(f"--apply_algorithms {n}" for n in dict.fromkeys(names) if n != "none")
        raise UsageError(f"--apply_algorithms none runs no algorithm, and {others} names one", hint="drop one of them")
    named = tuple(n for n in names if n not in ("auto", "none"))
    return named, "auto" in names and "bc" not in named


def has_bias_to_correct(facts: GraphFacts) -> bool:
    """Whether bc has a layer to correct (quant/algorithms/layers.layer_bias): a Conv or Gemm by a constant weight
    (one without a bias gets one), or such a MatMul whose only reader adds a constant bias. A model of bias-free
    MatMuls (a Linear(bias=False) stack) would pay the pair of folds for a line saying they changed nothing."""
    for node in facts.model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1:2] == [] or node.input[1] not in facts.initializers:
            continue  # not weighted_layers: it writes a Conv's kernel_shape
        if node.op_type != "MatMul" or matmul_bias(facts, node) is not None:
            return True
    return False


def not_tried(why: str) -> str:
    """The report's line where bc is not decided."""
    return f"bc auto: not tried ({why}; --apply_algorithms bc runs it)"


def decide(method: str, plain: tuple[list, list, list], with_bc: tuple[list, list, list]) -> tuple[bool, str]:
    """(whether bc stays, the report's line) from each checked sample's output SQNR of `method`'s ranges without
    bc and with it, each fold's, and each fold's per output, on the same held-out halves. The worst output alone
    decided at first: GTCRN's recurrent cache went 3.8 -> 9.7 dB with bc while its enhanced frame fell 13.3 ->
    11.0 in the same folds (held out 10.4 -> 8.8), so bc stays only where no output loses the margin in a fold."""
    g = held_out_gain(plain, with_bc)
    line = (f"output SQNR on held-out halves of the list, {method} ranges without -> with bc: {g.pooled:.1f} -> "
            f"{g.pooled_after:.1f} dB ({g.each}); median sample {g.median_sample:+.1f} dB")  # fmt: skip
    if g.gains and not g.lost:
        # qairt given the float model and these encodings as overrides would quantize the biases as they were
        return True, f"bc auto: applied ({line}); the corrected biases are in the written model, not in the encodings"
    if g.gains:
        return False, f"bc auto: not applied ({line}; {g.lost_words})"
    return False, f"bc auto: not applied ({line}; it is applied where it gains {AUTO_MARGIN_DB:g} dB pooled and on the median sample)"

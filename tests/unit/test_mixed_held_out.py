"""Mixed precision's graph-order answer is kept only where samples whose ranges came from others confirm it
(quant/mixed_precision._confirmed): the binary search keeps the cheapest prefix that meets the target on the samples
it scores, which also set its ranges, so the least margin it can find."""

from __future__ import annotations

import math

from qtool.io.encodings import Encodings
from qtool.quant import mixed_precision as mp

FRONT, BACK = [f"f{k}" for k in range(6)], [f"b{k}" for k in range(4)]


def setup() -> tuple[list[mp.Candidate], mp.CostModel]:
    """Six cheap front tensors and four dear back ones, in graph order (as tests/unit/test_mixed_front.py)."""
    cands = [mp.Candidate(t, [t], [], [f"L{t}"], [], 0) for t in FRONT + BACK]
    return cands, mp.CostModel({f"L{t}": 10 for t in FRONT} | {f"L{t}": 1000 for t in BACK}, 0)


def sqnr(noise: float) -> mp.Metrics:
    return {"sqnr_db": -10 * math.log10(noise), "cosine": 1.0}


def scored(e: Encodings) -> mp.Metrics:
    """On the samples that set the ranges: four of the six front tensors at 16 bits meet 20 dB (8.7e-3 of noise)."""
    low = {t for t in FRONT + BACK if t not in e.activations}
    return sqnr(1e-4 + 0.05 * (len(low & set(FRONT)) / 6) ** 2 + 1e-5 * len(low & set(BACK)))


def held_out_by(back_noise: float):
    """On samples the ranges never saw, each back tensor left at 8 bits clips them: `back_noise` each."""
    seen: list[set[str]] = []

    def held_out(e: Encodings) -> mp.Metrics:
        low = {t for t in FRONT + BACK if t not in e.activations}
        seen.append(set(e.activations))
        return sqnr(1e-4 + 0.05 * (len(low & set(FRONT)) / 6) ** 2 + back_noise * len(low & set(BACK)))

    return held_out, seen


PROXY = {t: 1.0 for t in BACK} | {t: 1e-3 for t in FRONT}  # the ranking puts the back first, as nudenet's head read


def test_a_cheaper_answer_that_misses_the_target_held_out_gives_way_to_gain_per_cost() -> None:
    """Graph order's front prefix meets 20 dB where it was scored and misses it where the back's grids clip (4e-3
    each: 11.3 dB): gain per cost's answer, the back raised, stays, and the report says why."""
    cands, model = setup()
    held_out, seen = held_out_by(4e-3)
    result = mp.search(
        cands, model, Encodings(), mp.Evaluator(scored, held_out=held_out), mp.Target(sqnr_db=20.0), PROXY
    )
    names = {c.name for c in result.chosen}
    assert set(BACK) <= names, names
    assert (
        result.order.startswith("gain per cost (graph order's first") and "missed it on held-out halves" in result.order
    )
    assert len(seen) == 1 and not seen[0] & set(BACK)  # graph order's answer alone was confirmed, and refused


def test_a_cheaper_answer_the_held_out_samples_confirm_is_kept() -> None:
    """Where the back's grids add as little held out as where they were fitted, graph order's answer stands."""
    cands, model = setup()
    held_out, seen = held_out_by(1e-5)
    result = mp.search(
        cands, model, Encodings(), mp.Evaluator(scored, held_out=held_out), mp.Target(sqnr_db=20.0), PROXY
    )
    names = {c.name for c in result.chosen}
    assert names >= set(FRONT[:4]) and not names & set(BACK), names
    assert result.order.startswith("graph order") and "on held-out halves of the list" in result.order
    assert model.factor(result.chosen) < 1.02 and len(seen) == 1


def test_without_held_out_samples_the_cheaper_answer_is_kept_as_scored() -> None:
    """--eval_list: the search scores samples no range was fitted to, and nothing more is run."""
    cands, model = setup()
    result = mp.search(cands, model, Encodings(), mp.Evaluator(scored), mp.Target(sqnr_db=20.0), PROXY)
    assert result.order.startswith("graph order") and "held-out" not in result.order

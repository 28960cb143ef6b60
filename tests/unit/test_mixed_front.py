"""Mixed precision's graph-order prefixes (quant/mixed_precision._front_first): error made of many small
contributions early in a graph, which no one candidate shows, is met by raising the front of the graph."""

from __future__ import annotations

import math

from qtool.io.encodings import Encodings
from qtool.quant import mixed_precision as mp

FRONT, BACK = [f"f{k}" for k in range(6)], [f"b{k}" for k in range(4)]


def setup() -> tuple[list[mp.Candidate], mp.CostModel]:
    """Six cheap front tensors (a layer of 10 MACs reads each) and four dear back ones (1000 MACs each), in graph
    order as mp.candidates gives them."""
    cands = [mp.Candidate(t, [t], [], [f"L{t}"], [], 0) for t in FRONT + BACK]
    macs = {f"L{t}": 10 for t in FRONT} | {f"L{t}": 1000 for t in BACK}
    return cands, mp.CostModel(macs, 0)


def counting_evaluator(noise) -> tuple[mp.Evaluator, list[int]]:
    """Output SQNR of a unit signal with `noise(the 8-bit tensors)`; counts the evaluations."""
    calls = [0]

    def full(e: Encodings) -> mp.Metrics:
        calls[0] += 1
        low = {t for t in FRONT + BACK if t not in e.activations}
        return {"sqnr_db": -10 * math.log10(noise(low)), "cosine": 1.0}

    return mp.Evaluator(full), calls


def together(low: set[str]) -> float:
    """The front's errors compound: four of the six at 16 bits are needed for 20 dB; a back tensor adds little."""
    return 1e-4 + 0.05 * (len(low & set(FRONT)) / 6) ** 2 + 1e-5 * len(low & set(BACK))


def test_the_front_of_the_graph_is_raised_where_the_ranking_puts_the_back_first() -> None:
    """A ranking that credits each back tensor most (the proxy's local noise, as nudenet's head read) met 20 dB only
    with every back tensor raised too; the front's prefix meets it at a fraction of the cost."""
    cands, model = setup()
    evaluator, _ = counting_evaluator(together)
    proxy = {t: 1.0 for t in BACK} | {t: 1e-3 for t in FRONT}
    result = mp.search(cands, model, Encodings(), evaluator, mp.Target(sqnr_db=20.0), proxy)
    names = {c.name for c in result.chosen}
    assert names >= set(FRONT[:4]) and not names & set(BACK), names
    assert result.order.startswith("graph order")
    assert model.factor(result.chosen) < 1.02 and result.met


def test_a_cheaper_answer_by_the_ranking_is_kept_at_a_few_trials_more() -> None:
    """Where one back tensor holds the error, gain per cost's pick stands, and the front's prefixes cost no more than
    log2 of their count trials."""
    cands, model = setup()

    def one(low: set[str]) -> float:
        return 1e-4 + (0.1 if "b0" in low else 0.0) + 1e-5 * len(low)

    before, calls = counting_evaluator(one)
    proxy = {"b0": 1.0} | {t: 1e-3 for t in FRONT + BACK[1:]}
    result = mp.search(cands, model, Encodings(), before, mp.Target(sqnr_db=20.0), proxy)
    assert [c.name for c in result.chosen][:1] == ["b0"] and result.order == "gain per cost"
    greedy_only = 1 + math.ceil(math.log2(len(cands) + 1))  # baseline, binary search
    assert calls[0] <= greedy_only + 1 + math.ceil(math.log2(len(FRONT) + 1)) + 1  # _complete's one trial


def test_under_a_cost_budget_the_longer_graph_order_prefix_is_kept_where_it_measures_better() -> None:
    """--mixed_precision_factor: gain per cost's longest prefix within 1.02 raises nothing here (a back tensor costs
    0.25 alone); graph order's within it is the whole front, one evaluation more."""
    cands, model = setup()
    evaluator, calls = counting_evaluator(together)
    proxy = {t: 1.0 for t in BACK} | {t: 1e-3 for t in FRONT}
    result = mp.search(cands, model, Encodings(), evaluator, mp.Target(factor=1.02), proxy)
    assert [c.name for c in result.chosen] == FRONT and model.factor(result.chosen) <= 1.02
    assert result.order.startswith("graph order") and calls[0] == 3  # baseline, gain per cost's, graph order's

"""How auto mixed precision measures its trials (api/mixed_evaluator.py): the sensitivity pass on a spread
subset, and a target check that stops once the target is out of reach and decides as the full pass does."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper
from test_mixed_precision import planted_model

from qtool.api import mixed_evaluator
from qtool.graph import model as gm
from qtool.inspect.compare import Drift
from qtool.io.encodings import Encodings
from qtool.io.input_list import read_input_list
from qtool.quant import mixed_precision as mp

SAMPLES = 40


def _listing(tmp_path: Path):
    rng = np.random.default_rng(2)
    for k in range(SAMPLES):
        rng.normal(size=(1, 2, 4, 4)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("\n".join(f"s{k}.raw" for k in range(SAMPLES)) + "\n")
    return read_input_list(tmp_path / "list.txt")


def _perturbed(scale: float):
    """The planted model with its last weights off by `scale` (relative): a 'trial' of known, fixed quality."""
    model = planted_model()
    for init in model.graph.initializer:
        if init.name == "wc":
            w = numpy_helper.to_array(init)
            noise = np.random.default_rng(3).normal(size=w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w + scale * np.abs(w).mean() * noise, "wc"))
    return model


@pytest.fixture
def counted(monkeypatch):
    """Counts the samples the evaluator reads."""
    seen = {"samples": 0}
    real = mixed_evaluator.iter_feeds

    def feeds(*args, **kwargs):
        for feed in real(*args, **kwargs):
            seen["samples"] += 1
            yield feed

    monkeypatch.setattr(mixed_evaluator, "iter_feeds", feeds)
    return seen


def _evaluator(tmp_path: Path, trial):
    reference = planted_model()
    listing = _listing(tmp_path)
    return mixed_evaluator.evaluator(reference, listing, gm.input_specs(reference), False, 1, lambda _: trial)


def test_spread_takes_evenly_spaced_samples_and_all_of_a_short_list() -> None:
    assert mixed_evaluator.spread(5, 16) == [0, 1, 2, 3, 4]
    picked = mixed_evaluator.spread(64, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 63


def test_screening_reads_only_the_subset(tmp_path: Path, counted) -> None:
    evaluate = _evaluator(tmp_path, _perturbed(0.3))
    counted["samples"] = 0  # the float outputs were cached over every sample
    screened = evaluate.screened(Encodings())
    assert counted["samples"] == mixed_evaluator.SCREEN_SAMPLES
    assert abs(screened["sqnr_db"] - evaluate.full(Encodings())["sqnr_db"]) < 6  # the same model, fewer samples


def test_a_hopeless_trial_stops_early_and_a_passing_one_reads_everything(tmp_path: Path, counted) -> None:
    evaluate = _evaluator(tmp_path, _perturbed(0.3))
    full = evaluate.full(Encodings())
    counted["samples"] = 0
    assert evaluate.if_met(Encodings(), mp.Target(sqnr_db=full["sqnr_db"] + 10)) is None
    assert counted["samples"] < SAMPLES / 2
    counted["samples"] = 0
    assert evaluate.if_met(Encodings(), mp.Target(sqnr_db=full["sqnr_db"] - 0.01)) == full
    assert counted["samples"] == SAMPLES
    assert evaluate.if_met(Encodings(), mp.Target(max_cosine_drop=1 - full["cosine"] + 1e-9)) == full


def test_best_possible_bounds_the_finished_pass_after_every_sample() -> None:
    rng = np.random.default_rng(4)
    refs = [rng.normal(size=50) * rng.uniform(0.1, 10) for _ in range(30)]
    quants = [r + rng.normal(size=50) * rng.uniform(0, 1) for r in refs]
    total = sum(float(r @ r) for r in refs)
    final = Drift()
    for r, q in zip(refs, quants, strict=True):
        final.update(r, q, None)
    done = Drift()
    for k, (r, q) in enumerate(zip(refs, quants, strict=True)):
        done.update(r, q, None)
        bound = mp.best_possible({"y": done}, {"y": total - done.signal}, len(refs) - k - 1)
        assert bound["sqnr_db"] >= mp.overall({"y": final})["sqnr_db"]
        assert bound["cosine"] >= mp.overall({"y": final})["cosine"] - 1e-12
    assert math.isclose(bound["sqnr_db"], mp.overall({"y": final})["sqnr_db"], rel_tol=1e-6)


def test_the_report_curve_drops_trials_a_cheaper_point_beats_and_keeps_the_chosen_one():
    def point(raised: int, cost: float, sqnr: float) -> dict:
        return {"layers_16bit": raised, "cost_factor": cost, "sqnr_db": sqnr}

    base, good, dear_worse, dearest = point(0, 1.0, 7.0), point(250, 3.9, 35.0), point(338, 15.2, 29.6), point(422, 15.4, 36.0)
    assert mp.pareto_front([dear_worse, dearest, base, good], (250, 3.9)) == [base, good, dearest]
    # a chosen point is listed even where another beats it (the target check decided, not the curve)
    assert mp.pareto_front([base, good, dear_worse], (338, 15.2)) == [base, good, dear_worse]

"""--act_quantizer_calibration auto: the choice among methods by out-of-sample output SQNR."""

from __future__ import annotations

import pytest

from qtool.api.auto_calibration import AUTO_CALIBRATIONS, AUTO_MARGIN_DB, choose_calibration


@pytest.mark.parametrize(
    ("scores", "chosen"),
    [
        ({"min-max": 20.0, "sqnr": 25.0, "mse": 24.0}, "sqnr"),
        ({"min-max": 20.0, "sqnr": 19.0, "mse": 24.0}, "mse"),
        ({"min-max": 20.0, "sqnr": 20.0 + AUTO_MARGIN_DB / 2, "mse": 3.0}, "min-max"),  # within the folds' noise
        ({"min-max": 20.0, "sqnr": 20.0 + AUTO_MARGIN_DB, "mse": 3.0}, "sqnr"),
        ({"min-max": 0.0, "sqnr": 0.0, "mse": 0.0}, "min-max"),  # a tie keeps qairt's default
    ],
)
def test_another_method_replaces_min_max_only_when_it_wins_by_the_margin(scores: dict, chosen: str) -> None:
    tried: list[str] = []

    def trial(method: str) -> float:
        tried.append(method)
        return scores[method]

    method, line = choose_calibration(trial)
    assert method == chosen
    assert tried == list(AUTO_CALIBRATIONS)  # each method scored once
    assert line.startswith(f"calibration auto: {chosen} (") and all(f"{m} {scores[m]:.1f}" in line for m in scores)


def test_a_method_ahead_by_less_than_the_margin_is_said_to_lose_to_the_default() -> None:
    method, line = choose_calibration({"min-max": 16.8, "sqnr": 16.9, "mse": 17.0}.get)
    assert method == "min-max" and f"min-max stays unless another wins by {AUTO_MARGIN_DB:g} dB" in line
    assert "stays unless" not in choose_calibration({"min-max": 20.0, "sqnr": 19.0, "mse": 18.0}.get)[1]


"""`--act_quantizer_calibration auto`: which activation range method a model gets, chosen by what it does to
the model's output on calibration samples it was not calibrated on.

No one method wins everywhere. On the zoo's 23 models with both rows, sqnr ranges with bias correction beat
min-max by a median 3.2 dB, yet cost hey_mycroft's wake-word head 7.7 dB and nudenet's detector 3.2; mse ranges
gained 10.3 dB on hey_jarvis and lost 8.7 on hey_mycroft. A tensor's own quantization noise, which each method
minimises, is not the output's: clipping a logit's tail that a Sigmoid reads costs more than its noise says.
So each candidate is scored the way float-stage changes are (api/quantize.trial_folds): calibrated on one half
of up to 32 samples spread over the list, scored on the other half, and the halves swapped, with the
algorithms that follow the ranges (bc, adaround) run in each trial. min-max, qairt's default, stays unless
another method beats it by AUTO_MARGIN_DB, more than two folds of 16 samples resolve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

AUTO_CALIBRATIONS = ("min-max", "sqnr", "mse")  # percentile's 99.99 and entropy's KL are one clip rule each
AUTO_MARGIN_DB = 0.3


def choose_calibration(trial: Callable[[str], float]) -> tuple[str, str]:
    """(the method, the report's line): `trial(method)` is the output SQNR (dB) out of sample."""
    scores = {method: trial(method) for method in AUTO_CALIBRATIONS}
    default = AUTO_CALIBRATIONS[0]
    best = max(scores, key=lambda m: (scores[m], m == default))
    chosen = best if scores[best] >= scores[default] + AUTO_MARGIN_DB else default
    tried = ", ".join(f"{m} {s:.1f}" for m, s in scores.items())
    kept = f"; {default} stays unless another wins by {AUTO_MARGIN_DB:g} dB" if chosen == default != best else ""
    logger.info("calibration auto: %s (held-out output SQNR: %s dB%s)", chosen, tried, kept)
    return chosen, f"calibration auto: {chosen} (output SQNR on held-out halves of the list: {tried} dB{kept})"

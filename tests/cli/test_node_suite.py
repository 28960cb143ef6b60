"""The ONNX backend node suite, a fixed sample of it (the whole suite: `bench/run.py --suite nodes`).

Every case ends as a model onnxruntime runs or as a clean refusal; never an internal error, never a
written model that onnxruntime refuses. Refusals must have a documented reason (README, "Bad input"
and "What qtool refuses"): NaN in the calibration data, a model in integer form, or an opset newer than
onnxruntime's QuantizeLinear that onnx cannot convert down.
"""

from __future__ import annotations

import pytest
from node_cases import float_cases, run_case, runs_in_onnxruntime

DOCUMENTED_REFUSALS = ("contains NaN values", "is quantized already", "cannot be converted down")
SAMPLE_EVERY = 8  # about 100 of the ~800 float cases; the selection is fixed by the case order


def _sample() -> list:
    return [case for i, case in enumerate(float_cases()) if i % SAMPLE_EVERY == 0]


@pytest.mark.parametrize("case", _sample(), ids=lambda c: c.name)
def test_a_node_case_quantizes_or_is_refused_for_a_documented_reason(case) -> None:
    if not runs_in_onnxruntime(case):
        pytest.skip("the float model does not run in this onnxruntime")
    outcome = run_case(case)
    assert outcome.kind in ("ok", "refused"), outcome
    if outcome.kind == "refused":
        assert any(reason in outcome.detail for reason in DOCUMENTED_REFUSALS), outcome

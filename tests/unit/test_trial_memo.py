"""What mixed precision's trials reuse from the float model: keyed by proto identity, only inside the scope."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from qtool.graph import lazy_weights, trial_memo


def test_outside_a_scope_nothing_is_kept() -> None:
    calls = []
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    for _ in range(2):
        trial_memo.remember("k", (tensor,), lambda: calls.append(1))
    assert len(calls) == 2


def test_inside_the_same_proto_computes_once_and_another_proto_again() -> None:
    a = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")  # equal, but another proto
    with trial_memo.remembered():
        first = lazy_weights.array(a)
        assert lazy_weights.array(a) is first
        assert lazy_weights.array(b) is not first
        assert trial_memo.remember("q", (a,), lambda: 1, 8) == 1
        assert trial_memo.remember("q", (a,), lambda: 2, 16) == 2  # `extra` is part of the key
        assert trial_memo.remember("q", (a,), lambda: 3, 8) == 1
    assert lazy_weights.array(a) is not first  # the scope is gone


def test_a_kept_array_is_read_only() -> None:
    tensor = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    with trial_memo.remembered():
        values = trial_memo.remember("sum", (tensor,), lambda: np.zeros(2))
        with pytest.raises(ValueError, match="read-only"):
            values[0] = 1.0


def test_past_the_budget_the_oldest_go_and_latest_only_keeps_one() -> None:
    protos = [numpy_helper.from_array(np.zeros(4, np.float32), f"w{i}") for i in range(3)]
    with trial_memo.remembered(budget=40):  # two 16-byte arrays fit, three do not
        for p in protos:
            lazy_weights.array(p)
        memo = trial_memo._SCOPES[-1]
        assert [k[1] for k in memo.entries] == [id(protos[1]), id(protos[2])] and memo.held == 32
        trial_memo.remember("model", (protos[0],), lambda: "a", latest_only=True)
        trial_memo.remember("model", (protos[1],), lambda: "b", latest_only=True)
        assert [v[1] for k, v in memo.entries.items() if k[0] == "model"] == ["b"]

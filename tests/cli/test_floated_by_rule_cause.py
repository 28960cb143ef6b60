"""Under weight-only (--act_bitwidth 32) a float output floats no layer (eba7e65, quant/overrides.propagate_float):
the warning for an int weight a float bias floats names the bias, not the output (quant/overrides.floated_by_rule)."""

from __future__ import annotations

import json
from pathlib import Path

from hostile_env import make_workspace


def test_a_weight_a_float_bias_floats_is_said_so_under_weight_only(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    overrides = ws.root / "o.json"
    overrides.write_text(json.dumps({
        "activation_encodings": {"y": [{"bitwidth": 16, "dtype": "float"}]},
        "param_encodings": {"FB": [{"bitwidth": 32, "dtype": "float"}], "FW": [{"bitwidth": 8, "dtype": "int"}]},
    }))  # fmt: skip
    result = ws.quantize("-o", ws.out, "--act_bitwidth", "32", "-q", overrides)
    assert result.exit_code == 0, result.stderr
    assert "override for 'FW' is not applied" in result.stderr
    assert "runs in float32, as its bias 'FB' is overridden float" in result.stderr, result.stderr

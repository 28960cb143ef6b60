"""A model may name its tensors as qtool's calibration probes name theirs (`qtool.flat`, `t.qtool_max`):
the probes take another namespace. Before, onnxruntime refused the instrumented copy ("Duplicate definition
of name (qtool.flat)") and quantize exited 3 on a valid model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace

from qtool.graph.names import unused_namespace


def _model(root: Path, names: tuple[str, str]) -> Workspace:
    a, b = names
    ws = Workspace(root)
    ws.model.write_bytes(onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,8] x) => (float[1,4,8] y) {{ "{a}" = Relu(x)  "{b}" = Sigmoid("{a}")  y = Mul("{a}", "{b}") }}
    """).SerializeToString())  # fmt: skip
    np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32).tofile(root / "x.raw")
    ws.listing.write_text(f"{root / 'x.raw'}\n")
    return ws


@pytest.mark.parametrize("method", ["min-max", "sqnr"])
@pytest.mark.parametrize("names", [("qtool.flat", "qtool.zero"), ("x.qtool_max", "qtool.offset")])
def test_a_model_may_use_the_probes_names(tmp_path: Path, names: tuple[str, str], method: str) -> None:
    ws = _model(tmp_path, names)
    result = ws.quantize("-o", ws.out, "--act_quantizer_calibration", method)
    assert result.exit_code == 0, result.output
    assert ws.out.exists()


def test_unused_namespace_steps_past_every_taken_prefix() -> None:
    assert unused_namespace(["x", "y.qtool"]) == "qtool"
    assert unused_namespace(["qtool.flat", "a.qtool1_max"]) == "qtool2"

"""Advice names --apply_algorithms cle only for layers cle rescales (Conv pairs: quant/algorithms/cle.equalizable):
a MatMul's uneven weight columns were told 'or --apply_algorithms cle to equalize the channels', and cle, which
takes no MatMul, warned 'no Conv -> [ReLU] -> Conv pair ...; nothing equalized'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from inspect_models import outlier_channel
from onnx import numpy_helper
from test_layers import quantized, ranked

from qtool.inspect import lint

MLP = """
<ir_version: 8, opset_import: ["" : 13]>
mlp (float[1,16] x) => (float[1,3] y) {
    m1 = MatMul (x, W1)
    r1 = Relu (m1)
    m2 = MatMul (r1, W2)
    r2 = Relu (m2)
    y = MatMul (r2, W3)
}
"""


def outlier_column(scale: float = 50.0) -> onnx.ModelProto:
    """Three MatMuls with ReLUs between; output column 0 of W2 `scale` times the others (outlier_channel's twin)."""
    rng = np.random.default_rng(0)
    arrays = {"W1": rng.normal(0, 0.3, (16, 8)), "W2": rng.normal(0, 0.2, (8, 8)), "W3": rng.normal(0, 0.3, (8, 3))}
    arrays["W2"][:, 0] *= scale
    model = onnx.parser.parse_model(MLP)
    model.graph.initializer.extend(numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items())
    return model


def _uneven(model: onnx.ModelProto, target: str | None = None) -> lint.Finding:
    (found,) = [f for f in lint.run_lints(lint.context(model, target)) if f.lint == "uneven-channels"]
    return found


def test_the_uneven_channels_lint_names_cle_for_a_conv_pair_only() -> None:
    assert "cle" in _uneven(outlier_channel(50.0)).fix
    matmul = _uneven(outlier_column(50.0))
    assert "'W2'" in matmul.where and "cle" not in matmul.fix and "--use_per_row_quantization" in matmul.fix
    assert "cle" not in _uneven(outlier_column(50.0), "vitis-dpu").fix


def test_the_per_layer_fix_names_cle_for_a_conv_pair_only(tmp_path: Path) -> None:
    conv = ranked(*quantized(tmp_path / "conv", outlier_channel(50.0)))
    assert conv[0].fix.startswith("cle: --apply_algorithms cle")
    # per row, W2's outlier column no longer costs its weights, but it still stretches r2's grid: 'cle: ...' before
    rows = ranked(*quantized(tmp_path / "mlp", outlier_column(50.0), use_per_row_quantization=True))
    r2 = next(r for r in rows if r.tensor == "r2")
    assert "cle" not in r2.fix and not [r.fix for r in rows if "cle" in r.fix]

"""--param_quantizer_schema asymmetric leaves per-channel and per-block weights symmetric, as QNN's per-channel weights
always are (README's flag table, 02762b2); a run said nothing of it. The report now says so in one line, and only
where such weights are (not with per-tensor weights, nor with --use_asymmetric_blocks' blocks)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import run_cli, save_model, write_samples
from onnx import numpy_helper


def _matmul() -> onnx.ModelProto:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[1,32] x) => (float[1,8] y) {
        y = MatMul (x, W)
    }
    """)
    model.graph.initializer.append(numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (32, 8)).astype(np.float32), "W"))
    return model


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--use_per_row_quantization"], "1 per-channel: --param_quantizer_schema asymmetric applies to per-tensor weights"),
        (["--param_quantizer_schema", "asymmetric", "--weights_block_size", "16", "--weights_bitwidth", "4"],
         "1 per-block: --param_quantizer_schema asymmetric applies to per-tensor weights; --use_asymmetric_blocks gives "
         "blocks a zero point"),
        (["--weights_block_size", "16", "--weights_bitwidth", "4", "--use_asymmetric_blocks"], None),
        (["--use_per_row_quantization", "--param_quantizer_schema", "symmetric"], None),
        ([], None),  # per-tensor: asymmetric, as asked
    ],
)  # fmt: skip
def test_the_report_says_which_weights_stay_symmetric(tmp_path, flags: list[str], said: str | None) -> None:
    model = save_model(_matmul(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, _matmul(), 4)
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", listing, "-o", out, "--encodings_format", "1.0.0", "--json",
                      *flags])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts.get("symmetric weights") == said, facts

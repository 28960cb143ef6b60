"""A bias an overrides file gives a symmetric grid (`is_symmetric`, in any spelling the format takes) is quantized
symmetric: the bias's grid followed --param_quantizer_schema alone, and a positive bias came out on [0, max], offset 0,
where weights and activations honoured the entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import quantize_model
from onnx import numpy_helper


def _conv_with_a_positive_bias() -> onnx.ModelProto:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
        y = Conv <pads = [1, 1, 1, 1]> (x, W, B)
    }
    """)
    weight = np.random.default_rng(0).normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    bias = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    model.graph.initializer.extend([numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    return model


@pytest.mark.parametrize("symmetric", ["True", True, None])
def test_a_bias_overridden_symmetric_is_quantized_symmetric(tmp_path: Path, symmetric) -> None:
    entry = {"bitwidth": 8, "dtype": "int", **({} if symmetric is None else {"is_symmetric": symmetric})}
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"B": [entry]}}))
    out = quantize_model(tmp_path, _conv_with_a_positive_bias(), "-q", overrides)
    (written,) = json.loads(out.with_suffix(".encodings.json").read_text())["param_encodings"]["B"]
    zero_point = next(i for i in onnx.load(str(out)).graph.initializer if i.name == "B_zero_point")
    if symmetric is None:  # asymmetric, the default schema: from 0 (the grid holds 0) to 2.0
        assert (written["is_symmetric"], written["min"], written["offset"]) == ("False", 0.0, 0)
    else:
        assert (written["is_symmetric"], written["offset"]) == ("True", -128), written
        assert written["min"] == pytest.approx(-written["max"], rel=0.01) and written["max"] == pytest.approx(2.0)
        assert (zero_point.data_type, numpy_helper.to_array(zero_point).item()) == (onnx.TensorProto.INT8, 0)

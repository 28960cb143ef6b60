"""A 4-bit activation (an override asks for it) is written as uint4/int4 Q/DQ, which needs opset 21: before,
the model kept its opset and onnxruntime refused it (exit 3, "Type 'tensor(uint4)' of input parameter ...")."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
from algorithm_models import hardswish_depthwise
from qnn_models import qtool
from test_algorithms import write_samples


def test_a_4_bit_activation_override_writes_a_model_onnxruntime_runs(tmp_path: Path) -> None:
    onnx.save(hardswish_depthwise(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 3, 16, 16), n=4)
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"u": [{"bitwidth": 4, "dtype": "int", "min": -4, "max": 4}]},
                                     "param_encodings": {}}))  # fmt: skip
    code, _, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx",
                         "--quantization_overrides", overrides)  # fmt: skip
    assert code == 0, err
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    zero_point = next(i for i in model.graph.initializer if i.name == "u_zero_point")
    assert zero_point.data_type in (onnx.TensorProto.UINT4, onnx.TensorProto.INT4)
    ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])

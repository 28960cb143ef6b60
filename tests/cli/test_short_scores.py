"""A Sigmoid score output calibrated on negatives alone ends its grid below 0.5: quantize warns, naming the output and
the override that gives it the Sigmoid's range (quant/short_scores.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper

from qtool.encoding import Encoding
from qtool.quant.short_scores import short_scores


def _detector(bias: float) -> onnx.ModelProto:
    """x [1, 8] -> Gemm (the mean, + bias) -> Sigmoid -> Flatten -> y [1, 1]: a wake word's last layer."""
    inits = [numpy_helper.from_array(np.full((1, 8), 1 / 8, np.float32), "w"),
             numpy_helper.from_array(np.array([bias], np.float32), "b")]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logit"], transB=1),
             helper.make_node("Sigmoid", ["logit"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


YES = {"x": np.full((1, 8), 3.9, np.float32)}  # inside the calibrated inputs' range, a mean none of them had


def _quantize(tmp_path: Path, bias: float, *flags: object) -> tuple[str, float, float]:
    """Quantized on 16 inputs of U(-4, 4): at bias -3 every mean stays below 3 and every score below 0.5; YES scores
    0.71. The warnings, and YES's score in the float and in the quantized model."""
    model = tmp_path / "m.onnx"
    onnx.save(_detector(bias), str(model))
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.uniform(-4, 4, (1, 8)).astype(np.float32)} for _ in range(16)]
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", write_feeds(tmp_path, feeds), "-o", out, *flags])
    assert result.exit_code == 0, result.output
    (float_score,) = ort.InferenceSession(str(model)).run(None, YES)[0].ravel()
    (score,) = ort.InferenceSession(str(out)).run(None, YES)[0].ravel()
    return result.stderr, float(float_score), float(score)


def test_a_score_calibrated_on_negatives_alone_is_warned_of(tmp_path: Path) -> None:
    stderr, float_score, score = _quantize(tmp_path, -3.0)
    (warning,) = [line for line in stderr.splitlines() if "output 'y' is a Sigmoid's score" in line]
    assert "a higher score (a yes past 0.5) reads as" in warning
    assert float_score > 0.7 and score < 0.5, (float_score, score)  # what it warns of: the yes reads as a no
    # the overrides it names, as given: the Sigmoid's range and room for its input
    room = json.loads("{" + warning.split("activation_encodings: ")[1] + "}")
    assert room["y"] == [{"bitwidth": 16, "min": 0, "max": 1}] and room["logit"][0]["max"] > 2
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": room, "param_encodings": {}}))
    stderr, float_score, score = _quantize(tmp_path, -3.0, "-q", overrides)
    assert "Sigmoid's score" not in stderr and abs(score - float_score) < 0.01, (float_score, score)


def test_a_score_calibrated_past_its_decision_is_not_warned_of(tmp_path: Path) -> None:
    stderr, float_score, score = _quantize(tmp_path, 1.0)
    assert "Sigmoid's score" not in stderr and float_score > 0.5 and score > 0.5, (float_score, score)  # a yes stays one


def test_the_named_overrides_parse_as_json_whatever_the_names_and_however_small_the_logit() -> None:
    """A name with a quote or a backslash is written escaped, and a logit calibrated to -0.0004 keeps room (rounded
    to 3 decimals it had min = max = 0)."""
    model = _detector(-3.0)
    for node in model.graph.node:  # rename the Sigmoid's input and the output to what exporters may write
        node.input[:] = ['lo"g\\it' if name == "logit" else name for name in node.input]
        node.output[:] = ['lo"g\\it' if name == "logit" else 'y"1' if name == "y" else name for name in node.output]
    model.graph.output[0].name = 'y"1'
    grids = {'y"1': Encoding(8, min=(0.0,), max=(0.01,)), 'lo"g\\it': Encoding(8, min=(-0.0004,), max=(0.0,))}
    (warning,) = short_scores(model, grids, frozenset())
    room = json.loads("{" + warning.split("activation_encodings: ")[1] + "}")
    assert room['y"1'][0]["max"] == 1 and room['lo"g\\it'][0] == {"bitwidth": 16, "min": -0.0004, "max": 0.0004}

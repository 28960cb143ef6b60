"""PRelu before opset 7 applies a [C] slope per channel; the upgrade keeps that meaning (graph/prelu_slope.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.errors import ModelError
from qtool.graph.convert import normalise

SLOPE = np.array([0.1, 0.2, 0.3, 0.4], np.float32)


def _model(width: int, slope_as_input: bool = False, shared: bool = False, rank_known: bool = True) -> onnx.ModelProto:
    """An opset-6, IR-3 graph as old exporters wrote it: Conv -> PRelu(slope [4]) (initializers also inputs)."""
    w = np.random.default_rng(0).normal(size=(4, 4, 1, 1)).astype(np.float32)
    x_shape = [1, 4, 5, width] if rank_known else None
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    inputs += [helper.make_tensor_value_info("slope", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4, 1, 1])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("PRelu", ["c", "slope"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:  # the same slope on a [1, 4] tensor, where both opsets agree
        nodes += [helper.make_node("ReduceMean", ["c"], ["m"], axes=[2, 3], keepdims=0), helper.make_node("PRelu", ["m", "slope"], ["z"])]
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    inits = [numpy_helper.from_array(w, "w")] + ([] if slope_as_input else [numpy_helper.from_array(SLOPE, "slope")])
    model = helper.make_model(helper.make_graph(nodes, "prelu6", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    return model


def _want(x: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))[:, :, 0, 0]
    c = np.einsum("oi,nihw->nohw", w, x)
    return np.where(c < 0, c * SLOPE[None, :, None, None], c)


@pytest.mark.parametrize("width", [6, 4], ids=["fails-at-run-time", "silently-wrong-when-W-is-C"])
@pytest.mark.parametrize("slope_as_input", [False, True], ids=["initializer", "graph-input"])
def test_slope_stays_per_channel(width: int, slope_as_input: bool) -> None:
    model = _model(width, slope_as_input)
    out = normalise(model, {}, "m.onnx")
    x = np.random.default_rng(1).normal(size=(1, 4, 5, width)).astype(np.float32)
    feeds = {"x": x, **({"slope": SLOPE} if slope_as_input else {})}
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, _want(x, model), rtol=1e-5, atol=1e-6)


def test_shared_slope_reshaped_only_where_rank_needs_it() -> None:
    model = _model(6, shared=True)
    out = normalise(model, {}, "m.onnx")
    x = np.random.default_rng(2).normal(size=(1, 4, 5, 6)).astype(np.float32)
    y, z = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, _want(x, model), rtol=1e-5, atol=1e-6)
    c = np.einsum("oi,nihw->nohw", numpy_helper.to_array(model.graph.initializer[0])[:, :, 0, 0], x).mean(axis=(2, 3))
    np.testing.assert_allclose(z, np.where(c < 0, c * SLOPE[None, :], c), rtol=1e-5, atol=1e-6)


def test_unknown_rank_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"PRelu .*slope has 4 values and its input's rank is unknown"):
        normalise(_model(6, rank_known=False), {}, "m.onnx")

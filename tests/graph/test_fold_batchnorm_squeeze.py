"""A BatchNorm behind a Squeeze of the Conv's spatial axes (paddle's Conv2D -> squeeze(2) -> BatchNorm1D, PP-OCRv6's
tiny recogniser) folds into the Conv, the Squeeze after it keeping the BatchNorm's output name."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.passes import common

from qtool.graph.convert import normalise
from qtool.graph.passes.fold_batchnorm import FoldBatchNormPass


def conv_squeeze_bn(axis: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 4, 1, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([axis], np.int64), "axes")]  # fmt: skip
    channels = 6 if axis == 2 else 1
    for name, values in (("gamma", rng.uniform(0.5, 2, channels)), ("beta", rng.normal(size=channels)),
                         ("mean", rng.normal(size=channels)), ("var", rng.uniform(0.5, 2, channels))):  # fmt: skip
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 1, 0, 1]),
             helper.make_node("Squeeze", ["c", "axes"], ["s"]),
             helper.make_node("BatchNormalization", ["s", "gamma", "beta", "mean", "var"], ["y"], name="bn")]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_batchnorm_behind_a_spatial_squeeze_folds_into_the_conv() -> None:
    model = conv_squeeze_bn(2)
    out = normalise(model, {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["Conv", "Squeeze"]
    assert out.graph.output[0].name == "y" and out.graph.node[1].output[0] == "y"
    x = np.random.default_rng(1).normal(size=(1, 4, 1, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("other", ["Relu", "output"])
def test_a_squeeze_read_elsewhere_keeps_the_batchnorm_behind_it(other: str) -> None:
    """Moved before a Squeeze that a Relu (or the graph's output) reads too, the BatchNorm scaled what that reader
    got: the Relu's output was off by 4.9."""
    model = conv_squeeze_bn(2)
    if other == "Relu":
        model.graph.node.append(helper.make_node("Relu", ["s"], ["r"]))
    model.graph.output.append(helper.make_tensor_value_info("r" if other == "Relu" else "s", TensorProto.FLOAT, None))
    out = normalise(model, {}, "m.onnx")
    x = np.random.default_rng(1).normal(size=(1, 4, 1, 8)).astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (out, model)]
    got, want = (s.run(None, {"x": x}) for s in sessions)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_a_batchnorm_moved_but_not_folded_reports_the_change() -> None:
    """A Conv whose weight is an input takes no BatchNorm: the BN still moved before the Squeeze, and the pass
    said 'not modified' of the graph it changed."""
    model = conv_squeeze_bn(2)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "w"))
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [6, 4, 1, 3]))
    graph = ir.from_proto(model)
    result = FoldBatchNormPass()(common.ShapeInferencePass()(graph).model)
    assert [n.op_type for n in result.model.graph] == ["Conv", "BatchNormalization", "Squeeze"]
    assert result.modified

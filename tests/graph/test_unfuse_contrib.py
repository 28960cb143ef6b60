"""onnxruntime's FusedConv (a graph saved after its optimiser) written back as Conv [+ Add] + activation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.unfuse_contrib import unfuse

ACTIVATIONS = [("Relu", []), ("LeakyRelu", [0.2]), ("Clip", [-0.5, 1.5]), ("HardSigmoid", [0.3, 0.4]), ("Tanh", [])]


def _fused_model(activation: str, params: list[float], with_sum: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    arrays = {"W": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "B": rng.normal(0, 0.1, 4).astype(np.float32)}
    inputs = ["x", "W", "B", "z"] if with_sum else ["x", "W", "B"]
    extra = {"activation_params": params} if params else {}
    fused = helper.make_node("FusedConv", inputs, ["y"], name="fused", domain="com.microsoft", pads=[1, 1, 1, 1],
                             kernel_shape=[3, 3], activation=activation, **extra)  # fmt: skip
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if with_sum:
        graph_inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8]))
    graph = helper.make_graph(
        [fused], "fused", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("activation", "params"), ACTIVATIONS)
@pytest.mark.parametrize("with_sum", [False, True])
def test_fused_conv_unfuses_to_the_same_outputs(activation: str, params: list[float], with_sum: bool) -> None:
    model = _fused_model(activation, params, with_sum)
    plain, counts = unfuse(model)
    assert counts == {"FusedConv": 1}
    assert all(n.domain in ("", "ai.onnx") for n in plain.graph.node)
    assert [o.domain for o in plain.opset_import] == [""]
    onnx.checker.check_model(plain, full_check=True)
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)}
    if with_sum:
        feed["z"] = rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(plain.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_activation_onnxruntime_does_not_define_is_left_fused() -> None:
    model = _fused_model("Swish", [], False)
    kept, counts = unfuse(model)
    assert not counts and kept.graph.node[0].op_type == "FusedConv"


def test_convert_writes_standard_ops_and_says_so(tmp_path: Path) -> None:
    source, output = tmp_path / "m.onnx", tmp_path / "c.onnx"
    onnx.save(_fused_model("Relu", [], True), str(source))
    result = run_cli(["convert", "-i", source, "-o", output])
    assert result.exit_code == 0, result.output
    assert "written back as standard ones: 1 FusedConv" in result.stderr
    assert {n.op_type for n in onnx.load(str(output)).graph.node} == {"Conv", "Add", "Relu"}

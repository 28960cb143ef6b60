"""A grouped ConvTranspose's per-channel weight scales follow its output channels (rules._conv_transpose_weight_axis):
a weight [C_in, C_out/group, k, k] had axis 1 whatever the group, so a depthwise one ([C, 1, k, k]) got a single
scale under --use_per_channel_quantization (GTCRN's decoder, helper-59's sweep), and a group-2 one's int32 bias was
left off its accumulator's grid (8 weight scales, 16 biases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import quantize_model, run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.io.encodings import read_encodings

GAINS = np.array([0.02, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0], np.float32)  # channel ranges spanning 200x


def _model(weight_shape: tuple[int, ...], group: int) -> onnx.ModelProto:
    """ConvTranspose(x, w, b) with each input channel's weights on its own scale, stride 2."""
    rng = np.random.default_rng(0)
    c_in, per_group = weight_shape[:2]
    w = rng.normal(0, 1, weight_shape).astype(np.float32) * np.resize(GAINS, c_in).reshape(-1, 1, 1, 1)
    b = rng.normal(0, 0.1, group * per_group).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=group, strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, group * per_group, 11, 11])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _outputs(path: Path | bytes, xs: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    session = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"]
    )
    return np.stack([session.run(None, {"x": x})[0] for x in xs])


def _sqnr(want: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()))


def _held_out(c_in: int) -> np.ndarray:
    return np.random.default_rng(99).uniform(-1, 1, (16, 1, c_in, 6, 6)).astype(np.float32)


def _dq(path: Path, name: str) -> tuple[int | None, np.ndarray]:
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == name)
    scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == node.input[1]))
    return next((a.i for a in node.attribute if a.name == "axis"), None), scale


def test_a_depthwise_conv_transpose_gets_one_scale_per_output_channel(tmp_path: Path) -> None:
    model = _model((8, 1, 3, 3), group=8)
    out = quantize_model(tmp_path, model, "--use_per_channel_quantization", "--bias_bitwidth", "32")
    axis, scale = _dq(out, "w")
    assert axis == 0 and scale.shape == (8,)  # one per input channel = one per output channel here
    w = numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(scale, np.abs(w).reshape(8, -1).max(axis=1) / 127, rtol=0.6)  # each on its own range
    # the int32 bias is on each output channel's accumulator grid: input scale x that channel's weight scale
    params = read_encodings(out.with_suffix(".encodings.json")).params
    x_scale = float(_dq(out, "x_dequantized")[1])
    np.testing.assert_allclose(params["b"].scale, x_scale * scale, rtol=1e-5)
    # held out, 16-bit activations (the weights' grids show): the quietest output channel, against one scale
    # for all 8 channels (the old rule's axis 1 has size 1: per tensor)
    flags = ("--act_bitwidth", "16", "--bias_bitwidth", "32")
    new, old = (quantize_model(tmp_path, model, *f, *flags, name=n) for f, n in (
        (["--use_per_channel_quantization"], "new"), ([], "old")))  # fmt: skip
    xs, level = _held_out(8), ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = _outputs(model.SerializeToString(), xs, level)
    got, before = (min(_sqnr(want[:, :, c], _outputs(p, xs, level)[:, :, c]) for c in range(8)) for p in (new, old))
    assert got >= before + 20
    # --target qnn-htp keeps axis 1 (one scale here): onnxruntime's QNN EP runs no other on HTP
    assert _dq(quantize_model(tmp_path, model, "--target", "qnn-htp", name="qnn"), "w")[1].size == 1
    # --target ort-cpu quantizes only what onnxruntime's integer kernels take: it has none for ConvTranspose
    assert [n.op_type for n in onnx.load(str(quantize_model(tmp_path, model, "--target", "ort-cpu"))).graph.node] == [
        "ConvTranspose"
    ]


@pytest.mark.parametrize(("shape", "group"), [((8, 1, 3, 3), 8), ((8, 4, 3, 3), 2), ((4, 2, 3, 3), 4)])
def test_grouped_conv_transpose_bias_follows_its_output_channels(tmp_path: Path, shape, group) -> None:
    """[8, 4] group 2 keeps axis 1 (4 scales, each shared by the two groups); [4, 2] group 4 takes axis 0 (a
    scale per group, shared by its 2 output channels): either way each of the int32 bias's output channels is on
    input scale x the weight scale it reads (until now [8, 4]'s 8 biases took a 32-bit grid of their own)."""
    model = _model(shape, group)
    out = quantize_model(tmp_path, model, "--use_per_channel_quantization", "--bias_bitwidth", "32")
    axis, scale = _dq(out, "w")
    per_group, channels = shape[1], np.arange(group * shape[1])
    expected_axis = 0 if group == shape[0] and group > per_group else 1
    assert axis == expected_axis and scale.size == shape[expected_axis]
    reads = channels // per_group if axis == 0 else channels % per_group
    np.testing.assert_allclose(_dq(out, "b")[1], float(_dq(out, "x_dequantized")[1]) * scale[reads], rtol=1e-5)
    # onnxruntime (1.32) fuses no Q/DQ ConvTranspose: its optimized graph runs the Q/DQ arithmetic as written
    xs = _held_out(shape[0])
    plain = _outputs(out, xs, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_allclose(_outputs(out, xs, ort.GraphOptimizationLevel.ORT_ENABLE_ALL), plain, atol=1e-5)


def test_a_grouped_conv_transpose_per_channel_on_axis_1_is_still_read(tmp_path: Path) -> None:
    """AIMET, QNN and onnxruntime quantize every ConvTranspose weight along axis 1, as qtool's --target qnn-htp
    does; where qtool's own rule takes axis 0 ([4, 2] group 4: a scale per group), such a model was refused by
    convert ('is on axis 1; ConvTranspose needs axis 0', exit 3) and such an encodings file by quantize ('2
    per-channel encodings, but the weight has 4 channels on axis 0', exit 4). Both quantize on axis 1 again."""
    model = _model((4, 2, 3, 3), group=4)
    flags = ("--use_per_channel_quantization", "--bias_bitwidth", "32", "--encodings_format", "1.0.0")
    htp = quantize_model(tmp_path, model, *flags, "--target", "qnn-htp", name="htp")
    assert _dq(htp, "w")[0] == 1
    imported = tmp_path / "imported.onnx"
    result = run_cli(["convert", "-i", htp, "-o", imported])
    assert result.exit_code == 0, result.output
    overridden = quantize_model(tmp_path, model, *flags, "-q", str(htp.with_suffix(".encodings.json")), name="overridden")
    for path in (overridden, quantize_model(tmp_path, onnx.load(str(imported)), *flags, name="requantized")):
        axis, scale = _dq(path, "w")
        assert axis == 1 and np.allclose(scale, _dq(htp, "w")[1])
        reads = np.arange(8) % 2  # output channel o = 2g + j reads column j's scale
        np.testing.assert_allclose(_dq(path, "b")[1], float(_dq(path, "x_dequantized")[1]) * scale[reads], rtol=1e-5)

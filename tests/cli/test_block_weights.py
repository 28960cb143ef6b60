"""Per-block weights (issue 23): --weights_block_size, --use_lpbq, weight-only --act_bitwidth 32.

The QDQ model must load and run in onnxruntime and compute what a hand-written numpy block
quantization computes; quantize -> export -> quantize with the exported overrides gives the same
bytes; the flag mistakes the issue lists are one error line each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from block_models import conv_model, embedding_model, mlp_forward, mlp_model, mlp_weights, reference_blocks
from conftest import run_cli, save_model, write_samples
from onnx import TensorProto, helper, numpy_helper

W4_MINMAX = ["--weights_bitwidth", "4", "--param_quantizer_calibration", "min-max", "--pack_4_bit_weights"]


def _quantize(tmp_path: Path, model: onnx.ModelProto, *flags: object, samples: int = 4) -> Path:
    source = save_model(model, tmp_path / "m.onnx")
    output = tmp_path / "m.quant.onnx"
    listing = ["--input_list", write_samples(tmp_path, model, samples)] if samples else []
    result = run_cli(["quantize", "-i", source, "-o", output, *listing, "--encodings_format", "1.0.0", *flags])
    assert result.exit_code == 0, result.output
    return output


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _weight_dq(model: onnx.ModelProto, weight: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == weight)


def test_weight_only_blocks_match_a_numpy_block_quantization(tmp_path: Path) -> None:
    """Weight-only (float activations, no --input_list): onnxruntime's output is the numpy MLP on
    weights block-quantized by hand; the model holds int4 blocks of 16 with the scales by hand."""
    output = _quantize(tmp_path, mlp_model(), "--act_bitwidth", "32", "--weights_block_size", "16", *W4_MINMAX,
                       samples=0)  # fmt: skip
    model = onnx.load(str(output))
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear"]  # activations stay float
    weights = mlp_weights()
    for name, axis in (("W0", 0), ("W1", 1)):
        node = _weight_dq(model, name)
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs == {"axis": axis, "block_size": 16}
        init = {i.name: i for i in model.graph.initializer}
        assert init[node.input[0]].data_type == TensorProto.INT4
        scale, dequantized = reference_blocks(weights[name], axis, 16)
        np.testing.assert_allclose(numpy_helper.to_array(init[node.input[1]]), scale, rtol=1e-6)
        weights[name] = dequantized
    x = np.random.default_rng(5).uniform(-1, 1, (8, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(output, x), mlp_forward(weights, x), rtol=1e-4, atol=1e-5)


def test_conv_blocks_run_along_input_channels(tmp_path: Path) -> None:
    """A Conv [8, 32, 3, 3] with blocks of 16: one scale per output channel per 16·3·3 values,
    repeated over the kernel in the ONNX scale tensor [8, 2, 3, 3]; onnxruntime runs it."""
    model = conv_model()
    output = _quantize(tmp_path, model, "--act_bitwidth", "32", "--weights_block_size", "16", *W4_MINMAX, samples=0)
    quantized = onnx.load(str(output))
    node = _weight_dq(quantized, "W")
    scale = numpy_helper.to_array(next(i for i in quantized.graph.initializer if i.name == node.input[1]))
    expected, dequantized = reference_blocks(numpy_helper.to_array(model.graph.initializer[0]), 1, 16)
    assert scale.shape == (8, 2, 3, 3)
    np.testing.assert_allclose(scale, np.broadcast_to(expected, scale.shape), rtol=1e-6)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 32, 6, 6)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(dequantized.astype(np.float32), "W"))
    by_hand = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_run(output, x), by_hand.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(_run(output, x), reference.run(None, {"x": x})[0], atol=1e-4)  # it was quantized


def test_blocks_beat_per_channel_at_4_bits_with_8_bit_activations(tmp_path: Path) -> None:
    x = np.random.default_rng(7).uniform(-1, 1, (8, 64)).astype(np.float32)
    exact = mlp_forward(mlp_weights(), x)

    def sqnr(*flags: str) -> float:
        folder = tmp_path / "_".join(flags).replace("-", "")
        out = _quantize(folder, mlp_model(), "--weights_bitwidth", "4", "--apply_algorithms", "none", *flags)  # the grids alone
        return float(10 * np.log10(np.sum(exact**2) / np.sum((_run(out, x) - exact) ** 2)))

    per_channel = sqnr("--use_per_row_quantization")
    blocked, lpbq = sqnr("--weights_block_size", "16"), sqnr("--weights_block_size", "16", "--use_lpbq")
    assert blocked > per_channel + 3 and lpbq > blocked - 1.0, (per_channel, blocked, lpbq)


def test_a_weight_whose_inputs_are_not_a_multiple_of_the_block_falls_back_to_per_channel(tmp_path: Path) -> None:
    """With B = 64, W0 (64 inputs) takes one block per output and W1 (96 inputs: AIMET and QNN have
    no partial last block) is per output channel, with a warning naming it."""
    source, output = save_model(mlp_model(), tmp_path / "m.onnx"), tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", source, "-o", output, "--act_bitwidth", "32", "--weights_block_size", "64",
                      "--encodings_format", "1.0.0", *W4_MINMAX])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "does not divide the 96 inputs of 'W1': per-channel instead" in result.stderr
    model = onnx.load(str(output))
    assert {a.name: a.i for a in _weight_dq(model, "W0").attribute} == {"axis": 0, "block_size": 64}
    assert {a.name: a.i for a in _weight_dq(model, "W1").attribute} == {"axis": 0}  # per output channel
    encodings = json.loads(output.with_suffix(".encodings.json").read_text())
    types = {e["name"]: e["enc_type"] for e in encodings["param_encodings"]}
    assert types == {"W0": "PER_BLOCK", "W1": "PER_CHANNEL"}


@pytest.mark.parametrize(("fmt", "lpbq"), [("1.0.0", False), ("1.0.0", True), ("2.0.0", False), ("2.0.0", True)])
def test_export_then_quantize_with_the_overrides_is_byte_identical(tmp_path: Path, fmt: str, lpbq: bool) -> None:
    flags = ["--weights_bitwidth", "4", "--pack_4_bit_weights", "--weights_block_size", "32", "--encodings_format", fmt]
    qdq = _quantize(tmp_path, mlp_model(), *flags, *(["--use_lpbq"] if lpbq else []))
    out = tmp_path / "export"
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "stripped", "--format", "encodings",
                      "--encodings_format", fmt])  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = json.loads((out / "m.quant.encodings.json").read_text())
    entries = exported["param_encodings"] if fmt == "1.0.0" else exported["encodings"]
    w0 = next(e for e in entries if e["name"] == "W0")
    if fmt == "1.0.0":
        assert (w0["enc_type"], w0["block_size"]) == ("LPBQ" if lpbq else "PER_BLOCK", 32)
    else:
        assert (w0["axis"], w0["block_size"], "per_block_int_scale" in w0) == (0, 32, lpbq)
    again = tmp_path / "again.onnx"
    result = run_cli(["quantize", "-i", out / "m.quant.stripped.onnx", "-o", again, "-f", "--pack_4_bit_weights",
                      "--quantization_overrides", out / "m.quant.encodings.json", "--encodings_format", fmt])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == qdq.read_bytes()


def test_lpbq_encodings_are_the_compressed_form(tmp_path: Path) -> None:
    output = _quantize(tmp_path, mlp_model(), "--weights_bitwidth", "4", "--weights_block_size", "32", "--use_lpbq")
    entries = json.loads(output.with_suffix(".encodings.json").read_text())["param_encodings"]
    w0 = next(e for e in entries if e["name"] == "W0")
    assert (w0["enc_type"], w0["bw"], w0["compressed_bw"], w0["is_sym"]) == ("LPBQ", 8, 4, True)
    assert len(w0["scale"]) == 96 and w0["offset"] == [-128] * 96 and len(w0["per_block_int_scale"]) == 2 * 96
    ints = np.array(w0["per_block_int_scale"]).reshape(2, 96)  # the scale shape [K/B, N] of a MatMul weight
    assert ints.min() >= 1 and (ints.max(axis=0) == 16).all()  # the largest block of a channel keeps 16
    model = onnx.load(str(output))
    scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == _weight_dq(model, "W0").input[1]))
    np.testing.assert_array_equal(scale, (np.array(w0["scale"])[None, :] * ints).astype(np.float32))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weights_block_size", "48"], "--weights_block_size 48 must be a power of two from 16 to 256"),
        (["--weights_block_size", "512"], "--weights_block_size 512 must be a power of two"),
        (["--weights_block_size", "128"], "--weights_block_size 128: no Conv/Gemm/MatMul weight has a multiple of 128"),
        (["--weights_block_size", "32", "--weights_bitwidth", "16"], "needs --weights_bitwidth 4 or 8"),
        (["--use_lpbq", "--weights_bitwidth", "4"], "--use_lpbq needs --weights_block_size"),
        (["--use_lpbq", "--weights_block_size", "32"], "--use_lpbq needs --weights_bitwidth 4"),
        (["--weights_block_size", "32", "--encodings_format", "legacy"], "legacy (0.6.1) encodings format cannot"),
        (["--use_asymmetric_blocks"], "--use_asymmetric_blocks needs --weights_block_size"),
        (["--use_asymmetric_blocks", "--weights_bitwidth", "4", "--weights_block_size", "32", "--use_lpbq"],
         "no --use_lpbq (LPBQ is symmetric)"),
    ],
)
def test_flag_mistakes_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    source = save_model(mlp_model(), tmp_path / "m.onnx")
    args = ["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--act_bitwidth", "32"]
    result = run_cli([*args, "--encodings_format", "1.0.0", *flags] if "--encodings_format" not in flags else [*args, *flags])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_gptq_rounding_on_blocks_keeps_their_scales_and_lowers_the_error(tmp_path: Path) -> None:
    """adaround on per-block weights: the block scales the plan chose stay; the rounding, with error
    feedback across each row, beats round-to-nearest on held-out samples (weight-only, so only the
    weights' rounding differs)."""
    x = np.random.default_rng(9).uniform(-1, 1, (8, 64)).astype(np.float32)
    exact = mlp_forward(mlp_weights(), x)
    flags = ["--act_bitwidth", "32", "--weights_bitwidth", "4", "--weights_block_size", "16", "--pack_4_bit_weights"]
    nearest = _quantize(tmp_path / "rtn", mlp_model(), *flags, samples=32)
    rounded = _quantize(tmp_path / "gptq", mlp_model(), *flags, "--apply_algorithms", "adaround", samples=32)
    scales = []
    for path in (nearest, rounded):
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        scales.append([inits[_weight_dq(model, w).input[1]] for w in ("W0", "W1")])
    for a, b in zip(*scales, strict=True):
        np.testing.assert_array_equal(a, b)
    errors = [float(np.sum((_run(path, x) - exact) ** 2)) for path in (nearest, rounded)]
    assert 10 * np.log10(errors[0] / errors[1]) > 1.0, errors


def test_a_hand_written_2_0_0_block_override_is_honoured_and_calibration_fills_the_rest(tmp_path: Path) -> None:
    """W0 gets exactly the nested y_scale of its override (shape [K/B, N] = [2, 96]); W1 follows the
    flags (per-tensor 8-bit); the written encodings give W0's entry back."""
    scale = np.round(np.linspace(0.01, 0.2, 192), 6).reshape(2, 96)
    override = {"version": "2.0.0", "encodings": [
        {"name": "W0", "output_dtype": "int8", "y_scale": scale.tolist(), "axis": 0, "block_size": 32}]}  # fmt: skip
    path = tmp_path / "o.json"
    path.write_text(json.dumps(override))
    output = _quantize(tmp_path, mlp_model(), "--quantization_overrides", path, "--encodings_format", "2.0.0")
    model = onnx.load(str(output))
    node = _weight_dq(model, "W0")
    inits = {i.name: i for i in model.graph.initializer}
    assert {a.name: a.i for a in node.attribute} == {"axis": 0, "block_size": 32}
    assert inits[node.input[0]].data_type == TensorProto.INT8
    np.testing.assert_array_equal(numpy_helper.to_array(inits[node.input[1]]), scale.astype(np.float32))
    assert not _weight_dq(model, "W1").attribute
    written = json.loads(output.with_suffix(".encodings.json").read_text())
    (w0,) = [e for e in written["encodings"] if e["name"] == "W0"]
    assert w0 == {"name": "W0", "output_dtype": "int8", "y_scale": scale.tolist(), "axis": 0, "block_size": 32}


def test_a_block_override_on_a_weight_that_cannot_take_it_is_a_data_error(tmp_path: Path) -> None:
    override = {"version": "1.0.0", "activation_encodings": [], "param_encodings": [
        {"name": "B0", "enc_type": "PER_BLOCK", "dtype": "INT", "bw": 8, "is_sym": True, "scale": [0.1] * 6,
         "offset": [-128] * 6, "block_size": 16}]}  # fmt: skip
    path = tmp_path / "o.json"
    path.write_text(json.dumps(override))
    source = save_model(mlp_model(), tmp_path / "m.onnx")
    result = run_cli(["quantize", "-i", source, "-o", tmp_path / "q.onnx", "-f", "--quantization_overrides", path,
                      "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 4
    assert "override 'B0': per-block encodings apply only to 2-D Gemm/MatMul and Conv weights" in result.stderr


@pytest.mark.parametrize("scheme", [["--use_per_row_quantization"], ["--weights_block_size", "16"],
                                    ["--weights_block_size", "16", "--use_lpbq"],
                                    ["--weights_block_size", "16", "--use_asymmetric_blocks"]])  # fmt: skip
def test_clipsearch_lowers_the_output_error_with_the_same_layout(tmp_path: Path, scheme: list[str]) -> None:
    """clipsearch (weight-only W4) re-chooses the ranges by output error on the calibration samples: the
    layout stays (blocked DequantizeLinear, LPBQ compressed in the encodings), the report says what it did,
    and on held-out inputs whose second half of channels is 10x the first the error falls."""
    rng = np.random.default_rng(11)
    loud = np.where(np.arange(64) >= 32, 10.0, 1.0).astype(np.float32)
    x = (rng.uniform(-1, 1, (8, 64)) * loud).astype(np.float32)
    exact = mlp_forward(mlp_weights(), x)
    model = mlp_model()
    flags = ["--act_bitwidth", "32", "--weights_bitwidth", "4", *scheme]
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i in range(16):
        path = folder / f"{i}.raw"
        (rng.uniform(-1, 1, (8, 64)) * loud).astype(np.float32).tofile(path)
        lines.append(str(path))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    outputs = []
    for algorithms in ([], ["--apply_algorithms", "clipsearch"]):
        out = tmp_path / f"q{len(algorithms)}.onnx"
        args = ["quantize", "-i", save_model(model, tmp_path / "m.onnx"), "-o", out, "--input_list", listing,
                "--encodings_format", "1.0.0", *flags, *algorithms, "--json"]  # fmt: skip
        result = run_cli(args)
        assert result.exit_code == 0, result.output
        outputs.append(out)
    assert "clipsearch: 2 weights' ranges chosen by output error" in result.stdout
    plain, searched = (onnx.load(str(p)) for p in outputs)
    for name in ("W0", "W1"):
        attrs = [{a.name: a.i for a in _weight_dq(m, name).attribute} for m in (plain, searched)]
        assert attrs[0] == attrs[1]
    types = {e["name"]: e["enc_type"] for e in json.loads(outputs[1].with_suffix(".encodings.json").read_text())["param_encodings"]}
    assert set(types.values()) == {"LPBQ" if "--use_lpbq" in scheme else "PER_BLOCK" if len(scheme) > 1 else "PER_CHANNEL"}
    errors = [float(np.sum((_run(p, x) - exact) ** 2)) for p in outputs]
    assert errors[1] < errors[0], errors


def test_clipsearch_needs_calibration_data(tmp_path: Path) -> None:
    source = save_model(mlp_model(), tmp_path / "m.onnx")
    result = run_cli(["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--act_bitwidth", "32",
                      "--weights_block_size", "16", "--encodings_format", "1.0.0", "--apply_algorithms", "clipsearch"])  # fmt: skip
    assert result.exit_code == 2 and "needs --input_list" in result.stderr, result.output


@pytest.mark.parametrize("lpbq", [[], ["--use_lpbq"]])
def test_an_embedding_table_takes_blocks_per_token_along_its_features(tmp_path: Path, lpbq: list[str]) -> None:
    """Under --weights_block_size a Gather's table [40, 64] gets one scale per token per 16 features (blocked
    DequantizeLinear axis 1, scales [40, 4]); onnxruntime runs it; the table's error is below per-feature
    channels' (two tokens are 8x the rest); the encodings (1.0.0 and 2.0.0, LPBQ too: a channel scale per
    token) read back to the same bytes."""
    model = embedding_model()
    ids = np.array([[0, 2, 5, 7, 11, 20, 33, 39]], dtype=np.int64)
    table = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)

    def table_error(path: Path) -> float:
        quantized = onnx.load(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {"ids": ids})  # it runs
        inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
        dq = _weight_dq(quantized, "table")
        scale = inits[dq.input[1]].astype(np.float64)
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        scale = np.repeat(scale, 16, axis=1) if scale.ndim == 2 else np.expand_dims(scale, 1 - axis)
        return float(np.sum((inits[dq.input[0]].astype(np.float64) * scale - table) ** 2))

    flags = ["--act_bitwidth", "32", "--weights_bitwidth", "4"]
    per_feature = _quantize(tmp_path / "pc", model, *flags, "--use_per_row_quantization", samples=0)
    for fmt in ("1.0.0", "2.0.0"):
        blocked = _quantize(tmp_path / fmt, model, *flags, "--weights_block_size", "16", "--encodings_format", fmt,
                            *lpbq, samples=0)  # fmt: skip
        dq = _weight_dq(onnx.load(str(blocked)), "table")
        assert {a.name: a.i for a in dq.attribute} == {"axis": 1, "block_size": 16}
        assert table_error(blocked) < 0.5 * table_error(per_feature)
        export = run_cli(["export", "-i", blocked, "-o", tmp_path / f"x{fmt}", "--format", "stripped", "--format",
                          "encodings", "--encodings_format", fmt])  # fmt: skip
        assert export.exit_code == 0, export.output
        exported = json.loads((tmp_path / f"x{fmt}" / "m.quant.encodings.json").read_text())
        entries = exported["param_encodings"] if fmt == "1.0.0" else exported["encodings"]
        table_entry = next(e for e in entries if e["name"] == "table")
        if lpbq:
            key = "scale" if fmt == "1.0.0" else "per_channel_float_scale"
            assert len(np.ravel(table_entry[key])) == 40  # one channel scale per token
        out, again = tmp_path / f"x{fmt}", tmp_path / f"again{fmt}.onnx"
        result = run_cli(["quantize", "-i", out / "m.quant.stripped.onnx", "-o", again, "-f", "--act_bitwidth", "32",
                          "--quantization_overrides", out / "m.quant.encodings.json", "--encodings_format", fmt])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert again.read_bytes() == blocked.read_bytes()


@pytest.mark.parametrize(("vocab", "outliers", "blocked"), [(2, (), False), (8, (2, 5), True)])
def test_a_table_of_fewer_rows_than_a_block_takes_the_grid_of_less_error(
    tmp_path: Path, vocab: int, outliers: tuple[int, ...], blocked: bool
) -> None:
    """A token-type table [2, 64] under blocks of 16: a scale per feature covers 2 values, a block 16, so it is
    per feature (DequantizeLinear axis 1, 64 scales, no block_size); a table of 8 rows, two of them 8x the rest,
    keeps per-token blocks, whose error is the smaller there."""
    model = embedding_model(vocab=vocab, outliers=outliers)
    flags = ["--act_bitwidth", "32", *W4_MINMAX, "--weights_block_size", "16"]
    quantized = _quantize(tmp_path, model, *flags, samples=0)
    ids = np.zeros((1, 8), dtype=np.int64)
    ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    loaded = onnx.load(str(quantized))
    dq = _weight_dq(loaded, "table")
    scale = next(numpy_helper.to_array(i) for i in loaded.graph.initializer if i.name == dq.input[1])
    table = numpy_helper.to_array(model.graph.initializer[0])
    if blocked:
        assert {a.name: a.i for a in dq.attribute} == {"axis": 1, "block_size": 16} and scale.shape == (vocab, 4)
    else:
        assert {a.name: a.i for a in dq.attribute} == {"axis": 1} and scale.shape == (64,)
        np.testing.assert_allclose(scale, np.abs(table).max(axis=0) / 7, rtol=1e-6)  # min-max, per feature


@pytest.mark.parametrize("fmt", ["1.0.0", "2.0.0"])
def test_asymmetric_blocks_round_trip_and_run_as_matmulnbits_with_zero_points(tmp_path: Path, fmt: str) -> None:
    """--use_asymmetric_blocks: uint4 blocks with a zero point each, less output error than symmetric blocks on
    the MLP; export -> quantize with the overrides gives the same bytes; the matmulnbits export takes the zero
    points and computes what the QDQ model computes."""
    flags = ["--act_bitwidth", "32", "--weights_bitwidth", "4", "--pack_4_bit_weights", "--weights_block_size", "32",
             "--encodings_format", fmt]  # fmt: skip
    qdq = _quantize(tmp_path / "asym", mlp_model(), *flags, "--use_asymmetric_blocks", samples=0)
    sym = _quantize(tmp_path / "sym", mlp_model(), *flags, samples=0)
    model = onnx.load(str(qdq))
    init = {i.name: i for i in model.graph.initializer}
    node = _weight_dq(model, "W0")
    assert init[node.input[0]].data_type == TensorProto.UINT4 and init[node.input[2]].data_type == TensorProto.UINT4
    x = np.random.default_rng(7).uniform(-1, 1, (8, 64)).astype(np.float32)
    reference = mlp_forward(mlp_weights(), x)
    noise = {k: float(np.sum((_run(p, x) - reference) ** 2)) for k, p in (("asym", qdq), ("sym", sym))}
    assert noise["asym"] < noise["sym"]
    out = tmp_path / "export"
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "stripped", "--format", "encodings",
                      "--format", "matmulnbits", "--encodings_format", fmt])  # fmt: skip
    assert result.exit_code == 0, result.output
    again = tmp_path / "again.onnx"
    result = run_cli(["quantize", "-i", out / "m.quant.stripped.onnx", "-o", again, "-f", "--pack_4_bit_weights",
                      "--act_bitwidth", "32", "--quantization_overrides", out / "m.quant.encodings.json",
                      "--encodings_format", fmt])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == qdq.read_bytes()
    nbits = out / "m.quant.matmulnbits.onnx"
    assert [n.input[3].endswith("_zero_points") for n in onnx.load(str(nbits)).graph.node if n.op_type == "MatMulNBits"] == [True, True]
    np.testing.assert_allclose(_run(nbits, x), _run(qdq, x), rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))



def test_weight_only_biases_are_not_reported_as_float_weights(tmp_path: Path) -> None:
    """With float activations a bias has no grid to be on (its scale is the input's times the weight's): the
    report said "float weights 1 (Conv 1: read outside a slot qtool quantizes as a weight)" of it, as if a
    weight had been missed."""
    rng = np.random.default_rng(3)
    weights = {"W": rng.normal(0, 0.2, (16, 4, 3, 3)), "B": rng.normal(0, 0.1, 16)}  # 16 biases: a weight's size
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )  # fmt: skip
    source = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = run_cli(["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--act_bitwidth", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["params quantized"] == 1 and "float weights" not in report


@pytest.mark.parametrize("flags", [[], ["--act_bitwidth", "32"]])
def test_a_node_that_reads_nothing_does_not_stop_the_float_weights_count(tmp_path: Path, flags: list[str]) -> None:
    """A Constant with value_float (convert keeps it: it lifts tensor values only) reads no input: the float
    weights count read every node's first input, and quantize stopped with an internal error (IndexError)."""
    rng = np.random.default_rng(4)
    weights = {"W": rng.normal(0, 0.2, (16, 4, 3, 3)), "B": rng.normal(0, 0.1, 16)}
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value_float=2.0), helper.make_node("Mul", ["x", "c"], ["xm"]),
         helper.make_node("Conv", ["xm", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    output = _quantize(tmp_path, model, *flags)
    assert "Constant" in [n.op_type for n in onnx.load(str(output)).graph.node]  # the node that reads nothing


@pytest.mark.parametrize(("target", "named"), [("vitis-dpu", True), ("qnn-htp", False), ("ort-cpu", False)])
def test_power_of_2_blocks_name_the_preset_only_when_it_sets_the_flag(tmp_path: Path, target: str, named: bool) -> None:
    """--weights_block_size with --param_power_of_2 is refused; '(the qnn-htp preset sets --param_power_of_2)'
    blamed any --target for a flag the user gave, where only vitis-dpu's preset sets it."""
    source = save_model(mlp_model(), tmp_path / "m.onnx")
    result = run_cli(["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--target", target, "--param_power_of_2",
                      "--weights_bitwidth", "4", "--weights_block_size", "32", "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 2 and "--weights_block_size with --param_power_of_2" in result.output, result.output
    assert (f"the {target} preset sets --param_power_of_2" in result.output) == named, result.output


def test_an_embedding_table_past_one_slice_exports_its_blocks_dequantized(tmp_path: Path) -> None:
    """A table of more values than quantize's 64K slices (a decoder's [30522, 2048]) is dequantized a slice of
    tokens at a time; read back from the QDQ model its encoding names the block axis, and the slices ran across
    the blocks: export --format stripped (and qoperator, fp16, ranges) was 'qtool: internal error' ('cannot reshape
    array of size 61044 into shape (30522,0,32)'). The stripped table is the blocked DequantizeLinear's values."""
    model = embedding_model(vocab=1024, width=128)
    blocked = _quantize(tmp_path, model, "--act_bitwidth", "32", "--weights_bitwidth", "4", "--weights_block_size", "32",
                        samples=0)  # fmt: skip
    result = run_cli(["export", "-i", blocked, "-o", tmp_path / "x", "--format", "stripped"])
    assert result.exit_code == 0, result.output
    quantized = onnx.load(str(blocked))
    inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    dq = _weight_dq(quantized, "table")
    want = (inits[dq.input[0]].astype(np.float64) * np.repeat(inits[dq.input[1]], 32, axis=1)).astype(np.float32)
    stripped = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "x" / "m.quant.stripped.onnx")).graph.initializer}
    assert np.array_equal(stripped["table"], want)


def test_a_value_halfway_on_the_written_float32_grid_round_trips(tmp_path: Path) -> None:
    """W0's first block [a, s/2, 0, ...]: its min-max scale a/7 rounds up to the float32 s the QDQ model holds, so
    s/2 lies halfway between 0 and 1 on the written grid and just past it on the float64 one. Quantized against
    the float64 scale it was 1, and 0 from the exported encodings (float32 scales): now 0 both times, the same
    bytes (the 2.35 GB decoder's W4 B32 round trip flipped 1 to 3 integers in 12 of its 65 weights)."""
    a = np.float32(1.0)
    while not np.float64(np.float32(np.float64(a) / 7)) > np.float64(a) / 7:
        a = np.nextafter(a, np.float32(2.0))
    scale = np.float32(np.float64(a) / 7)
    model = mlp_model()
    w0 = next(t for t in model.graph.initializer if t.name == "W0")
    values = numpy_helper.to_array(w0).copy()
    values[:32, 0] = 0.0
    values[:2, 0] = a, scale / 2
    w0.CopyFrom(numpy_helper.from_array(values, "W0"))
    flags = ["--weights_bitwidth", "4", "--weights_block_size", "32", "--act_bitwidth", "32",
             "--param_quantizer_calibration", "min-max", "--encodings_format", "1.0.0"]  # fmt: skip
    qdq = _quantize(tmp_path, model, *flags)
    integers = next(numpy_helper.to_array(t) for t in onnx.load(str(qdq)).graph.initializer if t.name.startswith("W0_q"))
    assert integers[:2, 0].tolist() == [7, 0]  # a / s rounds to 7, s/2 / s is a tie: to even
    out = tmp_path / "export"
    assert run_cli(["export", "-i", qdq, "-o", out, "--format", "encodings", "--encodings_format", "1.0.0"]).exit_code == 0
    again = tmp_path / "again.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-o", again, *flags,
                      "--quantization_overrides", out / "m.quant.encodings.json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == qdq.read_bytes()

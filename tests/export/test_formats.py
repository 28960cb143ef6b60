"""Each export format on small generated models: written, then read back or run in onnxruntime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_bn_model, log_spectrum_model, run_cli, save_model, write_samples
from export_models import max_difference, quantize, random_feeds, session
from onnx import TensorProto, helper, numpy_helper

from qtool import api
from qtool import encoding as enc
from qtool.config import ExportOptions
from qtool.errors import UsageError
from qtool.export import EXPORTERS, ExportJob, build
from qtool.export.qdq import wide_types
from qtool.io.encodings import read_encodings
from qtool.quant.plan import QuantPlan
from qtool.quant.qdq import write_qdq
from qtool.quant.qdq_read import read_qdq


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Path, Path]:
    """conv_bn quantized with per-channel weights and 32-bit biases: (float model, QDQ model)."""
    return quantize(tmp_path_factory.mktemp("q"), conv_bn_model(), use_per_channel_quantization=True, bias_bitwidth=32)


def export(qdq: Path, out: Path, *formats: str, encodings_format: str = "legacy") -> dict[str, Path]:
    api.export(ExportOptions(qdq, out, formats, encodings_format))
    return {p.name.removeprefix(qdq.name.removesuffix(".onnx")): p for p in out.iterdir()}


def test_registry_is_keyed_by_the_cli_values() -> None:
    assert set(EXPORTERS) == {"qdq", "qoperator", "encodings", "stripped", "ranges", "fp16", "fixpoint", "matmulnbits"}


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0", "2.0.0"])
def test_encodings_read_back(quantized, tmp_path: Path, fmt: str) -> None:
    files = export(quantized[1], tmp_path, "encodings", encodings_format=fmt)
    _, found = read_qdq(onnx.load(str(quantized[1])))
    back = read_encodings(files[".encodings.json"])
    if fmt == "legacy":  # 0.6.1 recomputes scale/offset from min/max: equal up to float rounding
        assert back.activations.keys() == found.activations.keys() and back.params.keys() == found.params.keys()
        for name, e in found.all().items():
            assert back.all()[name].offset == e.offset
            np.testing.assert_allclose(back.all()[name].scale, e.scale, rtol=1e-6)
    else:
        assert back == found
    assert json.loads(files[".encodings.json"].read_text())["version"] == {"legacy": "0.6.1"}.get(fmt, fmt)


def test_qdq_is_the_same_model_and_deterministic(quantized, tmp_path: Path) -> None:
    first = export(quantized[1], tmp_path / "a", "qdq")[".qdq.onnx"]
    second = export(quantized[1], tmp_path / "b", "qdq")[".qdq.onnx"]
    assert first.read_bytes() == second.read_bytes()
    feeds = random_feeds(onnx.load(str(quantized[0])), 3)
    assert max_difference(session(quantized[1], False), session(first, False), feeds) == 0.0


def test_qdq_with_16_bit_tensors_gets_opset_21(tmp_path: Path) -> None:
    """int16 Q/DQ need opset 21; an older opset is upgraded on export."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.float32(0.001), "s"), numpy_helper.from_array(np.int16(0), "z")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "y")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", io[:1], io[1:], inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert wide_types(model)
    out = onnx.load(str(export(tmp_path / "m.onnx", tmp_path / "out", "qdq")[".qdq.onnx"]))
    assert [o.version for o in out.opset_import if o.domain == ""] == [21]
    result = session(out).run(None, {"x": np.array([1.0, -2.0], np.float32)})[0]
    np.testing.assert_allclose(result, [1.0, -2.0])


def test_stripped_has_no_qdq_and_runs(quantized, tmp_path: Path) -> None:
    path = export(quantized[1], tmp_path, "stripped")[".stripped.onnx"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    assert session(model).run(None, random_feeds(model, 1)[0])[0].shape == (1, 5)


def test_fp16_matches_float_within_half_precision(quantized, tmp_path: Path) -> None:
    files = export(quantized[1], tmp_path, "fp16", "stripped")
    half = onnx.load(str(files[".fp16.onnx"]))
    assert {i.data_type for i in half.graph.initializer} == {TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # same raw files as before
    full, fp16 = session(files[".stripped.onnx"]), session(half)
    for feed in random_feeds(half, 5):
        expected, got = full.run(None, feed)[0], fp16.run(None, feed)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2 * float(np.abs(expected).max()))


def test_ranges_feed_load_stats_and_reproduce_the_model(quantized, tmp_path: Path) -> None:
    files = export(quantized[1], tmp_path, "ranges", "stripped")
    doc = json.loads(files[".ranges.json"].read_text())
    assert doc["format"] == "qtool-calibration-stats/1" and all(
        s["method"] == "min-max" for s in doc["tensors"].values()
    )
    again = tmp_path / "again.onnx"
    flags = ["--use_per_channel_quantization", "--bias_bitwidth", "32"]
    result = run_cli(
        ["quantize", "-i", files[".stripped.onnx"], "--load_stats", files[".ranges.json"], "-o", again, *flags]
    )
    assert result.exit_code == 0, result.output
    _, before = read_qdq(onnx.load(str(quantized[1])))
    _, after = read_qdq(onnx.load(str(again)))
    assert after.activations == before.activations  # the calibration is reproduced exactly
    weights = {n: e for n, e in before.params.items() if e.bitwidth != 32}
    assert weights and {n: after.params[n] for n in weights} == weights
    for name in before.params:  # 32-bit biases: input scale x weight scale, from float32 scales now
        np.testing.assert_allclose(after.params[name].scale, before.params[name].scale, rtol=1e-6)


def test_ranges_of_symmetric_activations_reproduce_them(tmp_path: Path) -> None:
    """A symmetric encoding's range is ±(2^(bw−1) − 1)·scale: the schema maps it back exactly."""
    _, qdq = quantize(tmp_path, conv_bn_model(), act_quantizer_schema="symmetric")
    files = export(qdq, tmp_path / "out", "ranges", "stripped")
    again = tmp_path / "again.onnx"
    args = ["quantize", "-i", files[".stripped.onnx"], "--load_stats", files[".ranges.json"], "-o", again]
    result = run_cli([*args, "--act_quantizer_schema", "symmetric"])
    assert result.exit_code == 0, result.output
    before, after = read_qdq(onnx.load(str(qdq)))[1], read_qdq(onnx.load(str(again)))[1]
    assert before.activations and all(e.is_symmetric for e in before.activations.values())
    assert after.activations == before.activations


def test_ranges_keep_the_convert_grid_of_a_float16_tensor(tmp_path: Path) -> None:
    """A ReLU overridden float16 feeding an 8-bit Conv is quantized for it on a convert grid of its own, whose range
    the ranges file left out with the float tensor: quantize -i stripped --load_stats ranges -q encodings was
    'has no range for tensor 'r'', exit 4; now the same model comes back."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    half (float[1,2,8,8] x) => (float[1,4,8,8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W1)
        r = Relu (c)
        y = Conv <pads = [1, 1, 1, 1]> (r, W2)
    }
    """)
    rng = np.random.default_rng(3)
    for name, shape in (("W1", (4, 2, 3, 3)), ("W2", (4, 4, 3, 3))):
        model.graph.initializer.append(numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name))
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "float"}]}, "param_encodings": {}}))
    _, qdq = quantize(tmp_path, model, quantization_overrides=overrides)
    files = export(qdq, tmp_path / "out", "ranges", "stripped", "encodings")
    again = tmp_path / "again.onnx"
    result = run_cli(["quantize", "-i", files[".stripped.onnx"], "--load_stats", files[".ranges.json"], "-q",
                      files[".encodings.json"], "-o", again])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    before, after = read_qdq(onnx.load(str(qdq)))[1], read_qdq(onnx.load(str(again)))[1]
    assert before.converts["r"][0] == after.converts["r"][0] and not before.converts["r"][0].is_float
    assert max_difference(session(qdq), session(again), random_feeds(model, 4)) == 0


def test_ranges_of_a_foreign_qdq_model(quantized, tmp_path: Path) -> None:
    """A QDQ model from another tool is not marked converted: quantize normalises its stripped
    model before hashing, and the ranges file is keyed to that normalised graph."""
    model = onnx.load(str(quantized[1]))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    files = export(foreign, tmp_path / "out", "ranges", "stripped")
    again = tmp_path / "again.onnx"
    args = ["quantize", "-i", files[".stripped.onnx"], "--load_stats", files[".ranges.json"], "-o", again]
    result = run_cli([*args, "--use_per_channel_quantization", "--bias_bitwidth", "32"])
    assert result.exit_code == 0, result.output
    assert read_qdq(onnx.load(str(again)))[1].activations == read_qdq(model)[1].activations


def test_ranges_refuse_histogram_methods(quantized, tmp_path: Path) -> None:
    files = export(quantized[1], tmp_path, "ranges", "stripped")
    args = ["quantize", "-i", files[".stripped.onnx"], "--load_stats", files[".ranges.json"], "-o", tmp_path / "x.onnx"]
    result = run_cli([*args, "--act_quantizer_calibration", "percentile"])
    assert result.exit_code == 4 and "needs a histogram" in result.stderr


def _pow2_model(tmp_path: Path) -> Path:
    """x -> Conv -> Relu -> y written by write_qdq with power-of-2 encodings (the Vitis case)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.4, (2, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 4, 4]) for n, c in (("x", 3), ("y", 2))]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([0.1, -0.2], np.float32), "B")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", io[:1], io[1:], inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    plan = QuantPlan(
        activations={"x": enc.power_of_2(enc.symmetric(-1, 1, 8)), "y": enc.power_of_2(enc.symmetric(0, 3, 8))},
        params={
            "W": enc.power_of_2(enc.symmetric(w.min(axis=(1, 2, 3)), w.max(axis=(1, 2, 3)), 8, axis=0)),
            "B": enc.power_of_2(enc.symmetric(-0.2, 0.2, 8)),
        },
    )
    path = tmp_path / "pow2.quant.onnx"
    onnx.save(write_qdq(model, plan), str(path))
    return path


def test_fixpoint_on_a_power_of_2_model(tmp_path: Path) -> None:
    path = _pow2_model(tmp_path)
    doc = json.loads(export(path, tmp_path / "out", "fixpoint")[".fixpoint.json"].read_text())
    assert doc["format"] == "qtool-fixpoint/1"
    x, y, w = doc["tensors"]["x"], doc["tensors"]["y"], doc["tensors"]["W"]
    assert x == {"kind": "activation", "bitwidth": 8, "signed": True, "fix_point": 6}  # 1/127 -> 2^-6
    assert y["fix_point"] == -int(math.log2(enc.power_of_2(enc.symmetric(0, 3, 8)).scale[0]))
    assert w["kind"] == "param" and w["axis"] == 0 and len(w["fix_point"]) == 2
    _, found = read_qdq(onnx.load(str(path)))
    for name, entry in doc["tensors"].items():  # x = q * 2^-fix_point
        scales = found.all()[name].scale
        assert np.atleast_1d(entry["fix_point"]).tolist() == [-round(math.log2(s)) for s in scales]


def test_fixpoint_from_the_vitis_preset(tmp_path: Path) -> None:
    source = save_model(conv_bn_model(), tmp_path / "m.onnx")
    calib = write_samples(tmp_path, conv_bn_model(), 4)
    qdq = tmp_path / "m.quant.onnx"
    assert run_cli(["quantize", "-i", source, "-l", calib, "-o", qdq, "--target", "vitis-dpu"]).exit_code == 0
    doc = json.loads(export(qdq, tmp_path / "out", "fixpoint")[".fixpoint.json"].read_text())
    _, found = read_qdq(onnx.load(str(qdq)))
    assert sorted(doc["tensors"]) == sorted(found.all())
    assert all(t["signed"] and t["bitwidth"] == 8 and "zero_point" not in t for t in doc["tensors"].values())


def test_fixpoint_names_the_first_tensor_that_is_not_power_of_2(quantized, tmp_path: Path) -> None:
    _, found = read_qdq(onnx.load(str(quantized[1])))
    first = sorted(found.activations)[0]
    out = tmp_path / "out"
    result = run_cli(["export", "-i", quantized[1], "-o", out, "--format", "stripped", "--format", "fixpoint"])
    assert result.exit_code == 2
    assert f"tensor {first!r} has scale" in result.stderr and "not a power of two" in result.stderr
    assert "carried from convert --quantization_overrides" in result.stderr  # --target vitis-dpu keeps an override's
    assert not out.exists()  # nothing is written when one format fails


def test_cli_formats_and_errors(quantized, tmp_path: Path) -> None:
    result = run_cli(["export", "-i", quantized[1], "-o", tmp_path / "o", "--format", "qoprator"])
    assert result.exit_code == 2 and "did you mean 'qoperator'" in result.stderr
    result = run_cli(["export", "-i", quantized[1], "-o", tmp_path / "o", "--encodings_format", "3.0.0"])
    assert result.exit_code == 2
    defaults = run_cli(["export", "-i", quantized[1], "-o", tmp_path / "d", "--json"])
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "model.quant.encodings.json",
        "model.quant.stripped.onnx",
    ]
    assert json.loads(defaults.stdout)["encodings"] > 0


def test_api_rejects_unknown_formats(quantized) -> None:
    _, found = read_qdq(onnx.load(str(quantized[1])))
    job = ExportJob(onnx.load(str(quantized[1])), found, "m", ExportOptions(quantized[1], Path("unused")))
    with pytest.raises(UsageError, match=r"unknown export format 'fp61'.*'fp16'"):
        build(job, ("fp61",))


def test_float_tensors_of_a_mixed_model_come_back_as_float_encodings(tmp_path: Path) -> None:
    """quantize writes a float16 tensor as Cast(float16) -> Cast(float), a float16 weight as a float16
    initializer behind a Cast, and a float32 one as nothing at all; export's encodings dropped all three (qairt
    would then quantize them at 8 bits), and the stripped model kept the Casts."""
    from qtool.quant.qdq_read import read_qdq

    overrides = tmp_path / "fp16.json"
    overrides.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "float"}],
                                                             "x": [{"bitwidth": 32, "dtype": "float"}]},
                                     "param_encodings": {"FW": [{"bitwidth": 16, "dtype": "float"}]}}))  # fmt: skip
    _, path = quantize(tmp_path, conv_bn_model(), quantization_overrides=overrides)
    written = json.loads(path.with_suffix(".encodings.json").read_text())
    qdq = onnx.load(str(path))
    assert any(n.op_type == "Cast" for n in qdq.graph.node)
    stripped, found = read_qdq(qdq)
    assert not any(n.op_type == "Cast" for n in stripped.graph.node)
    for name, kind, bits in (("r", found.activations, 16), ("FW", found.params, 16), ("x", found.activations, 32)):
        assert kind[name].is_float and kind[name].bitwidth == bits  # a float32 tensor has no Q/DQ: the metadata says
    floats = {k for part in ("activation_encodings", "param_encodings") for k, v in written[part].items()
              if v[0].get("dtype") == "float"}  # fmt: skip
    assert floats and floats <= set(found.activations) | set(found.params)
    feeds = random_feeds(qdq, 4)
    assert max_difference(session(qdq, optimized=False), session(stripped), feeds) < 0.05


def _same_encodings(a, b) -> None:
    assert a.activations.keys() == b.activations.keys() and a.params.keys() == b.params.keys()
    for name, e in a.all().items():
        other = b.all()[name]
        assert (e.is_float, e.bitwidth, e.offset, e.axis) == (other.is_float, other.bitwidth, other.offset, other.axis), name
        np.testing.assert_allclose(e.scale, other.scale, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "case",
    ["w8a8", "per-channel-a16", "masked-softmax", "fp16-overrides"],
)
def test_export_writes_the_encodings_quantize_wrote(tmp_path: Path, case: str) -> None:
    """What a deployment takes from `export --format encodings` is what quantize planned, entry for entry
    (9350fa7: the tensors kept float went missing, which qairt then quantizes at 8 bits)."""
    model, flags = conv_bn_model(), {}
    if case == "per-channel-a16":
        flags = {"use_per_channel_quantization": True, "bias_bitwidth": 32, "act_bitwidth": 16}
    elif case == "masked-softmax":  # the -1e9 causal mask's sum stays float
        model = onnx.parser.parse_model("""
            <ir_version: 8, opset_import: ["" : 13]>
            masked (float[1,8,4] x) => (float[1,8,8] y) {
                xt = Transpose <perm = [0, 2, 1]> (x)
                s = MatMul (x, xt)
                m = Add (s, mask)
                y = Softmax (m)
            }""")  # fmt: skip
        mask = np.where(np.triu(np.ones((8, 8)), 1) > 0, -1e9, 0.0)[None].astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(mask, "mask"))
    elif case == "fp16-overrides":
        overrides = tmp_path / "fp16.json"
        overrides.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "float"}],
                                                                 "x": [{"bitwidth": 32, "dtype": "float"}]},
                                         "param_encodings": {}}))  # fmt: skip
        flags = {"quantization_overrides": overrides}
    _, path = quantize(tmp_path, model, **flags)
    files = export(path, tmp_path / "out", "encodings")
    _same_encodings(read_encodings(files[".encodings.json"]), read_encodings(path.with_suffix(".encodings.json")))


def test_a_written_model_has_no_node_nothing_reads(tmp_path: Path) -> None:
    """r is float16 and Flatten passes that on to f, but the Gemm reads f converted to 8 bits: f's own float16
    Cast pair was written with no reader (SLANet's mixed model carried 36 such nodes)."""
    overrides = tmp_path / "fp16.json"
    overrides.write_text(json.dumps({"activation_encodings": {"r": [{"bitwidth": 16, "dtype": "float"}]},
                                     "param_encodings": {}}))  # fmt: skip
    _, path = quantize(tmp_path, conv_bn_model(), quantization_overrides=overrides)
    model = onnx.load(str(path))
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert [n.op_type for n in model.graph.node if not any(o in read for o in n.output)] == []
    assert all(i.name in read for i in model.graph.initializer)
    assert "Cast" in {n.op_type for n in model.graph.node}  # r's own float16 pair is read, and stays


def test_a_float16_value_that_another_op_reads_is_computation_not_a_simulation() -> None:
    """Another tool's QDQ model may compute in float16 (a Cast whose float16 value an op reads too, a float16
    weight two Casts read): reading it back keeps those Casts; only qtool's one-reader pairs become encodings."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float16), "w16")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Cast", ["xd"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Abs", ["h"], ["ha"]),
        helper.make_node("Cast", ["w16"], ["wa"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w16"], ["wb"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["hf", "wa"], ["y1"]),
        helper.make_node("MatMul", ["hf", "wb"], ["y2"]),
    ]
    inits = [w, numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [info("x", TensorProto.FLOAT, [1, 4])],
                              [info(n, TensorProto.FLOAT, [1, 4]) for n in ("y1", "y2")] + [info("ha", TensorProto.FLOAT16, [1, 4])],
                              inits)  # fmt: skip
    stripped, found = read_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert set(found.activations) == {"x"} and found.params == {}
    assert [n.op_type for n in stripped.graph.node].count("Cast") == 4


@pytest.mark.parametrize("key", ["qtool.float_tensors", "qtool.narrow_bitwidths", "qtool.lpbq"])
def test_qtool_metadata_a_file_garbles_is_ignored_with_a_warning(quantized, key: str, caplog) -> None:
    """The marks are a file's text like any other: a malformed one is named and skipped, never a traceback."""
    model = onnx.load(str(quantized[1]))
    model.metadata_props.add(key=key, value='{"x": [1')
    with caplog.at_level("WARNING", logger="qtool"):
        _, found = read_qdq(model)
    assert found.activations and f"model metadata {key!r} is not a JSON object" in caplog.text


def _wide_residual_model() -> onnx.ModelProto:
    """x [1, 4, 8] -> MatMul (weights ~300) -> Add x: a residual stream of ~1e5, past float16's 65504, as flan-t5's
    reaches 2.5e5 -> RMSNorm op by op (Pow 2, ReduceMean, Add eps, Sqrt, Div) -> Mul by a weight -> Add a -1e9
    additive mask -> Softmax: every op float16 gave inf or NaN (0 / inf, inf - inf)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 8)) * 3e4).astype(np.float32), "W"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "g"),
        numpy_helper.from_array(np.where(np.arange(8) < 6, 0.0, -1e9).astype(np.float32), "mask"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "x"], ["r"]),
        helper.make_node("Pow", ["r", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1]),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Div", ["r", "rms"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_fp16_keeps_values_past_float16s_range_in_float32(tmp_path: Path, caplog) -> None:
    """export --format fp16 of a model whose residual stream passes 65504 wrote all-NaN outputs, exit 0 (flan-t5's
    encoder); now the values the encodings (or their inputs' bounds) put past half of float16's range, and the
    ops that write or read them, stay float32, and export says so."""
    _, qdq = quantize(tmp_path, _wide_residual_model(), use_per_channel_quantization=True, bias_bitwidth=32)
    files = export(qdq, tmp_path / "out", "fp16", "stripped")
    assert "values exceed float16's range" in caplog.text
    full, half = session(files[".stripped.onnx"]), session(files[".fp16.onnx"])
    for feed in random_feeds(_wide_residual_model(), 4):
        expected, got = full.run(None, feed)[0], half.run(None, feed)[0]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, atol=2e-3)
    types = {i.name: i.data_type for i in onnx.load(str(files[".fp16.onnx"])).graph.initializer}
    # W (up to ~1e5) and the mask stay float32; the RMSNorm's gain, read where values are back in range, is float16
    assert (types["W"], types["mask"], types["g"]) == (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT16)


def test_fp16_saturates_a_log_of_a_quantized_epsilon_as_the_qdq_model_does(tmp_path: Path) -> None:
    """basic-pitch's log spectrum, Log(x * x + 1e-10) normalised by its min and max: W8A8 puts 1e-10 on an 8-bit
    [0, 1e-4] grid, where it is 0, and in float16 x * x of a near-silent bin is 0 too, so the fp16 export computed
    Log(0) = -inf and (-inf) - (-inf) = NaN (2 of basic-pitch's 45 validation clips), exit 0. The QDQ model
    saturates the -inf on the Log's grid; now the fp16 model clips the Log to that grid as well."""
    model = log_spectrum_model(16)
    _, qdq = quantize(tmp_path, model, use_per_channel_quantization=True, bias_bitwidth=32)
    files = export(qdq, tmp_path / "out", "fp16", "stripped")
    stripped = onnx.load(str(files[".stripped.onnx"]))
    assert numpy_helper.to_array(next(i for i in stripped.graph.initializer if i.name == "eps")) == 0
    x = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    x[:4] = [0.0, 1e-5, -2e-5, 1e-4]  # x * x below float16's smallest
    feed = {"x": x[None]}
    expected, got = session(qdq, optimized=False).run(None, feed)[0], session(files[".fp16.onnx"]).run(None, feed)[0]
    assert np.isfinite(got).all(), got
    assert np.abs(got - expected).max() < 0.05, (got, expected)


def test_fp16_copies_the_stripped_model_only_to_clip_it(quantized) -> None:
    """68aad6e's Clips after a Log or a division copied the whole stripped model, its float weights, for every fp16
    export: a QDQ model of 200 MB float weights without a Log or Div peaked at 0.79 GB, 0.62 without the copy."""
    from qtool.export.fp16 import _saturated

    _, found = read_qdq(onnx.load(str(quantized[1])))
    job = ExportJob(onnx.load(str(quantized[1])), found, "m", ExportOptions(quantized[1], Path("unused")))
    assert _saturated(job) is job.stripped


def _branching_log(eps_in_body: bool, loop: bool) -> onnx.ModelProto:
    """x [1, 8] -> Relu -> an If on its sum (or a 2-step Loop) whose body takes Log(r * r + 1e-10) (+ k, an outer
    Relu it reads, in the Loop) -> + 30. The epsilon is the body's own Constant or the main graph's, read from it."""
    n, f = helper.make_node, TensorProto.FLOAT
    eps = numpy_helper.from_array(np.array(1e-10, np.float32), "eps")
    own = [n("Constant", [], ["eps_b"], value=numpy_helper.from_array(np.array(1e-10, np.float32)))] if eps_in_body else []
    step = [*own, n("Mul", ["v", "v"], ["sq"]), n("Add", ["sq", "eps_b" if eps_in_body else "eps"], ["p"]),
            n("Log", ["p"], ["l"])]  # fmt: skip
    if loop:
        body = helper.make_graph([*step, n("Add", ["l", "k"], ["v2"]), n("Identity", ["c"], ["c2"])], "body",
                                 [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                  helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("v", f, [1, 8])],
                                 [helper.make_tensor_value_info("c2", TensorProto.BOOL, []), helper.make_tensor_value_info("v2", f, [1, 8])])  # fmt: skip
        flow = [n("Loop", ["two", "", "r"], ["b"], body=body)]
    else:
        then = helper.make_graph([n("Identity", ["r"], ["v"]), *step], "then", [], [helper.make_tensor_value_info("l", f, [1, 8])])
        other = helper.make_graph([n("Identity", ["r"], ["e"])], "else", [], [helper.make_tensor_value_info("e", f, [1, 8])])
        flow = [n("ReduceSum", ["r"], ["s"], keepdims=0), n("Greater", ["s", "zero"], ["c"]),
                n("If", ["c"], ["b"], then_branch=then, else_branch=other)]  # fmt: skip
    nodes = [n("Relu", ["x"], ["r"]), n("Relu", ["r"], ["k"]), *flow, n("Add", ["b", "thirty"], ["y"])]
    inits = [eps, numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(30.0, np.float32), "thirty"),
             numpy_helper.from_array(np.array(2, np.int64), "two")]  # fmt: skip
    graph = helper.make_graph(nodes, "branch", [helper.make_tensor_value_info("x", f, [1, 8])],
                              [helper.make_tensor_value_info("y", f, [1, 8])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("eps_in_body", "loop"), [(True, False), (False, False), (True, True)],
                         ids=["if-own-eps", "if-outer-eps", "loop-own-eps"])  # fmt: skip
def test_fp16_runs_a_body_float16_cannot_hold_in_float32(tmp_path: Path, caplog, eps_in_body: bool, loop: bool) -> None:
    """qtool quantizes no If, Loop or Scan body, and the fp16 export's float32 islands and Clips (above) are the main
    graph's: a branch's Log(x * x + 1e-10) took its epsilon as float16's 0, so where x was 0 the fp16 model gave -inf
    where the float and QDQ models gave 7.0 (exit 0), with the epsilon its body's own or, said to 'stay float32',
    the main graph's. Now such a body runs in float32, its outer float16 reads through float32 copies."""
    model = _branching_log(eps_in_body, loop)
    _, qdq = quantize(tmp_path, model)
    files = export(qdq, tmp_path / "out", "fp16", "stripped")
    assert "1 If, Loop or Scan bodies hold or read values float16 cannot" in caplog.text
    x = np.linspace(-1.0, 1.0, 8, dtype=np.float32)
    x[:3] = 0.0  # Log(1e-10) = -23.0 in float32
    expected, got = (session(files[f]).run(None, {"x": x[None]})[0] for f in (".stripped.onnx", ".fp16.onnx"))
    assert np.isfinite(got).all(), got
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_fp16_bounds_a_float_weight_without_float64_copies() -> None:
    """fp16 keeps float32 a weight past float16's range; it took each weight's largest magnitude of a float64 copy
    and its abs, 16 bytes a value: a 2.35 GB decoder's token table held 1 GB for one number (export --format fp16
    peaked at 2.4x the model). The bound is exact on the float32 values themselves."""
    import tracemalloc

    from qtool.export.fp16 import _wide_values

    w = np.ones((512, 512), np.float32)
    w[3, 4] = -7e4
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [numpy_helper.from_array(w, "w")])  # fmt: skip
    model = helper.make_model(graph)
    tracemalloc.start()
    try:
        wide = _wide_values(model, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wide == {"w": 7e4}
    assert peak < 2 * w.nbytes  # the weight read from its bytes once; no float64 copies (5 MB)

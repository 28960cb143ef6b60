"""Every export format on the bundled sample, as `make demo` quantizes it (samples/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLES, SATURATING_CPU, integer_kernels_saturate, run_cli
from export_models import session

from qtool.quant.qdq_read import read_qdq

FORMATS = ["qdq", "qoperator", "encodings", "stripped", "ranges", "fp16"]
DEMO_FLAGS = ["--use_per_channel_quantization", "--bias_bitwidth", "32"]  # as `make demo`


def ok(args: list) -> None:
    result = run_cli(args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sample")
    conv, quant = out / "digits_cnn.conv.onnx", out / "digits_cnn.quant.onnx"
    ok(["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", conv, "-q", SAMPLES / "overrides.json"])
    ok(["quantize", "-i", conv, "--input_list", SAMPLES / "input_list.txt", "-o", quant, *DEMO_FLAGS])
    ok(["export", "-i", quant, "-o", out / "export", *(a for f in FORMATS for a in ("--format", f))])
    files = {p.name.removeprefix("digits_cnn.quant"): p for p in (out / "export").iterdir()}
    return {"dir": out, "conv": conv, "quant": quant, **files}


def _val() -> list[dict[str, np.ndarray]]:
    raws = sorted((SAMPLES / "val").glob("val_*.raw"))
    return [{"image": np.fromfile(p, dtype="<f4").reshape(1, 1, 8, 8)} for p in raws]


def test_every_format_is_written(sample) -> None:
    suffixes = {".qdq.onnx", ".qoperator.onnx", ".encodings.json", ".stripped.onnx", ".ranges.json", ".fp16.onnx"}
    assert suffixes <= set(sample)


def test_qoperator_runs_integer_ops_and_matches_qdq_within_one_step(sample) -> None:
    if integer_kernels_saturate():
        pytest.skip(SATURATING_CPU)
    qop = onnx.load(str(sample[".qoperator.onnx"]))
    ops = {n.op_type for n in qop.graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool", "QGemm", "MaxPool"} <= ops
    assert not ops & {"Conv", "Gemm", "Add", "Relu", "Concat", "GlobalAveragePool"}
    _, found = read_qdq(onnx.load(str(sample["quant"])))
    step = found.activations["logits"].scale[0]
    reference, integer = session(sample["quant"], optimized=False), session(qop)
    worst = max(float(np.abs(reference.run(None, f)[0] - integer.run(None, f)[0]).max()) for f in _val())
    assert worst <= step * (1 + 1e-5), f"{worst} > one step {step}"


def test_fp16_agrees_with_the_float_model(sample) -> None:
    full, half = session(sample[".stripped.onnx"]), session(sample[".fp16.onnx"])
    feeds = _val()[:50]
    agree = sum(int(np.argmax(full.run(None, f)[0]) == np.argmax(half.run(None, f)[0])) for f in feeds)
    assert agree == len(feeds)


def test_ranges_replace_calibration(sample) -> None:
    again = sample["dir"] / "again.quant.onnx"
    ok(["quantize", "-i", sample[".stripped.onnx"], "--load_stats", sample[".ranges.json"], "-o", again, *DEMO_FLAGS])
    _, before = read_qdq(onnx.load(str(sample["quant"])))
    _, after = read_qdq(onnx.load(str(again)))
    assert after.activations == before.activations


def test_rerun_is_byte_identical(sample, tmp_path: Path) -> None:
    ok(["export", "-i", sample["quant"], "-o", tmp_path, *(a for f in FORMATS for a in ("--format", f))])
    for path in tmp_path.iterdir():
        assert path.read_bytes() == sample[path.name.removeprefix("digits_cnn.quant")].read_bytes(), path.name

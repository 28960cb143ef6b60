"""actsearch: activation ranges chosen by the model's output error (quant/algorithms/actsearch.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper


def _model(spiky_channel_weight: float) -> onnx.ModelProto:
    """x[1,64] -> MatMul -> Relu -> MatMul -> y, where x's channel 0 reaches only r's channel 0, which reaches y
    with weight `spiky_channel_weight`."""
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        spiky (float[1,64] x) => (float[1,8] y) {
            h = MatMul (x, w1)
            r = Relu (h)
            y = MatMul (r, w2)
        }
        """)
    w1 = rng.normal(0, 0.2, (64, 64))
    w1[0, :], w1[:, 0], w1[0, 0] = 0.0, 0.0, 1.0
    w2 = rng.normal(0, 0.2, (64, 8))
    w2[0, :] = spiky_channel_weight
    model.graph.initializer.extend(numpy_helper.from_array(a.astype(np.float32), n) for n, a in {"w1": w1, "w2": w2}.items())
    return model


def _samples(folder: Path, seed: int) -> Path:
    """32 samples of N(0, 1) whose channel 0 holds a spike of 300 in every eighth sample, else 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(32):
        x = rng.normal(0, 1, (1, 64)).astype(np.float32)
        x[0, 0] = 300.0 if i % 8 == 0 else 0.0
        path = folder / f"{i}.raw"
        x.tofile(path)
        lines.append(str(path))
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


@pytest.fixture
def files(tmp_path: Path):
    return _samples(tmp_path / "cal", 1), _samples(tmp_path / "val", 2)


def _quantize(tmp_path: Path, model: onnx.ModelProto, files, *extra: str) -> tuple[dict, dict]:
    calibration, held_out = files
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = tmp_path / f"q{len(extra)}.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", calibration, "--eval_list", held_out,
                      "-o", out, "--json", *extra])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), json.loads(out.with_suffix(".encodings.json").read_text())


def _calibration_sqnr(report: dict) -> tuple[float, float]:
    found = re.search(r"calibration samples (-?[\d.]+) -> (-?[\d.]+) dB", report["algorithms"])
    assert found, report["algorithms"]
    return float(found[1]), float(found[2])


def test_a_spike_the_next_layer_ignores_is_clipped_by_what_the_output_feels(tmp_path: Path, files) -> None:
    """No local criterion clips x's spikes (4 values of 300 against 2044 within ±3.5: clipping them is most of the
    tensor's own error), but y hardly reads them: the output says clip, and the held-out SQNR gains ~15 dB."""
    plain, _ = _quantize(tmp_path, _model(0.001), files)
    searched, encodings = _quantize(tmp_path, _model(0.001), files, "--apply_algorithms", "actsearch")
    before, after = _calibration_sqnr(searched)
    assert after > before + 10
    held_out = [r["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, searched)]
    assert held_out[1] > held_out[0] + 10, held_out
    assert encodings["activation_encodings"]["x"][0]["max"] < 30  # the spikes are clipped
    assert encodings["activation_encodings"]["y"][0]["max"] > 0  # a model output keeps its whole range


def test_it_never_leaves_the_calibration_set_worse_and_keeps_overrides(tmp_path: Path, files) -> None:
    """When y reads the spikes in full (weight 1), clipping them ruins y: no change is kept, and the encodings
    are those of plain calibration. A tensor the user gave an encoding keeps it."""
    _, plain = _quantize(tmp_path, _model(1.0), files)
    searched, encodings = _quantize(tmp_path, _model(1.0), files, "--apply_algorithms", "actsearch")
    before, after = _calibration_sqnr(searched)
    assert after >= before
    if after == before:
        assert encodings == plain
    given = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -4.0, "max": 4.0}
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"activation_encodings": {"x": [given]}, "param_encodings": {}}))
    _, encodings = _quantize(tmp_path, _model(0.001), files, "--apply_algorithms", "actsearch",
                             "--quantization_overrides", overrides)  # fmt: skip
    x = encodings["activation_encodings"]["x"][0]
    assert abs(x["min"] + 4.0) < 0.05 and abs(x["max"] - 4.0) < 0.05


def test_every_tensor_clipped_at_once_is_the_start_when_it_gains(tmp_path: Path) -> None:
    """Heavy-tailed (Laplace) activations everywhere: every tensor's sqnr (or mse) range at once gains on the
    calibration samples, so the search starts from those ranges, and the held-out samples gain too."""
    rng = np.random.default_rng(3)
    files = []
    for name in ("cal", "val"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(32):
            rng.laplace(0, 1, (1, 64)).astype(np.float32).tofile(folder / f"{i}.raw")
        (folder / "list.txt").write_text("\n".join(str(folder / f"{i}.raw") for i in range(32)) + "\n")
        files.append(folder / "list.txt")
    plain, plain_encodings = _quantize(tmp_path, _model(0.2), files)
    searched, encodings = _quantize(tmp_path, _model(0.2), files, "--apply_algorithms", "actsearch")
    assert re.search(r"every range by (sqnr|mse) first", searched["algorithms"]), searched["algorithms"]
    before, after = _calibration_sqnr(searched)
    assert after > before
    held_out = [r["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, searched)]
    assert held_out[1] > held_out[0], held_out
    span = [e["activation_encodings"]["x"][0]["max"] for e in (plain_encodings, encodings)]
    assert span[1] < span[0]  # the input's tail is clipped


@pytest.mark.parametrize("setting", ["max_trials: 0", "max_trials: abc", "trial_samples: -3", "num_batches: 1.5"])
def test_a_bad_setting_is_one_line_and_writes_nothing(tmp_path: Path, files, setting: str) -> None:
    calibration, _ = files
    onnx.save(_model(0.001), str(tmp_path / "m.onnx"))
    (tmp_path / "c.yaml").write_text(f"actsearch:\n  {setting}\n")
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", calibration, "-o", out,
                      "--apply_algorithms", "actsearch", "--config", tmp_path / "c.yaml"])  # fmt: skip
    assert result.exit_code == 2 and "must be a positive integer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()

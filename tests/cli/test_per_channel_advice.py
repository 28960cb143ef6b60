"""Per-tensor weights that per-channel ones beat on auto's held-out halves are named in the report, and nothing else
changes (api/per_channel_advice.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qnn_models import qtool

from qtool.api.per_channel_advice import advice

LINE = "weights per tensor (qairt's default): --use_per_row_quantization gains on the held-out halves of the list"


def _uneven_gemm(tmp_path: Path, spread: float) -> tuple[Path, Path]:
    """Gemm(32 -> 8) whose output features' weights span 10**spread; 32 samples of +-1 inputs."""
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(8, 32)) * np.logspace(-spread, 0, 8)[:, None]).astype(np.float32)
    b = (rng.normal(size=8) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "uneven",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    for k in range(32):
        rng.choice([-1.0, 1.0], (1, 32)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f's{k}.raw'}\n" for k in range(32)))
    return tmp_path / "m.onnx", tmp_path / "list.txt"


def _algorithms(model: Path, listing: Path, out: Path, *flags: str) -> str:
    code, report, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--json",
                              "--apply_algorithms", "none", *flags)  # fmt: skip
    assert code == 0, err
    return json.loads(report).get("algorithms", "")


def test_per_row_weights_that_gain_on_the_halves_are_named_and_not_applied(tmp_path: Path) -> None:
    model, listing = _uneven_gemm(tmp_path, 2.0)  # per tensor, the small features' weights get a few levels
    note = _algorithms(model, listing, tmp_path / "q.onnx")
    assert LINE in note, note
    assert "median sample +" in note[note.index(LINE):]
    encodings = json.loads((tmp_path / "q.encodings.json").read_text())
    assert len(encodings["param_encodings"]["w"]) == 1  # still per tensor: the line advises, the run keeps qairt's default


@pytest.mark.parametrize(("spread", "flags"), [(0.0, ()), (2.0, ("--use_per_row_quantization",))])
def test_no_line_where_per_row_weights_gain_nothing_or_are_asked_for(tmp_path: Path, spread: float, flags: tuple) -> None:
    model, listing = _uneven_gemm(tmp_path, spread)
    note = _algorithms(model, listing, tmp_path / "q.onnx", *flags)
    assert "calibration auto:" in note and "weights per tensor" not in note, note


def test_the_line_names_an_output_that_lost_in_a_fold_and_needs_the_margin_pooled_and_on_the_median_sample() -> None:
    # pyfrspell's lemmatiser's folds: its worst output gained, code_logits lost 0.5 dB in the first fold
    plain = ([29.0, 30.0, 29.5, 30.5], [29.8, 29.6], [{"tok": 29.8, "code": 37.9}, {"tok": 30.2, "code": 29.6}])
    wider = ([33.0, 33.5, 30.0, 31.5], [34.3, 29.6], [{"tok": 34.3, "code": 37.3}, {"tok": 36.6, "code": 29.6}])
    line = advice("min-max", ["use_per_row_quantization"], plain, wider)
    assert line.startswith(LINE) and "29.7 -> 31.9 dB (29.8 -> 34.3 | 29.6 -> 29.6); median sample +2.2 dB" in line
    assert line.endswith("; output 'code' lost more than 0.3 dB in a fold)")
    flat = ([29.0, 30.0, 29.5, 30.5], [34.3, 29.6], wider[2])  # pooled gains, the median sample does not
    assert advice("min-max", ["use_per_row_quantization"], plain, flat) == ""

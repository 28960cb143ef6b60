"""The default activation range method: auto where an --input_list can hold samples out of calibration, else
min-max; a --load_stats replay reads the method the saving run used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from qnn_models import qtool as run
from qnn_models import three_conv_model, write_case


def _quantize(model: Path, out: Path, *flags: object) -> dict:
    code, report, err = run("quantize", "-i", model, "-o", out, "--json", *flags)
    assert code == 0, err
    return json.loads(report)


def _untried(report: dict) -> bool:
    """Whether no method was tried, nor any algorithm run: the default's bc only says why it was not tried."""
    return report["algorithms"].startswith("bc auto: not tried (calibration min-max (the default, not auto: ")


def test_the_default_scores_the_methods_and_writes_what_naming_its_choice_writes(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    report = _quantize(model, tmp_path / "default.onnx", "--input_list", listing)
    note = report["algorithms"]
    assert note.startswith("calibration auto: ") and "held-out halves" in note, note
    chosen = note.split("calibration auto: ")[1].split(" ")[0]
    _quantize(model, tmp_path / "named.onnx", "--input_list", listing, "--act_quantizer_calibration", chosen)
    assert (tmp_path / "default.onnx").read_bytes() == (tmp_path / "named.onnx").read_bytes()


def test_a_choice_whose_lead_rests_on_one_half_of_the_list_says_so(tmp_path: Path) -> None:
    """A list in source order whose halves differ: Laplace inputs of scale 1, then of scale 1.5 with one value at
    60. Calibrated on the second half, min-max spreads its grid to 60 and sqnr wins the first half by 8 dB;
    calibrated on the first, sqnr clips the tails the second half reaches and loses there. Both folds show, and
    the line says the lead rests on one half (sqnr is the right choice here: 33.4 dB against 24.1 on new samples
    drawn alike)."""
    width = 16384  # past a histogram's sample of 4096 values a batch: the lone 60 is in the range, not the counts
    x, y = (oh.make_tensor_value_info(n, TensorProto.FLOAT, [1, width]) for n in "xy")
    nodes = [oh.make_node("Mul", ["x", "k"], ["m"]), oh.make_node("Tanh", ["m"], ["y"])]
    graph = oh.make_graph(nodes, "g", [x], [y], [nh.from_array(np.array(0.1, np.float32), "k")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    for k in range(8):
        values = rng.laplace(scale=1.5 if k >= 4 else 1.0, size=width).astype(np.float32)
        values[7] = 60.0 if k == 5 else values[7]
        values.tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"s{k}.raw\n" for k in range(8)))
    note = _quantize(tmp_path / "model.onnx", tmp_path / "q.onnx", "--input_list", tmp_path / "list.txt")["algorithms"]
    assert note.startswith("calibration auto: sqnr ("), note
    folds = {m: [float(v) for v in re.search(rf"{m} [\d.]+ \(([\d.]+) \| ([\d.]+)\)", note).groups()]  # type: ignore[union-attr]
             for m in ("min-max", "sqnr")}  # fmt: skip
    assert folds["sqnr"][0] < folds["min-max"][0] and folds["sqnr"][1] > folds["min-max"][1] + 3, note
    assert f"it lost to min-max on one half ({folds['sqnr'][0]:.1f} against {folds['min-max'][0]:.1f} dB)" in note


def test_too_few_samples_to_hold_out_calibrate_min_max_without_trials(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=3)
    report = _quantize(model, tmp_path / "default.onnx", "--input_list", listing)
    assert _untried(report) and "algorithm seconds" not in report
    assert report["calibration"] == "min-max (the default, not auto: fewer than 4 samples: none to hold out)"
    _quantize(model, tmp_path / "named.onnx", "--input_list", listing, "--act_quantizer_calibration", "min-max")
    assert (tmp_path / "default.onnx").read_bytes() == (tmp_path / "named.onnx").read_bytes()


def test_a_stats_replay_naming_no_method_reads_the_one_that_saved_them(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=6)
    _quantize(model, tmp_path / "a.onnx", "--input_list", listing, "--act_quantizer_calibration", "sqnr",
              "--save_stats", tmp_path / "s.json")  # fmt: skip
    assert json.loads((tmp_path / "s.json").read_text())["calibration"] == "sqnr"
    _quantize(model, tmp_path / "b.onnx", "--load_stats", tmp_path / "s.json")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    _quantize(model, tmp_path / "c.onnx", "--load_stats", tmp_path / "s.json", "--act_quantizer_calibration", "min-max")
    assert (tmp_path / "c.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes()


def test_shards_saved_by_different_methods_are_refused_unless_one_is_named(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=6)
    for name, method in (("s1", "sqnr"), ("s2", "mse")):
        _quantize(model, tmp_path / f"{name}.onnx", "--input_list", listing, "--act_quantizer_calibration", method,
                  "--save_stats", tmp_path / f"{name}.json")  # fmt: skip
    code, _, err = run("quantize", "-i", model, "-o", tmp_path / "m.onnx", "--load_stats", tmp_path / "s1.json",
                       "--load_stats", tmp_path / "s2.json")  # fmt: skip
    assert code == 2 and "calibrated by different methods" in err and "s1.json: sqnr" in err and "s2.json: mse" in err, err
    assert len(err.strip().splitlines()) <= 2 and not (tmp_path / "m.onnx").exists()
    _quantize(model, tmp_path / "m.onnx", "--load_stats", tmp_path / "s1.json", "--load_stats", tmp_path / "s2.json",
              "--act_quantizer_calibration", "mse")  # fmt: skip


def test_a_recorded_method_that_is_no_method_is_refused_naming_the_file(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=4)
    _quantize(model, tmp_path / "a.onnx", "--input_list", listing, "--save_stats", tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    for bad in (["sqnr"], "auto", None):
        doc["calibration"] = bad
        (tmp_path / "s.json").write_text(json.dumps(doc))
        code, _, err = run("quantize", "-i", model, "-o", tmp_path / "b.onnx", "--load_stats", tmp_path / "s.json")
        assert code != 0 and "s.json" in err and "'calibration' must be one of" in err and "Traceback" not in err, err


def test_mixed_precision_keeps_min_max_ranges_unless_told(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    flags = ["--input_list", listing, "--mixed_precision", "auto", "--target_sqnr", "20"]
    report = _quantize(model, tmp_path / "default.onnx", *flags)
    assert "calibration auto" not in report.get("algorithms", "") and "--mixed_precision" in report["calibration"]
    _quantize(model, tmp_path / "named.onnx", *flags, "--act_quantizer_calibration", "min-max")
    assert (tmp_path / "default.onnx").read_bytes() == (tmp_path / "named.onnx").read_bytes()


def test_a_model_past_the_size_bound_defaults_to_min_max(tmp_path: Path, monkeypatch) -> None:
    """Past protobuf's 2 GiB a run is sized to hold one layer at a time: six more passes are not a default."""
    import importlib

    monkeypatch.setattr(importlib.import_module("qtool.api.quantize"), "AUTO_MAX_BYTES", 100)
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    assert _untried(_quantize(model, tmp_path / "big.onnx", "--input_list", listing))
    assert "past 2 GiB" in _quantize(model, tmp_path / "big.onnx", "--input_list", listing)["calibration"]
    report = _quantize(model, tmp_path / "named.onnx", "--input_list", listing, "--act_quantizer_calibration", "auto")
    assert report["algorithms"].startswith("calibration auto: ") and "calibration" not in report


def test_a_percentile_replay_reads_the_percentile_that_saved_them(tmp_path: Path) -> None:
    """A file saved at --percentile_calibration_value 95 was read back at 99.99 (another model, exit 0), and
    --percentile_calibration_value 95 alone was refused ('only allowed with percentile calibration')."""
    model, listing = write_case(tmp_path, three_conv_model(), samples=6)
    for name, value in (("s", "95"), ("t", "99.9")):
        _quantize(model, tmp_path / f"{name}.onnx", "--input_list", listing, "--act_quantizer_calibration", "percentile",
                  "--percentile_calibration_value", value, "--save_stats", tmp_path / f"{name}.json")  # fmt: skip
    _quantize(model, tmp_path / "b.onnx", "--load_stats", tmp_path / "s.json")
    assert (tmp_path / "s.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    code, _, err = run("quantize", "-i", model, "-o", tmp_path / "m.onnx", "--load_stats", tmp_path / "s.json",
                       "--load_stats", tmp_path / "t.json")  # fmt: skip
    assert code == 2 and "s.json: percentile 95, " in err and "t.json: percentile 99.9)" in err, err
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["percentile"] = 101
    (tmp_path / "s.json").write_text(json.dumps(doc))
    code, _, err = run("quantize", "-i", model, "-o", tmp_path / "m.onnx", "--load_stats", tmp_path / "s.json")
    assert code == 4 and "s.json" in err and "'percentile' must be a number in [90, 100]" in err, err


def test_saving_statistics_defaults_to_min_max_so_shards_merge(tmp_path: Path) -> None:
    """Each shard's own trials could pick another method, and a min-max shard keeps no histogram to merge."""
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    report = _quantize(model, tmp_path / "a.onnx", "--input_list", listing, "--save_stats", tmp_path / "s.json")
    assert _untried(report) and "--save_stats" in report["calibration"]
    assert json.loads((tmp_path / "s.json").read_text())["calibration"] == "min-max"

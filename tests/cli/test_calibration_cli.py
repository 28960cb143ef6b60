"""The calibration flags end to end: the stats cache round trip is byte-identical; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from qnn_models import qtool as run
from qnn_models import three_conv_model, write_case


def qtool(*args: object) -> tuple[int, str]:
    code, _, stderr = run(*args)
    return code, stderr


def test_saved_stats_reproduce_the_model_byte_for_byte(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=6)
    flags = ["--act_quantizer_calibration", "sqnr", "--use_per_channel_quantization"]
    assert (
        qtool(
            "quantize",
            "-i",
            model,
            "--input_list",
            listing,
            "-o",
            tmp_path / "a.onnx",
            "--save_stats",
            tmp_path / "s.json",
            *flags,
        )[0]
        == 0
    )
    assert (
        qtool("quantize", "-i", model, "--load_stats", tmp_path / "s.json", "-o", tmp_path / "b.onnx", *flags)[0] == 0
    )
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert (tmp_path / "a.encodings.json").read_bytes() == (tmp_path / "b.encodings.json").read_bytes()
    # the same histograms serve another method and bitwidth without recalibrating
    code, err = qtool(
        "quantize",
        "-i",
        model,
        "--load_stats",
        tmp_path / "s.json",
        "-o",
        tmp_path / "c.onnx",
        "--act_quantizer_calibration",
        "entropy",
        "--act_bitwidth",
        "16",
    )
    assert code == 0, err


def test_calibration_bad_input(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=3)
    out = tmp_path / "q.onnx"
    code, err = qtool(
        "quantize", "-i", model, "--input_list", listing, "-o", out, "--act_quantizer_calibration", "entrpy"
    )
    assert code == 2 and "did you mean 'entropy'" in err
    code, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        out,
        "--act_quantizer_calibration",
        "percentile",
        "--percentile_calibration_value",
        "80",
    )
    assert code == 2 and "80" in err
    (tmp_path / "junk.stats").write_bytes(b"\x00\x01garbage")
    code, err = qtool("quantize", "-i", model, "--load_stats", tmp_path / "junk.stats", "-o", out)
    assert code == 4 and err.startswith("qtool: error:") and "junk.stats" in err
    (tmp_path / "sample_1.raw").write_bytes(b"\x00" * 12)
    code, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out)
    assert code == 4 and "input_list.txt:2" in err and "12 bytes" in err
    nan = tmp_path / "sample_1.raw"
    import numpy as np

    np.full((1, 3, 8, 8), np.nan, dtype=np.float32).tofile(nan)
    code, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out)
    assert code == 4 and "NaN" in err and "sample_1.raw" in err
    assert not out.exists()


def _gate_model() -> onnx.ModelProto:
    """x -> Sigmoid -> gate -> Mul(x) -> y: a squeeze-excite style gate feeding a product."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["gate"]), helper.make_node("Mul", ["gate", "x"], ["y"])],
        "gate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_clipping_methods_keep_a_gate_and_a_model_output_whole(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, _gate_model(), samples=4)
    out = tmp_path / "q.onnx"
    flags = ["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "90"]
    assert qtool("quantize", "-i", model, "--input_list", listing, "-o", out, *flags)[0] == 0
    encodings = json.loads((tmp_path / "q.encodings.json").read_text())["activation_encodings"]
    xs = [np.fromfile(tmp_path / f"sample_{k}.raw", dtype=np.float32) for k in range(4)]
    gate_max = max(float((1 / (1 + np.exp(-x))).max()) for x in xs)
    y_max = max(float((x / (1 + np.exp(-x))).max()) for x in xs)
    assert encodings["gate"][0]["max"] >= gate_max - 1e-3
    assert encodings["y"][0]["max"] >= y_max - 1e-2
    assert encodings["x"][0]["max"] < max(float(x.max()) for x in xs) * 0.9  # the input is clipped


def test_auto_calibration_writes_what_the_method_it_names_writes(tmp_path: Path) -> None:
    """auto scores min-max, sqnr and mse on held-out halves of the list and then quantizes exactly as the
    method it reports would have: the same model and encodings, byte for byte."""
    model, listing = write_case(tmp_path, three_conv_model(), samples=12)
    code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "auto.onnx",
                         "--act_quantizer_calibration", "auto", "--apply_algorithms", "bc")  # fmt: skip
    assert code == 0, err
    line = next(x for x in out.splitlines() if "calibration auto:" in x)
    chosen = line.split("calibration auto: ")[1].split(" ")[0]
    assert chosen in ("min-max", "sqnr", "mse") and "held-out halves" in line
    code, _, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "named.onnx",
                       "--act_quantizer_calibration", chosen, "--apply_algorithms", "bc")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "auto.onnx").read_bytes() == (tmp_path / "named.onnx").read_bytes()
    assert (tmp_path / "auto.encodings.json").read_bytes() == (tmp_path / "named.encodings.json").read_bytes()


def test_auto_trials_score_on_their_calibration_passes_outputs(tmp_path: Path, monkeypatch) -> None:
    """Each half's one calibration pass runs the float model on it: its outputs are what every method's fold on
    that half scores against, with no float session beside it (malviz's took 160 MB at the trials' peak), and no
    fold copies the model where no algorithm changes it (ddddocr's CTC recogniser: 54 MB a fold)."""
    from qtool.graph import model as gm
    from qtool.inspect import compare

    def no_float_session(*args, **kwargs):
        raise AssertionError("a float session beside the calibration passes")

    copies: list = []
    copy = gm.copy
    monkeypatch.setattr(compare, "reference_outputs", no_float_session)
    monkeypatch.setattr(gm, "copy", lambda model: copies.append(model) or copy(model))
    model, listing = write_case(tmp_path, three_conv_model(), samples=12)
    # --apply_algorithms none: the default's bc folds copy it, as bc does
    code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "auto.onnx",
                         "--act_quantizer_calibration", "auto", "--apply_algorithms", "none")  # fmt: skip
    assert code == 0, err
    assert "calibration auto:" in out and not copies


def test_the_report_times_the_algorithms_apart_from_calibration(tmp_path: Path) -> None:
    """auto's trials and bc's passes took 190 of EfficientWord-Net's 194 seconds, and the report's only stage time
    was "calibration seconds 0.62": the time went nowhere it said. It has a line of its own."""
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "auto.onnx", "--json",
                         "--act_quantizer_calibration", "auto", "--apply_algorithms", "bc")  # fmt: skip
    assert code == 0, err
    facts = json.loads(out)
    assert 0 < facts["algorithm seconds"] <= facts["seconds"]
    assert facts["algorithm seconds"] + facts["calibration seconds"] <= facts["seconds"]
    code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "plain.onnx", "--json",
                         "--act_quantizer_calibration", "min-max")  # fmt: skip
    assert code == 0 and "algorithm seconds" not in out, err


def test_the_report_times_auto_calibration_alone(tmp_path: Path) -> None:
    """auto's trials without --apply_algorithms are timed too: the check read the method after auto had put the
    one it chose in its place, so it never saw 'auto'."""
    model, listing = write_case(tmp_path, three_conv_model(), samples=8)
    code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "auto.onnx", "--json",
                         "--act_quantizer_calibration", "auto")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["algorithm seconds"] > 0


def test_auto_calibration_folds_drop_a_bc_that_hurts_as_the_run_does(tmp_path: Path, monkeypatch) -> None:
    """bc keeps its corrections only where they gain (keep: auto); a fold trial that forced them scored every
    method through corrections the run then dropped. With corrections that always hurt, each fold drops them:
    its scores are those of auto without bc, and the one "not applied" warning is the run's own."""
    from qtool.quant.algorithms import bias_correction

    measured = bias_correction._correction
    monkeypatch.setattr(bias_correction, "_correction", lambda *args: measured(*args) - 3.0)
    model, listing = write_case(tmp_path, three_conv_model(), samples=12)
    lines, warnings = [], []
    for flags in (["--apply_algorithms", "bc"], []):
        code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / f"q{len(flags)}.onnx",
                             "--act_quantizer_calibration", "auto", *flags)  # fmt: skip
        assert code == 0, err
        lines.append(next(x for x in out.splitlines() if "calibration auto:" in x).split(";")[0])
        warnings.append(err.count("bc: not applied"))
    assert lines[0] == lines[1]
    assert warnings == [1, 0]


def test_auto_calibration_needs_a_list_to_hold_samples_out_of(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, three_conv_model(), samples=4)
    stats = tmp_path / "s.json"
    assert qtool("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "a.onnx", "--save_stats", stats,
                 "--act_quantizer_calibration", "sqnr")[0] == 0  # fmt: skip
    code, err = qtool("quantize", "-i", model, "--load_stats", stats, "-o", tmp_path / "b.onnx",
                      "--act_quantizer_calibration", "auto")  # fmt: skip
    assert code == 2 and "auto needs --input_list" in err and "Traceback" not in err
    assert not (tmp_path / "b.onnx").exists()
    # weight-only: no activation range to choose, so nothing to score
    code, err = qtool("quantize", "-i", model, "-o", tmp_path / "c.onnx", "--act_bitwidth", "32",
                      "--act_quantizer_calibration", "auto")  # fmt: skip
    assert code == 0, err


def test_auto_keeping_min_max_takes_the_run_s_ranges_from_its_halves(tmp_path: Path, monkeypatch) -> None:
    """Where auto's two histogram passes ran the whole list (up to 32 samples) and min-max stays, the run's min-max
    pass is their extremes merged: no third pass over the list (platedet's 32 samples: 15.7 s), and the model and
    encodings are byte for byte a min-max run's. The evaluation's float outputs are the halves' too, and its figures
    a min-max run's (uvdoc's 24 samples: a third pass over the list ran for them, 11 of 75 s)."""
    import importlib

    from qtool.api import auto_calibration

    quantize_module = importlib.import_module("qtool.api.quantize")
    passes: list[str] = []
    calibrate = quantize_module.calibrate
    monkeypatch.setattr(auto_calibration, "AUTO_MARGIN_DB", 1e9)  # min-max stays whatever the scores
    monkeypatch.setattr(quantize_module, "calibrate", lambda *a, **k: passes.append(k["observer"]) or calibrate(*a, **k))
    model, listing = write_case(tmp_path, three_conv_model(), samples=12)
    for name, method in (("auto", "auto"), ("plain", "min-max")):
        code, _, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / f"{name}.onnx",
                             "--act_quantizer_calibration", method, "--evaluate_samples", "0")  # fmt: skip
        assert code == 0, err
    assert passes == ["sqnr", "sqnr", "min-max"]  # auto's two halves; the plain run's own pass
    assert (tmp_path / "auto.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()
    assert (tmp_path / "auto.encodings.json").read_bytes() == (tmp_path / "plain.encodings.json").read_bytes()
    passes.clear()
    reports = []
    for name, method in (("evaluated", "auto"), ("evaluated_plain", "min-max")):
        code, out, err = run("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / f"{name}.onnx",
                             "--act_quantizer_calibration", method, "--json")  # fmt: skip
        assert code == 0, err
        reports.append(json.loads(out))
    assert passes == ["sqnr", "sqnr", "min-max"]  # auto's halves serve the evaluation too; the plain run's own pass
    assert reports[0]["outputs (float vs quantized)"] == reports[1]["outputs (float vs quantized)"]
    assert (tmp_path / "evaluated.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()

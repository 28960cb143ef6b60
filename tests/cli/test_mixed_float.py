"""`--mixed_precision auto` with float as a candidate (issue 21): a power spectrum that no 16-bit grid holds
is found by the sensitivity pass and kept in float, and every model comes within 40 dB of float with every
candidate raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qnn_models import qtool
from recurrent_models import write_stft_case
from test_mixed_precision import setup as planted_case

from qtool.inspect.compare import Drift
from qtool.io.encodings import read_encodings
from qtool.quant import mixed_precision as mp
from qtool.quant.graph_facts import GraphFacts

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _quantize(model: Path, calib: Path, out: Path, *flags: object) -> dict:
    code, stdout, err = qtool("quantize", "-i", model, "--input_list", calib, "-o", out, "--json", *flags)
    assert code == 0, err
    return json.loads(stdout)


def _sqnr(report: dict) -> float:
    return min(o["sqnr_db"] for o in report["outputs (float vs quantized)"])


def test_auto_keeps_the_power_spectrum_in_float_and_reaches_35_db_held_out(tmp_path: Path) -> None:
    model, calib, val = write_stft_case(tmp_path)
    plain = _quantize(model, calib, tmp_path / "p.onnx", "--act_bitwidth", "16", "--eval_list", val)
    assert _sqnr(plain) < 25  # 16 bits everywhere does not hold a power spectrum: the case is real
    out = tmp_path / "q.onnx"
    report = _quantize(model, calib, out, "--mixed_precision", "auto", "--target_sqnr", "35", "--eval_list", val)
    assert _sqnr(report) >= 35
    floats = [t.split(" ")[0] for t in report["float tensors"].split(", ")]
    assert "power" in floats and "audio" not in floats  # the spectrum, not the STFT's input
    chosen = read_encodings(out.with_suffix(".mixed_precision.json"))
    assert chosen.activations["power"].is_float and chosen.activations["power"].bitwidth == 16


@pytest.mark.parametrize("case", ["planted", "stft", "sample"])
def test_every_candidate_raised_is_within_40_db_of_float(tmp_path: Path, case: str) -> None:
    if case == "planted":
        model, calib = planted_case(tmp_path)
    elif case == "stft":
        model, calib, _ = write_stft_case(tmp_path)
    else:
        model, calib = SAMPLES / "digits_cnn.onnx", SAMPLES / "input_list.txt"
    # a target only exact float reaches: the search raises every candidate (or meets it on the way)
    report = _quantize(model, calib, tmp_path / "q.onnx", "--mixed_precision", "auto", "--target_sqnr", "300")
    assert _sqnr(report) >= 40


def test_float_chain_follows_range_keeping_ops_and_stops_at_log(tmp_path: Path) -> None:
    from recurrent_models import stft_lstm_model

    facts = GraphFacts.of(stft_lstm_model())
    quantized = {o for n in facts.model.graph.node for o in n.output}
    assert mp.float_chain(facts, ["power"], quantized) == ["power", "power_eps"]
    assert mp.float_chain(facts, ["re"], quantized) == ["re", "re2"]  # the Add also reads im²: not re's alone


def test_float_chain_takes_a_tensors_whole_encoding_group() -> None:
    """x² joins a Concat with y: the chain from x keeps the Concat's group float together, or the plan got two
    overrides for one shared encoding (a YOLOv8 box decoder: "overrides ... differ")."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Mul", ["x", "x"], ["x2"]), helper.make_node("Relu", ["y"], ["yr"]),
             helper.make_node("Concat", ["x2", "yr"], ["cat"], axis=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "xy"],
                              [helper.make_tensor_value_info("cat", TensorProto.FLOAT, [1, 8])])  # fmt: skip
    facts = GraphFacts.of(helper.make_model(graph))
    quantized = {"x", "y", "x2", "yr", "cat"}
    shared = ["x2", "yr", "cat"]
    assert mp.float_chain(facts, ["x"], quantized) == ["x", "x2"]
    assert mp.float_chain(facts, ["x"], quantized, {t: shared for t in shared}) == ["x", "x2", "yr", "cat"]


def test_float_costs_more_than_16_bits_for_the_same_tensor() -> None:
    model = mp.CostModel({"conv": 1000}, elems=100)
    as_int16 = mp.Candidate("t", ["t"], [], ["conv"], [], elems=10)
    as_fp16 = mp.Candidate("t:float16", ["t"], [], ["conv"], [], elems=10, float_bits=16)
    as_fp32 = mp.Candidate("t:float32", ["t"], [], ["conv"], [], elems=10, float_bits=32)
    assert 1 < model.factor([as_int16]) < model.factor([as_fp16]) < model.factor([as_fp32])
    # both chosen: the tensor's traffic counts once, at float
    assert model.factor([as_int16, as_fp16]) == model.factor([as_fp16])


def test_inspect_flags_the_power_spectrum_no_grid_holds_and_nothing_on_the_sample(tmp_path: Path) -> None:
    model, calib, _ = write_stft_case(tmp_path)
    code, stdout, err = qtool("inspect", model, "--input_list", calib, "--json")
    assert code == 0, err
    flagged = {f["where"] for f in json.loads(stdout)["findings"] if f["lint"] == "unheld-range"}
    assert flagged == {"tensor 'power'", "tensor 'power_eps'"}  # read by Log; the LSTM's inputs are not
    assert qtool("convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", tmp_path / "d.onnx")[0] == 0
    code, stdout, err = qtool("inspect", tmp_path / "d.onnx", "--input_list", SAMPLES / "input_list.txt", "--json")
    assert code == 0, err
    assert not [f for f in json.loads(stdout)["findings"] if f["lint"] == "unheld-range"]


def test_a_float16_overflow_scores_as_the_worst_model_not_an_internal_error() -> None:
    # openWakeWord's melspectrogram: a float16 candidate overflowed, the noise was inf, log10 raised
    drift = {"y": Drift(signal=4.0, noise=float("inf"), samples=2, cosine_sum=float("nan"))}
    assert mp.overall(drift) == {"sqnr_db": float("-inf"), "cosine": 0.0}
    drift = {"y": Drift(signal=4.0, noise=0.04, samples=2, cosine_sum=1.98)}
    assert mp.overall(drift) == {"sqnr_db": 20.0, "cosine": 0.99}


def test_the_target_is_the_worst_output_not_the_outputs_pooled() -> None:
    scores = Drift(signal=1e4, noise=1.0, samples=4, cosine_sum=4.0)  # 40 dB
    boxes = Drift(signal=1.0, noise=0.1, samples=4, cosine_sum=3.6)  # 10 dB, small values
    silent = Drift(signal=0.0, noise=1e-9, samples=4, cosine_sum=0.0)  # all-zero float output
    metrics = mp.overall({"scores": scores, "boxes": boxes})
    assert metrics == {"sqnr_db": 10.0, "cosine": 0.9}  # pooled it was 40 dB
    assert mp.overall({"scores": scores, "silent": silent}) == {"sqnr_db": 40.0, "cosine": 1.0}


def test_a_float_chain_is_not_tried_back_twice_with_the_same_encodings() -> None:
    """Without "+weights" candidates, "all at 16 bits" and "all at 16 bits with the weights" are one trial."""
    t16 = mp.Candidate("t", ["t"], [], [], [], 10)
    u16 = mp.Candidate("u", ["u"], [], [], [], 10)
    chain = mp.Candidate("t:float16", ["t", "u"], [], [], [], 20, float_bits=16)
    chain.parts = [mp.Candidate("t:float16", ["u"], [], [], [], 10, float_bits=16)]
    trials = []

    def if_met(encodings, target):
        trials.append(sorted(c.name for c in encodings))
        return {"sqnr_db": 0.0, "cosine": 0.0}

    kept = mp._prefer_integers([chain], [t16, u16, chain], list, if_met, mp.Target(sqnr_db=30), lambda p, m: None)
    assert kept == [chain] and trials == [["t", "u"], ["t", "t:float16"]]


def test_float_chains_are_tried_back_at_16_bits_all_at_once_first() -> None:
    """One trial when every chosen float chain holds the target at 16 bits; one by one only when not."""
    t16, u16 = mp.Candidate("t", ["t"], [], [], [], 10), mp.Candidate("u", ["u"], [], [], [], 10)
    t_float = mp.Candidate("t:float16", ["t"], [], [], [], 10, float_bits=16)
    u_float = mp.Candidate("u:float16", ["u"], [], [], [], 10, float_bits=16)
    trials = []

    def met_without(floats_needed: set[str]):
        def if_met(encodings, target):
            names = sorted(c.name for c in encodings)
            trials.append(names)
            return {"sqnr_db": 40.0 if floats_needed <= set(names) else 0.0, "cosine": 1.0}

        return if_met

    cands = [t16, u16, t_float, u_float]
    kept = mp._prefer_integers([t_float, u_float], cands, list, met_without(set()), mp.Target(sqnr_db=30), lambda p, m: None)
    assert kept == [t16, u16] and trials == [["t", "u"]]
    trials.clear()
    kept = mp._prefer_integers(
        [t_float, u_float], cands, list, met_without({"u:float16"}), mp.Target(sqnr_db=30), lambda p, m: None
    )  # fmt: skip
    assert kept == [u_float, t16] and trials == [["t", "u"], ["t:float16", "u"], ["t", "u:float16"]]

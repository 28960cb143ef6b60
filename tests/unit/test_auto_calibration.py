"""--act_quantizer_calibration auto: the choice among methods by out-of-sample output SQNR."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh

from qtool.api.auto_calibration import (
    AUTO_CALIBRATIONS,
    AUTO_MARGIN_DB,
    FloatRuns,
    GiveUp,
    choose_calibration,
    median,
    min_max_of_halves,
    nothing_to_score,
    sample_sqnrs,
)
from qtool.inspect.compare import Drift
from qtool.io.kept_outputs import KeptOutputs
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.observers import Histogram, MinMax, SoftmaxInput


def _even(scores: dict[str, float], samples: int = 16):
    """A trial whose every checked sample scores what the method scores pooled."""

    def trial(method: str, per_sample: list, per_fold: list, give_up=None) -> float:
        per_sample += [scores[method]] * samples
        per_fold += [scores[method]] * 2
        return scores[method]

    return trial


@pytest.mark.parametrize(
    ("scores", "chosen"),
    [
        ({"min-max": 20.0, "sqnr": 25.0, "mse": 24.0}, "sqnr"),
        ({"min-max": 20.0, "sqnr": 19.0, "mse": 24.0}, "mse"),
        ({"min-max": 20.0, "sqnr": 20.0 + AUTO_MARGIN_DB / 2, "mse": 3.0}, "min-max"),  # within the folds' noise
        ({"min-max": 20.0, "sqnr": 20.0 + AUTO_MARGIN_DB, "mse": 3.0}, "sqnr"),
        ({"min-max": 0.0, "sqnr": 0.0, "mse": 0.0}, "min-max"),  # a tie keeps qairt's default
    ],
)
def test_another_method_replaces_min_max_only_when_it_wins_by_the_margin(scores: dict, chosen: str) -> None:
    tried: list[str] = []
    scored = _even(scores)

    def trial(method: str, per_sample: list, per_fold: list, give_up=None) -> float:
        tried.append(method)
        return scored(method, per_sample, per_fold)

    method, line = choose_calibration(trial)
    assert method == chosen
    assert tried == list(AUTO_CALIBRATIONS)  # each method scored once
    assert line.startswith(f"calibration auto: {chosen} (") and all(f"{m} {scores[m]:.1f}" in line for m in scores)


def test_a_method_ahead_by_less_than_the_margin_is_said_to_lose_to_the_default() -> None:
    method, line = choose_calibration(_even({"min-max": 16.8, "sqnr": 16.9, "mse": 17.0}))
    assert method == "min-max" and f"min-max stays unless another wins by {AUTO_MARGIN_DB:g} dB" in line
    assert "stays unless" not in choose_calibration(_even({"min-max": 20.0, "sqnr": 19.0, "mse": 18.0}))[1]


def test_a_pooled_win_that_one_loud_sample_makes_keeps_min_max() -> None:
    """Open-NSFW's two-class output: sqnr 52.0 dB pooled against min-max 44.4 on the folds, every method's median
    sample at 65.8; held out, sqnr lost 4.3 dB."""
    per_method = {"min-max": [44.0] + [65.8] * 15, "sqnr": [52.0] + [65.7] * 15, "mse": [49.0] + [65.8] * 15}
    pooled = {"min-max": 44.4, "sqnr": 52.0, "mse": 49.6}

    def trial(method: str, per_sample: list, per_fold: list, give_up=None) -> float:
        per_sample += per_method[method]
        return pooled[method]

    method, line = choose_calibration(trial)
    assert method == "min-max" and "median sample against min-max: sqnr -0.1, mse +0.0 dB" in line
    per_method["sqnr"] = [52.0] + [66.5] * 15  # the typical sample gains too: sqnr
    assert choose_calibration(trial)[0] == "sqnr"


def test_a_choice_that_lost_on_one_fold_says_so() -> None:
    """ddddocr's YOLOX detector: sqnr 2.3 dB ahead of min-max on the mean of its two folds and on the median
    sample, behind on the first fold (16.6 against 18.0); held out, which samples calibrate moves either method by
    several dB (min-max 11.0-17.3, sqnr 14.7-18.6 from 40 or 48 of them)."""
    per_fold = {"min-max": [18.0, 13.6], "sqnr": [16.6, 19.6], "mse": [12.2, 16.5]}

    def trial(method: str, per_sample: list, folds: list, give_up=None) -> float:
        per_sample += [per_fold[method][0]] * 16 + [per_fold[method][1]] * 16
        folds += per_fold[method]
        return sum(per_fold[method]) / 2

    method, line = choose_calibration(trial)
    assert method == "sqnr" and "min-max 15.8 (18.0 | 13.6), sqnr 18.1 (16.6 | 19.6), mse 14.3 (12.2 | 16.5)" in line
    assert line.endswith("; it lost to min-max on one half (16.6 against 18.0 dB): the halves disagree, and which "
                         "samples set the ranges decides as much as the method)")  # fmt: skip
    per_fold["sqnr"] = [18.0, 18.2]  # a tie on one fold is no loss
    assert "lost" not in choose_calibration(trial)[1]


def _drifts(per_output: dict[str, list[float]]) -> dict[str, Drift]:
    """Drifts whose samples score the given SQNRs (dB), output by output."""
    drifts = {}
    for name, dbs in per_output.items():
        drifts[name] = Drift()
        drifts[name].per_sample = [(10 ** (db / 10), 1.0) for db in dbs]
        drifts[name].signal, drifts[name].noise = sum(10 ** (db / 10) for db in dbs), float(len(dbs))
    return drifts


def _scored(per_sample: dict[str, list[list[float]]], counted: dict[str, int]):
    """A trial of two folds of 8 samples whose method scores per_sample[method][output] sample by sample, asking
    give_up after each as compare_outputs' stop does; counted[method]: the samples it ran."""

    def trial(method: str, samples: list, folds: list, give_up=None) -> float:
        for start in (0, 8):
            if give_up is not None and give_up.at:
                break
            for done in range(1, 9):
                drift = _drifts({f"y{k}": dbs[start : start + done] for k, dbs in enumerate(per_sample[method])})
                counted[method] = counted.get(method, 0) + 1
                if give_up is not None and give_up(samples, drift):
                    break
            samples += sample_sqnrs(drift)
            folds.append(min(10 * np.log10(d.signal / d.noise) for d in drift.values()))  # the worst output's
        return sum(folds) / len(folds)

    return trial


def test_a_method_whose_median_sample_cannot_win_stops_and_the_choice_is_the_same() -> None:
    """auto's trial of a method stops once more than half of its checked samples fall short of min-max's by the
    margin (PicoDet at 928x928: 25 s a sample): its median sample cannot win, whatever the rest score. The stop
    waits for every output: which one a fold is judged by (its worst pooled) is known only at the fold's end."""
    base = [20.0] * 16
    per_sample = {"min-max": [base, [30.0] * 16],  # judged by y0, the worse
                  "sqnr": [[20.1] * 16, [20.2] * 16],  # both outputs short of +0.3 on every sample: stops after 9
                  # the first fold judged by y0 (8 samples short), the second by y1, on which none is: its median +4.5
                  "mse": [[19.0] * 10 + [60.0] * 6, [40.0] * 8 + [30.0] * 8]}  # fmt: skip
    counted: dict[str, int] = {}
    method, line = choose_calibration(_scored(per_sample, counted))
    unstopped = _scored(per_sample, {})
    full, _ = choose_calibration(lambda m, s, f, _g=None: unstopped(m, s, f))
    assert method == full == "mse"
    assert counted == {"min-max": 16, "sqnr": 9, "mse": 16}  # y0 alone would have stopped mse at 9
    assert ("min-max 20.0 (20.0 | 20.0), mse 24.5 (19.0 | 30.0) dB; median sample against min-max: "
                         "mse +4.5 dB; sqnr stopped after 9 of 16 samples, most not 0.3 dB over min-max: its median "
                         "sample could not be; it lost") in line  # fmt: skip
    stop = GiveUp(base)
    assert not stop([], _drifts({"y": [float("nan")] * 8})) and stop([float("nan")] * 8, _drifts({"y": [19.0]}))
    assert stop.at == 9


def test_a_method_short_only_at_its_last_sample_is_not_said_to_stop() -> None:
    """Past the last sample a stop saves nothing, and the report read 'mse stopped after 32 of 32 samples' (the
    digits sample) where it could give mse's figures."""
    one_left, none_left = GiveUp([20.0] * 16), GiveUp([20.0] * 16)
    assert one_left([19.0] * 8, _drifts({"y": [19.0] * 7})) and one_left.at == 15
    assert not none_left([19.0] * 8, _drifts({"y": [19.0] * 8})) and none_left.at == 0


def test_the_median_gain_is_numpys_median_to_the_bit() -> None:
    rng = np.random.default_rng(3)
    for size in [*range(1, 12), 63, 64]:
        for scale in (1e-3, 1.0, 1e5):
            gains = rng.standard_normal(size) * scale
            assert median(gains) == float(np.median(gains))
            if size > 2:
                gains[rng.integers(size)] = np.inf  # a sample the quantization reproduces exactly
                assert median(gains) == float(np.median(gains))
                gains[rng.integers(size)] = np.nan  # inf - inf
                assert np.isnan(median(gains)) and np.isnan(np.median(gains))


def test_choosing_a_method_imports_no_numpy_ma() -> None:
    """np.median imports numpy.ma for its NaN check: 1.3 MB of modules in a ~96 MB process (auto's default run
    on a small model is measured against onnxruntime's quantize_static)."""
    import subprocess
    import sys

    code = ("import sys; from qtool.api.auto_calibration import choose_calibration\n"
            "def trial(method, per_sample, per_fold, give_up):\n    per_sample += [20.0, 21.0, 19.0, 22.0]\n    return 20.0\n"
            "print(choose_calibration(trial)[0], 'numpy.ma' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["min-max", "False"]


def test_each_samples_sqnr_is_the_worst_outputs() -> None:
    loud, quiet = Drift(), Drift()
    loud.signal, loud.noise, loud.per_sample = 200.0, 2.0, [(100.0, 1.0), (100.0, 1.0)]
    quiet.signal, quiet.noise, quiet.per_sample = 2.0, 0.2, [(1.0, 0.1), (1.0, 0.0)]
    assert sample_sqnrs({"loud": loud, "quiet": quiet}) == pytest.approx([10.0, 200.0])
    assert sample_sqnrs({}) == []


@pytest.mark.parametrize(
    ("output_type", "scored"),
    [(TensorProto.FLOAT16, True), (TensorProto.DOUBLE, True), (TensorProto.FLOAT, True), (TensorProto.INT32, False)],
)
def test_any_floating_output_is_scored_at_an_opset_whose_quantizer_takes_float32_alone(output_type, scored) -> None:
    """platedet (opset 17) leaves through Casts to float16: GraphFacts.is_float, the types QuantizeLinear-13 takes,
    read its outputs as not float and auto tried no method."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = oh.make_tensor_value_info("y", output_type, [1, 8])
    nodes = [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Cast", ["r"], ["y"], to=output_type)]
    model = oh.make_model(oh.make_graph(nodes, "g", [x], [y]), opset_imports=[oh.make_opsetid("", 17)])
    facts = GraphFacts.of(model)
    assert not facts.is_float("y") or output_type == TensorProto.FLOAT  # the quantizer's view stays as it was
    assert (nothing_to_score(facts, {}) == "") is scored


def _halves(*values: tuple[np.ndarray, np.ndarray], shared: bool = False) -> dict:
    """Two halves' histogram passes over tensors 'a' and 'b' (one Softmax-input observer for both when `shared`)."""
    found = {}
    for key, (a, b) in zip(((0, 1), (2, 3)), values, strict=True):
        if shared:
            one = SoftmaxInput("a")
            one.observe_rows(float(a.max()), float(a.min()), float(b.min()))
            found[key] = (None, {"a": one, "b": one})
            continue
        seen = {"a": Histogram("a"), "b": Histogram("b")}
        seen["a"].update(a)
        seen["b"].update(b)
        found[key] = (None, seen)
    return found


def test_the_halves_min_max_is_a_pass_over_both() -> None:
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal(64), rng.standard_normal(64) * 3), (rng.standard_normal(64) * 2, rng.random(64))
    found = min_max_of_halves(_halves(first, second), None, 4)
    assert found is not None and all(type(o) is MinMax for o in found.values())
    for name, k in (("a", 0), ("b", 1)):
        both = np.concatenate([first[k], second[k]])
        assert (found[name].lo, found[name].hi, found[name].count) == (both.min(), both.max(), 2)
    assert min_max_of_halves(_halves(first, second), None, 5) is None  # a sample neither half ran
    shared = min_max_of_halves(_halves(first, second, shared=True), None, 4)
    assert shared is not None and shared["a"] is shared["b"] and shared["a"].count == 2  # merged once
    halves = _halves(first, second)
    halves[(2, 3)][1]["b"].unbounded = True  # a min-max pass skips such a sample; the histogram took it as 0
    assert min_max_of_halves(halves, None, 4) is None


def _kept(*samples: float) -> KeptOutputs:
    kept = KeptOutputs(1 << 20, lambda name: name)
    for value in samples:
        assert kept.append([np.full(2, value)])
    return kept


def test_the_evaluation_reads_the_folds_float_outputs_only_from_the_session_it_would_run() -> None:
    """Samples 0..count-1 in order, gathered over both halves; only where the halves cover them, and only from
    the kind of pass the evaluation would have run (a calibration pass's instrumented session, or the model's own)."""
    runs = FloatRuns({(0, 2): _kept(0, 2), (1, 3): _kept(1, 3)})
    gathered = runs.first(4, calibrated=False)
    assert gathered is not None and [float(v[0][0]) for v in gathered] == [0, 1, 2, 3]
    assert runs.first(3, calibrated=False) is not None and runs.first(5, calibrated=False) is None
    assert runs.first(4, calibrated=True) is None  # the evaluation would have read calibration's outputs
    runs.calibrated.add((0, 2))
    assert runs.first(4, calibrated=True) is None and runs.first(4, calibrated=False) is None  # one of each kind
    runs.calibrated.add((1, 3))
    assert runs.first(4, calibrated=True) is not None
    assert FloatRuns({(0, 1): None}).first(2, calibrated=False) is None  # too large to keep: streamed again

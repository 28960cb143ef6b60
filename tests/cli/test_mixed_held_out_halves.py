"""`--mixed_precision auto` confirms a cheaper graph-order answer on held-out halves of the list (api/mixed_evaluator
.evaluator's held_out): each half scored with the ranges a calibration pass on the other half gives, so a grid fitted
to the samples it is scored on, which clips none of them, does not pass for one that holds on new inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from qnn_models import qtool

from qtool.quant import mixed_precision as mp


def _write_case(tmp_path: Path) -> tuple[Path, Path, list[dict[str, np.ndarray]]]:
    """y = ReduceSum(x · v) + 0.5 with x in {0, 1}, a quarter set: the sum's 8-bit grid, fitted to the samples it is
    scored on, clips none of them; a sample past the calibrated maximum clips. 32 calibration samples, 64 new ones of
    the same kind."""
    rng = np.random.default_rng(0)
    v = (rng.integers(1, 256, size=(1, 32)) / 255).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "v"], ["xv"]), helper.make_node("ReduceSum", ["xv"], ["u"], keepdims=1),
             helper.make_node("Add", ["u", "half"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "halves", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v, "v"), numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )  # fmt: skip
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    lines = []
    for k in range(32):
        (rng.random((1, 32)) < 0.25).astype(np.float32).tofile(tmp_path / f"x{k}.raw")
        lines.append(f"x{k}.raw\n")
    (tmp_path / "calib.txt").write_text("".join(lines))
    new = [{"x": (rng.random((1, 32)) < 0.25).astype(np.float32)} for _ in range(64)]
    return model, tmp_path / "calib.txt", new


def _sqnr(model: Path, quantized: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    ref, out = (ort.InferenceSession(str(m), providers=["CPUExecutionProvider"]) for m in (model, quantized))
    a = np.concatenate([ref.run(None, f)[0].ravel() for f in feeds]).astype(np.float64)
    b = np.concatenate([out.run(None, f)[0].ravel() for f in feeds]).astype(np.float64)
    return float(10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()))


def test_held_out_halves_score_a_trial_with_ranges_fitted_to_the_other_half(tmp_path: Path, monkeypatch) -> None:
    """The all-8-bit model reads 46.9 dB on the calibration samples, whose sums no grid fitted to them clips, and 28.2
    on new ones; held out by halves it reads 32.7: a quarter of the search's overstatement is left."""
    model, calib, new = _write_case(tmp_path)
    seen: dict[str, float] = {}
    search = mp.search

    def spy(cands, cost, base, evaluator, target, *rest):
        assert evaluator.held_out is not None  # --eval_list not given: the calibration list is what it scores
        seen["scored"], seen["held out"] = evaluator.full(base)["sqnr_db"], evaluator.held_out(base)["sqnr_db"]
        return search(cands, cost, base, evaluator, target, *rest)

    monkeypatch.setattr(mp, "search", spy)
    code, _, err = qtool("quantize", "-i", model, "--input_list", calib, "-o", tmp_path / "q.onnx",
                         "--mixed_precision", "auto", "--target_sqnr", "60")  # fmt: skip
    assert code == 0, err
    code, _, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        calib,
        "-o",
        tmp_path / "q8.onnx",
        "--act_quantizer_calibration",
        "min-max",
    )  # mixed precision's ranges
    assert code == 0, err
    new_inputs = _sqnr(model, tmp_path / "q8.onnx", new)
    assert seen["scored"] > new_inputs + 10, (seen, new_inputs)
    assert seen["held out"] - new_inputs < (seen["scored"] - new_inputs) / 3, (seen, new_inputs)


def test_with_an_eval_list_the_search_scores_it_and_nothing_more(tmp_path: Path, monkeypatch) -> None:
    model, calib, _ = _write_case(tmp_path)
    found: list[object] = []
    search = mp.search

    def spy(cands, cost, base, evaluator, target, *rest):
        found.append(evaluator.held_out)
        return search(cands, cost, base, evaluator, target, *rest)

    monkeypatch.setattr(mp, "search", spy)
    code, _, err = qtool("quantize", "-i", model, "--input_list", calib, "--eval_list", calib, "-o",
                         tmp_path / "q.onnx", "--mixed_precision", "auto", "--target_sqnr", "60")  # fmt: skip
    assert code == 0, err
    assert found == [None]


def test_held_out_halves_calibrate_as_the_run_does(tmp_path: Path, monkeypatch) -> None:
    """Each half's pass gives the grids the run writes: --use_per_channel_residual's residual stream per channel (a
    per-tensor grid there was scored, which the run never writes) and --calib_batch_size's batches."""
    from attention_models import post_ln_model, write_block

    from qtool.api import mixed
    from qtool.quant import calibrate

    model, calib, _ = write_block(tmp_path, post_ln_model())
    fitted_models: list[onnx.ModelProto] = []
    batched: list[tuple[bool, int]] = []  # (in a half's pass, batch)
    inside = [False]
    real_evaluator, real_batched, search = mixed.evaluator, calibrate._batched, mp.search

    def spy_evaluator(*args):
        *rest, fitted = args

        def recorded(encodings, samples):
            inside[0] = True
            try:
                fitted_models.append(fitted(encodings, samples))
            finally:
                inside[0] = False
            return fitted_models[-1]

        return real_evaluator(*rest, recorded)

    def spy_batched(m, batch):
        batched.append((inside[0], batch))
        return real_batched(m, batch)

    def spy_search(cands, cost, base, evaluator, target, *rest):
        evaluator.held_out(base)
        return search(cands, cost, base, evaluator, target, *rest)

    monkeypatch.setattr(mixed, "evaluator", spy_evaluator)
    monkeypatch.setattr(calibrate, "_batched", spy_batched)
    monkeypatch.setattr(mp, "search", spy_search)
    code, _, err = qtool("quantize", "-i", model, "--input_list", calib, "-o", tmp_path / "q.onnx",
                         "--act_quantizer_calibration", "min-max", "--use_per_channel_residual",
                         "--calib_batch_size", "2", "--mixed_precision", "auto", "--target_sqnr", "20")  # fmt: skip
    assert code == 0, err
    assert len(fitted_models) == 2
    for fitted in fitted_models:
        q = next(n for n in fitted.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "res2")
        assert [(a.name, a.i) for a in q.attribute] == [("axis", -1)]
        assert [list(i.dims) for i in fitted.graph.initializer if i.name == q.input[1]] == [[64]]
    assert batched.count((True, 2)) == 2, batched

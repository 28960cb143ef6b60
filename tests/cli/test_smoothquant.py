"""SmoothQuant: exact in float, and worth its keep on a block with outlier channels (issue 20)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from attention_models import outlier_block_model, write_block
from conftest import run_cli

from qtool.graph import model as gm
from qtool.io.feeds import iter_feeds, iter_samples
from qtool.io.input_list import read_input_list
from qtool.io.raw import InputSpec
from qtool.quant.algorithms import AlgorithmContext, smoothquant
from qtool.quant.graph_facts import GraphFacts


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return write_block(tmp_path_factory.mktemp("smoothquant"), outlier_block_model())


def _outputs(model: onnx.ModelProto, listing: Path) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    spec = [InputSpec("x", np.dtype(np.float32), (1, 16, 64))]
    return np.stack([session.run(None, feed)[0] for feed in iter_feeds(read_input_list(listing), spec)])


@pytest.mark.parametrize("alpha", [0.5, "auto"])
def test_smoothing_leaves_the_float_function_unchanged(block, alpha) -> None:
    path, calibration, held_out = block
    model = onnx.load(str(path))
    spec = [InputSpec("x", np.dtype(np.float32), (1, 16, 64))]
    ctx = AlgorithmContext(model, lambda: ((w, f) for w, f in _samples(calibration, spec)), lambda m, e: (m, None))
    ctx.config = {"alpha": alpha, "keep": "always"}
    notes = smoothquant.run(ctx)
    assert "ln1 (" in notes[0] and "max/median" in notes[0] and "1 tensors smoothed" in notes[0]
    assert "1 without outlier channels" in notes[0]  # ln2: nothing to move
    before, after = _outputs(onnx.load(str(path)), held_out), _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))
    gamma = next(i for i in ctx.model.graph.initializer if i.name == "g1")
    assert float(np.abs(onnx.numpy_helper.to_array(gamma)).max()) < 40  # the outlier moved into w_up


def _samples(listing: Path, spec: list[InputSpec]):
    return iter_samples(read_input_list(listing), spec)


def _sqnr(tmp_path: Path, block, *extra: str) -> tuple[float, dict]:
    model, calibration, held_out = block
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "--eval_list", held_out, "-o",
                      tmp_path / "q.onnx", "--use_per_channel_quantization", "--use_per_row_quantization", "--json",
                      *extra])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    return report["outputs (float vs quantized)"][0]["sqnr_db"], report


def test_smoothquant_gains_on_held_out_samples(tmp_path: Path, block) -> None:
    plain, _ = _sqnr(tmp_path, block)
    smoothed, report = _sqnr(tmp_path, block, "--apply_algorithms", "smoothquant")
    assert smoothed >= plain + 2.0, (plain, smoothed)
    assert "smoothquant (alpha 0.5)" in report["algorithms"] and "ln1" in report["algorithms"]


def test_alpha_auto_picks_one_alpha_a_site_and_gains_on_held_out_samples(tmp_path: Path, block) -> None:
    (tmp_path / "auto.yaml").write_text("smoothquant:\n  alpha: auto\n")
    plain, _ = _sqnr(tmp_path, block)
    fixed, _ = _sqnr(tmp_path, block, "--apply_algorithms", "smoothquant")
    auto, report = _sqnr(tmp_path, block, "--apply_algorithms", "smoothquant", "--config", tmp_path / "auto.yaml")
    assert auto >= plain + 2.0 and auto >= fixed - 0.5, (plain, fixed, auto)
    chosen = [float(a) for a in re.findall(r"\(alpha ([0-9.]+),", report["algorithms"])]
    assert "smoothquant (alpha auto)" in report["algorithms"] and len(chosen) == 1
    assert set(chosen) <= set(smoothquant.AUTO_ALPHAS)


def test_best_alpha_scores_the_matmul_outputs_it_would_quantize() -> None:
    """On a tensor with one channel 60x the rest, the chosen α has the least 8-bit output error of the grid."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64))
    x[:, 3] *= 60
    weights = [rng.normal(size=(64, 32)), rng.normal(size=(64, 8))]
    peak = np.abs(x).max(axis=0)
    chosen = smoothquant.best_alpha(x, weights, peak)

    def error(alpha: float) -> float:
        s = smoothquant._scales(peak, smoothquant._weight_peak(weights), alpha)
        xq = smoothquant._fake_quantized(x / s, None)
        return sum(float(np.sum((xq @ smoothquant._fake_quantized(w * s[:, None], 0) - x @ w) ** 2)) for w in weights)

    assert error(chosen) <= min(error(a) for a in smoothquant.AUTO_ALPHAS) * (1 + 1e-4)
    assert error(chosen) < 0.5 * error(0.0)  # smoothing at all pays on such a tensor


@pytest.mark.parametrize("text", ["smoothquant:\n  alpha: 1.5\n", "smoothquant:\n  alpha: .nan\n",
                                  "smoothquant:\n  alpha: automatic\n",
                                  "smoothquant:\n  keep: sometimes\n"])  # fmt: skip
def test_smoothquant_settings_are_checked(tmp_path: Path, block, text: str) -> None:
    model, calibration, _ = block
    (tmp_path / "c.yaml").write_text(text)
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "-o", tmp_path / "q.onnx",
                      "--apply_algorithms", "smoothquant", "--config", tmp_path / "c.yaml"])  # fmt: skip
    assert result.exit_code == 2 and "smoothquant" in result.stderr


def test_a_tensor_without_outlier_channels_is_left_alone(block) -> None:
    """Smoothing a site with no outlier channel only reshuffles its weights around calibration-fitted ranges."""
    path, calibration, _ = block
    model = onnx.load(str(path))
    for init in model.graph.initializer:  # ln1's γ carries the block's outlier channels: flatten them
        if init.name in ("g1", "b1"):
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(64, 1.0 if init.name == "g1" else 0.0, np.float32), init.name))
    spec = [InputSpec("x", np.dtype(np.float32), (1, 16, 64))]
    ctx = AlgorithmContext(model, lambda: _samples(calibration, spec), lambda m, e: (m, None))
    ctx.config = {"alpha": 0.5, "keep": "always"}
    unchanged = model.SerializeToString()
    assert smoothquant.run(ctx) == ["smoothquant: 2 without outlier channels (max/median under 3) left alone"]
    assert ctx.model.SerializeToString() == unchanged


def test_sites_are_layernorms_and_linears_feeding_only_matmuls() -> None:
    sites = smoothquant.find_sites(GraphFacts.of(outlier_block_model()))
    assert sorted(s.tensor for s in sites) == ["ln1", "ln2"]


def test_alpha_auto_scores_the_weight_grid_the_plan_will_use(tmp_path: Path, block) -> None:
    """Weight-only 4-bit blocks (float activations): alpha is scored on the blocks the plan writes, not at W8A8
    (whose activation grid there is none of); the smoothing pays on held-out samples."""
    from qtool.quant.plan import PlanOptions, matmul_weight_grid

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64))
    x[:, [3, 17]] *= 30
    weights = [rng.normal(size=(64, 32))]
    peak = np.abs(x).max(axis=0)
    grid = matmul_weight_grid(PlanOptions(act_bitwidth=32, weights_bitwidth=4, weights_block_size=16, param_calibration="mse"))

    def error(alpha: float | None) -> float:
        s = smoothquant._scales(peak, smoothquant._weight_peak(weights), alpha) if alpha is not None else 1.0
        return float(np.sum(((x / s) @ grid(weights[0] * np.reshape(s, (-1, 1))) - x @ weights[0]) ** 2))

    on_blocks, at_w8a8 = smoothquant.best_alpha(x, weights, peak, lambda v: v, grid), smoothquant.best_alpha(x, weights, peak)
    assert on_blocks != at_w8a8 and error(on_blocks) < 0.9 * error(at_w8a8) and error(on_blocks) < error(None)
    (tmp_path / "auto.yaml").write_text("smoothquant:\n  alpha: auto\n  keep: always\n")
    flags = ["--act_bitwidth", "32", "--weights_bitwidth", "4", "--weights_block_size", "16", "--encodings_format", "1.0.0"]
    plain, _ = _sqnr(tmp_path, block, *flags)
    auto, report = _sqnr(tmp_path, block, *flags, "--apply_algorithms", "smoothquant", "--config", tmp_path / "auto.yaml")
    assert auto > plain + 0.5 and "ln1 (alpha" in report["algorithms"], (plain, auto)


def test_best_alpha_leaves_a_site_alone_when_no_alpha_brings_it_closer() -> None:
    """On an integer weight grid that holds the weights exactly, any scaling only adds rounding: None."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 16))
    x[:, 2] *= 40
    weights = [rng.integers(-3, 4, size=(16, 8)).astype(np.float64)]
    assert smoothquant.best_alpha(x, weights, np.abs(x).max(axis=0), lambda v: v, np.round) is None
    assert smoothquant.best_alpha(x, weights, np.abs(x).max(axis=0)) is not None  # at W8A8 the outlier costs


def _gated_mlp(square: bool = False) -> onnx.ModelProto:
    """x -> SiLU(x·W0) ⊙ (x·W1 + b1) -> ·W2, as T5 v1.1 and Llama write their MLP, hidden unit 5 an outlier
    (`square`: the product is (x·W1 + b1)², which no scaling of W1 keeps exact)."""
    rng = np.random.default_rng(3)
    w0, w1, w2 = (rng.normal(0, 0.2, shape).astype(np.float32) for shape in ((64, 128), (64, 128), (128, 64)))
    w1[:, 5] *= 60
    h = onnx.helper
    gate = ["z1", "z1"] if square else ["silu", "z1"]
    nodes = [h.make_node("MatMul", ["x", "w0"], ["z0"]), h.make_node("Sigmoid", ["z0"], ["sig"]),
             h.make_node("Mul", ["z0", "sig"], ["silu"]), h.make_node("MatMul", ["x", "w1"], ["z1m"]),
             h.make_node("Add", ["z1m", "b1"], ["z1"]), h.make_node("Mul", gate, ["hidden"], name="gate"),
             h.make_node("MatMul", ["hidden", "w2"], ["y"])]  # fmt: skip
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in ((w0, "w0"), (w1, "w1"), (w2, "w2"))]
    inits.append(onnx.numpy_helper.from_array(rng.normal(0, 0.1, 128).astype(np.float32), "b1"))
    graph = h.make_graph(nodes, "gated", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16, 64])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 64])], inits)  # fmt: skip
    return onnx.shape_inference.infer_shapes(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))


def test_a_gated_mlps_product_is_smoothed_through_its_linear_branch() -> None:
    model = _gated_mlp()
    sites = {s.tensor: s for s in smoothquant.find_sites(GraphFacts.of(model))}
    assert sites["hidden"].producer.input[1] == "w1" and sites["hidden"].bias == "b1"
    feeds = [{"x": np.random.default_rng(k).normal(size=(1, 16, 64)).astype(np.float32)} for k in range(4)]
    ctx = AlgorithmContext(model, lambda: iter(enumerate(feeds)), lambda m, e: (m, None))
    ctx.config = {"alpha": 0.5, "keep": "always"}
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert "hidden (max/median" in smoothquant.run(ctx)[0]

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.stack([session.run(None, f)[0] for f in feeds])

    np.testing.assert_allclose(run(ctx.model), run(before), rtol=1e-4, atol=1e-4 * float(np.abs(run(before)).max()))
    w1 = onnx.numpy_helper.to_array(next(i for i in ctx.model.graph.initializer if i.name == "w1"))
    assert np.abs(w1[:, 5]).max() < 0.5 * 60 * 0.2 * 2  # the outlier unit's column shrank


def test_a_product_of_a_tensor_with_itself_is_not_a_site() -> None:
    assert "hidden" not in {s.tensor for s in smoothquant.find_sites(GraphFacts.of(_gated_mlp(square=True)))}


def test_the_warnings_layers_are_compared_with_the_smoothed_float_model(tmp_path: Path) -> None:
    """The quantized model computes the smoothed tensors (hidden / s): against the reference, the per-layer pass
    called the outlier unit 'clipped: values reach 13x its grid's end'."""
    model, calibration, _ = write_block(tmp_path, _gated_mlp())
    (tmp_path / "sq.yaml").write_text("smoothquant:\n  keep: always\n")
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "-o", tmp_path / "q.onnx", "--min_sqnr",
                      "99", "--apply_algorithms", "smoothquant", "--config", tmp_path / "sq.yaml"])  # fmt: skip
    assert result.exit_code == 6, result.stderr
    assert "worst layer" in result.stderr and "clipped" not in result.stderr


def test_inspect_leaves_out_the_tensors_smoothing_rescaled(tmp_path: Path) -> None:
    """`inspect --reference` compares with the float model as given, where the smoothed tensors hold s times
    what the quantized model computes; the model names them (qtool.rewritten) and inspect skips them."""
    model, calibration, _ = write_block(tmp_path, _gated_mlp())
    (tmp_path / "sq.yaml").write_text("smoothquant:\n  keep: always\n")
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "-o", out, "--apply_algorithms",
                      "smoothquant", "--config", tmp_path / "sq.yaml"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sorted(json.loads(gm.metadata(onnx.load(str(out)))["qtool.rewritten"])) == ["hidden", "z1", "z1m"]
    inspected = run_cli(["inspect", out, "--reference", model, "-l", calibration, "--json"])
    assert inspected.exit_code == 0, inspected.stderr
    rows = json.loads(inspected.stdout)["layers (worst first by added error)"]
    assert {r["tensor"] for r in rows} & {"hidden", "z1", "z1m"} == set() and rows


@pytest.mark.parametrize("output", ["hidden", "z1"])
def test_a_tensor_smoothing_would_scale_that_the_graph_outputs_is_no_site(output: str) -> None:
    """Scaling W1's columns divides the gate z1 and the product by s: as graph outputs they changed (97% off)."""
    model = _gated_mlp()
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    assert "hidden" not in {s.tensor for s in smoothquant.find_sites(GraphFacts.of(model))}


@pytest.mark.parametrize(
    ("flags", "copied"),
    [({"apply_algorithms": ("smoothquant", "bc")}, True),
     ({"apply_algorithms": ("smoothquant", "actsearch")}, False),  # it changes encodings, not weights
     ({"apply_algorithms": ("smoothquant", "adaround"), "evaluate_samples": 0}, False),  # nothing reads it
     ({"apply_algorithms": ("smoothquant", "adaround"), "input_list": None}, False)],
)  # fmt: skip
def test_the_float_stage_model_is_copied_for_the_warning_only_when_read_and_changed_after(flags, copied) -> None:
    """The copy costs the weights' size from the float stage to the evaluation: calibration's and the quantized
    stage's peak (2 GB on a large model), where only bc and adaround change weights, and only an evaluation reads it."""
    from qtool.api.quantize import _layer_reference
    from qtool.config import QuantizeOptions

    reference, model = _gated_mlp(), _gated_mlp()
    o = QuantizeOptions(**{"input_network": Path("m.onnx"), "input_list": Path("l.txt"), **flags})
    found = _layer_reference(o, reference, model, True)
    assert (found is not model and found is not reference) if copied else (found is model or found is reference)

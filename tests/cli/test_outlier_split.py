"""outlier_split: an MLP's outlier hidden units in a branch of their own (quant/algorithms/outlier_split.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from attention_models import S, _block_model, gated_mlp_model, mlp_model, post_ln_model, write_block
from conftest import run_cli

from qtool.graph.model import inferred
from qtool.io.feeds import iter_feeds, iter_samples
from qtool.io.input_list import read_input_list
from qtool.io.raw import InputSpec
from qtool.quant.algorithms import AlgorithmContext, outlier_split
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.residual import residual_stream

SPEC = [InputSpec("x", np.dtype(np.float32), (1, S, 64))]
W8A8 = ["--use_per_channel_quantization", "--use_per_row_quantization", "--bias_bitwidth", "32"]


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return write_block(tmp_path_factory.mktemp("outlier_unit"), post_ln_model(outlier_units=(7,)))


def test_units_are_chosen_by_the_noise_they_put_on_the_output() -> None:
    lo, hi, rows = np.full(8, -0.2), np.array([1.0, 1.2, 0.9, 1.1, 10.0, 1.0, 0.8, 1.3]), np.ones(8)
    # unsplit: 10.2² · 8 = 832; unit 4 alone: 10.2² · 1 + 1.5² · 7 = 120: at most half, so it is split
    assert outlier_split.choose_units(lo, hi, rows).tolist() == [4]
    # an even MLP stays whole: the best split (four units away: 1.5²·4 + 1.2²·4 = 14.8 vs 1.5²·8 = 18) pays < 3 dB
    assert outlier_split.choose_units(lo, np.minimum(hi, 1.3), rows).size == 0
    # when only the outlier's W2 row writes anything, the others' coarse grid does not reach the output
    assert outlier_split.choose_units(lo, hi, np.where(np.arange(8) == 4, 1.0, 0.01)).size == 0
    # never more than max_units
    wide = np.where(np.arange(8) < 3, 10.0, 1.0)
    assert outlier_split.choose_units(lo, wide, rows).tolist() == [0, 1, 2]
    assert outlier_split.choose_units(lo, wide, rows, max_units=1).size == 0


def _split(path: Path, calibration: Path) -> tuple[AlgorithmContext, list[str]]:
    model = inferred(onnx.load(str(path)))
    ctx = AlgorithmContext(model, lambda: iter_samples(read_input_list(calibration), SPEC), lambda m, e: (m, None))
    ctx.config = {"keep": "always"}
    return ctx, outlier_split.run(ctx)


def _outputs(model: onnx.ModelProto, listing: Path) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, feed)[0] for feed in iter_feeds(read_input_list(listing), SPEC)])


def test_the_split_is_exact_in_float_and_keeps_the_original_names(block) -> None:
    path, calibration, held_out = block
    ctx, notes = _split(path, calibration)
    # unit 7 and the six the loud residual channels drive hardest (max 43.4 -> 7.9 for the other 121)
    assert notes[0].startswith("outlier_split: 1 MLPs split: gelu (7 of 128 units")
    onnx.checker.check_model(ctx.model, full_check=True)
    nodes = {n.output[0]: n for n in ctx.model.graph.node}
    assert list(nodes["down"].input) == ["down_main", "down_outliers"]  # the MLP output keeps its name
    assert nodes["gelu"].input == ["up"] and nodes["gelu_outliers"].op_type == "Gelu"
    assert ctx.rewritten == {"up_mm", "up", "gelu"}  # narrowed to the other units: inspect --reference leaves them out
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in ctx.model.graph.initializer}
    assert weights["w1"].shape == (64, 121) and weights["w1_outliers"].shape == (64, 7)
    assert weights["w2"].shape == (121, 64) and weights["w2_outliers"].shape == (7, 64)
    before, after = _outputs(onnx.load(str(path)), held_out), _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))
    # both parts of the MLP output are residual-stream operands: each gets a grid per channel
    stream = residual_stream(GraphFacts.of(inferred(ctx.model)))
    assert {"down", "down_main", "down_outliers"} <= set(stream)


def test_an_even_mlp_is_left_alone(tmp_path: Path) -> None:
    path, calibration, _ = write_block(tmp_path, mlp_model(outlier_units=()))
    ctx, notes = _split(path, calibration)
    assert notes == ["outlier_split: no MLP has outlier units"]
    assert not any(n.name.endswith("_outliers") for n in ctx.model.graph.node)


def _quantize(tmp_path: Path, block, name: str, *extra) -> dict:
    model, calibration, held_out = block
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "--eval_list", held_out,
                      "-o", tmp_path / f"{name}.onnx", "--json", *W8A8, *extra])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_split_gains_on_held_out_samples(tmp_path: Path) -> None:
    mlp = write_block(tmp_path, mlp_model())
    plain = _quantize(tmp_path, mlp, "plain")
    split = _quantize(tmp_path, mlp, "split", "--apply_algorithms", "outlier_split")
    assert "outlier_split: 1 MLPs split: gelu (1 of 256 units" in split["algorithms"]
    # every tensor the split added or narrowed is on a grid (an untyped one would silently stay float)
    quantized = onnx.load(str(tmp_path / "split.onnx"))
    on_grid = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert {"up", "gelu", "y_main", "up_outliers", "gelu_outliers", "y_outliers", "y_prequant"} <= on_grid, on_grid
    sqnr = [r["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, split)]
    assert sqnr[1] >= sqnr[0] + 6.0, sqnr


@pytest.mark.parametrize(("yaml", "says"), [("max_units: 0", "max_units must be a positive integer, not 0"),
                                            ("keep: never", "keep must be auto or always, not 'never'")])  # fmt: skip
def test_bad_settings_are_one_line(tmp_path: Path, block, yaml: str, says: str) -> None:
    model, calibration, _ = block
    config = tmp_path / "c.yaml"
    config.write_text(f"outlier_split:\n  {yaml}\n")
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "-o", out,
                      "--apply_algorithms", "outlier_split", "--config", config])  # fmt: skip
    assert result.exit_code == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _chain_model() -> onnx.ModelProto:
    """DETR's box head: x[1,S,64] -> MatMul -> Relu -> MatMul -> Relu -> MatMul -> y, an outlier unit in each
    hidden layer: two MLPs sharing their middle MatMul."""
    rng = np.random.default_rng(0)
    w = {name: rng.normal(0, 1 / 8, shape).astype(np.float32) for name, shape in
         (("w1", (64, 64)), ("w2", (64, 64)), ("w3", (64, 64)))}  # fmt: skip
    w["b1"], w["b2"] = np.zeros(64, np.float32), np.zeros(64, np.float32)
    w["b1"][5], w["b2"][9] = 30.0, 30.0
    n = onnx.helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["a1"]), n("Relu", ["a1"], ["h1"]),
             n("MatMul", ["h1", "w2"], ["m2"]), n("Add", ["m2", "b2"], ["a2"]), n("Relu", ["a2"], ["h2"]),
             n("MatMul", ["h2", "w3"], ["y"])]  # fmt: skip
    graph = onnx.helper.make_graph(
        nodes, "chain", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, S, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, S, 64])],
        [onnx.numpy_helper.from_array(v, k) for k, v in w.items()],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_chain_of_mlps_splits_each_matmul_once_and_stays_exact(tmp_path: Path) -> None:
    """Splitting both MLPs named two nodes alike (onnxruntime refused the model: exit 3) and would have cut the
    first split's branch out of the second's input."""
    path, calibration, held_out = write_block(tmp_path, _chain_model())
    ctx, notes = _split(path, calibration)
    assert notes[0].startswith("outlier_split: 1 MLPs split: h1"), notes
    onnx.checker.check_model(ctx.model, full_check=True)
    before, after = _outputs(onnx.load(str(path)), held_out), _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))
    result = run_cli(["quantize", "-i", path, "--input_list", calibration, "-o", tmp_path / "q.onnx",
                      "--apply_algorithms", "outlier_split", *W8A8])  # fmt: skip
    assert result.exit_code == 0, result.stderr


def test_a_gated_mlp_splits_its_gate_and_its_up_alike_and_stays_exact(tmp_path: Path) -> None:
    """T5's and Llama's MLPs are gated, act(x·Wg) * x·Wu, the activation often written op by op: outlier_split
    found no MatMul -> activation -> MatMul in them and split nothing, though flan-t5's product carries units
    1500x its median one (block 6: 7897 against 5.3). Both ups' columns, the interior and Wd's rows split."""
    path, calibration, held_out = write_block(tmp_path, gated_mlp_model())
    ctx, notes = _split(path, calibration)
    assert notes[0].startswith("outlier_split: 1 MLPs split: hidden (2 of 256 units"), notes
    onnx.checker.check_model(ctx.model, full_check=True)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in ctx.model.graph.initializer}
    assert weights["wg_outliers"].shape == weights["wu_outliers"].shape == (64, 2) and weights["wd"].shape == (254, 64)
    assert weights["half"].shape == ()  # a constant every unit reads alike is shared, not split
    nodes = {n.output[0]: n for n in ctx.model.graph.node}
    assert list(nodes["hidden_outliers"].input) == ["gelu_outliers", "up_outliers"]
    assert list(nodes["g_cube_outliers"].input) == ["gate_outliers", "three"]
    assert "hidden" in ctx.rewritten and "g_tanh" in ctx.rewritten
    before, after = _outputs(onnx.load(str(path)), held_out), _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))
    block = (path, calibration, held_out)
    plain = _quantize(tmp_path, block, "plain")
    split = _quantize(tmp_path, block, "split", "--apply_algorithms", "outlier_split")
    sqnr = [r["outputs (float vs quantized)"][0]["sqnr_db"] for r in (plain, split)]
    assert sqnr[1] >= sqnr[0] + 1.5, sqnr  # 18.1 -> 20.5 dB: the output's own grid is what is left


def test_an_mlp_whose_interior_is_read_elsewhere_is_not_split() -> None:
    """Splitting units of a tensor something else also reads would hand that reader only some of them."""
    model = gated_mlp_model()
    model.graph.output.append(onnx.helper.make_tensor_value_info("g_tanh", onnx.TensorProto.FLOAT, [1, S, 256]))
    assert outlier_split.find_mlps(GraphFacts.of(inferred(model))) == []
    assert len(outlier_split.find_mlps(GraphFacts.of(inferred(gated_mlp_model())))) == 1


def test_a_split_mlp_quantizes_at_16_bits(tmp_path: Path) -> None:
    """16-bit Q/DQ upgrades the model to opset 21, whose converter checks every declared shape: the weights' own
    declarations, left at their width before the split, stopped it ('cannot upgrade opset 20 to 21 ... (255) vs
    (256)', exit 3; flan-t5's encoder at --act_bitwidth 16 too)."""
    mlp = write_block(tmp_path, mlp_model())
    report = _quantize(tmp_path, mlp, "a16", "--act_bitwidth", "16", "--apply_algorithms", "outlier_split")
    assert "outlier_split: 1 MLPs split: gelu (1 of 256 units" in report["algorithms"]


def test_an_mlp_whose_up_reads_its_own_units_is_not_split() -> None:
    """relu(x·W1) * (relu(x·W1)·Wb), then ·Wd: Wb has as many columns as Wd rows, so the walk took it for an up,
    though it reads the units a split narrows: the model written multiplied [.., 127] by Wb[128, 128] (checker:
    'Incompatible dimensions for matrix multiplication')."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(0, 0.1, (64, 128)), "wb": rng.normal(0, 0.1, (128, 128)), "wd": rng.normal(0, 0.1, (128, 64))}
    n = onnx.helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["a"]), n("Relu", ["a"], ["h1"]), n("MatMul", ["h1", "wb"], ["h2"]),
             n("Mul", ["h1", "h2"], ["hidden"]), n("MatMul", ["hidden", "wd"], ["y"])]  # fmt: skip
    model = _block_model(nodes, "m", {k: v.astype(np.float32) for k, v in weights.items()}, 64, opset=17, ir_version=8)
    assert outlier_split.find_mlps(GraphFacts.of(inferred(model))) == []


def test_a_per_unit_constant_a_node_reads_twice_is_split_once(tmp_path: Path) -> None:
    """Gelu(x·W1 + b * b)·W2: the split sliced b for each of the Mul's two inputs, the second time from the slice the
    first had left (helper-62's review)."""
    model = mlp_model()
    (add,) = [n for n in model.graph.node if n.output[0] == "up"]
    add.input[1] = "bias_squared"
    model.graph.node.insert(0, onnx.helper.make_node("Mul", ["bias1", "bias1"], ["bias_squared"]))
    weights = {i.name: i for i in model.graph.initializer}
    weights["bias1"].CopyFrom(onnx.numpy_helper.from_array(np.sqrt(np.abs(onnx.numpy_helper.to_array(weights["bias1"]))), "bias1"))
    path, calibration, held_out = write_block(tmp_path, model)
    ctx, notes = _split(path, calibration)
    assert notes[0].startswith("outlier_split: 1 MLPs split: gelu (1 of 256 units"), notes
    onnx.checker.check_model(ctx.model, full_check=True)
    before, after = _outputs(onnx.load(str(path)), held_out), _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))

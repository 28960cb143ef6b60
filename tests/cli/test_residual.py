"""Per-channel residual-stream encodings and SmoothQuant in a post-LN block (issue 20): a BERT-style
block whose LayerNorm inputs carry outlier channels, quantized W8A8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from attention_models import S, post_ln_model, write_block
from conftest import run_cli

from qtool.graph.model import inferred
from qtool.io.feeds import iter_feeds, iter_samples
from qtool.io.input_list import read_input_list
from qtool.io.raw import InputSpec
from qtool.quant.algorithms import AlgorithmContext, smoothquant
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.residual import observe_channels, on_residual_stream, residual_stream

SPEC = [InputSpec("x", np.dtype(np.float32), (1, S, 64))]
W8A8 = ["--use_per_channel_quantization", "--use_per_row_quantization", "--bias_bitwidth", "32"]


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return write_block(tmp_path_factory.mktemp("post_ln"), post_ln_model())


def test_the_residual_stream_is_the_layernorm_inputs_and_the_branches_added_into_them() -> None:
    found = residual_stream(GraphFacts.of(inferred(post_ln_model())))
    # h1 feeds a MatMul (its channels are summed with weights) and x too: both keep one grid
    assert found == ["res1", "attn", "attn_mm", "res2", "down", "down_mm"]


def test_an_rms_norm_written_op_by_op_anchors_the_residual_stream_too() -> None:
    """T5 (and a Llama exported below opset 23) has no LayerNormalization: its RMSNorm is Pow, ReduceMean, Add,
    Sqrt, Div. Without it no stream was found and --use_per_channel_residual did nothing, silently (flan-t5's
    encoder: 0.0 dB at W8A8, 1.6 with it; at A16 19.3 -> 26.5 dB)."""
    facts = GraphFacts.of(inferred(post_ln_model(rms=True)))
    assert residual_stream(facts) == ["res1", "attn", "attn_mm", "res2", "down", "down_mm"]
    # the layer a per-layer ranking blames for the stream's noise: the norm's output, or its float 1 / rms
    assert on_residual_stream(facts, "h2") and on_residual_stream(facts, "h2_rms_inverse")
    assert not on_residual_stream(facts, "y")


def test_per_channel_residual_gains_through_rms_norms(tmp_path: Path) -> None:
    block = write_block(tmp_path, post_ln_model(rms=True))
    plain, _ = _quantize(tmp_path, block, "plain")
    # the worst layer's fix is upstream, so a second layer is named: the stream's hint names the one it is about
    assert "; 'h2_rms_scaled' is on a transformer's residual stream: try --use_per_channel_residual" in plain["quality"]
    report, _ = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    assert _sqnr(report) >= _sqnr(plain) + 1.0, (_sqnr(plain), _sqnr(report))
    assert "per-channel residual: 4 tensors" in report["algorithms"]


def test_a_post_ln_model_gets_the_residual_hint_whatever_layer_the_ranking_blames(tmp_path: Path) -> None:
    """The ranking blames the layer that magnifies the stream's noise, off the stream (all-MiniLM-L6-v2: a GELU;
    here a Softmax over the block's output): the warning said to try auto + bc, which does not fix a post-LN
    stream (MiniLM 2.5 dB; the recipe 10.1), not the residual recipe inspect's post-ln-residual lint names."""
    model = post_ln_model()
    head = onnx.helper.make_node("Softmax", ["y"], ["p"], axis=-1)
    model.graph.node.append(head)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [1, S, 64]))
    block = write_block(tmp_path, model)
    plain, _ = _quantize(tmp_path, block, "plain")
    assert "worst layer 'p' (Softmax" in plain["quality"]
    assert "a post-LN transformer: its LayerNorms read residual sums ('res2'...)" in plain["quality"]
    assert "try --use_per_channel_residual" in plain["quality"] and "auto --apply_algorithms bc" not in plain["quality"]
    report, _ = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    assert _sqnr(report) >= _sqnr(plain) + 1.0, (_sqnr(plain), _sqnr(report))


def test_channel_ranges_are_each_channels_own(block) -> None:
    path, calibration, _ = block
    model = inferred(onnx.load(str(path)))
    observers = observe_channels(model, ["res2"], iter_samples(read_input_list(calibration), SPEC))
    session = ort.InferenceSession(_with_output(model, "res2").SerializeToString(), providers=["CPUExecutionProvider"])
    values = np.concatenate([session.run(["res2"], f)[0].reshape(-1, 64) for f in iter_feeds(read_input_list(calibration), SPEC)])
    np.testing.assert_allclose(observers["res2"].channel_lo, values.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(observers["res2"].channel_hi, values.max(axis=0), rtol=1e-6)
    assert observers["res2"].range() == (values.min(), values.max())


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return copy


def _quantize(tmp_path: Path, block, name: str, *extra) -> tuple[dict, Path]:
    model, calibration, held_out = block
    out = tmp_path / f"{name}.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", calibration, "--eval_list", held_out, "-o", out,
                      "--json", *W8A8, *extra])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), out


def _sqnr(report: dict) -> float:
    return report["outputs (float vs quantized)"][0]["sqnr_db"]


def test_per_channel_residual_gains_on_held_out_samples_and_writes_axis_encodings(tmp_path: Path, block) -> None:
    plain, _ = _quantize(tmp_path, block, "plain")
    assert "try --use_per_channel_residual" in plain["quality"]  # the warning names the fix
    report, out = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    assert _sqnr(report) >= _sqnr(plain) + 1.0, (_sqnr(plain), _sqnr(report))
    # the two LayerNorm inputs, the two branch sums; the MatMul outputs before their bias Adds have no grid
    assert "per-channel residual: 4 tensors" in report["algorithms"]
    quantized = onnx.load(str(out))
    q = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "res2")
    assert [(a.name, a.i) for a in q.attribute] == [("axis", -1)]
    scale = next(i for i in quantized.graph.initializer if i.name == q.input[1])
    assert list(scale.dims) == [64]
    h1 = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "h1")
    assert not h1.attribute  # a MatMul reads it: one grid
    encodings = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert len(encodings["res2"]) == 64 and len(encodings["h1"]) == 1


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0", "2.0.0"])
def test_per_channel_activation_encodings_round_trip_as_overrides(tmp_path: Path, block, fmt: str) -> None:
    model = block[0]
    _, out = _quantize(tmp_path, block, "first", "--use_per_channel_residual", "--encodings_format", fmt)
    again = tmp_path / "again.onnx"
    result = run_cli(["quantize", "-i", model, "--quantization_overrides", out.with_suffix(".encodings.json"),
                      "--enable_float_fallback", "-o", again, "--encodings_format", fmt, *W8A8])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    first, second = onnx.load(str(out)), onnx.load(str(again))
    assert {i.name: i.raw_data for i in first.graph.initializer} == {i.name: i.raw_data for i in second.graph.initializer}
    assert out.with_suffix(".encodings.json").read_bytes() == again.with_suffix(".encodings.json").read_bytes()


def test_per_channel_activation_overrides_are_checked(tmp_path: Path, block) -> None:
    model, calibration, _ = block

    def run(entries: dict) -> object:
        overrides = tmp_path / "o.json"
        overrides.write_text(json.dumps({"activation_encodings": entries, "param_encodings": {}}))
        return run_cli(["quantize", "-i", model, "--input_list", calibration, "-o", tmp_path / "q.onnx",
                        "--quantization_overrides", overrides])  # fmt: skip

    entry = {"bitwidth": 8, "min": -1.0, "max": 1.0, "is_symmetric": "False"}
    wrong = run({"up": [entry] * 64})  # up has 128 channels
    assert wrong.exit_code == 4 and "override 'up'" in wrong.stderr and "128 channels" in wrong.stderr
    assert not (tmp_path / "q.onnx").exists()
    assert run({"up": [entry] * 128}).exit_code == 0


def test_smoothquant_smooths_a_post_ln_output_and_keeps_the_residual_exact(block) -> None:
    path, calibration, held_out = block
    model = onnx.load(str(path))
    sites = smoothquant.find_sites(GraphFacts.of(model))
    assert [(s.tensor, [o.name for o in s.others]) for s in sites] == [("h1", ["Add_9"]), ("h2", [])]
    ctx = AlgorithmContext(model, lambda: iter_samples(read_input_list(calibration), SPEC), lambda m, e: (m, None))
    ctx.config = {"alpha": 0.5, "keep": "always"}
    notes = smoothquant.run(ctx)
    assert "2 tensors smoothed" in notes[0]
    residual = next(n for n in ctx.model.graph.node if n.name == "Add_9")
    assert list(residual.input) == ["down", "h1_unsmoothed"]
    onnx.checker.check_model(ctx.model, full_check=True)
    before = _outputs(onnx.load(str(path)), held_out)
    after = _outputs(ctx.model, held_out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))


def _outputs(model: onnx.ModelProto, listing: Path) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, feed)[0] for feed in iter_feeds(read_input_list(listing), SPEC)])


def test_smoothquant_with_per_channel_residual_beats_either_alone(tmp_path: Path, block) -> None:
    """SmoothQuant gives the MatMuls reading h1 a fine grid; the residual reads h1_unsmoothed, which only a
    grid per channel holds: each needs the other."""
    pcr, _ = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    smooth, _ = _quantize(tmp_path, block, "sq", "--apply_algorithms", "smoothquant", "--config", _always(tmp_path))
    both, _ = _quantize(tmp_path, block, "both", "--use_per_channel_residual", "--apply_algorithms", "smoothquant")
    assert "h1 (max/median" in both["algorithms"]
    # the LayerNorm copy the residual reads is on a grid (per channel), not left float for want of a type
    quantized = onnx.load(str(tmp_path / "both.onnx"))
    q = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "h1_unsmoothed")
    assert [(a.name, a.i) for a in q.attribute] == [("axis", -1)]
    assert _sqnr(both) >= max(_sqnr(pcr), _sqnr(smooth)) + 6.0, (_sqnr(pcr), _sqnr(smooth), _sqnr(both))


def _always(tmp_path: Path) -> Path:
    config = tmp_path / "always.yaml"
    config.write_text("smoothquant:\n  keep: always\n")
    return config


def test_ranges_export_keeps_a_per_channel_activation_as_the_union_of_its_channels(tmp_path: Path, block) -> None:
    _, out = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    result = run_cli(["export", "-i", out, "--format", "ranges", "-o", tmp_path / "ranges"])
    assert result.exit_code == 0, result.stderr
    tensors = json.loads(next((tmp_path / "ranges").glob("*.ranges.json")).read_text())["tensors"]
    channels = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]["res2"]
    assert tensors["res2"]["lo"] == pytest.approx(min(c["min"] for c in channels))
    assert tensors["res2"]["hi"] == pytest.approx(max(c["max"] for c in channels))


def test_a_residual_operand_sharing_a_grid_keeps_it(tmp_path: Path) -> None:
    """A ViT adds positions to Concat(cls, patches): the Concat's output shares its inputs' grid, so it
    keeps one (a per-channel observer merged into a histogram group was an internal error under sqnr)."""
    rng = np.random.default_rng(0)
    n = onnx.helper.make_node
    nodes = [n("Concat", ["cls", "x"], ["tokens"], axis=1), n("Add", ["tokens", "pos"], ["embedded"]),
             n("LayerNormalization", ["embedded", "g", "b"], ["y"], axis=-1)]  # fmt: skip
    inits = {"pos": rng.normal(0, 1, (1, S + 1, 64)), "g": rng.uniform(0.5, 1.5, 64), "b": rng.normal(0, 0.1, 64)}
    graph = onnx.helper.make_graph(
        nodes, "vit_embed",
        [onnx.helper.make_tensor_value_info("cls", onnx.TensorProto.FLOAT, [1, 1, 64]),
         onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, S, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, S + 1, 64])],
        [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )  # fmt: skip
    model = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(model))
    lines = []
    for i in range(8):
        for name, shape in (("cls", (1, 1, 64)), ("x", (1, S, 64))):
            (tmp_path / f"{name}{i}.raw").write_bytes(rng.normal(0, 1, shape).astype(np.float32).tobytes())
        lines.append(f"cls:={tmp_path}/cls{i}.raw x:={tmp_path}/x{i}.raw")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    result = run_cli(["quantize", "-i", model, "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx", "--json",
                      "--use_per_channel_residual", "--act_quantizer_calibration", "sqnr"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "per-channel residual: 1 tensors" in json.loads(result.stdout)["algorithms"]  # embedded only


def test_inspect_flags_a_post_ln_residual_sum_until_it_has_a_grid_per_channel(tmp_path: Path, block) -> None:
    model = block[0]
    _, plain = _quantize(tmp_path, block, "plain")
    _, per_channel = _quantize(tmp_path, block, "pcr", "--use_per_channel_residual")
    found = {}
    for name, path in (("float", model), ("plain", plain), ("pcr", per_channel)):
        result = run_cli(["inspect", path, "--json"])
        assert result.exit_code == 0, result.stderr
        found[name] = [f for f in json.loads(result.stdout)["findings"] if f["lint"] == "post-ln-residual"]
    assert [f["where"] for f in found["float"]] == ["tensor 'res2'"]  # res1 adds x, not a LayerNorm output
    assert "--use_per_channel_residual" in found["float"][0]["fix"]
    assert len(found["plain"]) == 1 and found["pcr"] == []
    pre_ln = run_cli(["inspect", _pre_ln(tmp_path), "--json"])
    assert not [f for f in json.loads(pre_ln.stdout)["findings"] if f["lint"] == "post-ln-residual"]


def _pre_ln(tmp_path: Path) -> Path:
    """The block rewired pre-LN (as ViT and Llama): the residual adds the Add's input, not the LayerNorm's output."""
    model = post_ln_model()
    for node in model.graph.node:
        if node.output[0] == "res2":
            node.input[1] = "res1"
    path = tmp_path / "pre_ln.onnx"
    onnx.save(model, str(path))
    return path


def test_a_pre_ln_stream_that_starts_at_a_layernorm_is_not_post_ln(tmp_path: Path) -> None:
    """Swin adds its patch embedding's LayerNorm output into its first residual sum; that sum is read by the next
    LayerNorm and, past it, by the next residual Add. Flagged as post-LN, it was told to use BERT's recipe."""
    n = onnx.helper.make_node
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(0, 0.1, (16, 16)).astype(np.float32) for k in ("w1", "w2")}
    arrays.update(g=np.ones(16, np.float32), b=np.zeros(16, np.float32))
    nodes = [n("LayerNormalization", ["x", "g", "b"], ["embed"], axis=-1),        # the patch embedding's norm
             n("LayerNormalization", ["embed", "g", "b"], ["ln1"], axis=-1),
             n("MatMul", ["ln1", "w1"], ["attn"]), n("Add", ["embed", "attn"], ["res1"]),
             n("LayerNormalization", ["res1", "g", "b"], ["ln2"], axis=-1),
             n("MatMul", ["ln2", "w2"], ["mlp"]), n("Add", ["res1", "mlp"], ["y"])]  # fmt: skip
    graph = onnx.helper.make_graph(nodes, "swin", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 16])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 16])],
                                   [onnx.numpy_helper.from_array(v, k) for k, v in arrays.items()])  # fmt: skip
    path = tmp_path / "swin.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    result = run_cli(["inspect", path, "--json"])
    assert result.exit_code == 0, result.stderr
    assert not [f for f in json.loads(result.stdout)["findings"] if f["lint"] == "post-ln-residual"]


def test_a_transformer_still_far_with_its_stream_per_channel_is_pointed_at_16_bit_activations(tmp_path: Path) -> None:
    """The residual recipe followed, the warning had nothing left to say but one 16-bit tensor at a time
    (flan-t5's encoder: 5.6 dB with the recipe and smoothquant, 27.5 dB at W8A16)."""
    model, calibration, _ = write_block(tmp_path, post_ln_model(rms=True))
    args = ["quantize", "-i", model, "--input_list", calibration, "-o", tmp_path / "q.onnx", "--min_sqnr", "99", *W8A8]
    with_stream = run_cli([*args, "--use_per_channel_residual"])
    assert with_stream.exit_code == 6 and "--act_bitwidth 16 (W8A16" in with_stream.stderr, with_stream.stderr
    without = run_cli(args)
    assert without.exit_code == 6 and "--act_bitwidth 16 (W8A16" not in without.stderr
    assert "try --use_per_channel_residual" in without.stderr


def test_the_residual_recipe_names_only_the_rewrites_that_find_something() -> None:
    """A block whose MLP outlier_split cannot rewrite (here its activation is one no unit-by-unit split knows) gets
    no outlier_split in the hint: the report had sent users to an algorithm that then warned "nothing split"."""
    from qtool.quant.algorithms.residual_recipe import residual_recipe

    both = "--use_per_channel_residual --apply_algorithms outlier_split --apply_algorithms smoothquant"
    assert residual_recipe(GraphFacts.of(inferred(post_ln_model()))) == both
    unknown = post_ln_model()
    (act,) = [node for node in unknown.graph.node if node.op_type == "Gelu"]
    act.op_type = "Identity"
    assert residual_recipe(GraphFacts.of(inferred(unknown))) == "--use_per_channel_residual --apply_algorithms smoothquant"

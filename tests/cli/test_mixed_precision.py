"""Automatic and manual mixed precision."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qnn_models import qtool

from qtool.io.encodings import read_encodings
from qtool.quant import mixed_precision as mp


def planted_model() -> onnx.ModelProto:
    """x -> convA -> a -> convB -> b -> convC -> y. b has one channel 1000x larger than the others,
    and convC reads mostly the small ones, so b's 8-bit grid ruins the output: b is the planted
    sensitive layer."""
    rng = np.random.default_rng(0)
    wa = rng.normal(size=(4, 2, 1, 1)).astype(np.float32)
    wb = rng.normal(size=(4, 4, 1, 1)).astype(np.float32)
    wb[0] *= 1000.0
    wc = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    wc[:, 0] *= 1e-3
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="convA"),
        helper.make_node("Conv", ["a", "wb"], ["b"], name="convB"),
        helper.make_node("Conv", ["b", "wc"], ["c"], name="convC"),
        helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    inits = [numpy_helper.from_array(w, n) for w, n in ((wa, "wa"), (wb, "wb"), (wc, "wc"))]
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def setup(tmp_path: Path) -> tuple[Path, Path]:
    onnx.save(planted_model(), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    for k in range(8):
        rng.normal(size=(1, 2, 4, 4)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("\n".join(f"s{k}.raw" for k in range(8)) + "\n")
    return tmp_path / "m.onnx", tmp_path / "list.txt"


def test_auto_picks_the_planted_layer_first_and_replays_byte_for_byte(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    out = tmp_path / "q.onnx"
    code, stdout, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        out,
        "--mixed_precision",
        "auto",
        "--target_sqnr",
        "30",
        "--json",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["16-bit layers"].split(", ")[0] == "b+weights"  # its outlier row needs both
    chosen = read_encodings(out.with_suffix(".mixed_precision.json"))
    assert chosen.activations["b"].bitwidth == 16 and chosen.params["wb"].bitwidth == 16
    assert report["outputs (float vs quantized)"][0]["sqnr_db"] >= 30
    replay = tmp_path / "r.onnx"
    assert (
        qtool(
            "quantize",
            "-i",
            model,
            "--input_list",
            listing,
            "-o",
            replay,
            "--quantization_overrides",
            out.with_suffix(".mixed_precision.json"),
        )[0]
        == 0
    )
    assert replay.read_bytes() == out.read_bytes()


def test_precision_propagates_through_ops_that_cannot_change_it(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    out = tmp_path / "q.onnx"
    assert qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--act_16bit_tensors", "c")[0] == 0
    enc = read_encodings(out.with_suffix(".encodings.json"))
    assert enc.activations["c"].bitwidth == enc.activations["y"].bitwidth == 16  # MaxPool takes it along
    assert enc.activations["b"].bitwidth == 8


def test_unreachable_target_writes_the_best_model_and_fails_only_with_strict(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    out = tmp_path / "q.onnx"
    # the user pins the planted tensor at 8 bits (overrides win), so no candidate can reach the target
    pinned = tmp_path / "pinned.json"
    pinned.write_text(
        json.dumps({"activation_encodings": {"b": [{"bitwidth": 8, "min": -4e3, "max": 4e3}]}, "param_encodings": {}})
    )
    code, stdout, _ = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        out,
        "--mixed_precision",
        "auto",
        "--target_sqnr",
        "500",
        "--quantization_overrides",
        pinned,
        "--json",
    )
    assert code == 0 and "NOT met" in json.loads(stdout)["target"] and out.exists()
    code, _, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        out,
        "--mixed_precision",
        "auto",
        "--target_sqnr",
        "500",
        "--quantization_overrides",
        pinned,
        "--strict",
    )
    assert code == 3 and "not met" in err


def test_cost_budget_keeps_the_factor_and_16bit_names_are_checked(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    code, stdout, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        tmp_path / "q.onnx",
        "--mixed_precision",
        "auto",
        "--mixed_precision_factor",
        "1.5",
        "--json",
    )
    assert code == 0, err
    curve = json.loads(stdout)["pareto (cost vs accuracy)"]
    assert all(p["cost_factor"] <= 1.5 for p in curve)
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "--act_16bit_tensors", "bb")
    assert code == 2 and "did you mean 'b'" in err


def test_cost_model_counts_the_macs_of_every_layer_a_16bit_tensor_feeds() -> None:
    act = mp.Candidate("t", ["t"], [], ["conv1", "conv2"], [], elems=10)
    weights = mp.Candidate("conv1:weights", [], ["w"], [], ["conv1"], elems=0)
    model = mp.CostModel({"conv1": 100, "conv2": 300, "conv3": 600}, elems=90)
    assert model.macs_16bit_pct([act]) == 40.0 and model.macs_16bit_pct([weights]) == 10.0
    assert model.factor([]) == 1.0
    assert model.factor([act]) == (200 + 600 + 600 + 90 + 10) / 1090  # A16W8: 2x the MACs
    assert model.factor([act, weights]) == (400 + 600 + 600 + 100) / 1090  # A16W16: 4x


def test_greedy_order_counts_a_layer_already_raised_once() -> None:
    model = mp.CostModel({"big": 1000, "small": 10}, elems=0)
    big_act = mp.Candidate("big_in", ["big_in"], [], ["big"], [], 0, gain=5.0)
    big_w = mp.Candidate("big:weights", [], ["w"], [], ["big"], 0, gain=4.0)
    both = mp.Candidate("big_in+weights", ["big_in"], ["w"], ["big"], ["big"], 0, gain=8.0)
    small = mp.Candidate("small_in", ["small_in"], [], ["small"], [], 0, gain=1.0)
    useless = mp.Candidate("flat", ["flat"], [], [], [], 0, gain=0.0)
    order = mp.greedy_order([useless, big_w, small, big_act, both], model)
    # big_in (+5 dB for 1000 more) beats both (+8 for 3000); then both costs 2000 more for its weights
    assert [c.name for c in order] == ["small_in", "big_in", "big_in+weights", "flat"]


def test_running_cost_adds_what_the_factor_of_the_whole_set_does() -> None:
    """greedy_order's per-candidate update (RunningCost) against CostModel.factor recomputed, on random sets
    mixing 16-bit, float and weight candidates over shared layers and groups."""
    rng = np.random.default_rng(5)
    layers = [f"L{i}" for i in range(6)]
    model = mp.CostModel({name: int(rng.integers(10, 1000)) for name in layers}, elems=500)
    cands = []
    for g in range(8):
        readers = list(rng.choice(layers, size=int(rng.integers(0, 3)), replace=False))
        elems = int(rng.integers(1, 100))
        cands += [mp.Candidate(f"t{g}", [f"t{g}"], [], readers, [], elems)]
        cands += [mp.Candidate(f"t{g}:f{b}", [f"t{g}"], [], readers, [], elems + b, float_bits=b) for b in (16, 32)]
        cands += [mp.Candidate(f"t{g}+w", [f"t{g}"], [f"w{g}"], readers, [layers[g % 6]], elems)]
        cands += [mp.Candidate(f"w{g}", [], [f"w{g}"], [], [layers[g % 6]], 0)]
    for _ in range(20):
        taken: list[mp.Candidate] = []
        running = mp.RunningCost(model)
        for k in rng.permutation(len(cands))[:12]:
            c = cands[k]
            assert np.isclose(running.added(c), model.factor([*taken, c]) - model.factor(taken), rtol=0, atol=1e-12)
            taken.append(c)
            running.add(c)


def test_html_report_draws_the_pareto_curve(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    page = tmp_path / "report.html"
    code, _, err = qtool(
        "quantize",
        "-i",
        model,
        "--input_list",
        listing,
        "-o",
        tmp_path / "q.onnx",
        "--mixed_precision",
        "auto",
        "--target_sqnr",
        "30",
        "--html",
        page,
    )
    assert code == 0, err
    text = page.read_text()
    assert "<svg" in text and "<polyline" in text and "http" not in text


def test_proxy_sensitivity_runs_in_one_pass_and_meets_the_target(tmp_path: Path) -> None:
    model, listing = setup(tmp_path)
    flags = ["--mixed_precision", "auto", "--target_sqnr", "30", "--mixed_precision_sensitivity", "proxy", "--json"]
    code, stdout, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "q.onnx", *flags)
    assert code == 0, err
    report = json.loads(stdout)
    raised = [name.split("+")[0] for name in report["16-bit layers"].split(", ")]
    assert report["outputs (float vs quantized)"][0]["sqnr_db"] >= 30 and "b" in raised


def _dequantized_weight(model: onnx.ModelProto, conv: str) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == conv)
    dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q, scale = values[dq.input[0]].astype(np.float64), values[dq.input[1]]
    zp = values[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else 0.0
    shape = [-1] + [1] * (q.ndim - 1) if np.ndim(scale) else []
    return (q - np.reshape(zp, shape)) * np.reshape(scale, shape)


def test_a_weight_adaround_froze_gets_its_float_values_back_at_16_bits(tmp_path: Path) -> None:
    """adaround puts wb on its 8-bit grid and freezes it; raising wb must start again from the float
    weights, or the 16-bit layer would still carry 8-bit rounding error."""
    model, listing = setup(tmp_path)
    out = tmp_path / "q.onnx"
    args = ["quantize", "-i", model, "--input_list", listing, "-o", out, "--apply_algorithms", "adaround"]
    code, stdout, err = qtool(*args, "--mixed_precision", "auto", "--target_sqnr", "30", "--json")
    assert code == 0, err
    assert "b+weights" in json.loads(stdout)["16-bit layers"]
    written = _dequantized_weight(onnx.load(out), "convB")
    float_wb = numpy_helper.to_array(next(i for i in planted_model().graph.initializer if i.name == "wb"))
    assert np.abs(written - float_wb).max() <= np.abs(float_wb).max() / 2**15


def test_trials_on_a_copy_with_adarounds_weights_restored_leave_nothing_in_the_memo(tmp_path: Path, monkeypatch) -> None:
    """Each such trial quantizes its own copy of the model; a memo entry holding one of its tensors held the whole
    copy, so every such trial's copy (and its 16-bit opset's) stayed to the end of the search: 22 for 11 trials."""
    from conftest import run_cli

    from qtool.api import mixed
    from qtool.graph import trial_memo

    model, listing = setup(tmp_path)
    search, held = mixed._search, {}

    def spied(o, ctx, reference, listing, observe):
        searched, result = ctx.model, search(o, ctx, reference, listing, observe)
        entries = trial_memo._SCOPES[-1].entries
        held["tensors"] = {id(p) for protos, _, _ in entries.values() for p in protos if isinstance(p, onnx.TensorProto)}
        models = [searched, *(value for (kind, *_), (_, value, _) in entries.items() if kind == "upgraded")]
        # the Q/DQ writer's 16-bit opset copy holds only the small weights (d756d64): (model, the searched one's large)
        models += [value[0] for (kind, *_), (_, value, _) in entries.items() if kind == "upgraded weightless"]
        held["models'"] = {id(t) for m in models for t in m.graph.initializer}  # the searched one, its 16-bit opset's
        return result

    monkeypatch.setattr(mixed, "_search", spied)
    args = ["quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "q.onnx", "--apply_algorithms", "adaround"]
    result = run_cli([*args, "--mixed_precision", "auto", "--target_sqnr", "30", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "b+weights" in json.loads(result.stdout)["16-bit layers"]  # a frozen weight was raised: copies were made
    assert held["tensors"] and held["tensors"] <= held["models'"]


def test_auto_sensitivity_is_exact_unless_its_estimate_passes_the_budget(tmp_path: Path, monkeypatch) -> None:
    """The exact pass costs one trial per candidate: a YOLOX detector's 841 did not finish in 20 minutes. auto
    times one trial and takes the proxy's single pass past EXACT_SECONDS; the report says which ran."""
    from conftest import run_cli

    from qtool.api import mixed

    model, listing = setup(tmp_path)
    args = ["quantize", "-i", model, "--input_list", listing, "--mixed_precision", "auto", "--target_sqnr", "30", "--json"]
    found = {}
    for budget in (mixed.EXACT_SECONDS, 0.0):
        monkeypatch.setattr(mixed, "EXACT_SECONDS", budget)
        result = run_cli([*args, "-o", tmp_path / f"q{budget:g}.onnx"])
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        found[budget] = report["sensitivity"]
        assert report["outputs (float vs quantized)"][0]["sqnr_db"] >= 30
    assert found[600.0].startswith("exact (auto: ~")
    assert found[0.0].startswith("proxy (auto: ~")


def test_auto_sensitivity_is_the_same_on_a_slow_machine(tmp_path: Path, monkeypatch) -> None:
    """auto chose by timing one trial, so a loaded machine took the other pass and wrote another model (ddddocr's
    CTC: exact at load 3, proxy at load 5). The estimate comes from the model and the list alone: trials ten
    times slower give the same estimate, the same pass and the same bytes."""
    from conftest import run_cli

    from qtool.api import mixed
    from qtool.quant import mixed_precision as mp

    model, listing = setup(tmp_path)
    args = ["quantize", "-i", model, "--input_list", listing, "--mixed_precision", "auto", "--target_sqnr", "30", "--json"]
    fast = run_cli([*args, "-o", tmp_path / "fast.onnx"])
    real = mp.Evaluator.screened

    def slow(self, encodings):
        started = time.perf_counter()
        found = real(self, encodings)
        time.sleep(9 * (time.perf_counter() - started))
        return found

    monkeypatch.setattr(mp.Evaluator, "screened", slow)
    slowed = run_cli([*args, "-o", tmp_path / "slow.onnx"])
    assert fast.exit_code == slowed.exit_code == 0, fast.stderr + slowed.stderr
    chosen = [json.loads(r.stdout)["sensitivity"] for r in (fast, slowed)]
    assert chosen[0] == chosen[1] and chosen[0].startswith("exact (auto: ~")
    assert (tmp_path / "fast.onnx").read_bytes() == (tmp_path / "slow.onnx").read_bytes()
    # the budget still decides: the same estimate past a smaller one takes the proxy
    monkeypatch.setattr(mixed, "EXACT_SECONDS", 0.5 * float(chosen[0].split("~")[1].split(" s")[0]))
    assert json.loads(run_cli([*args, "-o", tmp_path / "p.onnx"]).stdout)["sensitivity"].startswith("proxy")


def test_a_shared_configs_mixed_precision_can_be_turned_off_on_the_command_line(tmp_path: Path) -> None:
    """CLI > --config: a team's config with `mixed_precision: auto` and `target_sqnr: 30`, run once with
    `--mixed_precision off`, was refused as '--target_sqnr applies to --mixed_precision auto's search, which is
    off', its hint to add --mixed_precision auto; the only way out was editing the shared file. A goal with no
    --mixed_precision anywhere is still refused (a slip: the run would ignore it)."""
    model, listing = setup(tmp_path)
    config = tmp_path / "team.yaml"
    config.write_text("mixed_precision: auto\ntarget_sqnr: 30\n")
    common = ("quantize", "-i", model, "--input_list", listing, "--json")
    code, stdout, err = qtool(*common, "-o", tmp_path / "off.onnx", "--config", config, "--mixed_precision", "off")
    assert code == 0, err
    assert "sensitivity" not in json.loads(stdout) and not (tmp_path / "off.mixed_precision.json").exists()
    code, _, err = qtool(*common, "-o", tmp_path / "slip.onnx", "--target_sqnr", "30")
    assert code == 2 and "--mixed_precision auto" in err


def test_auto_sensitivity_takes_the_proxy_when_a_mac_layers_shape_is_unknown(tmp_path: Path) -> None:
    """The estimate counts each MAC layer's MACs from inferred shapes; past an op onnx's inference does not know (a
    contrib Gelu) the Convs had none, and 12 of them 128x128 wide read ~1 s for 19 trials that took ~50: a
    model so blind to its estimate takes the proxy, and says why."""
    from conftest import run_cli

    model = planted_model()
    model.graph.node.insert(0, helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"))
    model.graph.node[1].input[0] = "g"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    source, listing = setup(tmp_path)
    onnx.save(model, source)
    result = run_cli(["quantize", "-i", source, "--input_list", listing, "--mixed_precision", "auto", "--target_sqnr",
                      "30", "--json", "-o", tmp_path / "q.onnx"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sensitivity"].startswith("proxy (auto: 3 MAC layers of unknown shape")

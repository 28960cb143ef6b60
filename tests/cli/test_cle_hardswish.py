"""cle through HardSwish into a depthwise Conv (quant/algorithms/cle_hardswish.py): exact in float, and the
silent channel it widens is what a plain 8-bit grid loses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from algorithm_models import hardswish_depthwise
from qnn_models import qtool
from test_algorithms import outputs, write_samples

from qtool import runtime
from qtool.quant.algorithms import AlgorithmContext, cle, cle_hardswish
from qtool.quant.graph_facts import GraphFacts


def _context(model: onnx.ModelProto, count: int = 8) -> AlgorithmContext:
    rng = np.random.default_rng(3)
    feeds = [{"x": (rng.normal(size=(1, 3, 16, 16)) * 2).astype(np.float32)} for _ in range(count)]
    return AlgorithmContext(model, samples=lambda: iter(("s", f) for f in feeds), quantize=lambda m, e: (m, None))


def _spans(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Each channel's span over the calibration samples, as the scales were chosen on."""
    run = runtime.runner(model, names)
    runs = [run(feed) for _, feed in _context(model).samples()]
    values = {n: np.concatenate([r[n] for r in runs]) for n in names}
    return {n: v.max(axis=(0, 2, 3)).clip(0) - v.min(axis=(0, 2, 3)).clip(None, 0) for n, v in values.items()}


@pytest.mark.parametrize("affine", [False, True])
def test_the_rewrite_keeps_the_float_function_and_widens_the_silent_channel(affine: bool) -> None:
    model = hardswish_depthwise(affine)
    read = "hb" if affine else "h"  # what the depthwise Conv reads
    x = (np.random.default_rng(1).normal(size=(1, 3, 16, 16)) * 2).astype(np.float32)
    before, spans = outputs(model, x), _spans(model, ["u", read])
    assert spans["u"][5] < spans["u"].max() / 50 and spans[read][5] < spans[read].max() / 50  # channel 5 silent
    notes = " ".join(cle.run(_context(model)))
    assert "1 HardSwish -> depthwise pairs" in notes and "hs (2 of 16 channels" in notes, notes
    assert [n.op_type for n in model.graph.node].count("HardSigmoid") == 1
    np.testing.assert_allclose(outputs(model, x), before, rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(model)
    # renamed: a per-layer comparison with the float model as given must not match them
    assert not {"u", "h", read} & {o for n in model.graph.node for o in n.output}
    u, read = "u_equalized", f"{read}_equalized"
    spans = _spans(model, [u, read])
    assert spans[u][5] > spans[u].max() / 5 and spans[read][5] > spans[read].max() / 5  # widened at both
    assert spans[u].max() <= 1.01 * _spans(hardswish_depthwise(affine), ["u"])["u"].max()  # no grid grew


def test_a_tensor_an_override_pins_is_not_rescaled() -> None:
    facts = GraphFacts.of(hardswish_depthwise())
    assert cle_hardswish.find_pairs(facts, set()) and not cle_hardswish.find_pairs(facts, {"h"})


def test_quantize_recovers_the_silent_channel_by_default(tmp_path: Path) -> None:
    onnx.save(hardswish_depthwise(affine=True), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 3, 16, 16))
    sqnr, notes = [], []
    for name, extra in (("left", ["--no_hardswish_equalization"]), ("default", []), ("cle", ["--apply_algorithms", "cle"])):
        code, out, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / f"{name}.onnx",
                               "--use_per_channel_quantization", "--json", "--act_quantizer_calibration", "min-max",
                               *extra)  # fmt: skip
        assert code == 0, err
        report = json.loads(out)
        sqnr.append(report["outputs (float vs quantized)"][0]["sqnr_db"])
        notes.append(report.get("algorithms", ""))
    assert sqnr[1] > sqnr[0] + 12 and sqnr[2] > sqnr[0] + 12, sqnr  # 17.1 -> 33.7 dB
    assert notes[0].startswith("bc auto: not tried (") and "1 HardSwish -> depthwise pairs" in notes[1] and "input noise -" in notes[1]
    assert notes[2].startswith("cle:") and "1 HardSwish" in notes[2]  # cle takes them itself, with its trial


def test_the_default_leaves_a_pair_with_little_to_gain() -> None:
    """Channels that already fill the grid: the rewrite's two ops would buy nothing (the default's 6 dB bar)."""
    model = hardswish_depthwise()
    w = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w0")).copy()
    w[5] *= 100  # channel 5 no longer silent
    next(i for i in model.graph.initializer if i.name == "w0").CopyFrom(onnx.numpy_helper.from_array(w, "w0"))
    ctx = _context(model)
    pairs = cle_hardswish.find_pairs(GraphFacts.of(model), set())
    assert cle_hardswish.equalize(ctx, pairs, cle_hardswish.DEFAULT_GAIN_DB) == []
    assert [n.op_type for n in model.graph.node].count("HardSwish") == 1


def test_statistics_shards_describe_the_graph_as_given(tmp_path: Path) -> None:
    """A --save_stats shard is merged with others and replayed by a --load_stats run that has no samples to take
    spans from: it must not rewrite the graph (each shard would widen by its own spans)."""
    onnx.save(hardswish_depthwise(), tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 3, 16, 16), n=4)
    code, out, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", tmp_path / "q.onnx",
                           "--save_stats", tmp_path / "s.json", "--json", "--act_quantizer_calibration", "min-max")  # fmt: skip
    assert code == 0, err
    assert "HardSwish" not in json.loads(out)["algorithms"]  # only the default bc's line: not tried
    code, _, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--load_stats", tmp_path / "s.json", "-o", tmp_path / "l.onnx")
    assert code == 0, err


def test_inspect_names_no_cle_for_a_pair_the_default_equalized(tmp_path: Path) -> None:
    """inspect --reference told trueocr 0.1.1's detector 'cle: --apply_algorithms cle (depthwise chain)' for
    depthwise Convs whose HardSwish pair quantize's default had rewritten: cle then wrote the same bytes. Here
    'd' read 'cle: ... (the channels of 'w1' differ ...)'; left as it is (--no_hardswish_equalization), cle stays."""
    model = hardswish_depthwise()
    keep = [n for n in model.graph.node if n.name in ("conv0", "hs", "dw")]  # the depthwise Conv ends it: no ReLU pair
    del model.graph.node[:]
    model.graph.node.extend(keep)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, [1, 16, 16, 16]))
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "w2"))
    onnx.save(model, tmp_path / "m.onnx")
    listing = write_samples(tmp_path, (1, 3, 16, 16))
    fixes = []
    for extra in ([], ["--no_hardswish_equalization"]):
        out = tmp_path / f"q{len(extra)}.onnx"
        code, _, err = qtool("quantize", "-i", tmp_path / "m.onnx", "--input_list", listing, "-o", out,
                             "--use_per_channel_quantization", *extra)  # fmt: skip
        assert code == 0, err
        code, report, err = qtool("inspect", out, "--reference", tmp_path / "m.onnx", "--input_list", listing, "--json")
        assert code == 0, err
        fixes.append({row["tensor"]: row["fix"] for row in json.loads(report)["layers (worst first by added error)"]})
    assert "cle" not in fixes[0]["d"] and "--apply_algorithms cle" in fixes[1]["d"], fixes

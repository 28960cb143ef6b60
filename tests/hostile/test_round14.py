"""Round 14 (helper-86): the auto calibration default and its trials, -o named like the files beside it, stats
files older than the method they record, what the report counts as float, and outputs with nothing to score,
probed on an installed wheel as a careless user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import write_samples
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- -o named as the encodings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["q.encodings.json", "q.json", "q.encodings.JSON"])
def test_an_output_named_as_json_is_refused(ws: Workspace, name: str) -> None:
    """`-o q.encodings.json` (the file a user wants) wrote the ONNX model as q.encodings.json and its encodings as
    q.encodings.encodings.json, exit 0."""
    out = ws.root / "out" / name
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", out), 2, f"-o {out}: names the QDQ model quantize writes",
                   f"-o {ws.root / 'out' / 'q.onnx'}")  # fmt: skip


# --- stats files saved before the method was recorded ------------------------------------------------------------


def _shards(ws: Workspace, *flags: str) -> list[Path]:
    """Two --save_stats shards of the workspace's list (its halves)."""
    lines = ws.listing.read_text().splitlines()
    shards = []
    for k, part in enumerate((lines[:2], lines[2:])):
        listing = ws.root / f"part{k}.txt"
        listing.write_text("\n".join(part) + "\n")
        saved = ws.root / f"s{k}.json"
        out = ws.root / f"shard{k}" / "q.onnx"
        result = ws.run("quantize", "-i", ws.model, "-l", listing, "-o", out, "--save_stats", saved, *flags)
        assert result.exit_code == 0, result.stderr
        shards.append(saved)
    return shards


def test_a_stats_file_older_than_its_method_field_is_read_by_its_states(ws: Workspace) -> None:
    """A file saved before 'calibration' was recorded was read as min-max: a percentile-95 shard replayed without
    naming the method wrote min-max's model, exit 0, and beside a new shard of the same method it was refused as
    'calibrated by different methods (old.json: min-max, ...)'. Its states name the method and percentile."""
    flags = ("--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "95")
    first, second = _shards(ws, *flags)
    old = json.loads(first.read_text())
    del old["calibration"], old["percentile"]
    first.write_text(json.dumps(old))
    replayed = ws.root / "replayed" / "q.onnx"
    result = ws.run("quantize", "-i", ws.model, "--load_stats", first, "--load_stats", second, "-o", replayed)
    assert result.exit_code == 0, result.stderr
    named = ws.root / "named" / "q.onnx"
    result = ws.run("quantize", "-i", ws.model, "--load_stats", first, "--load_stats", second, "-o", named, *flags)
    assert result.exit_code == 0, result.stderr
    assert replayed.with_suffix(".encodings.json").read_bytes() == named.with_suffix(".encodings.json").read_bytes()


@pytest.mark.parametrize("field, value, said", [
    ("calibration", 5, "'calibration' must be one of min-max, sqnr, mse, percentile, entropy, not 5"),
    ("calibration", "auto", "'calibration' must be one of min-max, sqnr, mse, percentile, entropy, not \"auto\""),
    ("percentile", "95", "'percentile' must be a number in [90, 100] beside 'calibration' percentile, not \"95\""),
])  # fmt: skip
def test_a_stats_method_field_of_the_wrong_type_is_refused(ws: Workspace, field: str, value: object, said: str) -> None:
    """Fields edited by hand: the replay names no method, so it reads the file's."""
    (saved, _) = _shards(ws, "--act_quantizer_calibration", "percentile")
    doc = json.loads(saved.read_text())
    doc[field] = value
    saved.write_text(json.dumps(doc))
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--load_stats", saved, "-o", ws.out)
    assert_refused(ws, before, result, 4, f"{saved}: {said}")


# --- auto with nothing to score ----------------------------------------------------------------------------------


def test_auto_tries_no_method_on_a_model_with_integer_outputs_only(ws: Workspace) -> None:
    """MatMul -> Cast int32: auto's six trial quantizations scored the integers, equal under every method, and the
    report read 'min-max inf, sqnr inf, mse inf dB'."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = oh.make_tensor_value_info("y", TensorProto.INT32, [1, 8])
    w = onh.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32) * 0.1, "w")
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Cast", ["m"], ["y"], to=TensorProto.INT32)]
    model = oh.make_model(oh.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[oh.make_opsetid("", 17)])
    onnx.save(model, ws.model)
    write_samples(ws.root, model, 8)
    result = ws.quantize("-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert "calibration auto: min-max (no float output to score methods by: 'y' not float; none was tried)" in result.stdout
    assert "inf, sqnr" not in result.stdout


# --- top-1 agreement over empty outputs --------------------------------------------------------------------------


def test_top1_agreement_counts_only_samples_with_a_vector(ws: Workspace) -> None:
    """An output that is empty in some samples (Slice to a length the sample gives): a model compared with itself
    showed 'top1_agreement 0.8333' with one empty sample of six (counted as a disagreement), and none at all when
    the empty sample came last."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])
    n = oh.make_tensor_value_info("n", TensorProto.INT64, [1])
    # its last dim unnamed: a named one is a length, which has no top-1 (79b2023's Kokoro waveform)
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])
    nodes = [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Slice", ["r", "zero", "n", "one"], ["y"])]
    consts = [onh.from_array(np.array([v], np.int64), name) for name, v in (("zero", 0), ("one", 1))]
    graph = oh.make_graph(nodes, "g", [x, n], [y], consts)
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ws.model)
    rng, lines = np.random.default_rng(1), []
    for k in range(6):
        rng.standard_normal((1, 10)).astype(np.float32).tofile(ws.root / f"x{k}.raw")
        np.array([0 if k in (0, 5) else 10], np.float32).tofile(ws.root / f"n{k}.raw")
        lines.append(f"x:=x{k}.raw n:=n{k}.raw")
    listing = ws.root / "empty.txt"
    listing.write_text("\n".join(lines) + "\n")
    result = ws.run("inspect", ws.model, "--reference", ws.model, "-l", listing, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["outputs (float vs quantized)"][0]["top1_agreement"] == 1


# --- an input declared empty --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_an_input_declared_empty_is_refused(ws: Workspace, command: str) -> None:
    """x declared [0, 4]: convert wrote it as declared, exit 0, and quantize calibrated on 0-byte files ('sqnr inf'
    over nothing), where --input_dim x 0,4 is refused ('every dim must be in 1..')."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [0, 4])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [0, 4])
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), ws.model)
    (ws.root / "empty.raw").write_bytes(b"")
    ws.listing.write_text("empty.raw\n")
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out) if command == "quantize" else ws.run("convert", "-i", ws.model, "-o", ws.out)
    assert_refused(ws, before, result, 3, f"{ws.model}: input 'x' dim 0 is 0: only an empty tensor can feed it "
                   "(set its size with --input_dim x N,4)")  # fmt: skip


# --- what the report counts as float ------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [("--op_types_to_quantize", "Conv"), ("--act_bitwidth", "32")])
def test_left_float_counts_activations_no_encoding_covers(ws: Workspace, flags: tuple[str, ...]) -> None:
    """'left float' counted planned float encodings only: the Gemm's output outside --op_types_to_quantize Conv
    (and every activation of a weight-only run) stayed float with 'left float 0'."""
    counts = []
    for run, extra in (("all", ()), ("some", flags)):
        result = ws.quantize("-o", ws.root / run / "q.onnx", "--json", *extra)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        counts.append((report["activations quantized"], report["left float"]))
    (every, none), (quantized, left) = counts
    assert none == 0 and quantized < every and quantized + left >= every, counts

"""Round 23 (helper h-hostile33): round 22's leftovers (a 0.6.1 file of 10^6 entries, a dangling ZipMap, a float16
QDQ model through every export format, external data released per weight), then odd inputs to every command,
probed on an installed wheel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto, helper, numpy_helper

from qtool.io import encodings as encodings_io


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a 0.6.1 file of very many entries: checked as columns ---------------------------------------------------------


def test_a_large_legacy_file_is_checked_a_key_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.6.1 file of 10^6 entries took 33 s of CPU to read after round 22: every entry was checked on its own, a
    dozen Python calls each, and each tensor's grid made its own Encoding by the frozen __init__. Now the entries of
    the shape AIMET writes are checked a key at a time over all of them (io/legacy_columns), and only a tensor of
    another shape goes through _legacy_tensor; every encoding is the one the tensor's own reading gives, to the bit,
    and its warnings and refusals are as before."""
    from test_round22 import _legacy_document

    data, expected = _legacy_document(600)
    data["activation_encodings"]["odd"] = [{"bitwidth": 8, "scale": 0.5, "offset": -3}]  # scale and offset alone
    expected["odd"] = encodings_io.min_max_encoding([-1.5], [126.0], 8, symmetric=False)
    checked = []
    one = encodings_io._legacy_tensor
    monkeypatch.setattr(encodings_io, "_legacy_tensor", lambda name, *a: checked.append(name) or one(name, *a))
    found = encodings_io.parse_encodings(data, "o.json")
    assert checked == ["odd"]
    assert found.all() == expected
    assert {n: e.axis for n, e in found.all().items()} == {n: e.axis for n, e in expected.items()}
    assert list(found.activations) == sorted(found.activations) and list(found.params) == sorted(found.params)
    data["activation_encodings"]["t0"][0]["max"] = -9.0  # a bad entry among plain ones: its own words, as before
    with pytest.raises(Exception, match=r"o.json: activation_encodings: 't0'\[0\]: min .* is greater than max -9.0"):
        encodings_io.parse_encodings(data, "o.json")


# --- a ZipMap nothing reads is dead code ---------------------------------------------------------------------------


def test_a_zipmap_nothing_reads_is_dropped(ws: Workspace) -> None:
    """skl2onnx's classifier with its ZipMap left beside the probabilities' tensor the graph outputs instead (a user
    who edited the outputs to get a tensor): 5d46a80 refused it as a map, exit 3, though nothing reads the map. Now
    convert drops it, as dead code, and says so; the model computes the classifier's label and probabilities as the
    source does, and a ZipMap whose map is an output is still refused by name."""
    from test_round22 import _tree_classifier

    onnx.save(_tree_classifier(zipmap=True), ws.root / "ml.onnx")
    result = ws.run("convert", "-v", "-i", ws.root / "ml.onnx", "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.output
    assert "convert: a ZipMap dropped: its output 'zipped' is read by nothing" in result.stderr
    converted = onnx.load(str(ws.root / "c.onnx"))
    assert [n.op_type for n in converted.graph.node] == ["MatMul", "TreeEnsembleClassifier"]
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["label", "probs"], {"x": x})  # noqa: E731
    for got, want in zip(run(ws.root / "c.onnx"), run(ws.root / "ml.onnx"), strict=True):
        np.testing.assert_array_equal(got, want)
    model = _tree_classifier(zipmap=True)
    model.graph.output[1].CopyFrom(helper.make_tensor_sequence_value_info("zipped", TensorProto.UNDEFINED, None))
    model.graph.output[1].type.sequence_type.elem_type.map_type.key_type = TensorProto.INT64
    model.graph.output[1].type.sequence_type.elem_type.map_type.value_type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, ws.root / "ml.onnx")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.root / "ml.onnx", "-o", ws.root / "c2.onnx"), 3,
                   "'zipped' is a map (or a sequence of maps), not a tensor")  # fmt: skip


# --- external data a file per tensor: each file's pages released once per read --------------------------------------


def test_a_model_stored_a_file_per_weight_releases_each_weight_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each weight the plan, the NaN check and the QDQ writer read released the mapped pages of every file (5757882):
    N^2 madvise calls over a model stored a file per tensor (3000 weights: 10.7 s of system time to quantize, 0.7
    for the same weights in one file). Now a step that reads one weight releases that weight's pages: the calls
    grow with the weights, and the model written is the same."""
    import mmap

    from conftest import run_cli, write_feeds

    from qtool.graph import lazy_weights

    count, rng = 40, np.random.default_rng(0)
    inits = [numpy_helper.from_array((np.eye(16) + rng.normal(0, 0.05, (16, 16))).astype(np.float32), f"w{i}")
             for i in range(count)]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], ["y" if i == count - 1 else f"h{i}"])
             for i in range(count)]  # fmt: skip
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=1024)  # fmt: skip
    listing = write_feeds(tmp_path, [{"x": rng.normal(size=(1, 16)).astype(np.float32)} for _ in range(4)])
    released = []

    class Counted(mmap.mmap):
        def madvise(self, *args: int) -> None:
            released.append(args)
            super().madvise(*args)

    monkeypatch.setattr(lazy_weights, "_MAPS", {})
    monkeypatch.setattr(lazy_weights.mmap, "mmap", Counted)
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", listing, "-o", tmp_path / "q.onnx",
                      "--act_quantizer_calibration", "min-max", "--apply_algorithms", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(lazy_weights._MAPS) == count
    assert len(released) < 12 * count, len(released)


def test_inspects_layer_ranking_releases_each_layers_weights_not_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inspect --reference ranks every layer, and released every mapped file after each (5a96b60 left it so): N^2
    madvise calls over a model stored a file per weight (40 layers: 794 calls). Now each layer's weights' pages alone."""
    import mmap

    from conftest import run_cli, write_feeds

    from qtool.graph import lazy_weights

    count, rng = 40, np.random.default_rng(0)
    inits = [numpy_helper.from_array((np.eye(16) + rng.normal(0, 0.05, (16, 16))).astype(np.float32), f"w{i}")
             for i in range(count)]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], ["y" if i == count - 1 else f"h{i}"])
             for i in range(count)]  # fmt: skip
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=1024)  # fmt: skip
    listing = write_feeds(tmp_path, [{"x": rng.normal(size=(1, 16)).astype(np.float32)} for _ in range(4)])
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", listing, "-o", tmp_path / "q.onnx",
                      "--act_quantizer_calibration", "min-max", "--apply_algorithms", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    released = []

    class Counted(mmap.mmap):
        def madvise(self, *args: int) -> None:
            released.append(args)
            super().madvise(*args)

    monkeypatch.setattr(lazy_weights, "_MAPS", {})
    monkeypatch.setattr(lazy_weights.mmap, "mmap", Counted)
    result = run_cli(["inspect", tmp_path / "q.onnx", "--reference", tmp_path / "m.onnx", "-l", listing, "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["layers (worst first by added error)"]) >= count
    assert len(released) < 12 * count, len(released)


# --- a float16 QDQ model through every export format ----------------------------------------------------------------


def _float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A QDQ model whose float tensors are float16 (scales, biases, inputs, outputs), at opset 21, as a float16
    export quantized by another tool is written."""
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in [*model.graph.input, *model.graph.output]:
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del model.graph.value_info[:]
    for o in model.opset_import:
        o.version = max(o.version, 21) if o.domain in ("", "ai.onnx") else o.version
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_float16_qdq_model_exports_to_every_format_or_is_refused(tmp_path: Path) -> None:
    """A float16 QDQ model (4-bit blocked weights, float16 scales) through each export format: matmulnbits wrote
    float32 scales beside float16 activations, a model onnxruntime refuses to load ('Type parameter (T1) of Optype
    (MatMulNBits) bound to different types'), exit 0. Now its scales keep the model's type, and every format writes
    a model onnxruntime loads and runs (matmulnbits and qdq computing what the source does) or refuses in one line."""
    from conftest import run_cli, write_feeds

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (64, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), tmp_path / "m.onnx")
    listing = write_feeds(tmp_path, [{"x": rng.normal(size=(1, 64)).astype(np.float32)} for _ in range(4)])
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", listing, "-o", tmp_path / "q.onnx", "--weights_bitwidth",
                      "4", "--weights_block_size", "32", "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    onnx.save(_float16(onnx.load(str(tmp_path / "q.onnx"))), tmp_path / "h.onnx")
    x = {"x": rng.normal(size=(1, 64)).astype(np.float16)}
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    expected = run(tmp_path / "h.onnx")
    formats = ("qdq", "qoperator", "encodings", "stripped", "ranges", "fp16", "fixpoint", "matmulnbits")
    for fmt in formats:
        layout = ["--encodings_format", "1.0.0"] if fmt == "encodings" else []
        result = run_cli(["export", "-i", tmp_path / "h.onnx", "-o", tmp_path / fmt, "--format", fmt, *layout])
        if result.exit_code:
            assert result.stderr.count("qtool: error:") == 1 and "Traceback" not in result.stderr, result.stderr
            assert not (tmp_path / fmt).exists() or not any((tmp_path / fmt).iterdir()), fmt
            continue
        for written in (tmp_path / fmt).glob("*.onnx"):
            got = run(written)
            assert got.dtype == np.float16, (fmt, got.dtype)
            if fmt in ("qdq", "matmulnbits"):
                np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-3, err_msg=fmt)
    assert (tmp_path / "matmulnbits" / "h.matmulnbits.onnx").exists()


# --- external data through Hugging Face's cache links ---------------------------------------------------------------


def test_a_model_in_hugging_faces_cache_reads_its_linked_data(ws: Workspace) -> None:
    """huggingface_hub's cache holds a snapshot as symlinks (snapshots/<rev>/model.onnx -> ../../blobs/<sha>, and
    model.onnx_data beside it likewise), which onnxruntime loads: qtool refused every command ('external data location
    'model.onnx_data' leads outside the model's folder'), and onnx's own reader refuses a symlinked data file. Now a
    data file may lie in the folder the model file resolves to as well, and is read from the file it resolves to;
    a link from the model's folder to anywhere else is still refused."""
    import shutil

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(64, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b")]  # fmt: skip (lazy, and read at once)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)  # fmt: skip
    made, blobs, snapshot = ws.root / "made", ws.root / "hub" / "blobs", ws.root / "hub" / "snapshots" / "rev"
    for folder in (made, blobs, snapshot):
        folder.mkdir(parents=True)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(made / "model.onnx"),
                    save_as_external_data=True, location="model.onnx_data", size_threshold=0)  # fmt: skip
    for name, blob in (("model.onnx", "a1"), ("model.onnx_data", "b2")):
        shutil.move(made / name, blobs / blob)
        (snapshot / name).symlink_to(f"../../blobs/{blob}")
    x = {"x": rng.normal(size=(1, 64)).astype(np.float32)}
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    result = ws.run("convert", "-i", snapshot / "model.onnx", "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(run(ws.root / "c.onnx"), run(snapshot / "model.onnx"), rtol=1e-5, atol=1e-5)
    (ws.root / "outside").mkdir()
    shutil.copy(blobs / "b2", ws.root / "outside" / "data")
    (snapshot / "model.onnx_data").unlink()
    (snapshot / "model.onnx_data").symlink_to(ws.root / "outside" / "data")
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", snapshot / "model.onnx", "-o", ws.root / "c2.onnx"), 3,
                   "external data location 'model.onnx_data' leads outside the model's folder")  # fmt: skip


# --- a full scratch folder -------------------------------------------------------------------------------------------


def test_a_full_scratch_folder_keeps_weights_in_memory(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """export and inspect write a float copy's weights to a scratch file under $TMPDIR: on a full disk (a tmpfs of
    12 kB as TMPDIR: 'No space left on device') both stopped on 'qtool: internal error', exit 1. Now the weights the
    scratch file refuses stay in memory, said once, and the command goes on: the export writes models onnxruntime
    runs, as with room."""
    import errno

    from qtool.graph import lazy_weights

    assert ws.quantize("-o", ws.out).exit_code == 0
    with_room = ws.run("export", "-i", ws.out, "-o", ws.root / "roomy", "--format", "stripped")
    assert with_room.exit_code == 0, with_room.output

    def full(scratch: str, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", scratch)

    monkeypatch.setattr(lazy_weights, "_appended", full)
    monkeypatch.setattr("qtool.graph.external_data._UNSPILLED", [], raising=False)
    result = ws.run("export", "-i", ws.out, "-o", ws.root / "full", "--format", "stripped", "--format", "qdq")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("weights kept in memory instead (set TMPDIR to a folder with room)") == 1, result.stderr
    assert (ws.root / "full" / "q.stripped.onnx").read_bytes() == (ws.root / "roomy" / "q.stripped.onnx").read_bytes()
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    for name in ("q.stripped.onnx", "q.qdq.onnx"):
        ort.InferenceSession(str(ws.root / "full" / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})

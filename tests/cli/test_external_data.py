"""Models with external data, end to end (issue 22): read from any folder, run past protobuf's 2 GiB
limit, written as <output> + <output>.data. The thresholds are set low here (QTOOL_EXTERNAL_DATA_BYTES,
QTOOL_SESSION_PROTO_BYTES), so a small model takes every large-model path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import save_model, write_samples
from hostile_env import assert_refused, make_workspace
from onnx import numpy_helper

from qtool.cli import main
from qtool.config import ExportOptions

LOW = {"QTOOL_EXTERNAL_DATA_BYTES": "2000", "QTOOL_SESSION_PROTO_BYTES": "2000"}


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    mlp (float[1,64] x) => (float[1,16] y) {
        h = MatMul (x, W1)
        b = Add (h, B1)
        r = Relu (b)
        y = MatMul (r, W2)
    }
    """
    model = onnx.parser.parse_model(text)
    arrays = {"W1": rng.normal(0, 0.2, (64, 128)), "B1": rng.normal(0, 0.1, (128,)), "W2": rng.normal(0, 0.1, (128, 16))}
    model.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items())
    return model


def _run(args: list, env: dict | None = None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path, Path]:
    inline = save_model(_mlp(), tmp_path / "inline" / "m.onnx")
    external = tmp_path / "external" / "m.onnx"
    external.parent.mkdir()
    onnx.save(_mlp(), str(external), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return inline, external, write_samples(tmp_path, _mlp(), 8)


def test_every_command_takes_the_external_data_paths_and_writes_what_the_inline_path_writes(tmp_path, models):
    inline, external, listing = models
    flags = ["--input_list", listing, "--use_per_row_quantization", "--bias_bitwidth", "32"]
    for name, source, env in (("a", inline, None), ("b", external, LOW)):
        out = tmp_path / name
        assert _run(["convert", "-i", source, "-o", out / "c.onnx"], env).exit_code == 0
        result = _run(["quantize", "-i", out / "c.onnx", "-o", out / "q.onnx", *flags], env)
        assert result.exit_code == 0, result.stderr
        result = _run(["inspect", out / "q.onnx", "--reference", out / "c.onnx", "--input_list", listing], env)
        assert result.exit_code == 0, result.stderr
        result = _run(["export", "-i", out / "q.onnx", "-o", out / "exp", "--format", "qdq", "--format", "encodings"], env)
        assert result.exit_code == 0, result.stderr
    for produced in ("c.onnx.data", "q.onnx.data", "exp/q.qdq.onnx.data"):
        assert (tmp_path / "b" / produced).is_file() and not (tmp_path / "a" / produced).exists()
    want, got = _tensors(tmp_path / "a" / "q.onnx"), _tensors(tmp_path / "b" / "q.onnx")
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
    assert (tmp_path / "a" / "q.encodings.json").read_bytes() == (tmp_path / "b" / "q.encodings.json").read_bytes()


def test_external_data_output_is_deterministic_and_relative(tmp_path, models):
    inline, _, listing = models
    for name in ("one", "two"):
        result = _run(["quantize", "-i", inline, "--input_list", listing, "-o", tmp_path / name / "q.onnx", "--external_data"])
        assert result.exit_code == 0, result.stderr
    for suffix in ("q.onnx", "q.onnx.data"):
        assert (tmp_path / "one" / suffix).read_bytes() == (tmp_path / "two" / suffix).read_bytes()
    weights = [i for i in onnx.load(str(tmp_path / "one" / "q.onnx"), load_external_data=False).graph.initializer
               if i.data_location == onnx.TensorProto.EXTERNAL]  # fmt: skip
    assert weights and {e.value for w in weights for e in w.external_data if e.key == "location"} == {"q.onnx.data"}


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_missing_or_short_data_file_is_one_error_line(tmp_path: Path, damage: str) -> None:
    ws = make_workspace(tmp_path / "ws")
    onnx.save(onnx.load(str(ws.model)), str(ws.model), save_as_external_data=True, location="w.bin", size_threshold=0)
    data = ws.root / "w.bin"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:100])
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 3, "model.onnx", "w.bin" if damage == "missing" else "external data")


def test_a_weight_whose_dims_multiply_past_int64_is_refused_as_too_large(tmp_path: Path) -> None:
    """W [2^32, 2^32] in external data with no length: its element count wrapped to 0 in int64, so the load-time check
    passed it and inspect (which runs no onnx.checker first) read an empty tensor: an internal error, exit 1."""
    ws = make_workspace(tmp_path / "ws")
    model = onnx.load(str(ws.model))
    weight = onnx.TensorProto(name="W", data_type=onnx.TensorProto.FLOAT, dims=[1 << 32, 1 << 32],
                              data_location=onnx.TensorProto.EXTERNAL)  # fmt: skip
    weight.external_data.add(key="location", value="w.bin")
    model.graph.initializer.append(weight)
    onnx.save(model, str(ws.model))
    (ws.root / "w.bin").write_bytes(bytes(64))
    before = ws.snapshot()
    result = CliRunner().invoke(main, ["inspect", str(ws.model)])
    assert_refused(ws, before, result, 3, "tensor 'W' takes", "GiB (w.bin), more than this machine's")


def test_a_full_disk_leaves_no_partial_output_and_keeps_the_previous_one(tmp_path, models, monkeypatch) -> None:
    inline, _, listing = models
    out = tmp_path / "q.onnx"
    assert _run(["quantize", "-i", inline, "--input_list", listing, "-o", out, "--external_data"]).exit_code == 0
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    from qtool.graph import external_data

    real = external_data.write

    def full(model, path, open_output):
        """The data file's disk fills after a few bytes."""

        def failing(target, mode):
            manager = open_output(target, mode)

            class Full:
                def __enter__(self):
                    self.handle = manager.__enter__()
                    return self

                def write(self, data):
                    self.handle.write(data[:10])
                    raise OSError(28, "No space left on device")

                def __exit__(self, *exc):
                    return manager.__exit__(*exc)

            return Full()

        return real(model, path, failing)

    monkeypatch.setattr(external_data, "write", full)
    result = _run(["quantize", "-i", inline, "--input_list", listing, "-o", out, "--external_data"])
    assert result.exit_code == 2 and "No space left on device" in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == previous
    assert json.loads((tmp_path / "q.encodings.json").read_text())


def test_a_loaded_model_keeps_its_weights_on_disk_until_read(models) -> None:
    """Lazy weights (lazy_weights.py): no bytes in memory after a load, the same values when read, and
    onnxruntime maps them from their file: the session's output is the inline model's."""
    from qtool import runtime
    from qtool.graph import external_data
    from qtool.graph import model as gm

    inline, external, _ = models
    model = gm.load(external)
    weights = [i for i in model.graph.initializer if external_data.is_lazy(i)]
    assert {w.name for w in weights} == {"W1", "W2"} and not any(w.raw_data for w in weights)
    want = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(inline)).graph.initializer}
    assert all(np.array_equal(external_data.array(w), want[w.name]) for w in weights)
    gm.check(model, "m")
    x = {"x": np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)}
    got = runtime.session(model).run(None, x)[0]
    assert np.array_equal(got, runtime.session(gm.load(inline)).run(None, x)[0])
    with external_data.materialized(weights):
        assert all(w.raw_data for w in weights)
    assert not any(w.raw_data for w in weights) and all(external_data.is_lazy(w) for w in weights)


@pytest.mark.parametrize("flags", [["--apply_algorithms", "bc", "--apply_algorithms", "adaround"], ["--float_bitwidth", "16"]])
def test_algorithms_and_float16_on_lazy_weights_match_the_inline_model(tmp_path, models, flags) -> None:
    inline, external, listing = models
    for name, source in (("a", inline), ("b", external)):
        out = tmp_path / name
        if "--float_bitwidth" in flags:
            result = _run(["convert", "-i", source, "-o", out / "c.onnx", *flags], LOW)
        else:
            result = _run(["quantize", "-i", source, "-o", out / "q.onnx", "--input_list", listing, *flags], LOW)
        assert result.exit_code == 0, result.stderr
    produced = "c.onnx" if "--float_bitwidth" in flags else "q.onnx"
    want, got = _tensors(tmp_path / "a" / produced), _tensors(tmp_path / "b" / produced)
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)


def test_a_large_inline_model_is_read_in_place_and_gives_the_same_bytes(tmp_path, models) -> None:
    """QTOOL_SPILL_BYTES (graph/inline_weights.py): inline weights are parsed out, read from the file itself."""
    inline, _, listing = models
    printed = []
    for name, env in (("whole", None), ("in_place", {"QTOOL_SPILL_BYTES": "1"})):
        out = tmp_path / name
        assert _run(["convert", "-i", inline, "-o", out / "c.onnx"], env).exit_code == 0
        flags = ["--input_list", listing, "--use_per_row_quantization", "--bias_bitwidth", "32"]
        result = _run(["quantize", "-i", out / "c.onnx", "-o", out / "q.onnx", *flags], env)
        assert result.exit_code == 0, result.stderr
        result = _run(["inspect", out / "q.onnx", "--reference", out / "c.onnx", "--input_list", listing], env)
        assert result.exit_code == 0, result.stderr
        printed.append(result.stdout.replace(str(out), ""))
        formats = ["--format", "qdq", "--format", "qoperator", "--format", "encodings"]
        assert _run(["export", "-i", out / "q.onnx", "-o", out / "exp", *formats], env).exit_code == 0
    produced = ["c.onnx", "q.onnx", "q.encodings.json", *(f"exp/{p.name}" for p in (tmp_path / "whole" / "exp").iterdir())]
    for name in produced:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "in_place" / name).read_bytes(), name
    assert printed[0] == printed[1]


@pytest.mark.parametrize("cut", [1, 200, 4000])
def test_a_truncated_large_inline_model_is_one_error_line(tmp_path: Path, cut: int, monkeypatch) -> None:
    monkeypatch.setenv("QTOOL_SPILL_BYTES", "1")
    ws = make_workspace(tmp_path / "ws")
    data = ws.model.read_bytes()
    ws.model.write_bytes(data[: len(data) - cut])
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 3, "model.onnx", "not an ONNX model")


def test_adaround_in_passes_and_in_row_chunks_rounds_as_in_one_go(tmp_path, models, monkeypatch) -> None:
    """adaround on a large model (issue 22): the moments a few layers a pass (MOMENTS_BYTES), the rows
    solved a chunk at a time (CHUNK_WEIGHTS), the originals kept as stored views: the same model."""
    from qtool.quant.algorithms import adaround

    inline, external, listing = models
    flags = ["--input_list", listing, "--apply_algorithms", "adaround", "--use_per_row_quantization"]
    assert _run(["quantize", "-i", inline, "-o", tmp_path / "a" / "q.onnx", *flags]).exit_code == 0
    monkeypatch.setattr(adaround, "MOMENTS_BYTES", 1)
    monkeypatch.setattr(adaround, "CHUNK_WEIGHTS", 1)
    result = _run(["quantize", "-i", external, "-o", tmp_path / "b" / "q.onnx", *flags], LOW)
    assert result.exit_code == 0, result.stderr
    want, got = _tensors(tmp_path / "a" / "q.onnx"), _tensors(tmp_path / "b" / "q.onnx")
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
    assert (tmp_path / "a" / "q.encodings.json").read_bytes() == (tmp_path / "b" / "q.encodings.json").read_bytes()


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_data_file_clash_is_refused_before_any_work_when_the_source_is_past_the_threshold(tmp_path, models, command):
    """Without --external_data the output goes external only because of its size: its data file is checked up front
    all the same (the invalid file read later is not what the error names)."""
    _, external, _ = models
    (tmp_path / "q.onnx.data").mkdir()
    bad = tmp_path / "bad.txt"
    bad.write_text("no_such_file.raw\n")
    args = [command, "-i", external, "-o", tmp_path / "q.onnx", "--input_list" if command == "quantize" else "-q", bad]
    result = _run(args, LOW)
    assert result.exit_code == 2 and "q.onnx.data" in result.stderr and "folder" in result.stderr, result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_the_external_data_threshold_stays_below_protobufs_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """QTOOL_EXTERNAL_DATA_BYTES=3000000000 let a 2.1 GB model be written inline: since 6bb6977 save streams it a
    weight at a time (SerializeToString raised), a file past protobuf's 2 GiB that nothing loads, exit 0."""
    from qtool.graph.model import external_data_threshold

    monkeypatch.setenv("QTOOL_EXTERNAL_DATA_BYTES", "3000000000")
    assert external_data_threshold() < 2 << 30
    monkeypatch.setenv("QTOOL_EXTERNAL_DATA_BYTES", "2000")
    assert external_data_threshold() == 2000


def test_export_reads_the_float_weights_of_its_stripped_model_from_a_scratch_file(tmp_path, models, monkeypatch):
    """The float model export builds for stripped, qoperator, fp16 and fixpoint held every weight in float32, 4x the
    QDQ model's integers, and qoperator copied it again: a 2.35 GB decoder's qoperator export peaked at 8.9 GB. Its
    weights now wait in a scratch file under TMPDIR (removed at the end), and each format writes the same bytes."""
    from qtool.export import EXPORTERS, ExportJob, build, write_files
    from qtool.graph import external_data
    from qtool.quant.qdq_read import read_qdq

    inline, _, listing = models
    assert _run(["quantize", "-i", inline, "-o", tmp_path / "q.onnx", "--input_list", listing]).exit_code == 0
    scratch, seen = tmp_path / "tmp", {}
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # TMPDIR read again
    stripped = EXPORTERS["stripped"]

    def spy(job):
        seen.update({t.name: external_data.is_lazy(t) for t in job.stripped.graph.initializer if t.dims})
        return stripped(job)

    monkeypatch.setitem(EXPORTERS, "stripped", spy)
    formats = ("stripped", "qoperator", "fp16")
    result = _run(["export", "-i", tmp_path / "q.onnx", "-o", tmp_path / "out", *(f for x in formats for f in ("--format", x))])
    assert result.exit_code == 0, result.stderr
    assert seen == {"W1": True, "B1": False, "W2": True}  # 1 KiB and up: the layers' weights, not the bias
    assert not [p for p in scratch.iterdir() if not p.name.startswith("qtool-locks")]  # the scratch folder is gone
    model = onnx.load(str(tmp_path / "q.onnx"))
    in_memory = ExportJob(model, read_qdq(model)[1], "q", ExportOptions(tmp_path / "q.onnx", tmp_path / "mem"))
    (tmp_path / "mem").mkdir()
    for path in write_files(build(in_memory, formats), tmp_path / "mem"):
        assert path.read_bytes() == (tmp_path / "out" / path.name).read_bytes(), path.name

"""Reads are bounded: regular files only, a size cap, sizes checked before data, no alias or nesting bombs.

Issue 19, class 3. FIFOs stand in for devices (never the real /dev); cases that could hang run in a
subprocess with a timeout, so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace, npy_header, qtool_process

from qtool.graph import model as gm


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.parametrize("flag", ["--input_list", "--quantization_overrides", "--config", "--load_stats"])
def test_a_fifo_input_is_not_a_regular_file_and_never_blocks(ws: Workspace, flag: str) -> None:
    fifo = ws.root / "pipe"
    os.mkfifo(fifo)
    args = ["quantize", "-i", ws.model, "-o", ws.out, flag, fifo]
    if flag in ("--quantization_overrides", "--config"):
        args += ["--input_list", ws.listing]
    before = ws.snapshot()
    result = qtool_process(*args, timeout=60)
    assert_refused(ws, before, result, 4 if flag in ("--input_list", "--load_stats", "--quantization_overrides") else 2,
                   "pipe", "not a regular file")  # fmt: skip


def test_a_fifo_eval_list_is_named_as_the_eval_list(ws: Workspace) -> None:
    os.mkfifo(ws.root / "pipe")
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, "--eval_list", ws.root / "pipe", "-o",
                           ws.out, timeout=60)  # fmt: skip
    assert_refused(ws, before, result, 4, "pipe: eval_list is not a regular file")


def test_a_fifo_in_the_input_list_is_refused(ws: Workspace) -> None:
    os.mkfifo(ws.root / "sample.raw")
    ws.listing.write_text(f"{ws.root / 'sample.raw'}\n")
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, timeout=60)
    assert_refused(ws, before, result, 4, "input_list.txt:1", "not a regular file")


@pytest.mark.parametrize(("flag", "code"), [("--input_list", 4), ("--quantization_overrides", 4), ("--config", 2)])
def test_text_inputs_over_the_cap_are_refused_before_reading(ws: Workspace, flag: str, code: int) -> None:
    big = ws.root / "big.txt"
    size = 2 * ws.model.stat().st_size  # overrides may be as large as the model (below)
    big.write_text("#" * size)
    args = ["-o", ws.out, flag, big] if flag != "--input_list" else ["-o", ws.out]
    before = ws.snapshot()
    if flag == "--input_list":
        result = ws.run("quantize", "-i", ws.model, "--input_list", big, *args, env={"QTOOL_MAX_READ_BYTES": "4096"})
    else:
        result = ws.quantize(*args, env={"QTOOL_MAX_READ_BYTES": "4096"})
    limit = ws.model.stat().st_size if flag == "--quantization_overrides" else 4096
    assert_refused(ws, before, result, code, f"{size} bytes", f"{limit}-byte limit", "QTOOL_MAX_READ_BYTES")


@pytest.mark.parametrize("command", ["quantize", "convert"])
def test_overrides_as_large_as_the_model_are_read_past_the_cap(ws: Workspace, command: str) -> None:
    """A model's own encodings grow with its weights (a 2.35 GB decoder's W4 B32 file is 478 MB, past the 64 MiB
    cap): quantize -> export -> quantize with them must not need QTOOL_MAX_READ_BYTES."""
    overrides = ws.root / "overrides.json"
    text = '{"activation_encodings": {}, "param_encodings": {}}'
    overrides.write_text(text + " " * (ws.model.stat().st_size - len(text) - 100))
    assert 4096 < overrides.stat().st_size < ws.model.stat().st_size
    env = {"QTOOL_MAX_READ_BYTES": "4096"}
    if command == "quantize":
        result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides, env=env)
    else:
        result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides, env=env)
    assert result.exit_code == 0, result.stderr


def test_a_bad_read_limit_is_a_usage_error(ws: Workspace) -> None:
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, env={"QTOOL_MAX_READ_BYTES": "lots"}), 2, "QTOOL_MAX_READ")


def test_a_sparse_8gib_raw_file_is_sized_not_read(ws: Workspace) -> None:
    """Under a 4 GiB address-space limit, reading the file whole would be a MemoryError."""
    raw = ws.root / "huge.raw"
    with open(raw, "wb") as handle:
        handle.truncate(8 << 30)
    ws.listing.write_text(f"{raw}\n")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
    result = subprocess.run(
        [sys.executable, "-c", limit + "from qtool.__main__ import main; main()", "quantize", "-i", str(ws.model),
         "--input_list", str(ws.listing), "-o", str(ws.out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    raw.unlink()  # the snapshot would read it
    line = assert_refused(ws, ws.snapshot(), result, 4, "8589934592 bytes", "needs 768")
    assert "input_list.txt:1" in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (npy_header((100000, 100000)) + bytes(16), ["shape [100000, 100000]"]),
        (npy_header((1, 3, 8, 8)) + bytes(16), ["16 bytes of data", "needs 768"]),
        (npy_header((1, 3, 8, 8), "<c8") + bytes(8 * 192), ["complex64", "bool, integer or float"]),
        (npy_header((1, 3, 8, 8), "|O") + bytes(8 * 192), ["object"]),
        (b"\x93NUMPY\x09\x00garbage", ["not a readable .npy"]),
    ],
    ids=["shape-bomb", "short-data", "complex", "object", "bad-version"],
)
def test_npy_headers_are_checked_before_data(ws: Workspace, content: bytes, words: list[str]) -> None:
    npy = ws.root / "x.npy"
    npy.write_bytes(content)
    ws.listing.write_text(f"{npy}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:1", *words)


def test_a_yaml_alias_bomb_is_refused_at_once(ws: Workspace) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    lines.append("act_16bit_tensors: *a9")
    config = ws.root / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n")
    before = ws.snapshot()
    started = time.perf_counter()
    result = ws.quantize("-o", ws.out, "--config", config)
    assert time.perf_counter() - started < 5
    assert_refused(ws, before, result, 2, "bomb.yaml", "aliases")


def test_deeply_nested_json_overrides_are_refused(ws: Workspace) -> None:
    overrides = ws.root / "deep.json"
    overrides.write_text("[" * 100_000 + "]" * 100_000)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "deep.json", "nested more than")


def test_deeply_nested_json_in_a_models_metadata_is_refused(ws: Workspace) -> None:
    model = onnx.load(str(ws.model))
    gm.set_metadata(model, gm.METADATA_OVERRIDES, '{"a":' * 50_000 + "1" + "}" * 50_000)
    onnx.save(model, str(ws.model))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "model metadata", "nested more than")


def test_external_data_outside_the_models_folder_is_refused(tmp_path: Path) -> None:
    """qtool's own check, whatever the installed onnx's loader would do."""
    ws = make_workspace(tmp_path / "ws")
    model = onnx.load(str(ws.model))
    weight = next(i for i in model.graph.initializer if i.name == "W")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(weight.dims, np.float32).tobytes())
    (ws.root / "inside.bin").symlink_to(secret)
    for location in ["../secret.bin", str(secret), "inside.bin", "in\0side.bin"]:
        weight.ClearField("raw_data")
        del weight.float_data[:]
        weight.data_location = onnx.TensorProto.EXTERNAL
        del weight.external_data[:]
        weight.external_data.add(key="location", value=location)
        onnx.save(model, str(ws.model))
        before = ws.snapshot()
        why = {str(secret): "is not relative", "in\0side.bin": "has a NUL byte"}.get(location, "outside the model's folder")
        assert_refused(ws, before, ws.quantize("-o", ws.out), 3, "model.onnx", why)


def test_external_data_that_is_a_fifo_is_named_as_such_and_never_read(ws: Workspace) -> None:
    model = onnx.load(str(ws.model))
    onnx.save(model, str(ws.model), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (ws.root / "weights.bin").unlink()
    os.mkfifo(ws.root / "weights.bin")
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, timeout=60)
    assert_refused(ws, before, result, 3, "model.onnx", "'weights.bin' is not a regular file")


def test_external_data_inside_the_folder_loads(ws: Workspace) -> None:
    model = onnx.load(str(ws.model))
    onnx.save(model, str(ws.model), save_as_external_data=True, location="weights.bin", size_threshold=0)
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(ws.out.with_suffix(".encodings.json").read_text())["param_encodings"]


@pytest.mark.parametrize("variable", ["QTOOL_EXTERNAL_DATA_BYTES", "QTOOL_SESSION_PROTO_BYTES"])
def test_a_bad_size_threshold_is_a_usage_error(ws: Workspace, variable: str) -> None:
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, env={variable: "big"}), 2, variable)


def test_a_nul_byte_in_an_input_list_path_is_a_data_error_naming_the_line(ws: Workspace) -> None:
    """os.stat raises ValueError on it: an internal error (exit 1) in quantize, --eval_list and inspect."""
    listing = ws.root / "nul.txt"
    listing.write_bytes(ws.listing.read_bytes().splitlines()[0] + b"\x00\n")
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", listing, "-o", ws.out, timeout=60)
    assert_refused(ws, before, result, 4, "nul.txt:1", "has a NUL byte")

"""Hostile round six (helper-52): a quantized output that overflows to inf, a data type ONNX does not define, and
the lock files every run left behind.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli, save_model
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import numpy_helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _weight_type(model: onnx.ModelProto) -> None:
    next(t for t in model.graph.initializer if t.name == "B").data_type = 99


def _input_type(model: onnx.ModelProto) -> None:
    model.graph.input[0].type.tensor_type.elem_type = 99


def _cast_to(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Cast"
    relu.attribute.append(onnx.helper.make_attribute("to", 99))


# onnx.checker passes all three, and onnx_ir's reader, onnx's constant folding or inspect's table then failed:
# an internal error (exit 1) from convert, quantize and inspect
@pytest.mark.parametrize(("mutate", "named"), [(_weight_type, "'B'"), (_input_type, "'x'"), (_cast_to, "Cast")])
@pytest.mark.parametrize("command", ["convert", "quantize", "inspect"])
def test_a_data_type_onnx_does_not_define_is_a_model_error(ws: Workspace, mutate, named: str, command: str) -> None:
    model = onnx.load(str(ws.model))
    mutate(model)
    save_model(model, ws.model)
    before = ws.snapshot()
    args = {
        "convert": ["convert", "-i", ws.model, "-o", ws.out],
        "quantize": ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out],
        "inspect": ["inspect", ws.model],
    }[command]
    assert_refused(ws, before, ws.run(*args), 3, "model.onnx", named, "data type 99")


def test_a_quantized_output_that_overflows_is_minus_inf_db_not_an_internal_error(tmp_path: Path) -> None:
    """A weight near float32's largest value: outputs overflow to inf where the two models disagree, the noise
    energy is inf, and the report's SQNR took log10(0) (ValueError: math domain error, exit 1)."""
    weight = np.random.RandomState(0).randn(4, 3, 3, 3).astype(np.float32)
    weight[0, 0, 0, 0] = 3e38
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    ws = Workspace(tmp_path)
    save_model(model, ws.model)
    for i, seed in enumerate((1, 2)):
        np.random.RandomState(seed).randn(1, 3, 8, 8).astype(np.float32).tofile(tmp_path / f"x{i}.raw")
    ws.listing.write_text("x0.raw\nx1.raw\n")
    result = ws.quantize("-o", ws.out, "--json")
    assert result.exit_code == 0, result.stderr
    assert '"sqnr_db": -Infinity' in result.stdout, result.stdout


def test_a_run_leaves_no_lock_file_behind(tmp_path: Path, monkeypatch) -> None:
    """One lock file per output folder ever written stayed in the lock folder: ~10,000 empty files in /tmp after
    a day of test runs, and $XDG_RUNTIME_DIR is a small tmpfs with an inode cap."""
    from qtool.io import folder_lock, outputs

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    for name in ("a", "b", "c"):
        outputs.write_text(tmp_path / name / "x.txt", name)
    assert list(folder_lock.lock_folder().iterdir()) == []
    assert (tmp_path / "c" / "x.txt").read_text() == "c"


def test_a_lock_file_removed_while_a_run_waits_on_it_is_not_a_lock(tmp_path: Path, monkeypatch) -> None:
    """The holder removes its lock file before releasing it: a run that opened that file and got its lock after
    holds a lock no one else can see, and must take the file now at that name (a third run's) instead."""
    import fcntl
    import os

    from qtool.errors import UsageError
    from qtool.io import folder_lock

    monkeypatch.setattr(folder_lock, "WAIT_SECONDS", 0.2)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    out = tmp_path / "out"
    out.mkdir()
    st = os.stat(out)
    name = folder_lock.lock_folder() / f"{st.st_dev}-{st.st_ino}.lock"
    opened = os.open
    third = []

    def swap_after_open(path, *args):  # the holder unlinks between our open and our flock; a third run re-creates
        fd = opened(path, *args)
        if path == name and not third:
            os.unlink(name)
            third.append(opened(name, os.O_RDWR | os.O_CREAT))
            fcntl.flock(third[0], fcntl.LOCK_EX)
        return fd

    monkeypatch.setattr(folder_lock.os, "open", swap_after_open)
    try:
        with pytest.raises(UsageError, match="another process"), folder_lock.folders_locked([out]):
            pass
    finally:
        os.close(third[0])


def test_a_config_past_a_mebibyte_is_refused_before_pyyaml_reads_it(ws: Workspace) -> None:
    """PyYAML's pure-Python parser holds ~350 bytes per byte of a list of short names: a 6 MB config
    (`act_16bit_tensors: [x, x, ...]`) took 70 s and 2.2 GB before quantizing; at the 64 MiB read cap of other
    text inputs, ~20 GB."""
    config = ws.root / "c.yaml"
    config.write_text("act_16bit_tensors: [" + ",".join(["x"] * 600_000) + "]\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", "1048576-byte limit", "1/64")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_error_stderr_cannot_take_keeps_its_exit_code(ws: Workspace) -> None:
    """`2>/dev/full`: the error line could not be written, the OSError escaped, and a missing model (exit 4) or a
    bad flag (exit 2) exited 1, an internal error, to the CI job that reads only the code."""
    import subprocess
    import sys

    for args, code in ((["inspect", ws.root / "missing.onnx"], 4), (["quantize", "--act_bitwidth", "5"], 2)):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "qtool", *map(str, args)], stderr=full, timeout=120)
        assert done.returncode == code, args


def test_an_opset_onnxruntime_does_not_know_is_said_in_words_not_a_cxx_signature(tmp_path: Path) -> None:
    """onnxruntime's message begins with its C++ file, line and function signature; clipped to 300 characters,
    an opset-99 model's error held only that."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    # since 19df557 qtool says it before onnxruntime is asked ('ONNX opset 99 is past the newest defined')
    assert result.exit_code == 3 and "opset 99" in result.stderr.lower() and "onnxruntime_src" not in result.stderr


@pytest.mark.parametrize(("op", "arg"), [("Expand", [20000, 20000, 10]), ("Pad", [0, 0, 40000, 40000]),
                                         ("Tile", [40000, 40000])])  # fmt: skip
def test_a_gigavalue_constant_made_from_small_constants_is_refused_before_anything_builds_it(
    tmp_path: Path, op: str, arg: list[int]
) -> None:
    """The tensor is a graph output declared [1]: onnxscript's folder trusted the declaration, and onnxruntime's own
    constant folding built it when convert checked the model (a 190-byte model: 1.4 GB, 16 GB at this size)."""
    from onnx import TensorProto, helper

    data = np.ones(1 if op == "Expand" else (1, 1), np.float32)
    nodes = [helper.make_node(op, ["c", "arg"], ["big"]), helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
                               helper.make_tensor_value_info("big", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(data, "c"), numpy_helper.from_array(np.array(arg, np.int64), "arg")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 3 and "makes a constant of" in result.stderr and op in result.stderr, result.stderr
    assert not (tmp_path / "c.onnx").exists()
    small = np.array([64, 64] if op != "Expand" else [64, 64, 1], np.int64)
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(small if op != "Pad" else np.array([0, 0, 63, 63], np.int64), "arg"))
    from qtool.graph.constant_size import huge_constant

    assert huge_constant(model) is None  # a small one is no bomb

"""Hostile round five (helper-44): YAML 1.1's surprises in configs, stale staging files, an all-or-nothing commit,
a closed stdout, float64 data in a float32 .raw, and a careless user's sweep.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _config(ws: Workspace, text: str) -> Path:
    config = ws.root / "c.yaml"
    config.write_text(text)
    return config


# PyYAML resolves YAML 1.1: `16:00` was 960 (base 60), `010` 8 (octal: quantized at 8 bits, silently),
# `2001-12-14` a date; each is now the text it reads as in YAML 1.2, refused by the option naming key and line.
@pytest.mark.parametrize("value", ["16:00", "010", "0x10", "2001-12-14", "="])
def test_a_yaml_1_1_number_for_a_choice_is_refused_naming_the_key_and_line(ws: Workspace, value: str) -> None:
    config = _config(ws, f"# bits\n\nact_bitwidth: {value}\n")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml:3", "act_bitwidth")
    assert repr(value) in line, line


def test_off_for_a_choice_is_the_word_not_false(ws: Workspace) -> None:
    """`mixed_precision: off` was False ("False is not one of off, auto")."""
    config = _config(ws, "mixed_precision: off\nuse_per_channel_quantization: on\n")
    result = ws.quantize("-o", ws.out, "--config", config, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    assert ws.out.exists()


@pytest.mark.parametrize(("value", "name"), [("[010]", "'010'"), ("[yes]", "'yes'"), ("[1e3]", "'1e3'")])
def test_a_tensor_name_that_yaml_1_1_read_as_a_number_or_bool_is_read_as_written(
    ws: Workspace, value: str, name: str
) -> None:
    """`act_16bit_tensors: [010]` named tensor '8', `[yes]` 'True' (torch names tensors by numbers: '123')."""
    config = _config(ws, f"act_16bit_tensors: {value}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, f"names {name}")


def test_a_yaml_boolean_for_a_name_is_refused_naming_the_line(ws: Workspace) -> None:
    config = _config(ws, "\nact_16bit_tensors: [conv_out, true]\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml:2", "quote it")


@pytest.mark.parametrize(
    ("text", "wanted"),
    [("\nnum_threads: 5000\n", "c.yaml:2: num_threads"), ("a: 1\n", "c.yaml:1: unknown key"),
     ("verbose: 1\n\nevaluate_samples: 2.5\n", "c.yaml:3: evaluate_samples"),
     ("act_bw: 8\nact_bitwidth: 8\n", "c.yaml:2")],
)  # fmt: skip
def test_a_config_error_names_the_line(ws: Workspace, text: str, wanted: str) -> None:
    config = _config(ws, text)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, wanted)


def test_an_algorithm_flag_written_maybe_is_refused_not_true(ws: Workspace) -> None:
    """Under YAML 1.2 `maybe` (or `off`) is a string, which `if high_bias_absorption:` would have read as true."""
    config = _config(ws, "cle:\n  high_bias_absorption: maybe\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", "high_bias_absorption",
                   "true or false")  # fmt: skip


def test_an_algorithm_flag_takes_the_words_a_top_level_flag_takes(ws: Workspace) -> None:
    """`off` is false in an algorithm's section as `use_per_channel_quantization: off` is at the top (click's words)."""
    written = {}
    for word in ("off", "false", "on", "true"):
        config = _config(ws, f"cle:\n  high_bias_absorption: {word}\n")
        out = ws.root / word / "q.onnx"
        result = ws.quantize("-o", out, "--config", config, "--apply_algorithms", "cle", "--evaluate_samples", 0)
        assert result.exit_code == 0, result.output
        written[word] = out.read_bytes()
    assert written["off"] == written["false"] and written["on"] == written["true"]
    result = ws.quantize("-o", ws.out, "--config", _config(ws, "adaround:\n  sequential: no\n  num_batches: 2\n"),
                         "--apply_algorithms", "adaround", "--evaluate_samples", 0)  # fmt: skip
    assert result.exit_code == 0, result.output  # adaround's tri-state sequential (true, false, auto) too


def test_the_loader_leaves_pyyaml_s_safe_loader_alone() -> None:
    import yaml

    from qtool.config import _loader

    _loader()
    assert yaml.safe_load("a: yes\nb: 010\n") == {"a": True, "b": 8}


# A run killed by SIGKILL (the OOM killer) leaves its staging files beside the outputs; the next run writing the
# same output removes those no live run holds. The killed "run" stages two outputs and kills itself mid-write.
_KILLED = """
import os, signal, sys
from qtool.io import outputs
out = sys.argv[1]
with outputs.command():
    outputs.write_text(out + "/q.encodings.json", "{}")
    with outputs.atomic_write(out + "/q.onnx") as handle:
        handle.write(b"half a model")
        handle.flush()
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("staged", flush=True)
        sys.stdin.read()  # a live run, stopped mid-write until its stdin closes
"""


def _staging_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".bak")))


def test_a_killed_runs_staging_files_are_removed_by_the_next_run(ws: Workspace, monkeypatch) -> None:
    import subprocess
    import sys

    from qtool.io import staging

    monkeypatch.setattr(staging, "FRESH_SECONDS", 0.0)
    ws.out.parent.mkdir()
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(ws.out.parent), "kill"], capture_output=True)
    assert killed.returncode == -9, killed.stderr
    assert len(_staging_files(ws.out.parent)) == 2
    (ws.out.parent / ".q.onnx.user1234.tmp.keep").write_text("not qtool's")  # other names stay
    (ws.out.parent / ".other.onnx.abcdefgh.tmp").write_text("another output's")
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    assert _staging_files(ws.out.parent) == [".other.onnx.abcdefgh.tmp"]
    assert sorted(p.name for p in ws.out.parent.iterdir()) == [
        ".other.onnx.abcdefgh.tmp", ".q.onnx.user1234.tmp.keep", "q.encodings.json", "q.onnx"]  # fmt: skip


def test_a_live_runs_staging_files_and_an_input_are_not_removed(ws: Workspace, monkeypatch) -> None:
    import subprocess
    import sys

    from qtool.io import staging

    monkeypatch.setattr(staging, "FRESH_SECONDS", 0.0)
    ws.out.parent.mkdir()
    live = subprocess.Popen([sys.executable, "-c", _KILLED, str(ws.out.parent), "live"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert live.stdout is not None and live.stdout.readline() == "staged\n"
        held = _staging_files(ws.out.parent)
        assert len(held) == 2
        model = ws.out.parent / ".q.onnx.abcdefgh.tmp"  # a model named like a staging file, given as the input
        model.write_bytes(ws.model.read_bytes())
        result = ws.run("quantize", "-i", model, "--input_list", ws.listing, "-o", ws.out, "--evaluate_samples", "0")
        assert result.exit_code == 0, result.stderr
        assert _staging_files(ws.out.parent) == sorted([*held, model.name])
    finally:
        live.communicate("")
    assert live.returncode == 0
    assert _staging_files(ws.out.parent) == [model.name]


def test_a_commit_failing_half_way_puts_back_the_outputs_it_replaced(tmp_path: Path, monkeypatch) -> None:
    """The undo removed the outputs it had renamed: the previous run's model was lost with the new one."""
    import os

    from qtool.io import outputs

    (tmp_path / "a").write_text("A1")
    (tmp_path / "b").write_text("B1")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(outputs.UsageError, match="Input/output error"), outputs.command():
        outputs.write_text(tmp_path / "a", "A2")
        outputs.write_text(tmp_path / "b", "B2")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a": "A1", "b": "B1"}
    monkeypatch.setattr(outputs.os, "replace", real)
    with outputs.command():  # and a commit that succeeds leaves no backup behind
        outputs.write_text(tmp_path / "a", "A2")
        outputs.write_text(tmp_path / "c", "C2")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a": "A2", "b": "B1", "c": "C2"}


def test_a_signal_during_the_commit_puts_back_the_outputs_it_replaced(tmp_path: Path, monkeypatch) -> None:
    import os

    from qtool.io import outputs

    (tmp_path / "a").write_text("A1")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        real(src, dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the rename: b is new, a replaced; both must go back

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), outputs.command():
        outputs.write_text(tmp_path / "a", "A2")
        outputs.write_text(tmp_path / "b", "B2")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a": "A1"}


def _closing(fd: int):
    import os

    return lambda: os.close(fd)


def test_quantize_with_stdout_closed_is_refused_before_any_work(ws: Workspace) -> None:
    """`qtool quantize ... >&-` exited 0 with its report lost; and the first file it opened took descriptor 1."""
    import subprocess
    import sys

    before = ws.snapshot()
    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out]
    result = subprocess.run([sys.executable, "-m", "qtool", *map(str, args)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=_closing(1), timeout=120)  # fmt: skip
    assert_refused(ws, before, result, 2, "stdout is closed")


def test_quantize_with_stderr_closed_writes_its_outputs_and_report(ws: Workspace) -> None:
    """`2>&-` was an internal error (exit 1, nothing written): a warning's write to a stderr that was None."""
    import subprocess
    import sys

    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, "-v"]
    result = subprocess.run([sys.executable, "-m", "qtool", *map(str, args)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_closing(2), timeout=120)  # fmt: skip
    assert result.returncode == 0
    assert "samples" in result.stdout
    assert sorted(p.name for p in ws.out.parent.iterdir()) == ["q.encodings.json", "q.onnx"]


@pytest.mark.parametrize("kind", ["float32 values cast up", "whole numbers"])
def test_float64_data_in_a_float32_raw_of_the_same_size_is_warned_of_naming_the_file(ws: Workspace, kind: str) -> None:
    """Half the values as float64 fill a float32 .raw exactly; it was read silently (x[1,3,8,8]: 96 float64)."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = rng.normal(size=96).astype(np.float32) if kind.startswith("float32") else rng.integers(0, 256, 96)
    bad = ws.root / "raw" / "001_x.raw"
    values.astype(np.float64).tofile(bad)
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "float64" in line]
    assert len(warned) == 1 and "001_x.raw" in warned[0] and "input_list.txt:2" in warned[0], result.stderr


def test_float32_data_with_zeros_and_twos_is_not_taken_for_float64(ws: Workspace) -> None:
    import numpy as np

    samples = sorted((ws.root / "raw").iterdir())
    np.zeros(192, np.float32).tofile(samples[0])  # all zero
    np.tile(np.float32([2.0, 0.0]), 96).tofile(samples[1])  # every other value 0, the rest 2: the high words' 0
    relu = np.random.default_rng(1).normal(size=192).astype(np.float32)
    np.maximum(relu, 0).tofile(samples[2])  # half zeros, at random places
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    assert "float64" not in result.stderr


@pytest.mark.parametrize(
    "text",
    ['{"param_encodings": {}, "activation_encodings": {"x": [{"bitwidth": 8, "min": -1e39, "max": 1e39}]}}',
     '{"version": "1.0.0", "param_encodings": [], "activation_encodings": [{"name": "x", "dtype": "INT", "bw": 8, '
     '"enc_type": "PER_TENSOR", "is_sym": false, "offset": [0], "scale": [1e38]}]}',
     '{"version": "2.0.0", "encodings": [{"name": "x", "output_dtype": "uint8", "y_scale": 1e38, "y_zero_point": 0}]}'],
    ids=["0.6.1 min/max", "1.0.0 scale", "2.0.0 scale"],
)  # fmt: skip
def test_an_override_range_past_float32_is_refused_naming_the_file(ws: Workspace, text: str) -> None:
    """A scale float32 holds (1e38) can make a range it does not (2.55e40 over 255 steps): written as given, a
    float32 reader of the encodings got inf."""
    overrides = ws.root / "ov.json"
    overrides.write_text(text)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "ov.json", "'x'", "past float32")


def test_inspect_of_a_conv_with_no_filters_is_not_an_internal_error(ws: Workspace) -> None:
    """A zero-size weight (a Conv of 0 output channels, which onnxruntime runs) made the channel-range lint an
    IndexError: `qtool: internal error`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 0, 4, 4])],
        [numpy_helper.from_array(np.zeros((0, 4, 1, 1), np.float32), "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, ws.root / "empty_conv.onnx")
    result = ws.run("inspect", ws.root / "empty_conv.onnx")
    assert result.exit_code == 0, result.stderr
    assert "lint findings" in result.stdout


@pytest.mark.parametrize("limit", ["100000000000", "99999999999999999999999999999"])
def test_a_huge_read_limit_reads_small_files(ws: Workspace, limit: str) -> None:
    """QTOOL_MAX_READ_BYTES=100000000000 (raised 'to be safe') was a MemoryError: read(limit + 1) allocates
    limit + 1 bytes before reading a 96-byte input_list (past sys.maxsize, an OverflowError)."""
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "0", env={"QTOOL_MAX_READ_BYTES": limit})
    assert result.exit_code == 0, result.stderr
    assert ws.out.exists()


def test_a_file_growing_past_its_stat_is_read_to_the_limit(tmp_path: Path) -> None:
    from qtool.errors import DataError
    from qtool.io.files import read_bytes

    assert len(read_bytes("/proc/self/status", limit=1 << 40)) > 100  # its size says 0
    with pytest.raises(DataError, match="over the 100-byte limit"):
        read_bytes("/proc/self/status", limit=100)


def test_an_output_named_like_another_outputs_staging_file_is_not_swept(tmp_path: Path, monkeypatch) -> None:
    """--html out/.q.onnx.abcdefgh.tmp beside -o out/q.onnx: the sweep for q.onnx must not take the previous
    report, which a run that then fails must leave as it was."""
    from qtool.errors import UsageError
    from qtool.io import outputs, staging

    monkeypatch.setattr(staging, "FRESH_SECONDS", 0.0)
    html = tmp_path / ".q.onnx.abcdefgh.tmp"
    html.write_text("the previous report")
    with pytest.raises(UsageError, match="later"), outputs.command(outputs=[("-o", tmp_path / "q.onnx"), ("--html", html)]):
        outputs.write_text(tmp_path / "q.onnx", "model")
        raise UsageError("a later failure")
    assert [p.name for p in tmp_path.iterdir()] == [html.name]
    assert html.read_text() == "the previous report"


def test_a_failed_run_whose_temporary_someone_removed_leaves_the_previous_output(tmp_path: Path) -> None:
    """The undo took a missing temporary for one already renamed and removed the output: the previous run's file,
    which this run had not touched (a `rm .*.tmp` or a tmp cleaner during a long run, then any error)."""
    from qtool.io import outputs

    (tmp_path / "a").write_text("A1")
    with pytest.raises(RuntimeError), outputs.command():
        outputs.write_text(tmp_path / "a", "A2")
        for staged in tmp_path.glob(".a.*.tmp"):
            staged.unlink()
        raise RuntimeError("a later stage failed")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a": "A1"}

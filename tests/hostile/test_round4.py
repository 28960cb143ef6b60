"""Hostile round four (helper-42): concurrent writers, integer config values, line numbers, a careless user's sweep.

Each case fails on the commit before its fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# Two `qtool quantize` runs into one -o: the first renames one output, then waits (as a descheduled process
# would) until the second has reached its commit and had half a second to rename; the second starts committing
# only once the first has renamed one file. Interleaved, the model was one run's and the encodings the other's.
_RACER = """
import os, sys, time
from pathlib import Path
import qtool.__main__ as entry
from qtool.io import outputs
role, first_renamed, second_committing = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
real_commit, real_replace = outputs.Transaction.commit, os.replace

def wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

def slow_replace(src, dst, renamed=[]):
    real_replace(src, dst)
    renamed.append(dst)
    if len(renamed) == 1:
        first_renamed.write_text("")
        wait_for(second_committing)
        time.sleep(0.5)

def commit(self):
    if role == "first":
        outputs.os.replace = slow_replace
    else:
        wait_for(first_renamed)
        second_committing.write_text("")
    real_commit(self)

outputs.Transaction.commit = commit
sys.argv = ["qtool", *sys.argv[4:]]
entry.main()
"""


def _bitwidths(model: Path) -> set[int]:
    """The activation bitwidths a QDQ model's zero points say (uint8: 8, uint16: 16)."""
    inits = {i.name: i for i in onnx.load(str(model)).graph.initializer}
    found = set()
    for node in onnx.load(str(model)).graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            found.add({onnx.TensorProto.UINT8: 8, onnx.TensorProto.UINT16: 16}.get(inits[node.input[2]].data_type, 0))
    return found


def test_two_runs_writing_one_output_leave_one_runs_pair(ws: Workspace) -> None:
    flags = {"first": "8", "second": "16"}
    markers = [ws.root / "first_renamed", ws.root / "second_committing"]
    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, "--evaluate_samples", "0"]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, role, *map(str, [*markers, *args, "--act_bitwidth", bits])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, bits in flags.items()
    ]
    for racer in racers:
        _, stderr = racer.communicate(timeout=120)
        assert racer.returncode == 0, stderr
    encodings = json.loads(ws.out.with_suffix(".encodings.json").read_text())
    written = {entry[0]["bitwidth"] for entry in encodings["activation_encodings"].values()}
    assert written == _bitwidths(ws.out) == {16}, (written, _bitwidths(ws.out))
    assert sorted(p.name for p in ws.out.parent.iterdir()) == ["q.encodings.json", "q.onnx"]


def test_a_folder_locked_past_the_wait_is_one_error_and_nothing_written(tmp_path: Path, monkeypatch) -> None:
    """A run stopped in the middle of its renames (SIGSTOP) holds its folders: the next one gives up, naming it."""
    import fcntl
    import os

    from qtool.errors import UsageError
    from qtool.io import folder_lock, outputs

    monkeypatch.setattr(folder_lock, "WAIT_SECONDS", 0.2)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    out = tmp_path / "out"
    out.mkdir()
    locks, st = folder_lock.lock_folder(), os.stat(out)
    assert locks == tmp_path / "run" / "qtool-locks"
    fd = os.open(locks / f"{st.st_dev}-{st.st_ino}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another process has been writing"), outputs.command():
            outputs.write_text(out / "a.txt", "A")
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []
    outputs.write_text(out / "a.txt", "A")  # released: no state left to trip on, nothing made beside the output
    assert [p.name for p in out.iterdir()] == ["a.txt"]


def test_a_flock_on_the_output_folder_itself_does_not_stop_a_run(tmp_path: Path, monkeypatch) -> None:
    """`flock out/ qtool quantize -o out/m.onnx` serialises jobs the usual way; with the lock on the folder itself
    qtool waited 60 s on its own parent's lock and failed (and a user holding /tmp's stopped everyone's runs)."""
    import fcntl
    import os

    from qtool.io import folder_lock, outputs

    monkeypatch.setattr(folder_lock, "WAIT_SECONDS", 0.2)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with outputs.command():
            outputs.write_text(tmp_path / "a.txt", "A")
    finally:
        os.close(fd)
    assert (tmp_path / "a.txt").read_text() == "A"


def test_a_lock_folder_another_user_could_write_is_not_used(tmp_path: Path, monkeypatch) -> None:
    """A qtool-locks folder others can write (made first in a shared /tmp) must not decide whose runs wait."""
    from qtool.io import folder_lock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "qtool-locks").mkdir()
    (tmp_path / "qtool-locks").chmod(0o777)
    assert folder_lock.lock_folder() is None
    (tmp_path / "qtool-locks").chmod(0o700)
    assert folder_lock.lock_folder() == tmp_path / "qtool-locks"


@pytest.mark.parametrize(
    "text",
    ["verbose: 3.5\n", "num_threads: 2.5\n", "calib_batch_size: 4.0\n", "evaluate_samples: true\n",
     "verbose: false\n", "min_sqnr: true\n"],
)  # fmt: skip
def test_an_integer_option_given_a_fraction_or_a_bool_in_a_config_is_a_usage_error(ws: Workspace, text: str) -> None:
    """click's int() read `verbose: 3.5` as 3 and `evaluate_samples: true` as 1, silently."""
    from hostile_env import assert_refused

    config = ws.root / "c.yaml"
    config.write_text(text)
    key = text.split(":")[0]
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", f"{key} must be")


@pytest.mark.parametrize("text", ["mixed_precision:\n  target_sqnr: 40\n", "adaquant:\n  num_batches: 4\n"])
def test_a_config_section_nothing_reads_is_refused(ws: Workspace, text: str) -> None:
    from hostile_env import assert_refused

    config = ws.root / "c.yaml"
    config.write_text(text)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", text.split(":")[0])


# Characters str.splitlines (and PyYAML, the last three) break lines at, which no editor does.
NOT_LINE_ENDS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", NOT_LINE_ENDS, ids=lambda c: f"U+{ord(c):04X}")
def test_input_list_line_numbers_count_only_line_ends(tmp_path: Path, char: str) -> None:
    from qtool.errors import DataError
    from qtool.io.input_list import parse_input_list

    text = f"a.raw{char}b.raw\nc.raw\nbad:=\n"
    if char not in "\f\v":  # part of a path since round 10 (C's isspace separates, as qnn-net-run's reader)
        with pytest.raises(DataError, match=r"list\.txt:1: column 6: .* names no file"):
            parse_input_list(text, tmp_path / "list.txt")
        (tmp_path / f"a.raw{char}b.raw").write_bytes(b"")
    with pytest.raises(DataError, match=r"list\.txt:3: malformed entry"):
        parse_input_list(text, tmp_path / "list.txt")
    parsed = parse_input_list(text.replace("bad:=", "d.raw"), tmp_path / "list.txt")
    assert [s.line for s in parsed.samples] == [1, 2, 3]
    assert [len(s.paths) for s in parsed.samples] == [1 + (char in "\f\v"), 1, 1]  # whitespace inside a line


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_input_list_line_ends_are_counted_as_an_editor_does(tmp_path: Path, end: str) -> None:
    from qtool.errors import DataError
    from qtool.io.input_list import parse_input_list

    with pytest.raises(DataError, match=r"list\.txt:4: malformed"):
        parse_input_list(end.join(["a.raw", "", "b.raw", "x:=", ""]), tmp_path / "list.txt")


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"], ids=lambda c: f"U+{ord(c):04X}")
def test_config_and_overrides_line_numbers_count_only_line_ends(ws: Workspace, char: str) -> None:
    from hostile_env import assert_refused

    config = ws.root / "c.yaml"
    config.write_text(f"# a note{char}on one line\nact_bitwidth: 8\n")  # YAML ends the comment, the editor does not
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml:2: not valid YAML")


def test_overrides_json_with_cr_line_ends_names_the_line(ws: Workspace) -> None:
    from hostile_env import assert_refused

    overrides = ws.root / "o.json"
    overrides.write_bytes(b'{\r  "activation_encodings": {},\r  "param_encodings": {}\r  "x": 1\r}\r')
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "o.json", "line 4 column 3")


def test_labels_line_numbers_count_only_line_ends(tmp_path: Path) -> None:
    from qtool.api.common import read_labels
    from qtool.errors import DataError

    labels = tmp_path / "labels.txt"
    labels.write_text("1\f2\n3\nx\n")
    with pytest.raises(DataError, match=r"labels\.txt:3: label 'x'"):
        read_labels(labels)


def test_an_output_folder_removed_before_the_renames_is_one_error(ws: Workspace) -> None:
    """The output folder deleted mid-run (a cleanup job, a second terminal): one line, exit 2, nothing left."""
    script = (
        "import shutil, sys\n"
        "import qtool.__main__ as entry\n"
        "from qtool.io import outputs\n"
        "gone, real = sys.argv[1], outputs.Transaction.commit\n"
        "def commit(self):\n"
        "    shutil.rmtree(gone)\n"
        "    real(self)\n"
        "outputs.Transaction.commit = commit\n"
        "sys.argv = ['qtool', *sys.argv[2:]]\n"
        "entry.main()\n"
    )
    before = ws.snapshot()
    args = ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, "--evaluate_samples", "0"]
    result = subprocess.run([sys.executable, "-c", script, ws.out.parent, *args], capture_output=True, text=True)
    from hostile_env import assert_refused

    assert_refused(ws, before, result, 2, "q.onnx", "cannot write")


def test_integer_data_of_the_right_byte_count_in_a_raw_file_is_refused(ws: Workspace) -> None:
    """int32 pixels dumped for a float32 input ([1,3,8,8]: 768 bytes either way) read as subnormal floats, and the
    model was calibrated on values of 1e-43 without a word."""
    import numpy as np
    from hostile_env import assert_refused

    raw = ws.root / "raw" / "000_x.raw"
    np.random.default_rng(0).integers(0, 256, 192).astype(np.int32).tofile(raw)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:1", "000_x.raw", "subnormal", "integer")


@pytest.mark.parametrize("command", ["convert", "quantize", "inspect", "export"])
def test_a_model_whose_names_are_not_utf8_is_a_model_error(ws: Workspace, command: str) -> None:
    """protobuf (upb) hands back bytes for a string field that is not UTF-8: convert and quantize were internal
    errors, inspect printed b'\\xff...' as a name."""
    from hostile_env import assert_refused

    model = ws.root / "bad.onnx"
    model.write_bytes(ws.model.read_bytes().replace(b"\n\x01x", b"\n\x01\xff"))  # the input `x`, both places
    before = ws.snapshot()
    args = {
        "convert": ["-i", model, "-o", ws.out],
        "quantize": ["-i", model, "--input_list", ws.listing, "-o", ws.out],
        "inspect": [model],
        "export": ["-i", model, "-o", ws.root / "exp"],
    }[command]
    assert_refused(ws, before, ws.run(command, *args), 3, "bad.onnx", "not UTF-8")


@pytest.mark.parametrize("kind", ["300-byte-name", "300-byte-folder", "4200-byte-path"])
@pytest.mark.parametrize("command", ["convert", "quantize", "inspect", "export"])
def test_an_output_path_too_long_for_the_filesystem_is_one_error(ws: Workspace, command: str, kind: str) -> None:
    """Python 3.11's Path.is_symlink()/exists() raise ENAMETOOLONG: every command was an internal error."""
    from hostile_env import assert_refused

    path = {
        "300-byte-name": ws.root / ("m" * 300 + ".onnx"),
        "300-byte-folder": ws.root / ("d" * 300) / "q.onnx",
        "4200-byte-path": ws.root / ("d/" * 2100) / "q.onnx",
    }[kind]
    quant = ws.root / "q.onnx"
    if command == "export":
        assert ws.quantize("-o", quant, "--evaluate_samples", "0").exit_code == 0
    before = ws.snapshot()
    args = {
        "convert": ["convert", "-i", ws.model, "-o", path],
        "quantize": ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", path],
        "inspect": ["inspect", ws.model, "--html", path],
        "export": ["export", "-i", quant, "-o", path],
    }[command]
    flag = "--html" if command == "inspect" else "-o"
    assert len(assert_refused(ws, before, ws.run(*args), 2, flag)) < 400


@pytest.mark.parametrize("text", ["act_bw: 16\nact_bitwidth: 8\n", "algorithms: [cle]\napply_algorithms: [bc]\n"])
def test_one_option_set_under_its_alias_and_its_name_is_refused(ws: Workspace, text: str) -> None:
    """The YAML loader refuses a key given twice; an option under two spellings kept the last, silently."""
    from hostile_env import assert_refused

    config = ws.root / "c.yaml"
    config.write_text(text)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, "c.yaml", "set the same option")


FLOAT32_PAST = {
    "0.6.1-range": {"activation_encodings": {}, "param_encodings": {"W": [{"bitwidth": 8, "min": -1e300, "max": 1e300}]}},
    "1.0.0-scale-huge": {"version": "1.0.0", "param_encodings": [], "activation_encodings": [
        {"name": "x", "enc_type": "PER_TENSOR", "dtype": "INT", "bw": 8, "is_sym": False, "scale": [1e300], "offset": [-128]}]},
    "1.0.0-scale-tiny": {"version": "1.0.0", "param_encodings": [], "activation_encodings": [
        {"name": "x", "enc_type": "PER_TENSOR", "dtype": "INT", "bw": 8, "is_sym": False, "scale": [1e-300], "offset": [-128]}]},
    "2.0.0-y-scale": {"version": "2.0.0", "encodings": [{"name": "x", "output_dtype": "uint8", "y_scale": 1e300}]},
    # per-block scales (round 9): FW is [5, 256], blocks of 16 along its inputs
    "2.0.0-block-tiny": {"version": "2.0.0", "encodings": [
        {"name": "FW", "output_dtype": "int4", "y_scale": [[1e-40] * 16] * 5, "axis": 1, "block_size": 16}]},
    "2.0.0-lpbq-tiny": {"version": "2.0.0", "encodings": [
        {"name": "FW", "output_dtype": "int4", "per_block_int_scale": [[1] * 16] * 5,
         "per_channel_float_scale": [[1e-300]] * 5, "axis": 1, "block_size": 16}]},
    "1.0.0-lpbq-product": {"version": "1.0.0", "activation_encodings": [], "param_encodings": [
        {"name": "FW", "enc_type": "LPBQ", "dtype": "INT", "bw": 8, "compressed_bw": 4, "is_sym": True, "scale": [1e38] * 5,
         "offset": [-128] * 5, "block_size": 16, "per_block_int_scale": [16] * 80}]},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FLOAT32_PAST))
@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_an_override_scale_past_float32_names_the_file(ws: Workspace, command: str, case: str) -> None:
    """Finite in JSON, inf or 0 as the float32 a model holds: the QDQ reader refused the model qtool had just built,
    naming an internal DequantizeLinear node and not the file (exit 3)."""
    from hostile_env import assert_refused

    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps(FLOAT32_PAST[case]))
    before = ws.snapshot()
    extra = ["--input_list", ws.listing] if command == "quantize" else []
    result = ws.run(command, "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides, *extra)
    assert_refused(ws, before, result, 4, "ov.json", "float32")


@pytest.mark.parametrize("method", ["min-max", "sqnr"])
def test_a_stats_range_past_float32_is_refused(ws: Workspace, method: str) -> None:
    """A hand-edited range of +-1e300 (finite, lo <= hi) gave a model whose scale was inf, written without a word
    (no samples, so no evaluation); inspect then refused that model."""
    from hostile_env import assert_refused

    stats = ws.root / "s.json"
    result = ws.quantize("-o", ws.root / "first.onnx", "--save_stats", stats, "--act_quantizer_calibration", method)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(stats.read_text())
    doc["tensors"]["x"].update(lo=-1e300, hi=1e300)
    stats.write_text(json.dumps(doc))
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", ws.out, "--load_stats", stats, "--act_quantizer_calibration", method)
    assert_refused(ws, before, result, 4, "s.json", "'x'", "past float32")


@pytest.mark.parametrize(
    "label", ["1_0", "\u0661", "1e3", "--1", "1" * 5000], ids=["1_0", "U+0661", "1e3", "--1", "5000-digits"]
)  # 5000 digits: int() raised past its 4300-digit limit, an internal error
def test_a_label_int_reads_otherwise_is_refused(tmp_path: Path, label: str) -> None:
    """int() took '1_0' as 10 and an Arabic-Indic one as 1: accuracy against labels nobody wrote."""
    from qtool.api.common import read_labels
    from qtool.errors import DataError

    labels = tmp_path / "labels.txt"
    labels.write_text(f"3\n{label}\n")
    with pytest.raises(DataError, match=r"labels\.txt:2: label"):
        read_labels(labels)
    labels.write_text("3\n+4\n-1 cat\n")
    assert read_labels(labels) == [3, 4, -1]


def test_a_config_of_two_yaml_documents_says_so(ws: Workspace) -> None:
    """The error was 'c.yaml:2: not valid YAML: but found another document', PyYAML's context left out."""
    from hostile_env import assert_refused

    config = ws.root / "c.yaml"
    config.write_text("act_bitwidth: 16\n---\nact_bitwidth: 8\n")
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--config", config)
    assert_refused(ws, before, result, 2, "c.yaml:2: not valid YAML: expected a single document")


@pytest.mark.parametrize("suffix", [".raw", ".npy"])
def test_a_sample_file_that_shrinks_after_its_stat_is_a_data_error(tmp_path: Path, monkeypatch, suffix: str) -> None:
    """Sized by stat, then read short (truncated by another process meanwhile, or a /sys file, whose size says
    4096): numpy's reshape failed, an internal error."""
    import numpy as np

    from qtool.errors import DataError
    from qtool.io import raw

    spec = raw.InputSpec("x", np.dtype(np.float32), (1, 4))
    path = tmp_path / f"s{suffix}"
    if suffix == ".raw":
        path.write_bytes(np.ones(4, np.float32).tobytes())
        real = raw.read_bytes
        monkeypatch.setattr(raw, "read_bytes", lambda *a, **k: real(*a, **k)[:-4])
    else:
        np.save(path, np.ones((1, 4), np.float32))
        real_fromfile = np.fromfile
        monkeypatch.setattr(raw.np, "fromfile", lambda *a, **k: real_fromfile(*a, **k)[:-1])
    with pytest.raises(DataError, match=r"list\.txt:1: .*when read, not the 16 its size said"):
        raw.load_tensor(path, spec, "list.txt:1")


@pytest.mark.skipif(not Path("/sys/kernel/profiling").is_file(), reason="no /sys/kernel/profiling")
def test_a_sys_file_listed_as_a_sample_is_a_data_error(tmp_path: Path) -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1024, 4), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    (tmp_path / "l.txt").write_text("/sys/kernel/profiling\n")  # stat says 4096 bytes: 1024 float32 values
    ws = Workspace(tmp_path)
    result = ws.run("quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "l.txt", "-o", tmp_path / "q.onnx")
    assert result.exit_code == 4 and "l.txt:1: /sys/kernel/profiling gave" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [["quantize", "--input_list", "{listing}", "-o", "built/"], ["convert", "-o", "built/"],
     ["inspect", "--html", "built/"], ["quantize", "--input_list", "{listing}", "-o", "q.onnx", "--save_stats", "built/"]],
    ids=["quantize", "convert", "inspect-html", "save-stats"],
)  # fmt: skip
def test_an_output_file_given_as_a_folder_path_is_refused(ws: Workspace, args: list[str], monkeypatch) -> None:
    """`-o built/` (a folder meant, or tab-completed) wrote a file named `built` and `built.encodings.json`."""
    from hostile_env import assert_refused

    monkeypatch.chdir(ws.root)
    command, *rest = [a.format(listing=ws.listing) for a in args]
    model = [ws.model] if command == "inspect" else ["-i", ws.model]
    before = ws.snapshot()
    assert_refused(ws, before, ws.run(command, *model, *rest), 2, "'built/' ends with '/'")


def test_an_output_file_given_as_a_folder_path_ending_in_dot_is_refused(ws: Workspace, monkeypatch) -> None:
    """Path() drops a final '/.' as it does a final '/': `-o built/.` wrote a file named `built`."""
    from hostile_env import assert_refused

    monkeypatch.chdir(ws.root)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", ws.model, "-o", "built/."), 2, "'built/.' ends with '/.'")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_report_stdout_cannot_take_is_one_error_line(ws: Workspace) -> None:
    """`> /dev/full` (a full disk under a redirected report): the outputs are in place, the report is not; it was
    an internal error (exit 1)."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "qtool", "quantize", "-i", str(ws.model), "--input_list", str(ws.listing),
             "-o", str(ws.out), "--evaluate_samples", "0"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["qtool: error: stdout: cannot write the report: No space left on device"]


def test_a_reader_that_quits_ends_the_run_quietly(ws: Workspace) -> None:
    """`qtool inspect m.onnx | head -1` with a report past the pipe's buffer: a BrokenPipeError was an internal
    error; it ends as SIGPIPE would (141), with nothing on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "qtool", "inspect", str(ws.model)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    process.stdout.close()  # no reader left: the report's write fails with EPIPE
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and stderr == "", stderr

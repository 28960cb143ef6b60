"""Round 10 (helper-70): round 9's open findings (an output under /proc as root, a long list of one repeated
file, export's encodings over quantize's, a non-breaking space in an input_list), then a wheel probed as a
careless user would."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/self").is_dir(), reason="needs root and /proc")
@pytest.mark.parametrize("output", ["/proc/qtool-round10/q.onnx", "/proc/qtool-round10.onnx"])
def test_an_output_under_proc_is_refused_before_any_work_as_root(ws: Workspace, output: str) -> None:
    """Root passes os.access in /proc, where no file can be made: the output was refused only when written,
    after calibration (here a sample of the wrong size, which must not be the error: the output is checked
    first)."""
    (ws.root / "raw" / "000_x.raw").write_bytes(b"\0" * 12)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", output), 2, output, "cannot write in /proc")


def test_an_export_folder_that_cannot_be_made_is_named_as_given(ws: Workspace) -> None:
    """check_output_folder probed '<folder>/probe' and the error named that file, which the user never wrote."""
    (ws.root / "f").write_text("")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.run("export", "-i", ws.model, "-o", ws.root / "f" / "x"), 2, "it is not a folder")
    assert "probe" not in line and f"{ws.root / 'f' / 'x'}: " in line


# --- a non-breaking space in an input_list line ---------------------------------------------------------


@pytest.mark.parametrize("line", ["x:=raw/000_x.raw\u00a0x:=raw/001_x.raw", "raw/000_x.raw\u00a0", "raw/00\u30000_x.raw"],
                         ids=["between-entries", "trailing", "ideographic"])  # fmt: skip
def test_a_unicode_space_is_part_of_a_path_and_named_by_column(ws: Workspace, line: str) -> None:
    """str.split() cut entries at U+00A0 and U+3000 (a list pasted from a web page): a model of one input was
    told 'input x given twice', or a trailing one vanished. FORMATS.md b.1 separates entries by spaces (qnn-net-run,
    C's isspace): the character is part of the path, and an entry holding one that names no file is refused
    naming its line and column."""
    ws.listing.write_text(f"raw/001_x.raw\n{line}\n", encoding="utf-8")
    before = ws.snapshot()
    column = str(next(i for i, c in enumerate(line) if c in "\u00a0\u3000") + 1)
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:2: column " + column, "names no file",
                   "ASCII spaces or tabs")  # fmt: skip


def test_a_file_name_holding_a_non_breaking_space_is_read(ws: Workspace) -> None:
    (ws.root / "raw" / "000_x.raw").rename(ws.root / "raw" / "a\u00a0b.raw")
    ws.listing.write_text("raw/a\u00a0b.raw\n\t raw/001_x.raw \x0b\n", encoding="utf-8")
    result = ws.quantize("-o", ws.out)
    assert result.exit_code == 0, result.stderr


def test_the_column_counts_the_line_as_written(tmp_path: Path) -> None:
    from qtool.errors import DataError
    from qtool.io.input_list import parse_input_list

    with pytest.raises(DataError, match=r"l\.txt:2: column 12: 'raw/nope\\xa0x\.raw' holds U\+00A0 \(no-break space\)"):
        parse_input_list("a.raw\n  \traw/nope\u00a0x.raw\n", tmp_path / "l.txt")


# --- export's encodings beside quantize's -----------------------------------------------------------------


@pytest.mark.parametrize("folder", ["out", "out/", "out/../out", "link"])
def test_export_into_quantizes_folder_keeps_quantizes_encodings(ws: Workspace, folder: str) -> None:
    """export -o <the quantized model's folder> (default formats stripped + encodings) replaced quantize's
    q.encodings.json with its own file of the same name, exit 0 (a 2.0.0 one over quantize's 0.6.1 with
    --encodings_format 2.0.0). It is refused before any work; the other formats may share the folder."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    (ws.root / "link").symlink_to("out")
    before = ws.snapshot()
    out = f"{ws.root}/{folder}"
    for args in ([], ["--format", "encodings", "--encodings_format", "2.0.0"]):
        result = ws.run("export", "-i", ws.out, "-o", out, *args)
        assert_refused(ws, before, result, 2, "--format encodings would replace the encodings quantize wrote with -i",
                       "export into another folder")  # fmt: skip
    assert ws.run("export", "-i", ws.out, "-o", out, "--format", "stripped").exit_code == 0
    assert (ws.root / "out" / "q.stripped.onnx").is_file()
    assert ws.run("export", "-i", ws.out, "-o", ws.root / "e").exit_code == 0
    assert (ws.root / "e" / "q.encodings.json").is_file()


# --- a long list of one repeated file -----------------------------------------------------------------


def test_a_float64_file_repeated_on_every_line_is_warned_of_once(ws: Workspace) -> None:
    """Round 9's 10^5-line list of one file: parsing, binding and reading are linear (the time is one read and one
    inference a line), but a float64 file read as float32 was warned of on every line: 10^5 identical warnings.
    A run names each such file once, and at most NAMED_FLOAT64_FILES of them, however many passes read them
    (auto's trials read samples spread over the list first, then calibration the whole list)."""
    import numpy as np

    from qtool.io.raw import NAMED_FLOAT64_FILES

    values = np.random.default_rng(0).normal(size=96).astype(np.float32).astype(np.float64)
    for i in range(NAMED_FLOAT64_FILES + 2):
        values.tofile(ws.root / "raw" / f"f{i}.raw")
    names = [f"raw/f{i % (NAMED_FLOAT64_FILES + 2)}.raw" for i in range(2000)]
    ws.listing.write_text("raw/f0.raw\n" * 2000 + "\n".join(names) + "\n")
    result = ws.quantize("-o", ws.out, "--evaluate_samples", "0")
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "as float64 data" in line]
    assert len(warned) == NAMED_FLOAT64_FILES, result.stderr[:2000]
    assert "input_list.txt:1: " in warned[0] and "f0.raw" in warned[0]
    assert len({re.search(r"/raw/(f\d+)\.raw:", line)[1] for line in warned}) == NAMED_FLOAT64_FILES  # distinct
    assert warned[-1].endswith("; further files like it are not named")


# --- overrides ------------------------------------------------------------------------------------------


def _entry(lo: float, hi: float) -> dict:
    return {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": lo, "max": hi}


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_a_weight_override_with_the_wrong_channel_count_is_refused_at_read_naming_the_file(
    ws: Workspace, command: str
) -> None:
    """Two per-channel entries for a Conv weight of 4 output channels: quantize calibrated the whole list first
    (10^5 lines: 17 s) and then said "override 'W': 2 per-channel encodings...", naming no file. Here a sample
    of the wrong size shows the order: the overrides are checked before any sample is read."""
    import json

    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {},
                                     "param_encodings": {"W": [_entry(-1, 1), _entry(-1, 1)]}}))  # fmt: skip
    (ws.root / "raw" / "000_x.raw").write_bytes(b"\0" * 12)
    before = ws.snapshot()
    if command == "quantize":
        result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    else:
        result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "ov.json: 'W': 2 per-channel encodings, but Conv", "axis 0, of 4 channels")


def test_a_misspelt_top_level_section_is_refused_not_dropped(ws: Workspace) -> None:
    """'activaton_encodings' beside the real (empty) sections was ignored, exit 0: the overrides it held applied to
    nothing, without a word. A key close to one qtool reads is refused with the suggestion; another is warned of."""
    import json

    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {}, "param_encodings": {},
                                     "activaton_encodings": {"x": [_entry(-1, 1)]}}))  # fmt: skip
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--quantization_overrides", overrides), 4,
                   "ov.json: top-level key 'activaton_encodings' is not one qtool reads", "did you mean 'activation_encodings'")  # fmt: skip
    overrides.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {}, "param_encodings": {},
                                     "producer": "a notebook"}))  # fmt: skip
    result = ws.quantize("-o", ws.out, "--quantization_overrides", overrides)
    assert result.exit_code == 0 and "ov.json: top-level key 'producer' is not read" in result.stderr, result.stderr


def test_an_unterminated_json_string_is_one_readable_line(ws: Workspace) -> None:
    """json's message ends in 'at' ('Unterminated string starting at'): the error read '... starting at at line 3'."""
    overrides = ws.root / "ov.json"
    overrides.write_text('{\n  "version": "0.6.1",\n  "activation_encodings')
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("-o", ws.out, "--quantization_overrides", overrides), 4,
                          "ov.json: not valid JSON: Unterminated string starting at line 3 column 3")  # fmt: skip
    assert "at at" not in line


# --- a long list's last line ----------------------------------------------------------------------------


@pytest.mark.parametrize("last", ["raw/nope.raw", "raw/short.raw", "x:=raw"], ids=["missing", "short", "folder"])
def test_a_bad_file_on_a_long_lists_last_line_is_found_before_calibration(
    ws: Workspace, last: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only names and counts were checked up front: a missing, short or folder entry on line 20001 was found when
    calibration reached it (10^5 lines: 13 s in). Every distinct file is now stat'ed (none read) first."""

    def calibrated(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration ran")

    monkeypatch.setattr(sys.modules["qtool.api.quantize"], "calibrate", calibrated)  # qtool.api.quantize: the function
    (ws.root / "raw" / "short.raw").write_bytes(b"\0" * 700)
    ws.listing.write_text("raw/000_x.raw\n" * 20000 + last + "\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:20001: ")


@pytest.mark.parametrize("entry", ["raw/000_x.raw/", "raw/000_x.raw/.", "x:=raw/000_x.raw/"])
def test_an_entry_ending_in_a_slash_is_refused(ws: Workspace, entry: str) -> None:
    """Path() drops a trailing '/' or '/.': 'raw/000_x.raw/' read the file (exit 0), where the OS says 'not a
    folder' and qtool's own flags refuse such a path."""
    ws.listing.write_text(f"raw/001_x.raw\n{entry}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:2: ", "a folder's path; give a file's")


def test_a_name_in_the_wrong_case_is_suggested(ws: Workspace) -> None:
    """'X:=a.raw' for input 'x': difflib's ratio of 'X' and 'x' is 0, so the error suggested nothing."""
    ws.listing.write_text("X:=raw/000_x.raw\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:1: unknown input name 'X'",
                   "did you mean 'x'?")  # fmt: skip


# --- outputs that may not be replaced --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["q.onnx", "q.encodings.json"])
def test_a_read_only_output_is_not_replaced(ws: Workspace, name: str) -> None:
    """An output chmod'ed a-w (a protected result, a read-only checkout) was replaced by the rename without a
    word, and the new file was 0644: a read-only file is refused before any work, naming it and its mode."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    (ws.out.parent / name).chmod(0o444)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 2, f"{name}: ", "is read-only (mode 444); refusing to replace it")


def test_a_read_only_file_system_is_named_as_one(tmp_path: Path) -> None:
    import subprocess

    ws = make_workspace(tmp_path / "w")
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mount)],
                                           capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a read-only tmpfs")
    try:
        result = ws.run("convert", "-i", ws.model, "-o", mount / "c.onnx")
        assert_refused(ws, ws.snapshot(), result, 2, f"cannot write in {mount}: a read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_stats_file_missing_a_tensor_is_refused(ws: Workspace) -> None:
    """A --save_stats file of this very model with one tensor's entry cut out loaded with exit 0, and that tensor
    was left without a grid: the report said 'activations quantized 3', 'left float 0'."""
    import json

    stats = ws.root / "s.json"
    assert ws.quantize("-o", ws.out, "--save_stats", stats).exit_code == 0
    doc = json.loads(stats.read_text())
    del doc["tensors"]["x"]
    stats.write_text(json.dumps(doc))
    ws.out.unlink()
    ws.out.with_suffix(".encodings.json").unlink()
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--load_stats", stats, "-o", ws.out)
    assert_refused(ws, before, result, 4, "s.json: has no range for tensor 'x' (1 of the model's", "--save_stats")


@pytest.mark.parametrize("label", ["5", "-1", "99999999999999999"])
def test_a_label_past_the_models_classes_is_refused_naming_its_line(ws: Workspace, label: str) -> None:
    """The model's output has 5 classes: a label of 5, -1 or 10^17 counted as a wrong answer, exit 0, and the
    accuracies were quietly lower than the data's."""
    labels, model = ws.root / "labels.txt", ws.root / "c.onnx"
    labels.write_text(f"0\n\n4\n{label}\n1\n")
    assert ws.run("convert", "-i", ws.model, "-o", model).exit_code == 0
    before = ws.snapshot()
    result = ws.run("inspect", model, "--reference", model, "--input_list", ws.listing, "--labels", labels)
    assert_refused(ws, before, result, 4, f"labels.txt:4: label {label} is not one of the model's 5 classes (0 to 4)")


def test_dash_is_no_file(ws: Workspace) -> None:
    """-o - wrote a file named '-' (exit 0) where a careless user meant stdout; -i - read a file named '-'."""
    before = ws.snapshot()
    for args in (["convert", "-i", ws.model, "-o", "-"], ["convert", "-i", "-", "-o", ws.out]):
        assert_refused(ws, before, ws.run(*args), 2, "'-' is no file here", "./- is a file named '-'")


def test_an_output_under_a_symlink_loop_is_refused_before_any_work(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.exists() is False for a loop: 'loop/q.onnx' was taken for a folder to make, and refused only at the
    write, after calibration; '-o loop' itself was called a dangling symlink."""

    def calibrated(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration ran")

    monkeypatch.setattr(sys.modules["qtool.api.quantize"], "calibrate", calibrated)
    (ws.root / "a").symlink_to("b")
    (ws.root / "b").symlink_to("a")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.root / "a" / "q.onnx"), 2, "cannot write under", "a: Too many levels")
    assert_refused(ws, before, ws.quantize("-o", ws.root / "a"), 2, "is a symlink loop")


# --- models -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "quantize", "quantize-fallback", "inspect"])
def test_a_nan_weight_is_refused_naming_it(ws: Workspace, command: str) -> None:
    """One NaN in the Conv weight: convert wrote the model (exit 0), quantize blamed the first input_list line
    ("input_list.txt:1: tensor 'r' has NaN values"), and --enable_float_fallback wrote a model (exit 0)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(ws.model))
    w = next(i for i in model.graph.initializer if len(i.dims) == 4)
    values = numpy_helper.to_array(w).copy()
    values.flat[5] = np.nan
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    onnx.save(model, str(ws.model))
    before = ws.snapshot()
    args = {"convert": ["convert", "-i", ws.model, "-o", ws.out],
            "quantize": ["quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out],
            "quantize-fallback": ["quantize", "-i", ws.model, "--enable_float_fallback", "-o", ws.out]}.get(command)  # fmt: skip
    if args is None:  # inspect said "lint findings: none": an error finding, and with --fail-on error exit 5
        result = ws.run("inspect", ws.model, "--fail-on", "error")
        assert result.exit_code == 5 and f"weight '{w.name}' holds 1 NaN value(s)" in result.output, result.output
        return
    assert_refused(ws, before, ws.run(*args), 3, f"model.onnx: weight '{w.name}' holds 1 NaN value(s)")


def test_an_export_file_that_is_its_input_names_it_once(ws: Workspace) -> None:
    """An export's file is its own flag: 'e/q.qdq.onnx e/q.qdq.onnx is the same file as -i' named it twice."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    (ws.root / "e").mkdir()
    os.link(ws.out, ws.root / "e" / "q.qdq.onnx")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.run("export", "-i", ws.out, "-o", ws.root / "e", "--format", "qdq"), 2,
                          "q.qdq.onnx is the same file as -i; refusing to overwrite an input")  # fmt: skip
    assert line.count("q.qdq.onnx") == 1, line


def test_an_infinite_layer_weight_is_refused_naming_it(ws: Workspace) -> None:
    """An inf in the Conv weight: quantize blamed the first input_list line ('tensor 'r' has NaN values'), and
    --act_bitwidth 32 wrote a model of SQNR -inf with exit 0 (the weight left float). A -inf elsewhere (a mask
    constant) is a value; in a layer's weight no grid holds it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(ws.model))
    w = next(i for i in model.graph.initializer if len(i.dims) == 4)
    values = numpy_helper.to_array(w).copy()
    values.flat[0] = -np.inf
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    onnx.save(model, str(ws.model))
    before = ws.snapshot()
    for extra in ([], ["--act_bitwidth", "32"]):
        assert_refused(ws, before, ws.quantize("-o", ws.out, *extra), 3, f"weight '{w.name}' of Conv holds an infinity")


def test_a_list_of_one_file_repeated_10_to_the_5_times_is_parsed_and_checked_in_linear_time(ws: Workspace) -> None:
    """Round 9 found such a list slow: parsing (0.35 s), checking (0.3 s) and reading are linear, one read and
    one inference a line. A quadratic step would take minutes here; this bounds it loosely."""
    import time

    import onnx

    from qtool.graph import model as gm
    from qtool.io.feeds import check_bindings
    from qtool.io.input_list import read_input_list

    assert ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx").exit_code == 0
    specs = gm.input_specs(onnx.load(str(ws.root / "c.onnx")))
    ws.listing.write_text("raw/000_x.raw\n" * 100_000)
    started = time.perf_counter()
    check_bindings(read_input_list(ws.listing), specs)
    assert time.perf_counter() - started < 20


def test_a_presets_folder_without_presets_is_named(ws: Workspace) -> None:
    """QTOOL_CONFIGS naming an empty folder: "'qnn-htp' is not one of  " listed no choices and named no folder."""
    from hostile_env import qtool_process

    empty = ws.root / "presets"
    empty.mkdir()
    before = ws.snapshot()
    result = qtool_process("quantize", "-i", ws.model, "--input_list", ws.listing, "-o", ws.out, "--target", "qnn-htp",
                           env={"QTOOL_CONFIGS": str(empty)})  # fmt: skip
    assert_refused(ws, before, result, 2, f"{empty} holds no target preset")


def test_a_malformed_npy_header_is_named_the_same_way_every_run(ws: Workspace) -> None:
    """numpy's header reader quoted Python's '<ast.Call object at 0x7f...>': an address, another every run."""
    header = "{'descr': f(1), 'fortran_order': False, 'shape': (2,), }"
    header += " " * (63 - 10 - len(header)) + "\n"
    bad = ws.root / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    listing = ws.root / "npy.txt"
    listing.write_text(f"{bad}\n")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("--input_list", listing, "-o", ws.out), 4,
                          "bad.npy is not a readable .npy file", "a Python ast.Call")  # fmt: skip
    assert "0x" not in line, line


@pytest.mark.parametrize("version", [None, "", True])
def test_a_version_that_is_no_version_is_refused(ws: Workspace, version) -> None:
    """"version": null was read as an unversioned file while "", [] and true were refused (helper-70, round 10)."""
    import json

    overrides = ws.root / "ov.json"
    overrides.write_text(json.dumps({"version": version, "activation_encodings": {}, "param_encodings": {}}))
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out, "--quantization_overrides", overrides)
    assert_refused(ws, before, result, 4, "ov.json", "qtool reads AIMET encodings 0.6.1, 1.0.0 and 2.0.0")


def test_an_output_folder_that_keeps_the_probe_is_refused_not_a_traceback(ws: Workspace, monkeypatch) -> None:
    """Root probes an output folder by making and removing a file (ea59583); a folder that takes the file but
    refuses its removal (append-only) raised the unlink's PermissionError as a traceback (helper-72's review)."""
    if os.geteuid() != 0:
        pytest.skip("the probe is root's")
    from qtool.errors import UsageError
    from qtool.io import outputs

    def refuse(path):
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(outputs.os, "unlink", refuse)
    with pytest.raises(UsageError, match="keeps files once made"):
        outputs.resolve_output(ws.root / "q.onnx", "-o")
    monkeypatch.undo()
    for left in ws.root.glob(".qtool-probe.*"):
        left.unlink()

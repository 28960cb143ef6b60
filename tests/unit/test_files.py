"""Atomic output files and file reads: every failure names the path and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qtool.errors import DataError, UsageError
from qtool.io.files import atomic_write, open_regular, read_bytes, read_text, write_text
from qtool.io.input_list import read_input_list


def test_write_lands_whole_with_no_temporary_left(tmp_path: Path) -> None:
    write_text(tmp_path / "sub" / "out.txt", "hello")
    assert (tmp_path / "sub" / "out.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.txt"]


def test_a_failure_while_writing_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="half-way"), atomic_write(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("half-way")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_folder_as_the_output_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder") as caught, atomic_write(tmp_path):
        pass
    assert caught.value.where == str(tmp_path)


def test_an_output_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    target = tmp_path / "plain" / "out.txt"
    with pytest.raises(UsageError, match="cannot write") as caught:
        write_text(target, "x")
    assert caught.value.where == str(target)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "input list not found"),
        (lambda p: p.mkdir(), "input list is a folder"),
    ],
)
def test_read_errors_name_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "list.txt"
    make(path)
    with pytest.raises(DataError, match=message) as caught:
        read_bytes(path, "input list")
    assert caught.value.where == str(path)


def test_text_that_is_not_utf8_says_where(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 3\)"):
        read_text(path, "input list")


def test_a_byte_order_mark_and_crlf_from_a_windows_editor_are_read_through(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    np.zeros(4, np.float32).tofile(raw)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + f"{raw}\r\n{raw}\r\n".encode())
    assert read_text(listing, "input list").startswith(str(raw))
    parsed = read_input_list(listing)
    assert [sample.positional for sample in parsed.samples] == [(raw,), (raw,)]


def test_open_regular_refuses_a_fifo_without_hanging(tmp_path) -> None:
    """A .npy file swapped for a FIFO between its stat and its open (helper-70, round 10): the plain open() the
    .npy reader used would wait for a writer forever."""
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"is not a regular file \(a FIFO"):
        open_regular(fifo, "x.npy")
    (tmp_path / "y.npy").write_bytes(b"abc")
    with open_regular(tmp_path / "y.npy") as handle:
        assert handle.read() == b"abc"

"""Output paths that start with '~' or '=' (io/outputs._refuse_unexpanded, 73b602f): refused only where a shell
would have expanded the '~' (or click kept a one-letter flag's '='), and the message names a file or a folder as
qtool would make it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtool.errors import UsageError
from qtool.io.outputs import check_output_folder, resolve_output


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "home"


def test_a_tilde_name_no_shell_expands_is_a_name(home: Path) -> None:
    """'~draft.onnx' names no user's home: a shell passes it as it is, so qtool refusing it (with no way to write
    that name but an absolute path) refused a name the user meant."""
    assert resolve_output("~draft.onnx", "-o").name == "~draft.onnx"
    assert resolve_output("~nosuchuser_qtool/q.onnx", "-o").parent.name == "~nosuchuser_qtool"


@pytest.mark.parametrize(
    ("given", "check", "made"),
    [("~/q.onnx", resolve_output, "a folder named '~'"), ("~", resolve_output, "a file named '~'"),
     ("~", check_output_folder, "a folder named '~'")],
)  # fmt: skip
def test_a_tilde_a_shell_expands_is_refused_naming_what_qtool_would_make(home: Path, given, check, made) -> None:
    with pytest.raises(UsageError) as refused:
        check(given, "-o")
    assert f"qtool would make {made} here" in str(refused.value)
    assert str(refused.value).endswith(f"(give {home / given[2:]})")


def test_a_one_letter_flags_equals_sign_is_still_refused(home: Path) -> None:
    with pytest.raises(UsageError, match=r"starts with '=', .* \(give q\.onnx\)"):
        resolve_output("=q.onnx", "-o")

"""A workspace for hostile-input cases: a tiny model, samples, and the checks every case makes.

Every refused command must: exit with the code qtool/errors.py defines, print exactly one stderr
line starting `qtool: error:` and no traceback, leave no output or temporary file behind, and
leave every input byte-identical.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result
from conftest import conv_bn_model, save_model, write_samples

from qtool.cli import main


@dataclass
class Workspace:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.onnx"

    @property
    def listing(self) -> Path:
        return self.root / "input_list.txt"

    @property
    def out(self) -> Path:
        return self.root / "out" / "q.onnx"

    def snapshot(self) -> dict[str, bytes | str]:
        """Every entry under root: a regular file's bytes, else what it is (a FIFO, a link)."""
        found: dict[str, bytes | str] = {}
        for path in sorted(self.root.rglob("*")):
            key = str(path.relative_to(self.root))
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found[key] = f"link -> {os.readlink(path)}"
            elif stat.S_ISREG(mode):
                found[key] = path.read_bytes()
            elif stat.S_ISDIR(mode):
                found[key] = "folder"
            else:
                found[key] = "special"
        return found

    def run(self, *args: object, env: dict[str, str] | None = None) -> Result:
        return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)

    def quantize(self, *args: object, env: dict[str, str] | None = None) -> Result:
        return self.run("quantize", "-i", self.model, "--input_list", self.listing, *args, env=env)


def make_workspace(root: Path, samples: int = 4) -> Workspace:
    ws = Workspace(root)
    model = conv_bn_model()
    save_model(model, ws.model)
    write_samples(root, model, samples)
    return ws


def assert_refused(ws: Workspace, before: dict, result: Result | subprocess.CompletedProcess, code: int,
                   *wanted: str) -> str:  # fmt: skip
    """The one-line error, its exit code, nothing written and every input unchanged; returns the line."""
    stderr = result.stderr
    returncode = result.exit_code if isinstance(result, Result) else result.returncode
    assert returncode == code, f"exit {returncode}, wanted {code}: {stderr}"
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("qtool: error:")]
    assert len(errors) == 1, stderr
    for text in wanted:
        assert text in errors[0], errors[0]
    assert ws.snapshot() == before, "files changed: " + ", ".join(
        sorted(set(ws.snapshot()) ^ set(before)) or [k for k in before if ws.snapshot().get(k) != before[k]]
    )
    return errors[0]


def qtool_process(*args: object, timeout: float = 120, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m qtool ...` in a subprocess (the real entry point: signal handlers, imports)."""
    return subprocess.run(
        [sys.executable, "-m", "qtool", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header claiming `shape`, as numpy writes it."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    return b"\x93NUMPY\x01\x00" + np.uint16(len(header) + pad + 1).tobytes() + header + b" " * pad + b"\n"

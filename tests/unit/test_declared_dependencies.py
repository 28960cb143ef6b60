"""Every package qtool imports is one its wheel declares: a user's `pip install qtool` gets only those. qtool imports
google.protobuf itself (graph/model.py, graph/protobuf_wire.py), which only onnx's own requirement brought in."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[2]


def _imported() -> set[str]:
    names = set()
    for path in (ROOT / "qtool").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names - set(sys.stdlib_module_names) - {"qtool"} if not n.startswith("_")}  # _sha2: CPython's


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency() -> None:
    declared = {_normal(re.split(r"[<>=!~; \[]", d)[0])
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}  # fmt: skip
    providers = packages_distributions()
    undeclared = {m: providers.get(m) for m in _imported() if not {_normal(d) for d in providers.get(m, [])} & declared}
    assert not undeclared, f"imported by qtool, not in pyproject's dependencies: {undeclared}"

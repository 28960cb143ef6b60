"""The package's layers import downward only (DESIGN.md: cli -> api -> export/inspect -> quant -> graph -> io).

A module of one top-level part of qtool (a subpackage, or a module at the top) may import parts of a lower
rank only; parts of one rank do not import each other (export and inspect are siblings).
"""

from __future__ import annotations

import ast
from pathlib import Path

import qtool

RANKS = {
    "errors": 0,
    "encoding": 0,  # the Encoding value every layer speaks, io's readers included
    "report": 0,
    "io": 1,
    "config": 2,
    "graph": 2,
    "runtime": 3,
    "quant": 4,
    "export": 5,
    "inspect": 5,
    "api": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 8,
}


def _imports(path: Path) -> set[str]:
    """The top-level qtool parts a module imports, by name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            dotted = [node.module] if node.module != "qtool" else [f"qtool.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            dotted = [a.name for a in node.names]
        else:
            continue
        found |= {name.split(".")[1] for name in dotted if name.startswith("qtool.")}
    return found


def test_every_import_runs_to_a_lower_layer():
    root = Path(qtool.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        part = parts[0] if len(parts) > 1 else path.stem
        assert part in RANKS, f"{path}: a new top-level part of qtool needs a rank here"
        for target in _imports(path) - {part}:
            if RANKS[target] >= RANKS[part]:
                upward.append(f"{path.relative_to(root)} ({part}) imports {target}")
    assert not upward, "imports that run upward or sideways:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "reader.py"
    module.write_text("from qtool.quant.plan import QuantPlan\nfrom qtool import encoding as enc\n")
    assert _imports(module) == {"quant", "encoding"}

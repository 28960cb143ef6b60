"""Names a model or a list carries reach the terminal escaped, and an error keeps the part that names the node.

Hostile round three. Each case failed before its fix: a tensor named "\\x1b]0;PWNED\\x07..." set the
terminal's title from `inspect`'s layer table (and a raw newline split its row); an input_list line naming
such a file printed it raw in the error line; onnx.checker's "... input 'b' of node:\\nname: n1 ..." was cut
at its first line, so the error ended at "of node:".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from hostile_env import Workspace, assert_refused

from qtool.report import Report, Table, printable

EVIL = "\x1b]0;PWNED\x07\x1b[2Jevil\n\u202e"


def _named(root: Path, name: str) -> Workspace:
    """x[1,3,4,4] -> Conv (1x1) -> `name` -> Relu -> y."""
    ws = Workspace(root)
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,3,4,4] x) => (float[1,3,4,4] y) <float[3,3,1,1] w = {1,0,0,0,1,0,0,0,1}> {
            t = Conv(x, w)
            y = Relu(t)
        }
    """)  # fmt: skip
    for node in model.graph.node:
        node.output[:] = [name if o == "t" else o for o in node.output]
        node.input[:] = [name if i == "t" else i for i in node.input]
    onnx.save(model, ws.model)
    np.linspace(-1, 1, 48, dtype=np.float32).tofile(root / "x.raw")
    ws.listing.write_text(f"{root / 'x.raw'}\n")
    return ws


def test_printable_escapes_controls_and_keeps_other_text() -> None:
    assert printable("conv1/é 名") == "conv1/é 名"
    assert printable(EVIL) == "\\x1b]0;PWNED\\x07\\x1b[2Jevil\\n\\u202e"
    table = Report("t", {"model": EVIL}, [Table("rows", ["name"], [[EVIL]])]).to_text()
    assert "\x1b" not in table and "\u202e" not in table and table.count("\n") == 5


def test_names_in_the_inspect_report_reach_the_terminal_escaped(tmp_path: Path) -> None:
    ws = _named(tmp_path, EVIL)
    quantized = tmp_path / "q.onnx"
    assert ws.quantize("-o", quantized).exit_code == 0
    result = ws.run("inspect", quantized, "--reference", ws.model, "-l", ws.listing)
    assert result.exit_code == 0, result.output
    assert "\\x1b]0;PWNED" in result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output


def test_a_path_in_an_error_line_is_escaped(tmp_path: Path) -> None:
    ws = _named(tmp_path, "t")
    ws.listing.write_text("\x1b]0;PWNED\x07.raw\n")
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "input_list.txt:1", "\\x1b]0;PWNED\\x07.raw")
    assert "\x1b" not in line


def test_the_checkers_message_keeps_the_node_it_names(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "b"], ["a"], name="n1"), onnx.helper.make_node("Relu", ["a"], ["b"], name="n2")],
        "cycle",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, ws.model)
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", ws.out)
    assert_refused(ws, before, result, 3, "onnx.checker", "of node: name: n1 OpType: Add is not output of any previous")

"""Round 20 (helper h-hostile20): round 19's leftovers (an --input_dim a hard-coded Reshape cannot take, deeply
nested subgraphs, comma-joined list files, Resize's tf_half_pixel_for_nn), then export, inspect's reports, --config
files, signals and a full disk, probed on an installed wheel."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- convert --input_dim on a dynamic dim the graph bakes in ------------------------------------------------------


def _baked_reshape(ws: Workspace) -> None:
    """A model declaring x [N, 3, H, W] whose Reshape's shape constant is the export's 1x48 (a 4x4 image), as
    torch.onnx writes a view(1, -1) traced at one size."""
    ws.model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[N,3,H,W] x) => (float[N,48] y) {
            r = Relu (x)
            s = Constant <value = int64[2] {1, 48}> ()
            y = Reshape (r, s)
        }""").SerializeToString())


def test_an_input_dim_a_baked_reshape_cannot_take_is_refused(ws: Workspace) -> None:
    """'convert --input_dim x 1,3,8,8' on dims the model leaves dynamic ran no check (the run on zeros was for a
    dim the model fixes), and wrote a model whose Reshape fails on every sample, exit 0; quantize then failed. Now
    convert runs it once and refuses naming the option, the input's dim and the node; the export's own size passes."""
    _baked_reshape(ws)
    out = ws.root / "c.onnx"
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", out, "--input_dim", "x", "1,3,8,8")
    assert_refused(ws, before, result, 3, "Reshape node", "--input_dim x sets dim 2 (H) to 8",
                   "give the size it was exported for")  # fmt: skip
    assert ws.run("convert", "-i", ws.model, "-o", out, "--input_dim", "x", "1,3,4,4").exit_code == 0


def test_an_input_dim_where_only_zeros_fail_the_model_passes(tmp_path: Path) -> None:
    """A detector with dynamic H and W whose TopK fails on zeros (no detection) but not on data is not refused:
    only a failure random values share is the dims'."""
    (tmp_path / "det.onnx").write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[1,3,H,W] x) => (float[2,1] top) {
            r = Relu (x)
            f = Flatten <axis = 0> (r)
            nz = NonZero (f)
            nzf = Cast <to = 1> (nz)
            k = Constant <value = int64[1] {1}> ()
            top, idx = TopK <axis = 1> (nzf, k)
        }""").SerializeToString())
    ws = Workspace(tmp_path)
    result = ws.run("convert", "-i", tmp_path / "det.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "1,3,16,16")
    assert result.exit_code == 0, result.output

"""Round 25 (helper h-hostile35): last round's leftovers (memory that followed a model's node count, not what its
tensors hold; an offset past float's reach; duplicate names inspect let through; a sample count printed in full),
then careless input to every command."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, make_workspace
from onnx import TensorProto, helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- inspect -l: a histogram holds what its tensor held ----------------------------------------------------------


def _chain(nodes: int) -> onnx.ModelProto:
    """x [1, 4] -> Neg -> Relu -> Neg -> ... -> y: `nodes` tensors of 4 values each."""
    ops = [helper.make_node("Relu" if k % 2 else "Neg", [f"t{k - 1}" if k else "x"], [f"t{k}"]) for k in range(nodes)]
    ops.append(helper.make_node("Identity", [f"t{nodes - 1}"], ["y"]))
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph(ops, "g", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_inspect_statistics_of_small_tensors_hold_what_they_saw() -> None:
    """inspect -l keeps a percentile histogram per float tensor: 2048 int64 bins, 16 KB, however few values the
    tensor held, and it binned a batch of them into one dense [tensors, 2048] array at once. A 20000-node chain of
    [1, 4] tensors peaked at 1.35 GB (328 MB of counts for 16 values each, 268 MB of bincount). Now a histogram that
    fills few bins keeps (bin, count) pairs and a batch is binned a few tensors at a time: 772 MB, what remains being
    onnxruntime's session of the probed graph. Here 2000 tensors: numpy's arrays peaked at 66 MB, now under 8."""
    from qtool.inspect.lint_data import collect_stats

    rng = np.random.default_rng(0)
    samples = [(f"x{k}.raw", {"x": rng.normal(size=(1, 4)).astype(np.float32)}) for k in range(4)]
    tracemalloc.start()  # numpy reports its arrays' data to tracemalloc
    try:
        stats = collect_stats(onnx.shape_inference.infer_shapes(_chain(2000)), samples, threads=1, count=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB"
    relu = stats["t1"]  # Relu(-x): the values are the samples' negated, clipped at 0
    assert relu.counts.sum() == 16 and relu.counts.size == 2048
    want = np.maximum(-np.concatenate([feed["x"].reshape(-1) for _, feed in samples]), 0)
    assert relu.lo == want.min() and relu.hi == want.max()


# --- a 0.6.1 entry's offset that no grid of its bits has -----------------------------------------------------------


@pytest.mark.parametrize("stated, said", [
    ({"scale": 0.01, "offset": -1e54}, "offset -1e+54 is no 8-bit grid's (AIMET's are -255 to 0): its scale and offset"),
    ({"scale": 0.01, "offset": 300}, "offset 300 is no 8-bit grid's"),
    ({"scale": 1e-9}, "scale 1e-09 spans 2.55e-07 in 8 bits, short of min -1: it is not used"),
])  # fmt: skip
def test_a_legacy_offset_no_grid_has_is_named(ws: Workspace, stated: dict, said: str) -> None:
    """A 0.6.1 entry with min/max [-1, 1.55] and offset -1e54 (or 300, or a scale of 1e-9 that spans 2.55e-7 in 8
    bits): qtool, as qairt, uses min/max, and said nothing, where an offset of -100 is named ('scale and offset give
    the grid ..., not its min/max's'): the warning looked for min/max that would give the stated grid, and an offset
    past 2^bw - 1 gives none. Now it says the scale and offset are not used, and which range is."""
    entry = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -1.0, "max": 1.55, **stated}
    path = ws.root / "o.json"
    path.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"r": [entry]}, "param_encodings": {}}))
    result = ws.run("convert", "-i", ws.model, "-o", ws.root / "c.onnx", "--quantization_overrides", path)
    assert result.exit_code == 0, result.output
    assert f"'r': {said}" in result.stderr, result.stderr
    assert "qtool uses its min/max's [-1, 1.55] (scale 0.01), as qairt does" in result.stderr

"""A mask input's -inf in the evaluation samples is not data to question where the figures are finite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import run_cli, save_model
from onnx import TensorProto, helper, numpy_helper


def test_a_masks_inf_is_not_blamed_when_the_figures_are_finite(tmp_path: Path) -> None:
    """Attention scores plus a mask of 0 and -inf, and an ArgMax of the mask (an integer output, exact, whose float
    'SQNR' is -inf of an all-zero signal): 74be6b8 took that for figures not finite and warned 'l.txt:1: input 'm'
    holds -inf, which makes the figures below not finite; is this sample's data right?' of every such run, y at 41 dB.
    Only a float output's -inf or NaN SQNR reads the samples again."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Add", ["s", "m"], ["a"]),
             helper.make_node("Softmax", ["a"], ["y"], axis=-1), helper.make_node("ArgMax", ["m"], ["n"], axis=-1)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "masked", [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, 8]) for k in ("x", "m")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "W")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = save_model(model, tmp_path / "masked.onnx")
    lines = []
    for k in range(8):
        mask = np.zeros((1, 8), np.float32)
        mask[0, 1 + k % 7 :] = -np.inf
        rng.normal(size=(1, 8)).astype(np.float32).tofile(tmp_path / f"x{k}.raw")
        mask.tofile(tmp_path / f"m{k}.raw")
        lines.append(f"x:={tmp_path / f'x{k}.raw'} m:={tmp_path / f'm{k}.raw'}\n")
    listing = tmp_path / "l.txt"
    listing.write_text("".join(lines))
    result = run_cli(["quantize", "-i", source, "-l", listing, "-o", tmp_path / "q.onnx", "--eval_list", listing])
    assert result.exit_code == 0, result.stderr
    assert "holds -inf" not in result.stderr, result.stderr
    assert "n " in result.stdout and "y " in result.stdout

"""inspect --input_list on a quantized model says whose an infinity is: swift-f0's Log(power + 1e-8) reached -inf
on a silent held-out clip only because the 1e-8 rounds to 0 on its grid, and the warning asked whether the clip's
data was right ('reaches inf, which reads as a mask's value ... is this sample's data right?')."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import quantize_model, run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper


def _model(eps: float | None) -> onnx.ModelProto:
    """A filterbank's power, Log(y·y [+ eps]), and a MatMul reading it."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Mul", ["y", "y"], ["power"])]
    inits = [numpy_helper.from_array(rng.normal(0, 1, (16, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 1, (8, 4)).astype(np.float32), "w2")]  # fmt: skip
    if eps is not None:
        nodes.append(helper.make_node("Add", ["power", "eps"], ["floored"]))
        inits.append(numpy_helper.from_array(np.array(eps, np.float32), "eps"))
    nodes += [helper.make_node("Log", ["floored" if eps is not None else "power"], ["log"]),
              helper.make_node("MatMul", ["log", "w2"], ["z"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "logpower", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inspect(tmp_path: Path, model: onnx.ModelProto, *reference: str) -> str:
    quantized = quantize_model(tmp_path, model)
    rng = np.random.default_rng(5)
    silent = [{"x": rng.uniform(-1, 1, (1, 16)).astype(np.float32)}, {"x": np.zeros((1, 16), np.float32)}]
    held_out = write_feeds(tmp_path, silent, "held_out.txt")
    args = ["--reference", tmp_path / "m.onnx"] if reference else []
    result = run_cli(["inspect", quantized, *args, "--input_list", held_out])
    assert result.exit_code == 0, result.output
    return result.output


def test_an_infinity_only_the_grid_makes_is_the_grids(tmp_path: Path) -> None:
    out = _inspect(tmp_path, _model(1e-8), "reference")
    assert "held_out.txt:2: 'log' (Log) reaches -inf only in the quantized model (the float model's is finite)" in out
    assert "('eps' rounded to 0)" in out and "--act_16bit_tensors floored" in out
    assert "data right" not in out


def test_an_infinity_the_float_model_reaches_is_the_datas(tmp_path: Path) -> None:
    out = _inspect(tmp_path, _model(None), "reference")
    assert "held_out.txt:2: 'log' (Log) reaches -inf in the float model too" in out and "data right?" in out


def test_without_the_float_model_it_says_what_would_tell(tmp_path: Path) -> None:
    out = _inspect(tmp_path, _model(1e-8))
    assert "'log' (Log) reaches -inf in the quantized model's arithmetic" in out and "--reference tells" in out

"""Overrides that give one encoding group different precisions (the mixed-precision search raising a group to
16 bits while a float weight makes one member's Conv float, overrides.propagate_float) resolve to the widest,
quietly; overrides that give a Concat's inputs different ranges split it, and ones that give two sides of an op
that moves data (which must share a grid) different ranges still warn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import run_cli
from onnx import helper, numpy_helper


def _concat_of_two_matmuls(tmp_path: Path, overrides: dict) -> tuple[dict, str]:
    """y = Concat(x·W, x·V): a, b and y share one encoding (the Concat joins its inputs)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("MatMul", ["x", "V"], ["b"]),
         helper.make_node("Concat", ["a", "b"], ["y"], axis=1)],
        "g", [helper.make_tensor_value_info("x", 1, [1, 16])], [helper.make_tensor_value_info("y", 1, [1, 16])],
        [numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), n) for n in ("W", "V")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    for i in range(4):
        rng.normal(size=(1, 16)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f'{i}.raw'}\n" for i in range(4)))
    (tmp_path / "o.json").write_text(json.dumps(overrides))
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt",
                      "--quantization_overrides", tmp_path / "o.json", "-o", out])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"], result.stderr


def test_a_group_given_16_bits_and_float_takes_float_without_a_warning(tmp_path: Path) -> None:
    # a: int16 (first in the group); V float16, which makes b float16 too
    overrides = {"activation_encodings": {"a": [{"bitwidth": 16, "dtype": "int"}]},
                 "param_encodings": {"V": [{"bitwidth": 16, "dtype": "float"}]}}  # fmt: skip
    acts, stderr = _concat_of_two_matmuls(tmp_path, overrides)
    assert all(acts[t] == [{"bitwidth": 16, "dtype": "float"}] for t in ("a", "b", "y"))
    assert "differ" not in stderr


def _given(lo: float, hi: float) -> list[dict]:
    return [{"bitwidth": 8, "dtype": "int", "min": lo, "max": hi, "is_symmetric": "False"}]


def test_a_concat_given_two_ranges_splits_and_keeps_both(tmp_path: Path) -> None:
    # a Concat's inputs may be requantized onto its output's grid (plan.wide_concats): each keeps its own
    acts, stderr = _concat_of_two_matmuls(tmp_path, {"activation_encodings": {"a": _given(-4, 4), "b": _given(-8, 8)}, "param_encodings": {}})
    assert "differ" not in stderr
    assert abs(acts["a"][0]["max"] - 4) < 0.1 and abs(acts["b"][0]["max"] - 8) < 0.1


def test_a_reshape_given_two_ranges_warns_and_keeps_the_first(tmp_path: Path) -> None:
    # a Reshape passes its values on unchanged: input and output must share one grid, which the warning says
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Reshape", ["a", "s"], ["b"]),
         helper.make_node("Sigmoid", ["b"], ["y"])],
        "g", [helper.make_tensor_value_info("x", 1, [1, 16])], [helper.make_tensor_value_info("y", 1, [4, 4])],
        [numpy_helper.from_array(np.array([4, 4], np.int64), "s")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "o.json").write_text(json.dumps({"activation_encodings": {"a": _given(0, 4), "b": _given(0, 8)}, "param_encodings": {}}))
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "--enable_float_fallback",
                      "--quantization_overrides", tmp_path / "o.json", "-o", out])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "overrides for ['a', 'b'] differ, but ops that move data unchanged join them on one grid; using 'a''s" in result.stderr
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert acts["a"] == acts["b"] and abs(acts["b"][0]["max"] - 4) < 0.1

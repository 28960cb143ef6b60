"""Overrides that give one encoding group different precisions (the mixed-precision search raising a group to
16 bits while a float weight makes one member's Conv float, overrides.propagate_float) resolve to the widest,
quietly; overrides that give one group different ranges still warn."""

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


def test_a_group_given_two_ranges_warns_and_keeps_the_first(tmp_path: Path) -> None:
    def given(lo: float, hi: float) -> list[dict]:
        return [{"bitwidth": 8, "dtype": "int", "min": lo, "max": hi, "is_symmetric": "False"}]

    acts, stderr = _concat_of_two_matmuls(tmp_path, {"activation_encodings": {"a": given(-4, 4), "b": given(-8, 8)}, "param_encodings": {}})
    assert "overrides for ['a', 'b'] differ" in stderr
    assert acts["a"] == acts["b"] == acts["y"] and abs(acts["y"][0]["max"] - 4) < 0.1

"""Flags that did nothing or did harm without a word (helper-41, hostile round three): `inspect --labels` without
a comparison was ignored (exit 0, no accuracy), and one --load_stats shard given twice was merged with itself
(every count doubled)."""

from __future__ import annotations

from pathlib import Path

import onnx
from hostile_env import assert_refused, make_workspace


def test_inspect_labels_without_a_comparison_is_a_usage_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n" * 4)
    before = ws.snapshot()
    result = ws.run("inspect", ws.model, "--input_list", ws.listing, "--labels", labels)
    assert_refused(ws, before, result, 2, "--labels", "--reference")


def test_the_same_stats_shard_twice_is_a_usage_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    stats = tmp_path / "stats.json"
    assert ws.quantize("-o", ws.out, "--save_stats", stats).exit_code == 0
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "-o", tmp_path / "again.onnx", "--load_stats", stats,
                    "--load_stats", tmp_path / "." / "stats.json")  # fmt: skip
    assert_refused(ws, before, result, 2, "--load_stats", "same file twice")


def test_a_weight_given_to_the_16_bit_flags_points_at_its_layer(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    weight = next(i.name for i in onnx.load(str(ws.model)).graph.initializer if len(i.dims) == 4)
    before = ws.snapshot()
    for flag, said in (("--act_16bit_tensors", "not an activation"), ("--params_16bit_tensors", "a layer's output")):
        line = assert_refused(ws, before, ws.quantize("-o", ws.out, flag, weight), 2, flag, weight, said)
        assert "--params_16bit_tensors " in line.split("(")[-1]  # the hint names the layer


def test_a_list_for_a_model_whose_inputs_all_have_defaults_says_so(tmp_path: Path) -> None:
    """An ONNX input with an initializer is a default qtool keeps: the list's file was '1 file(s) for 0 model
    input(s) ()'."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.ones((1, 4), np.float32), "x")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ws = make_workspace(tmp_path)
    onnx.save(model, ws.model)
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, "no input data", "default value")

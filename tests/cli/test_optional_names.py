"""An optional input or output left out is named '' in ONNX: no tensor. pyfrspell 0.1.1's GRU seq2seq lemmatiser
(new-model sweep round 19) drops its encoder GRU's Y output and its decoder GRU's B and sequence_lens inputs,
and bc's per-layer runs asked onnxruntime for a tensor named '' ('nullptr != type_proto', exit 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qnn_models import qtool

from qtool.graph.node_order import reads

T, FEATURES, HIDDEN = 6, 8, 8


def gru_bridge_gru(seed: int = 0) -> onnx.ModelProto:
    """encoder GRU (Y left out) -> its last state through a Gemm with a bias -> decoder GRU started from it
    (no B, no sequence_lens: '' inputs) -> a per-step Gemm."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: numpy_helper.from_array(rng.normal(scale=0.4, size=shape).astype(np.float32))  # noqa: E731
    inits = {"w1": w(1, 3 * HIDDEN, FEATURES), "r1": w(1, 3 * HIDDEN, HIDDEN), "wb": w(HIDDEN, HIDDEN),
             "bb": w(HIDDEN), "w2": w(1, 3 * HIDDEN, FEATURES), "r2": w(1, 3 * HIDDEN, HIDDEN),
             "wo": w(HIDDEN, 5), "bo": w(5)}  # fmt: skip
    for name, tensor in inits.items():
        tensor.name = name
    nodes = [
        helper.make_node("GRU", ["x", "w1", "r1"], ["", "h1"], name="encoder", hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["h1", "axis0"], ["h1_2d"], name="squeeze_h1"),
        helper.make_node("Gemm", ["h1_2d", "wb", "bb"], ["bridge"], name="bridge"),
        helper.make_node("Unsqueeze", ["bridge", "axis0"], ["h0"], name="unsqueeze_h0"),
        helper.make_node("GRU", ["x", "w2", "r2", "", "", "h0"], ["y2", ""], name="decoder", hidden_size=HIDDEN),
        helper.make_node("Reshape", ["y2", "flat"], ["steps"], name="flatten"),
        helper.make_node("Gemm", ["steps", "wo", "bo"], ["logits"], name="head"),
    ]
    extra = [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([T, HIDDEN], np.int64), "flat")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "gru_bridge_gru",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [T, 5])],
        [*inits.values(), *extra],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_left_out_input_is_no_tensor_a_node_reads() -> None:
    decoder = gru_bridge_gru().graph.node[4]
    assert reads(decoder) == ["x", "w2", "r2", "h0"]


def test_bias_correction_runs_past_gru_with_left_out_inputs_and_outputs(tmp_path: Path) -> None:
    onnx.save(gru_bridge_gru(), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    for k in range(8):
        rng.normal(size=(T, 1, FEATURES)).astype(np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"s{k}.raw\n" for k in range(8)))
    args = ["quantize", "-i", tmp_path / "m.onnx", "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx"]
    code, out, err = qtool(*args, "--apply_algorithms", "bc")
    assert code == 0, err
    assert "bc:" in out and (tmp_path / "q.onnx").exists()

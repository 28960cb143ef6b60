"""Opset 23's Attention written out as ONNX defines it (graph/expand_functions.py): the converted model has no
Attention, its two MatMuls and Softmax in its place, and computes what the original did."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from qtool.graph.convert import normalise

B, HEADS, KV_HEADS, SEQ, DIM = 1, 4, 2, 6, 8


def attention_model(layout: str) -> onnx.ModelProto:
    """Q, K, V (4-D per head, or 3-D with the head counts as attributes; K/V with fewer heads: grouped-query) and a
    boolean causal mask, into one Attention, then a Relu so that the output is computed on."""
    attrs = {"scale": 0.25}
    if layout == "4d":
        shapes = {"q": [B, HEADS, SEQ, DIM], "k": [B, KV_HEADS, SEQ, DIM], "v": [B, KV_HEADS, SEQ, DIM]}
    else:
        shapes = {"q": [B, SEQ, HEADS * DIM], "k": [B, SEQ, KV_HEADS * DIM], "v": [B, SEQ, KV_HEADS * DIM]}
        attrs |= {"q_num_heads": HEADS, "kv_num_heads": KV_HEADS}
    nodes = [helper.make_node("Attention", ["q", "k", "v", "mask"], ["a"], name="attn", **attrs),
             helper.make_node("Relu", ["a"], ["y"])]  # fmt: skip
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [SEQ, SEQ]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


@pytest.mark.parametrize("layout", ["4d", "3d"])
def test_attention_is_written_out_and_computes_what_it_did(layout: str) -> None:
    model = attention_model(layout)
    out = normalise(model, {}, "m.onnx")
    ops = [n.op_type for n in out.graph.node]
    assert "Attention" not in ops and ops.count("MatMul") == 2 and "Softmax" in ops
    rng = np.random.default_rng(0)
    feed = {i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name != "mask"}  # fmt: skip
    feed["mask"] = np.tril(np.ones((SEQ, SEQ), bool))
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                 for m in (model, out))  # fmt: skip
    assert np.allclose(want, got, atol=1e-5)

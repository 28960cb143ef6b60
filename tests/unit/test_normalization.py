"""Normalisation statistics (quant/normalization.py): found where a reduction's result is multiplied back
into its row, not where a pooled vector is an activation (a squeeze-excite's, a mean-pooled output)."""

from __future__ import annotations

import numpy as np
import onnx
from norm_models import flax_layernorm_nodes
from onnx import TensorProto, helper, numpy_helper

from qtool.quant.graph_facts import GraphFacts
from qtool.quant.normalization import normalization_statistics


def _facts(nodes, output: str, arrays: dict, shape=(1, 64, 16), out_shape=None) -> GraphFacts:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    return GraphFacts.of(onnx.shape_inference.infer_shapes(model))  # types, as convert leaves them


def test_flax_layernorm_statistics_are_found() -> None:
    nodes, arrays = flax_layernorm_nodes()
    found = normalization_statistics(_facts(nodes, "y", arrays, out_shape=[1, 64, 16]))
    want = {"s1", "s2", "ex2", "mean", "mean2", "var", "var0", "var_b", "var_eps", "std", "rstd", "gain", "mean_b"}
    assert found == want | {"sq"}  # and x², which the reduction alone reads; x − mean and the output are activations


def test_rmsnorm_statistics_are_found() -> None:
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        helper.make_node("Sqrt", ["ms_eps"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["normed"]),
        helper.make_node("Mul", ["normed", "w"], ["y"]),
    ]
    arrays = {"two": np.float32(2), "eps": np.float32(1e-6), "w": np.ones(16, np.float32)}
    assert normalization_statistics(_facts(nodes, "y", arrays, out_shape=[1, 64, 16])) == {"sq", "ms", "ms_eps", "rms", "inv"}
    nodes[0] = helper.make_node("Mul", ["x", "x"], ["sq"])  # x² written as x·x
    assert "sq" in normalization_statistics(_facts(nodes, "y", arrays, out_shape=[1, 64, 16]))
    nodes[0] = helper.make_node("Pow", ["x", "three"], ["sq"])  # not a square: an activation
    arrays["three"] = np.float32(3)
    assert "sq" not in normalization_statistics(_facts(nodes, "y", arrays, out_shape=[1, 64, 16]))


def test_a_pooled_vector_read_by_a_matmul_or_given_out_is_an_activation() -> None:
    squeeze_excite = [
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["pooled", "half"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w"], ["gate"]),
        helper.make_node("Mul", ["x", "gate"], ["y"]),
    ]
    arrays = {"half": np.float32(0.5), "w": np.ones((16, 16), np.float32)}
    assert normalization_statistics(_facts(squeeze_excite, "y", arrays, out_shape=[1, 64, 16])) == set()
    pooled_out = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)]
    assert normalization_statistics(_facts(pooled_out, "y", {}, out_shape=[1, 16])) == set()

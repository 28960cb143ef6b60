"""GELUs written op by op (quant/gelu.py): found in each exporter's form, their insides float; a SiLU, a plain
Tanh or a GELU whose inside is read elsewhere is not one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from norm_models import gelu_nodes
from onnx import TensorProto, helper, numpy_helper

from qtool.quant.gelu import gelu_interiors
from qtool.quant.graph_facts import GraphFacts


def _facts(nodes, arrays: dict, outputs=("y",)) -> GraphFacts:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]
    info = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, 16]) for name in outputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 8, 16])], info, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return GraphFacts.of(onnx.shape_inference.infer_shapes(model))


def _biased(form: str):
    """h + bias → GELU, as a Linear layer's output reaches it: the sum is the GELU's x, an activation."""
    nodes, arrays = gelu_nodes(form)
    return [helper.make_node("Add", ["h", "bias"], ["x"]), *nodes], {**arrays, "bias": np.ones(16, np.float32)}


@pytest.mark.parametrize(
    "form, inside",
    [
        ("erf", {"g_d", "g_e", "g_a", "g_m"}),
        ("tanh", {"g_c", "g_ck", "g_s", "g_t", "g_h", "g_a", "g_x2"}),
        ("tanh-mul", {"g_sq", "g_c", "g_ck", "g_s", "g_t", "g_h", "g_a", "g_x2"}),
    ],
)
def test_each_exporters_gelu_is_found_its_ends_stay_activations(form: str, inside: set[str]) -> None:
    assert gelu_interiors(_facts(*_biased(form))) == inside  # not x (the biased sum) nor y


def test_two_gelus_in_a_row_are_two() -> None:
    first, arrays = gelu_nodes("erf", "x", "mid")
    second, _ = gelu_nodes("erf", "mid", "y", prefix="h_")
    nodes = [helper.make_node("Add", ["h", "bias"], ["x"]), *first, *second]
    found = gelu_interiors(_facts(nodes, {**arrays, "bias": np.ones(16, np.float32)}))
    assert found == {"g_d", "g_e", "g_a", "g_m", "h_d", "h_e", "h_a", "h_m"}  # mid is an activation


def test_a_layer_scale_after_the_gelu_belongs_to_it() -> None:
    nodes, arrays = _biased("erf")
    nodes = [*nodes[:-1], helper.make_node("Mul", ["g_m", "half"], ["g_y"]), helper.make_node("Mul", ["g_y", "gamma"], ["y"])]
    found = gelu_interiors(_facts(nodes, {**arrays, "gamma": np.full(16, 0.1, np.float32)}))
    assert found == {"g_d", "g_e", "g_a", "g_m", "g_y"}


def test_silu_and_a_lone_tanh_are_not_gelus() -> None:
    silu = [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["y"])]
    assert gelu_interiors(_facts(silu, {})) == set()  # QNN runs a SiLU as its two ops
    scaled_tanh = [helper.make_node("Mul", ["h", "k"], ["t"]), helper.make_node("Tanh", ["t"], ["y"])]
    assert gelu_interiors(_facts(scaled_tanh, {"k": np.float32(2)})) == set()  # no gate: x is read once


def test_a_gelu_whose_inside_is_read_elsewhere_is_left_alone() -> None:
    nodes, arrays = _biased("erf")
    assert gelu_interiors(_facts(nodes, arrays, outputs=("y", "g_e"))) == set()  # the Erf's output given out

"""A Softmax input's range rule (observers.SoftmaxInput) covers the data-invariant ops that lead only to it:
not the input of a Split whose other part goes elsewhere (YOLOv8's head splits one tensor into the DFL
Softmax's box logits and the Sigmoid's class logits; the rule clamped the class logits to -4.1, every empty
anchor scored 0.016, and the scores fell to -14.6 dB once that Concat kept its own grid)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from qtool.quant.attention import softmax_chains
from qtool.quant.graph_facts import GraphFacts


def _facts(split_outputs_read: int) -> GraphFacts:
    nodes = [
        helper.make_node("Split", ["x"], ["boxes", "scores"], axis=1, num_outputs=2),
        helper.make_node("Reshape", ["boxes", "shape"], ["dfl"]),
        helper.make_node("Softmax", ["dfl"], ["p"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)]
    if split_outputs_read == 2:
        nodes.append(helper.make_node("Sigmoid", ["scores"], ["s"]))
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, None))
    shape = onnx.numpy_helper.from_array(np.array([1, 4, 8], np.int64), "shape")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8])], outputs, [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return GraphFacts.of(onnx.shape_inference.infer_shapes(model))


def test_a_split_feeding_a_softmax_and_a_sigmoid_keeps_its_input_out_of_the_softmax_chain() -> None:
    chains = softmax_chains(_facts(2), ["x", "boxes", "scores", "dfl"])
    assert chains["dfl"][1] == ["dfl", "boxes"]  # the Split's input x also feeds the class scores


def test_a_split_whose_other_part_is_unread_still_joins_the_chain() -> None:
    chains = softmax_chains(_facts(1), ["x", "boxes", "scores", "dfl"])
    assert chains["dfl"][1] == ["dfl", "boxes", "x"]

"""A group's range leaves nothing behind that holds its model: the check of readers that only take a max was a
closure calling itself, a reference cycle over the GraphFacts, so each model planned stayed alive until the cycle
collector happened to run. In auto's bc folds that was a fold's copy of the weights beside the next one's
(ddddocr's CTC recogniser: 52 MB each; quantize peaked at 464-475 MB, 380 with it freed)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import onnx

from qtool.io.encodings import Encodings
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.group_range import group_encoding
from qtool.quant.observers import MinMax


def test_a_groups_range_read_past_a_max_pool_keeps_no_cycle_over_its_model() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["r"]),
         onnx.helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8])],
        [onnx.helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [1, 1, 4])],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    observers = {name: MinMax(name) for name in ("r", "p")}
    observers["r"].update(np.array([-3.0, 0.0, 2.0], dtype=np.float32))
    observers["p"].update(np.array([0.5, 2.0], dtype=np.float32))
    gc.disable()  # only reference counts free it: a cycle would wait for the collector
    try:
        facts = GraphFacts.of(model)
        alive = weakref.ref(facts)
        encoding = group_encoding(facts, ["r", "p"], observers, Encodings(), bitwidth=8, schema="asymmetric")
        del facts
        assert alive() is None
    finally:
        gc.enable()
    assert encoding.min[0] == 0.0  # r's low values are read only by the max: the pooled floor, as before

"""Read-only facts about a float graph that planning needs: tensor types, producers, consumers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from qtool.graph import external_data
from qtool.quant.rules import SQUASHABLE_PRODUCERS, SQUASHING_ACTIVATIONS

# the float types a QuantizeLinear takes in onnxruntime: a double or bfloat16 tensor (a model casting
# up for precision) stays as it is
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})


@dataclass
class GraphFacts:
    model: onnx.ModelProto
    elem_types: dict[str, int]
    initializers: dict[str, onnx.TensorProto]
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    graph_inputs: list[str]
    graph_outputs: set[str]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphFacts:
        graph = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
        inits = {i.name: i for i in graph.initializer}
        types.update({name: init.data_type for name, init in inits.items()})
        producers, consumers = {}, defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    producers[out] = node
            for name in dict.fromkeys(i for i in node.input if i):
                consumers[name].append(node)
        inputs = [v.name for v in graph.input if v.name not in inits]
        return cls(model, types, inits, producers, dict(consumers), inputs, {v.name for v in graph.output})

    def is_float(self, name: str) -> bool:
        return self.elem_types.get(name) in FLOAT_TYPES

    def squashed_into(self, name: str) -> str | None:
        """The ReLU output that carries `name`'s encoding when ReLU squashing applies (FORMATS.md).
        A ReLU capped by Min(x, constant) (how cle keeps ReLU6 exact) squashes on into the Min."""
        producer = self.producers.get(name)
        users = self.consumers.get(name, [])
        if producer is None or len(users) != 1 or name in self.graph_outputs:
            return None
        user = users[0]
        if producer.op_type in SQUASHABLE_PRODUCERS and user.op_type in SQUASHING_ACTIVATIONS:
            return user.output[0]
        if producer.op_type == "Relu" and user.op_type == "Min" and any(i in self.initializers for i in user.input):
            return user.output[0]
        return None

    def array(self, name: str) -> np.ndarray:
        """An initializer as numpy, converted once per GraphFacts."""
        cache = self.__dict__.setdefault("_arrays", {})
        if name not in cache:
            cache[name] = external_data.array(self.initializers[name])
        return cache[name]

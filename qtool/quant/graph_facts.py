"""Read-only facts about a float graph that planning needs: tensor types, producers, consumers."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from qtool.graph import external_data
from qtool.quant.cost import RECURRENT_OPS
from qtool.quant.rules import SQUASHABLE_PRODUCERS, SQUASHING_ACTIVATIONS

# the float types a QuantizeLinear takes in onnxruntime: a double or bfloat16 tensor (a model casting
# up for precision) stays as it is; float16 only from opset 19 (QuantizeLinear-13 takes float32 alone)
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})
FLOATING_TYPES = frozenset({*FLOAT_TYPES, TensorProto.DOUBLE, TensorProto.BFLOAT16})  # any float a tensor holds
HALF_OPSET = 19


@dataclass
class GraphFacts:
    model: onnx.ModelProto
    elem_types: dict[str, int]
    initializers: dict[str, onnx.TensorProto]
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    graph_inputs: list[str]
    graph_outputs: set[str]
    float_types: frozenset[int] = FLOAT_TYPES

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
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), HALF_OPSET)
        kinds = FLOAT_TYPES if opset >= HALF_OPSET else frozenset({TensorProto.FLOAT})
        return cls(model, types, inits, producers, dict(consumers), inputs, {v.name for v in graph.output}, kinds)

    @functools.cached_property
    def uses(self) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
        """Each tensor's readers with the input slot each reads it in, found in one pass: a Concat of N inputs
        searched for each of them was N^2 (10^4 inputs: 3 minutes)."""
        found: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.model.graph.node:
            for i, name in enumerate(node.input):
                if name:
                    found[name].append((node, i))
        return dict(found)

    def leaving(self) -> set[str]:
        """The graph outputs and what only a Cast or an Identity takes on to one: a float16 model's output leaves
        through the Cast convert adds (its float32 computation's value is the output as far as a grid goes)."""
        found = set(self.graph_outputs)
        pending = list(found)
        while pending:
            node = self.producers.get(pending.pop())
            if node is None or node.op_type not in ("Cast", "Identity") or not node.input or node.input[0] in found:
                continue
            source = node.input[0]
            if all(c.op_type in ("Cast", "Identity") and c.output[0] in found for c in self.consumers.get(source, [])):
                found.add(source)
                pending.append(source)
        return found

    def carries_state(self) -> bool:
        """The model is run along a stream with its state fed back: a graph input reaches a recurrent op's initial
        state (DTLN's packed LSTM states), or a float input and output share a shape beside another input (a state
        in and its update out, Silero's h and hn). Only such a model has ranges that grow with the stream."""
        return bool(self.state_inputs())

    def state_inputs(self) -> list[str]:
        """The graph inputs that carry carries_state's state in, in graph order."""
        inputs = [v for v in self.model.graph.input if v.name not in self.initializers]
        found = [v.name for v in inputs if self._reaches_initial_state(v.name)]
        shapes = {_shape(v) for v in self.model.graph.output if self.is_float(v.name)} - {None}
        states = [v for v in inputs if self.is_float(v.name) and _shape(v) in shapes]
        # a float scalar beside it is a condition, not a stream's data: a diffusion UNet's noisy image in,
        # denoised out, with its sigma (terrain-diffusion's: warned of a stream for list order alone)
        if states and any(v not in states and not self._float_scalar(v) for v in inputs):
            found += [v.name for v in states if v.name not in found]
        return found

    def _reaches_initial_state(self, name: str) -> bool:
        reached, pending = {name}, [name]
        while pending:
            for node in self.consumers.get(pending.pop(), []):
                if node.op_type in RECURRENT_OPS and reached.intersection(node.input[5:7]):
                    return True
                fresh = [o for o in node.output if o and o not in reached]
                reached.update(fresh)
                pending.extend(fresh)
        return False

    def _float_scalar(self, value: onnx.ValueInfoProto) -> bool:
        """One float value a sample: no dims past a batch one, or all of them 1."""
        dims = value.type.tensor_type.shape.dim
        return self.is_float(value.name) and all(d.dim_value == 1 for d in dims[1:]) and (not dims or dims[0].dim_value in (0, 1))

    def is_float(self, name: str) -> bool:
        return self.elem_types.get(name) in self.float_types

    def squashed_into(self, name: str) -> str | None:
        """The tensor that carries `name`'s encoding when `name` gets none of its own: the ReLU output when
        ReLU squashing applies (FORMATS.md), a ReLU capped by Min(x, constant) (how cle keeps ReLU6 exact)
        squashing on into the Min; or the output of the bias Add behind a MatMul (`bias_add`), and on
        through a ReLU after it."""
        producer = self.producers.get(name)
        users = self.consumers.get(name, [])
        if producer is None or len(users) != 1 or name in self.graph_outputs:
            return None
        user = users[0]
        if producer.op_type in SQUASHABLE_PRODUCERS and user.op_type in SQUASHING_ACTIVATIONS:
            return user.output[0]
        if producer.op_type == "Relu" and user.op_type == "Min" and any(i in self.initializers for i in user.input):
            return user.output[0]
        if self.bias_add(user) is not None:
            return self.squashed_into(user.output[0]) or user.output[0]
        return None

    def bias_add(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto, str] | None:
        """(the MatMul, the bias) when `node` adds a constant bias, one value per output column, to the only
        use of a MatMul by a constant weight: one layer, as a Gemm or Conv with its bias is. The bias joins
        the int32 accumulator (qairt folds it into the FullyConnected, onnxruntime runs the MatMul as
        MatMulIntegerToFloat and adds it in float), so the MatMul's output before it is never quantized."""
        if node.op_type != "Add" or len(node.input) != 2:
            return None
        for data, bias in (node.input, node.input[::-1]):
            matmul = self.producers.get(data)
            if matmul is None or matmul.op_type != "MatMul" or bias not in self.initializers:
                continue
            if matmul.input[1] not in self.initializers or len(self.consumers.get(data, [])) != 1:
                continue
            if data in self.graph_outputs or not (self.is_float(bias) and self.is_float(data)):
                continue
            columns = self.initializers[matmul.input[1]].dims[-1:]
            dims = list(self.initializers[bias].dims)
            if 0 < len(dims) <= 2 and dims[-1:] == columns and all(d == 1 for d in dims[:-1]):
                return matmul, bias
        return None

    def array(self, name: str) -> np.ndarray:
        """An initializer as numpy, converted once per GraphFacts."""
        cache = self.__dict__.setdefault("_arrays", {})
        if name not in cache:
            cache[name] = external_data.array(self.initializers[name])
        return cache[name]


def _shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims) if dims and all(d.HasField("dim_value") for d in dims) else None

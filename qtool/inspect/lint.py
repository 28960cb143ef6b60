"""Quantization lints: small functions `lint(ctx) -> Iterable[Finding]`, registered in LINTS.

Each finding says why the pattern hurts quantization and what to do; severity is judged against
`--target`'s preset where it matters (per-channel weights, symmetric activations, algorithms).
The graph lints are here; the ones that need calibration data are in `lint_data.py`.
Adding a lint is one function and one line in LINTS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx

from qtool.graph import convert, external_data
from qtool.graph import model as gm
from qtool.graph.attributes import attribute
from qtool.graph.convert import MAPS_HINT, branch_inputs, wrong_declarations
from qtool.graph.model import METADATA_CONVERTED, inferred
from qtool.inspect import lint_data
from qtool.inspect.findings import Finding, LintContext, ordered
from qtool.inspect.summary import kind
from qtool.inspect.target_ops import FALLBACK_SEVERITY, IGNORED_OPS, TARGET_OPS, preset
from qtool.quant.algorithms import cle
from qtool.quant.algorithms.residual_recipe import residual_recipe
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.qdq_read import read_qdq
from qtool.quant.residual import post_ln_sums
from qtool.quant.rounded_dips import DIP_DEPTHS, rounded_dips
from qtool.quant.rules import rule_for, weight_axis
from qtool.quant.weight_values import unusable_weight

Lint = Callable[[LintContext], Iterable[Finding]]

UNEVEN_LEVELS = 8.0  # the weakest channel keeps fewer levels than this per side: per-tensor fails
MASK_LIMIT = -1e9  # a constant at or below this feeding a Softmax is an attention-style mask


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def dynamic_shapes(ctx: LintContext) -> Iterable[Finding]:
    """convert fixes a dynamic batch by itself (info on a float model); any other dim needs --input_dim."""
    converted = METADATA_CONVERTED in {p.key for p in ctx.model.metadata_props}
    for value in ctx.model.graph.input:
        if value.name not in ctx.facts.graph_inputs:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        ]
        dynamic = [axis for axis, d in enumerate(dims) if d is None]
        if not dynamic:
            continue
        example = ",".join(str(d) if d is not None else ("1" if axis == 0 else "?") for axis, d in enumerate(dims))
        batch_only = dynamic == [0] and not converted and ctx.encodings is None
        yield Finding(
            "dynamic-shape",
            "info" if batch_only else "warning",
            f"input {value.name!r}",
            f"dim {', '.join(map(str, dynamic))} is dynamic: calibration, the encodings and most accelerators "
            "need fixed shapes",
            "qtool convert fixes a dynamic batch to 1"
            if batch_only
            else f"qtool convert --input_dim {value.name} {example}",
        )


def wrong_shapes(ctx: LintContext) -> Iterable[Finding]:
    """Declared output / value_info shapes that the graph contradicts (qtool builds on computed shapes)."""
    for name, (declared, computed) in sorted(ctx.wrong_shapes.items()):
        yield Finding(
            "declared-shape",
            "warning",
            f"tensor {name!r}",
            f"declared {declared} but the graph computes {computed}: tools that trust the declaration (a "
            "converter, a runtime's buffer plan, post-processing code) build on the wrong shape",
            "qtool convert writes the computed shapes; fix the exporter's declaration for the float model",
        )


def branch_on_setting(ctx: LintContext) -> Iterable[Finding]:
    """An If that a scalar input (a sample rate, a mode) switches: qtool quantizes neither branch."""
    scalars = gm.scalar_inputs(ctx.model)
    for node, names in branch_inputs(ctx.model).items():
        settings = [n for n in names if n in scalars]
        if settings:
            yield Finding(
                "branch-on-setting",
                "warning",
                f"node {node!r} (If)",
                f"input(s) {', '.join(settings)} pick the branch at run time: qtool quantizes neither branch, "
                "so the model runs in float",
                "convert with " + " ".join(f"--input_value {n} VALUE" for n in settings) + " to keep one branch",
            )


def map_values(ctx: LintContext) -> Iterable[Finding]:
    """What convert refuses (helper-40: inspect said "lint findings: none" on skl2onnx models convert rejects)."""
    names = convert.map_values(ctx.model)
    if names:
        yield Finding("map-value", "error", f"input/output {', '.join(names)}",
                      "a map (or a sequence of maps), not a tensor: convert and quantize refuse the model", MAPS_HINT)


def unusable_weights(ctx: LintContext) -> Iterable[Finding]:
    """What convert and quantize refuse (helper-70: inspect said "lint findings: none" on a NaN weight)."""
    if (found := unusable_weight(ctx.model)) is not None:
        yield Finding("unusable-weight", "error", found[0], f"{found[1]}: convert and quantize refuse the model",
                      "fix or re-export the model")


def unsupported_ops(ctx: LintContext) -> Iterable[Finding]:
    if ctx.target is None:
        return
    nodes: dict[str, list[str]] = {}
    for node in ctx.model.graph.node:
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        carries_float = any(t not in ctx.facts.elem_types or ctx.facts.is_float(t) for t in node.output if t)
        if op not in TARGET_OPS[ctx.target] and op not in IGNORED_OPS and carries_float:
            nodes.setdefault(op, []).append(node.name or node.output[0])
    for op, names in sorted(nodes.items()):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        yield Finding(
            "unsupported-op",
            FALLBACK_SEVERITY[ctx.target],
            f"op {op} ({len(names)} node(s): {shown})",
            f"{ctx.target} has no quantized kernel for {op}: it runs in float on the host, which splits the graph "
            "and adds a dequantize/quantize pair at each border",
            "replace it with a supported equivalent, move it out of the model (post-processing), or accept the "
            "fallback",
        )


def _is_depthwise(node: onnx.NodeProto, ctx: LintContext) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in ctx.facts.initializers:
        return False
    return attribute(node, "group", 1) > 1 and ctx.facts.initializers[node.input[1]].dims[1] == 1


_PASSES_TO_FEEDER = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "PRelu", "Mul", "Add"}


def depthwise_without_bn(ctx: LintContext) -> Iterable[Finding]:
    """TIDL's rule, for a depthwise Conv whose feeding Conv (through activations) kept its BN, in the graph or
    in convert's record of folded BN: there BN was the model's habit and this one lacks it. Where an exporter
    folded the BN of every backbone Conv (paddle2onnx's PP-LCNetV3) nothing tells a depthwise Conv apart."""
    folded = gm.batchnorm_record(ctx.model)

    def has_bn(conv: onnx.NodeProto) -> bool:
        users = ctx.facts.consumers.get(conv.output[0], [])
        return conv.output[0] in folded or (len(users) == 1 and users[0].op_type == "BatchNormalization")

    for node in ctx.model.graph.node:
        if not _is_depthwise(node, ctx) or has_bn(node):
            continue
        feeder = ctx.facts.producers.get(node.input[0])
        while feeder is not None and feeder.op_type in _PASSES_TO_FEEDER:
            feeder = ctx.facts.producers.get(feeder.input[0])
        after_bn = feeder is not None and feeder.op_type == "BatchNormalization"
        if after_bn:
            feeder = ctx.facts.producers.get(feeder.input[0])
        if feeder is None or feeder.op_type != "Conv" or not (after_bn or has_bn(feeder)):
            continue
        yield Finding(
            "depthwise-without-bn",
            "warning",
            _where(node),
            "a depthwise Conv without a BatchNormalization after it: TIDL requires one after every depthwise "
            "Conv ('strictly no exception'); without it the per-channel ranges drift apart and 8-bit PTQ loses "
            "accuracy",
            "retrain with BatchNormalization after the depthwise Conv; until then use per-channel weights and "
            "--apply_algorithms cle",
        )


def channel_ranges(w: np.ndarray, axis: int, chunk: int = 1 << 22) -> np.ndarray:
    """max |w| per channel along `axis`, in `w`'s dtype (exact), a few rows of axis 0 at a time: a
    250 MB lm_head costs a 16 MB slice, not float64 copies of itself."""
    other = tuple(a for a in range(w.ndim) if a != axis)
    step = max(1, chunk // max(1, w[0].size))
    parts = [np.abs(w[start : start + step]).max(axis=other) for start in range(0, w.shape[0], step)]
    return np.concatenate(parts) if axis == 0 else np.maximum.reduce(parts)


# A channel below this share of the widest is dead (PP-OCRv5's detector has channels of 1e-38): even a 16-bit
# per-tensor grid holds it at zero, which is what it contributes; a ratio against it measures nothing
DEAD_CHANNEL = 2.0**-16


def live_channels(ranges: np.ndarray) -> np.ndarray:
    """The indices of the channels whose range is above DEAD_CHANNEL of the widest one's."""
    ranges = ranges.astype(np.float64)
    return np.flatnonzero(ranges > DEAD_CHANNEL * ranges.max()) if ranges.size else np.array([], int)


def _weight_severity(ctx: LintContext, node: onnx.NodeProto, weight: str, levels: float) -> str | None:
    """None when per-channel quantization already covers this weight."""
    if ctx.encodings is not None:
        e = ctx.encodings.params.get(weight)
        if e is None or e.axis is not None:
            return None
    else:
        flag = "use_per_row_quantization" if rule_for(node).per_row else "use_per_channel_quantization"
        if ctx.preset.get(flag):
            return "info"
    return "error" if levels < 1 else "warning"


def _input_valued(ctx: LintContext) -> set[str]:
    """Tensors whose values depend on a graph input's values (nodes in topological order). A layer reading none
    is one convert folds once --input_dim fixes the shapes: BERT exports without a token_type_ids input look up
    their 2-row token-type table by a constant buffer sliced to the input's length."""
    valued = set(ctx.facts.graph_inputs)
    for node in ctx.model.graph.node:
        if node.op_type not in ("Shape", "Size") and (any(a.g.node for a in node.attribute) or valued & set(node.input)):
            valued.update(o for o in node.output if o)
    return valued


def uneven_channels(ctx: LintContext) -> Iterable[Finding]:
    bitwidth = int(ctx.preset.get("weights_bitwidth", 8))
    seen: set[str] = set()  # a weight 20 unrolled LSTM steps share is one finding, not 20
    valued, reach = _input_valued(ctx), cle.equalizable(ctx.facts)
    for node in ctx.model.graph.node:
        if not valued & set(node.input):  # constant-foldable: convert leaves no such layer to quantize
            continue
        for index in rule_for(node).weights:
            weight = node.input[index] if index < len(node.input) else ""
            if weight in seen or weight not in ctx.facts.initializers or len(ctx.facts.initializers[weight].dims) < 2:
                continue
            seen.add(weight)
            w = ctx.facts.array(weight)
            if w.size == 0:  # a layer of no channels (a Conv of 0 filters) has none to compare: an IndexError
                continue
            axis = weight_axis(node, index, w.shape)
            ranges = channel_ranges(w, axis).astype(np.float64)
            external_data.release(ctx.facts.initializers[weight])  # one weight's pages resident at a time
            live = live_channels(ranges)
            if len(live) < 2:
                continue
            weakest = int(live[np.argmin(ranges[live])])
            ratio = float(ranges[live].max() / ranges[weakest])
            levels = (2 ** (bitwidth - 1) - 1) / ratio
            severity = _weight_severity(ctx, node, weight, levels) if levels < UNEVEN_LEVELS else None
            if severity is not None:
                yield _uneven_finding(ctx, node, weight, (axis, weakest, ratio, levels), severity, node.output[0] in reach)


def _uneven_finding(
    ctx: LintContext, node: onnx.NodeProto, weight: str, facts: tuple[int, int, float, float], severity: str,
    equalized: bool,
) -> Finding:  # fmt: skip
    """`equalized`: cle rescales this layer (a Conv pair's); a MatMul's or a lone Conv's channels it leaves as they are."""
    axis, weakest, ratio, levels = facts
    flag = "--use_per_row_quantization" if rule_for(node).per_row else "--use_per_channel_quantization"
    fix = f"{flag}, or --apply_algorithms cle to equalize the channels" if equalized else flag
    if ctx.target == "vitis-dpu":
        fix = f"the DPU quantizes weights per tensor: {'--apply_algorithms cle, or ' if equalized else ''}retrain with weight decay"
    elif severity == "info":
        fix = f"nothing: the {ctx.target} preset quantizes these weights per channel"
    users = len(ctx.facts.consumers.get(weight, []))
    return Finding(
        "uneven-channels",
        severity,
        f"weight {weight!r} of {_where(node)}" + (f" and {users - 1} more nodes" if users > 1 else ""),
        f"channel ranges differ {ratio:.0f}x (axis {axis}): per-tensor quantization leaves channel {weakest} "
        f"about {levels:.1f} levels per side",
        fix,
    )


def _clip_bounds(node: onnx.NodeProto, ctx: LintContext) -> tuple[float, float] | None:
    if len(node.input) >= 3 and node.input[1] and node.input[2]:
        lo, hi = ctx.constant(node.input[1]), ctx.constant(node.input[2])
        return None if lo is None or hi is None else (float(lo), float(hi))
    if len(node.input) == 1:  # opset < 11: min/max attributes
        return float(attribute(node, "min", -np.inf)), float(attribute(node, "max", np.inf))
    return None


def softmax_mask(ctx: LintContext) -> Iterable[Finding]:
    for node in ctx.model.graph.node:
        producer = ctx.facts.producers.get(node.input[0]) if node.op_type in ("Softmax", "LogSoftmax") else None
        if producer is None or producer.op_type not in ("Add", "Where"):
            continue
        masked = ctx.encodings.activations.get(producer.output[0]) if ctx.encodings is not None else None
        if ctx.encodings is not None and (masked is None or masked.is_float):
            continue  # a quantized model that already keeps the masked value in float
        for name in producer.input:
            value = ctx.constant(name)
            if value is None or value.dtype.kind != "f" or not value.size or float(value.min()) > MASK_LIMIT:
                continue
            step = abs(float(value.min())) / 255
            mask = f"fed by {_where(producer)} with the mask constant {name!r} (min {float(value.min()):.3g})"
            fix = (f"keep {producer.output[0]!r} and the Softmax in 16-bit or float (--act_16bit_tensors, a float "
                   "override), and use a moderate mask such as -100")  # fmt: skip
            if ctx.encodings is None:  # a float model: quantize leaves masked values out of the range (SoftmaxInput)
                yield Finding("softmax-mask", "info", _where(node),
                              f"{mask}: qtool's calibration leaves masked positions out of its range and keeps it "
                              f"float where they occur; one min-max 8-bit grid (a step of about {step:.3g}) rounds "
                              "every unmasked logit to one value", f"none with qtool quantize; elsewhere {fix}")  # fmt: skip
                break
            yield Finding("softmax-mask", "error", _where(node),
                          f"{mask}: its 8-bit step is about {step:.3g}, so every unmasked logit rounds to one value", fix)  # fmt: skip
            break


def post_ln_residual(ctx: LintContext) -> Iterable[Finding]:
    """A post-LN block (BERT): a LayerNorm's output added into a residual sum that the next LayerNorm reads.
    Trained encoders carry a few hidden channels 20-100x the rest in those sums; one 8-bit grid per tensor
    leaves the others a handful of levels (all-MiniLM-L6-v2 at W8A8: cosine 0.80)."""
    post_ln = post_ln_sums(ctx.facts)
    if ctx.encodings is not None:  # a quantized model: only sums still on one 8-bit grid
        post_ln = [t for t in post_ln if _one_8bit_grid(ctx.encodings.activations.get(t))]
    if not post_ln:
        return
    yield Finding(
        "post-ln-residual",
        "warning",
        f"tensor {post_ln[0]!r}" + (f" and {len(post_ln) - 1} more residual sums" if len(post_ln) > 1 else ""),
        "a post-LN transformer: the LayerNorm inputs are residual sums whose few outlier channels (20-100x the "
        "rest in trained encoders) leave the other channels a handful of levels on one 8-bit grid",
        f"{residual_recipe(ctx.facts)} --act_quantizer_calibration sqnr (a grid per hidden channel); on QNN HTP, 16-bit residual sums (--act_16bit_tensors)",
    )


def rounded_dip(ctx: LintContext) -> Iterable[Finding]:
    if ctx.encodings is None:
        return

    def step(tensor: str) -> float | None:
        e = ctx.encodings.activations.get(tensor)
        return float(e.scale[0]) if e is not None and not e.is_float and len(e.scale) == 1 else None

    for tensor, op, s in rounded_dips(ctx.facts, step):
        yield Finding(  # info: without data the share of negative values, and so the harm, is unknown
            "rounded-dip",
            "info",
            f"tensor {tensor!r}",
            f"a {op} output on a grid step of {s:.3g}, deeper than the {op}'s dip (-{DIP_DEPTHS[op]:g}): its negative "
            "values all round to zero, an error of one sign that the next layer sums over its fan-in",
            f"16 bits for it (--act_16bit_tensors {tensor}), or --mixed_precision auto",
        )


ORT_WEIGHT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm")  # onnxruntime's WeightBiasQuantization's ops


def ort_quantized_weights(ctx: LintContext) -> Iterable[Finding]:
    """A float32 weight of a layer whose input a per-tensor DequantizeLinear gives: onnxruntime's default graph
    optimisation (WeightBiasQuantization, level 1) quantizes it to int8, one symmetric scale, so a layer the model
    keeps float (a float override, --op_types_to_quantize) does not run float there; its reports run Q/DQ in float."""
    if ctx.written is None or ctx.target not in (None, "ort-cpu"):  # QNN, TIDL and DPU compilers keep it float
        return
    graph = ctx.written.graph
    weights = {t.name: t.data_type for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    scalars = {t.name for t in graph.initializer if not t.dims}
    for node in graph.node:
        dequantized = producers.get(node.input[0]) if node.input else None
        if (node.op_type not in ORT_WEIGHT_QUANTIZED_OPS or dequantized is None or len(node.input) < 2
                or dequantized.op_type != "DequantizeLinear" or dequantized.input[1] not in scalars
                or weights.get(node.input[1]) != onnx.TensorProto.FLOAT):  # fmt: skip
            continue
        yield Finding(
            "ort-quantized-weight",
            "warning",
            _where(node),
            f"its weight {node.input[1]!r} is float and its input is dequantized per tensor: onnxruntime's default "
            "graph optimisation (WeightBiasQuantization) quantizes that weight to int8 with one symmetric scale",
            "to run it float in onnxruntime, build the session with disabled_optimizers=['WeightBiasQuantization']; "
            "or quantize the weight",
        )


def _one_8bit_grid(e) -> bool:
    return e is not None and not e.is_float and e.bitwidth <= 8 and len(e.scale) <= 1


LINTS: dict[str, Lint] = {
    "dynamic-shape": dynamic_shapes,
    "declared-shape": wrong_shapes,
    "map-value": map_values,
    "unusable-weight": unusable_weights,
    "unsupported-op": unsupported_ops,
    "branch-on-setting": branch_on_setting,
    "depthwise-without-bn": depthwise_without_bn,
    "uneven-channels": uneven_channels,
    "softmax-mask": softmax_mask,
    "post-ln-residual": post_ln_residual,
    "long-tail": lint_data.long_tails,
    "input-range": lint_data.inputs_not_standardised,
    "unheld-range": lint_data.unheld_ranges,
    "lost-negatives": lint_data.lost_negatives,
    "rounded-dip": rounded_dip,
    "ort-quantized-weight": ort_quantized_weights,
    "growing-range": lint_data.growing,
}


def context(
    model: onnx.ModelProto, target: str | None, scratch: str | None = None, shaped: onnx.ModelProto | None = None
) -> LintContext:
    """The float view of `model` (Q/DQ stripped; its weights in the file `scratch` when given, see
    read_qdq), shape-inferred so that tensor types are known; `shaped`: a float `model` inferred already."""
    encodings, written = None, None
    wrong = wrong_declarations(model)
    if kind(model) == "quantized":
        written, (model, encodings, shaped) = model, (*read_qdq(model, scratch=scratch), None)
    model = inferred(model) if shaped is None else shaped  # a graph inference cannot follow: the lints without types
    return LintContext(model, GraphFacts.of(model), target, preset(target), encodings, wrong_shapes=wrong, written=written)


def run_lints(ctx: LintContext) -> list[Finding]:
    return ordered([finding for lint in LINTS.values() for finding in lint(ctx)])

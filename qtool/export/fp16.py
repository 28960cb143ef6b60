"""`fp16`: the whole float model in half precision (qairt's `--float_bitwidth 16`).

The stripped model through `to_float16`: weights and activations float16, inputs and outputs
still float32 behind Cast nodes, so it takes the same raw files as the float model.

A value whose calibrated range (its encoding) passes float16's largest finite value, with 2x headroom for
inputs calibration did not see, stays float32, and so does every op that writes or reads it: flan-t5's
residual stream reaches 2.5e5 and, in float16, turned every output into NaN (exit 0). A value with no encoding
(a float one) is bounded from its inputs' bounds through the ops that keep or widen a range (`_bound`), so
the RMSNorm's Pow(x, 2) of that stream is found as well.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx
from onnx import numpy_helper

from qtool.export.job import ExportJob, Files
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.float16 import FLOAT16_MAX, to_float16
from qtool.graph.names import FreshNames
from qtool.graph.node_order import reads, subgraphs
from qtool.io.encodings import Encoding
from qtool.quant.group_range import BOUNDED_OPS, MAX_OPS
from qtool.quant.phases import MOVES

logger = logging.getLogger(__name__)

HEADROOM = 2.0
COARSE = 2.0**-17  # below it float16 holds a value to fewer than 8 bits (its subnormals' step is 2^-24)
# ops whose output stays within their data inputs' largest magnitude
_WITHIN = MOVES | MAX_OPS | {"Relu", "LeakyRelu", "Abs", "Neg", "Max", "Min", "ReduceMin", "ReduceMean", "Where", "Clip",
                             "Cast", "AveragePool", "GlobalAveragePool", "Resize", "DepthToSpace", "SpaceToDepth"}  # fmt: skip


# ops that make an infinity of finite inputs (Log(0), x / 0, 0 ^ -1): where the QDQ model saturates it on the output's grid
_UNBOUNDED = ("Log", "Div", "Reciprocal", "Pow")


def export(job: ExportJob) -> Files:
    return {job.file(".fp16.onnx"): half_precision(_saturated(job), _encoded_bounds(job), job.where)}


def _saturated(job: ExportJob) -> onnx.ModelProto:
    """The stripped model with a Clip to the output's grid after each op that can make an infinity where the QDQ
    model quantizes that output, as it saturates it: basic-pitch's W8A8 epsilon is 0 on its 8-bit grid, x^2 underflows
    in float16, and Log(0)'s -inf minus the ReduceMin's -inf made NaN on every output of a clip, exit 0."""
    weights = {t.name: t for t in job.stripped.graph.initializer}
    grids = [_unbounded_grid(node, job, weights) for node in job.stripped.graph.node]
    if all(e is None for e in grids):  # most models: no copy of the float weights (half_precision writes its own model)
        return job.stripped
    model = onnx.ModelProto()
    model.CopyFrom(job.stripped)
    nodes, fresh = [], FreshNames({v.name for v in model.graph.input} | {o for n in model.graph.node for o in n.output} | set(weights))
    for node, e in zip(model.graph.node, grids, strict=True):
        nodes.append(node)
        if e is None:
            continue
        out, (lo, hi) = node.output[0], (min(e.min), max(e.max))
        node.output[0] = fresh(f"{out}/unclipped")
        if gm.default_opset(model) < 11:  # Clip's bounds were attributes
            nodes.append(onnx.helper.make_node("Clip", [node.output[0]], [out], min=lo, max=hi))
            continue
        names = [fresh(f"{out}/{end}") for end in ("min", "max")]
        model.graph.initializer.extend(numpy_helper.from_array(np.array(b, np.float32), n) for b, n in zip((lo, hi), names, strict=True))
        nodes.append(onnx.helper.make_node("Clip", [node.output[0], *names], [out]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _unbounded_grid(node: onnx.NodeProto, job: ExportJob, weights: dict[str, onnx.TensorProto]) -> Encoding | None:
    """The encoding of the node's output if the node can make an infinity of finite inputs and the QDQ model
    quantizes that output, else None."""
    e = job.found.activations.get(node.output[0]) if node.output else None
    if node.op_type not in _UNBOUNDED or node.domain not in ("", "ai.onnx") or e is None or e.is_float or _bounded(node, weights):
        return None
    return e


def _bounded(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    """A Div by a constant without a 0 or a Pow to a constant power >= 0: finite of finite inputs (or past float16's
    range, which `_wide_values` keeps float32)."""
    value = external_data.array(weights[node.input[1]]) if len(node.input) > 1 and node.input[1] in weights else None
    return value is not None and (np.all(value != 0) if node.op_type == "Div" else node.op_type == "Pow" and np.all(value >= 0))


def half_precision(model: onnx.ModelProto, encoded: dict[str, float], where: str) -> onnx.ModelProto:
    """`model` in float16 but for the values past its range (`_wide_values`: from `encoded`, the weights and what
    they bound), said how many; convert --float_bitwidth 16 has only the weights: a torch attention mask's
    finfo.min (and a Trilu's -inf) became -inf, and 0 * -inf NaN on every output, exit 0."""
    wide = _wide_values(model, encoded)
    if wide:
        shown = ", ".join(sorted(wide, key=lambda n: -wide[n])[:3])
        logger.warning("%s: fp16: %d values exceed float16's range (%s ...: up to %.3g), so they and the ops that "
                       "write or read them stay float32", where, len(wide), shown, max(wide.values()))  # fmt: skip
    tiny = _tiny_values(model)
    if tiny:
        logger.warning("%s: fp16: %d values are nonzero below float16's smallest (%s: %.3g, a Log's or a division's "
                       "epsilon, or a Mul's scale it holds to under 8 bits), so they and the ops that write or read "
                       "them stay float32", where, len(tiny),
                       min(tiny, key=tiny.get), min(tiny.values()))  # fmt: skip
    if bodies := _unsafe_bodies(model, set(wide) | set(tiny)):
        logger.warning("%s: fp16: %d If, Loop or Scan bodies hold or read values float16 cannot (an epsilon below its "
                       "smallest, a value past its range), so they run in float32", where, len(bodies))  # fmt: skip
    model = to_float16(model, keep_float32=set(wide) | set(tiny) | {o for n in bodies for o in n.output if o})
    gm.set_metadata(model, gm.METADATA_FLOAT_BITWIDTH, "16")
    return model


def _unsafe_bodies(model: onnx.ModelProto, outer: set[str]) -> list[onnx.NodeProto]:
    """The If, Loop and Scan nodes whose bodies hold a float constant float16 cannot (`_unsafe`) or read an `outer`
    one: qtool neither quantizes nor bounds a body, and in float16 a branch's Log(x^2 + 1e-10) was Log(0), -inf on
    the samples that took it where the float and QDQ models gave 7.0 (exit 0)."""
    return [n for n in model.graph.node if any(subgraphs(n)) and (outer.intersection(reads(n)) or _unsafe(n))]


def _unsafe(node: onnx.NodeProto) -> bool:
    for graph in subgraphs(node):
        tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)]
        for t in tensors:
            values = np.abs(external_data.array(t)) if t.data_type == onnx.TensorProto.FLOAT else np.zeros(0)
            nonzero = values[values != 0]
            if nonzero.size and ((values.size <= 1024 and nonzero.max() <= 2.0**-25) or nonzero.max() > FLOAT16_MAX):
                return True
        if any(_unsafe(inner) for inner in graph.node):
            return True
    return False


def _encoded_bounds(job: ExportJob) -> dict[str, float]:
    return {name: max(abs(v) for v in (*e.min, *e.max)) for name, e in job.found.activations.items()
            if not e.is_float and e.min and e.max}  # fmt: skip


def _wide_values(model: onnx.ModelProto, encoded: dict[str, float]) -> dict[str, float]:
    """Main-graph values whose bound passes FLOAT16_MAX / HEADROOM: an encoding's range where there is one, else
    what `_bound` makes of the inputs' bounds, in graph order. A weight's own values bound it."""
    bounds = dict(encoded)
    weights = {t.name: t for t in model.graph.initializer}

    def bound(name: str) -> float | None:
        if name not in bounds and name in weights:
            values = external_data.array(weights[name])
            numeric = values.size and values.dtype.kind in "fiu"  # an integer's matters where a Cast makes it float
            # a float's |max| is exact as it is: float64 copies of a decoder's token table held 1 GB at once
            wide = values if values.dtype.kind == "f" else values.astype(np.float64)  # (|int min| overflows)
            bounds[name] = float(max(wide.max(), -wide.min())) if numeric else 0.0
            external_data.release(weights[name])  # its mapped pages: the weights are read once here
        return bounds.get(name)

    for name, weight in weights.items():  # any weight past float16's range (a MatMul's too) stays float32
        if weight.data_type == onnx.TensorProto.FLOAT:
            bound(name)
    for node in model.graph.node:
        found = _bound(node, bound, weights)
        for out in node.output:
            if out and out not in bounds and found is not None:
                bounds[out] = found
    # a float weight is exact: past float16's range (an additive mask's -1e9) it is kept, and what reads it
    return {name: b for name, b in bounds.items() if (b > FLOAT16_MAX / HEADROOM and name not in weights)
            or (name in weights and weights[name].data_type == onnx.TensorProto.FLOAT and b > FLOAT16_MAX)}  # fmt: skip


def _tiny_values(model: onnx.ModelProto) -> dict[str, float]:
    """Small float weights whose every nonzero value float16 makes 0 (an epsilon of 1e-10) or, read by a Mul or Div,
    holds to fewer than 8 bits (a scale below 2^-17, a subnormal in float16), and the values an op
    that keeps a value small makes of one: basic-pitch's Log(x^2 + 1e-10) was Log(0), every output NaN (exit 0).
    A Log, Sqrt or division reading one runs in float32 too, and writes a value float16 holds."""
    tiny: dict[str, float] = {}
    coarse: dict[str, float] = {}  # a scale of 1e-7 float16 holds as 1.19e-7: every output it scales 19 % off, exit 0
    for t in model.graph.initializer:
        small = t.data_type == onnx.TensorProto.FLOAT and math.prod(t.dims) <= 1024  # an epsilon, not a layer's
        values = external_data.array(t) if small else np.zeros(0)
        nonzero = np.abs(values[values != 0])
        if nonzero.size and nonzero.max() <= 2.0**-25:  # half float16's smallest subnormal: rounds to 0
            tiny[t.name] = float(nonzero.max())
        elif nonzero.size and nonzero.max() < COARSE:
            coarse[t.name] = float(nonzero.max())
    for node in model.graph.node:
        if node.op_type in ("Mul", "Div"):  # a scale's rounding is its output's error; an epsilon's Add loses little
            tiny.update((i, coarse[i]) for i in node.input if i in coarse)
        if node.op_type in _WITHIN | {"Add", "Sub", "Sum", "Mul"} and (found := [tiny[i] for i in node.input if i in tiny]):
            tiny.update(dict.fromkeys((o for o in node.output if o), min(found)))
    return tiny


def _bound(node: onnx.NodeProto, bound, weights: dict) -> float | None:
    """A bound on |output| from `bound` of its float data inputs (None: unknown), for the ops that keep, sum,
    multiply or square a range; None for the rest (a MatMul's sum depends on its length: its encoding bounds it)."""
    op = node.op_type
    if (op in BOUNDED_OPS and op != "LogSoftmax") or op in ("Erf", "Sin", "Cos"):  # LogSoftmax: (-inf, 0]
        return 1.0
    if op == "ConstantOfShape":  # a mask's fill (finfo.min) as a weight's values
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return float(np.max(np.abs(numpy_helper.to_array(value).astype(np.float64)))) if value is not None else 0.0
    joins = op in ("Concat", "Max", "Min", "Sum", "Add", "Sub", "Mul")
    known = [bound(name) for name in (node.input if joins else node.input[1:3] if op == "Where" else node.input[:1])]
    if not known or None in known:
        return None
    if op in ("Add", "Sub", "Sum", "Mul"):
        return sum(known) if op != "Mul" else math.prod(known)
    if op in _WITHIN or op == "Sqrt":
        return max(known) if op != "Sqrt" else math.sqrt(known[0])
    if op == "Exp":
        return math.exp(min(known[0], 700.0))
    exponent = numpy_helper.to_array(weights[node.input[1]]) if op == "Pow" and node.input[1] in weights else None
    if exponent is not None and exponent.size == 1 and float(exponent) >= 1:
        return math.exp(min(float(exponent) * math.log(known[0]), 700.0)) if known[0] > 1 else known[0]
    return None

"""Whose an infinity in a quantized model is: the data's, when the float model reaches it too, or the grid's,
when only the rounding does. swift-f0 takes Log(power + 1e-8): on its 8-bit grid the 1e-8 rounds to 0, a silent
frame's power is 0, and the Log's -inf reached a Conv; calibration's warning asked whether that held-out clip's
data was right, where the float model's Log was finite."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx

from qtool import runtime
from qtool.inspect.findings import LintContext
from qtool.quant.calibrate import SENTINEL
from qtool.quant.cost import MAC_OPS

logger = logging.getLogger(__name__)
Feed = dict[str, np.ndarray]
FLOAT32 = '{"bitwidth": 32, "dtype": "float"}'
NEAR = 3  # nodes above an infinity searched for a constant the grid rounded to 0


def _data_inputs(ctx: LintContext, node: onnx.NodeProto) -> list[str]:
    return [i for i in node.input if i and i not in ctx.facts.initializers]


def origin(ctx: LintContext, unbounded: dict[str, str]) -> tuple[str, str] | None:
    """(the first unbounded tensor a Conv/Gemm/MatMul reads, where it starts: the first unbounded tensor upstream
    whose node reads none), or None: a mask's infinities reach no weighted layer, and say nothing."""
    read = next((i for n in ctx.model.graph.node if n.op_type in MAC_OPS for i in n.input[:2] if i in unbounded), None)
    if read is None:
        return None
    start = read
    while (node := ctx.facts.producers.get(start)) is not None:
        up = next((i for i in _data_inputs(ctx, node) if i in unbounded), None)
        if up is None:
            break
        start = up
    return read, start


def _bounded(values: np.ndarray) -> bool:
    return bool((np.abs(values) < SENTINEL).all())  # NaN compares False


def _shown(values: np.ndarray) -> str:
    bad = values[~(np.abs(values) < SENTINEL)]
    return "NaN" if np.isnan(bad).all() else f"{bad[~np.isnan(bad)][0]:g}"


def _rounded_to_zero(ctx: LintContext, node: onnx.NodeProto, reference: onnx.ModelProto) -> list[str]:
    """The constants `node` reads of which the quantized model rounds a nonzero value to 0 (a Log's + 1e-8)."""
    originals = {t.name: t for t in reference.graph.initializer}
    found = []
    for name in node.input:
        if name in ctx.facts.initializers and name in originals:
            now, was = ctx.facts.array(name), onnx.numpy_helper.to_array(originals[name])
            if now.shape == was.shape and np.any((now == 0) & (was != 0)):
                found.append(name)
    return found


def _near(ctx: LintContext, node: onnx.NodeProto | None, depth: int = NEAR) -> list[onnx.NodeProto]:
    """`node` and the nodes up to `depth` above it: where a constant's rounding reaches its input (an Add of
    1e-8, and the Relu the quantized model squashed behind it)."""
    found, layer = [], [node] if node is not None else []
    for _ in range(depth + 1):
        found += layer
        layer = [p for n in layer for i in _data_inputs(ctx, n) if (p := ctx.facts.producers.get(i)) is not None]
    return list({id(n): n for n in found}.values())


def explain(
    ctx: LintContext, unbounded: dict[str, str], reference: onnx.ModelProto | None, feed_at: Callable[[str], Feed],
    threads: int = 0,
) -> str | None:
    """The warning for a quantized model's float view (Q/DQ stripped, weights and constants as rounded) whose values
    ran to inf or NaN on a sample, or None. With the float model (`reference`) it says whose they are."""
    found = origin(ctx, unbounded)
    if found is None:
        return None
    read, start = found
    node = ctx.facts.producers.get(start)
    where, op = unbounded[start], node.op_type if node is not None else "input"
    inputs = _data_inputs(ctx, node) if node is not None else []
    feed = feed_at(where)
    view = runtime.runner(ctx.model, [start, *inputs], threads)(feed)
    value, reaches = _shown(view[start]), f"{where}: {start!r} ({op})"
    fix = (f"keep the {op}'s input {inputs[0]!r} float or at 16 bits (--act_16bit_tensors {inputs[0]})" if inputs
           else "")  # fmt: skip
    fed = f", and {read!r}, which a weighted layer reads, with it" if read != start else ""
    if reference is None or start not in {o for n in reference.graph.node for o in n.output}:
        return (f"{reaches} reaches {value} in the quantized model's arithmetic (its weights and constants as "
                f"rounded){fed}; --reference tells whether the float model's does too (the data's) or not (the "
                f"grid's{': ' + fix if fix else ''})")  # fmt: skip
    if not _bounded(runtime.runner(reference, [start], threads)(feed)[start]):
        return f"{reaches} reaches {value} in the float model too{fed}: is this sample's data right?"
    lows = [f"{i!r} reaches {float(np.min(view[i])):.3g}" for i in inputs if view[i].size]
    rounded = list(dict.fromkeys(c for n in _near(ctx, node) for c in _rounded_to_zero(ctx, n, reference)))
    if rounded:  # float16 rounds a 1e-8 to 0 as well
        fix = f"keep {', '.join(map(repr, rounded))} float (an override {FLOAT32}); {fix}"
    cause = ", ".join(lows) + (f" ({', '.join(map(repr, rounded))} rounded to 0)" if rounded else "")
    return (f"{reaches} reaches {value} only in the quantized model (the float model's is finite){fed}: the grid's "
            f"rounding, not the data: {cause}; {fix}")

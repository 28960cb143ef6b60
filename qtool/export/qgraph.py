"""QGraph: the QOperator graph under construction, built node by node from the stripped float
graph and the QDQ model's encodings.

A tensor `t` of the float graph can be held two ways, each made on first use:
- `integer(t)`: its values on the grid of its encoding (uint8/int8...): the output of a QLinear op,
  a QuantizeLinear of the float value, or a quantized initializer for a weight;
- `dequantized(t)`: the float value the QDQ model computes for `t`, i.e. DequantizeLinear of the
  integer tensor when `t` has an encoding, else `t` itself.
Names follow qtool/quant/qdq.py: `t_quantized`, `t_dequantized`; a weight's dequantized value and
a graph output keep their own names, and a float op's output that is a graph output and still
needs quantizing becomes `t_prequant`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.encoding import Encoding
from qtool.graph import external_data
from qtool.graph.names import FreshNames
from qtool.io.encodings import Encodings
from qtool.quant import blocks
from qtool.quant.graph_facts import GraphFacts
from qtool.quant.qdq import storage_type

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Target:
    """Where a QLinear op writes: tensor `name` on `encoding`, through folded clamps `acts` whose
    bounds become integer Min/Max ops (`post`) where the grid's saturation does not apply them."""

    name: str
    encoding: Encoding
    acts: tuple[onnx.NodeProto, ...] = ()
    post: tuple[tuple[str, np.ndarray], ...] = ()  # ("Min" | "Max", integer bound), in order


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


class QGraph:
    def __init__(self, model: onnx.ModelProto, found: Encodings, opset: int):
        self.facts = GraphFacts.of(model)
        self.opset = opset
        every = {**found.activations, **found.params}
        self.enc: dict[str, Encoding] = {t: e for t, e in every.items() if not e.is_float and e.scale}
        graph = model.graph
        taken = {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | set(self.facts.initializers)
        self.fresh = FreshNames(taken | {o for n in graph.node for o in n.output} | {n.name for n in graph.node})
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.integer_of: dict[str, str] = {}
        self.float_of: dict[str, str] = {}
        self.raw: dict[str, str] = {t: t for t in self.facts.graph_inputs}
        self.skipped: set[str] = set()  # outputs of clamps (Relu, Clip, Min, Max) folded into a QLinear op
        self.qparams_of: dict[str, tuple[str, str]] = {}
        self.qlinear_count = 0

    def node(self, op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> None:
        name = self.fresh(f"{output}_{op}")
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, domain=domain, **attrs))

    def const(self, name: str, values: np.ndarray) -> str:
        name = self.fresh(name)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    # --- encodings of operands and outputs -------------------------------------------------
    def operand(self, t: str) -> Encoding | None:
        """The encoding of `t` if a QLinear op can read it as an 8-bit integer tensor."""
        e = self.enc.get(t)
        if e is None:
            return None
        is_weight = t in self.facts.initializers
        if e.blocks is not None:  # no QLinear op takes per-block scales: the op stays float (QDQ)
            return None
        return e if (e.bitwidth <= 8 if is_weight else e.bitwidth == 8 and e.axis is None) else None

    def target(self, node: onnx.NodeProto) -> Target | None:
        """Where `node` can write an 8-bit integer output: its own encoding, or that of the clamp
        chain after it (Relu, Clip, Min/Max with a constant: ReLU squashing, FORMATS.md, and cle's
        Relu -> Min ReLU6), which the QDQ model quantizes only at its end. Quantization is monotone,
        so q(clamp(y)) = clamp(q(y)) with quantized bounds: the clamps run on the integers."""
        chain = self._clamp_chain(node.output[0])
        if chain is None:
            return None
        name, acts, bounds = chain
        e = self.enc[name]
        if e.bitwidth != 8 or e.axis is not None:
            return None
        post = [op for lo, hi in bounds for op in _integer_clamps(e, lo, hi)]
        return Target(name, e, acts, tuple(post)) if not post or self.opset >= 12 else None

    def _clamp_chain(self, out: str) -> tuple[str, tuple[onnx.NodeProto, ...], list[tuple]] | None:
        acts: list[onnx.NodeProto] = []
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        while out not in self.enc:
            users = self.facts.consumers.get(out, [])
            clamp = self._bounds(users[0], out) if len(users) == 1 and len(acts) < 3 else None
            if clamp is None or out in self.facts.graph_outputs:
                return None
            bounds.append(clamp)
            acts.append(users[0])
            out = users[0].output[0]
        return out, tuple(acts), bounds

    def _constant(self, name: str) -> np.ndarray | None:
        return self.facts.array(name).astype(np.float64) if name in self.facts.initializers else None

    def _bounds(self, act: onnx.NodeProto, x: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) that `act` clamps `x` to (arrays broadcasting against it), or None."""
        inf = np.array(np.inf)
        if act.op_type == "Relu":
            return np.array(0.0), inf
        if act.op_type in ("Min", "Max") and len(act.input) == 2 and x in act.input:
            c = self._constant(act.input[1] if act.input[0] == x else act.input[0])
            return None if c is None else ((-inf, c) if act.op_type == "Min" else (c, inf))
        if act.op_type != "Clip" or act.input[0] != x:
            return None
        values = []
        for index, attr, default in ((1, "min", -np.inf), (2, "max", np.inf)):
            name = act.input[index] if index < len(act.input) else ""
            found = _attr(act, attr)
            values.append(self._constant(name) if name else np.array(found.f if found else default))
        return None if values[0] is None or values[1] is None else (values[0], values[1])

    # --- the two ways a tensor is held -----------------------------------------------------
    def int_type(self, t: str) -> type:
        """Weights are stored unpacked (4-bit in int8, as QNN); activations on their own grid type."""
        e = self.enc[t]  # blocked int8 weights: onnxruntime 1.32 fuses DQ, DQ, MatMul into a MatMulIntegerToFloat that
        return storage_type(e, packed=t not in self.facts.initializers or e.blocks is not None)  # drops the blocks

    def qparams(self, t: str) -> tuple[str, str]:
        """Scale and zero-point initializers of `t`'s grid (named after `t`, as the QDQ writer does)."""
        if t not in self.qparams_of:
            e = self.enc[t]
            scale, zp = e.scale_array().astype(np.float32), e.zero_point().astype(self.int_type(t))
            if _axis(e).get("block_size"):  # a per-block weight: its DequantizeLinear's blocked layout (qdq.py's)
                shape = self.facts.array(t).shape
                scale, zp = blocks.onnx_array(scale, e, shape), blocks.onnx_array(zp, e, shape)
            else:
                shape = (len(e.scale),) if e.axis is not None else ()
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            scale, zero_point = self.const(f"{t}_scale", scale), self.const(f"{t}_zero_point", zp)
            self.qparams_of[t] = (scale, zero_point)
        return self.qparams_of[t]

    def integer(self, t: str) -> str:
        if t in self.integer_of:
            return self.integer_of[t]
        e = self.enc[t]
        if t in self.facts.initializers:
            values = e.quantize(self.facts.array(t)).astype(self.int_type(t))
            external_data.release(self.facts.initializers[t])  # the float weight's mapped pages: read once, here
            name = self.const(f"{t}_quantized", values)
        else:
            name = self.fresh(f"{t}_quantized")
            self.node("QuantizeLinear", [self.raw[t], *self.qparams(t)], name, **_axis(e))
        self.integer_of[t] = name
        return name

    def dequantized(self, t: str) -> str:
        if not t or t in self.float_of:
            return self.float_of.get(t, t)
        if t in self.enc:
            keeps_name = (t in self.facts.graph_outputs and t not in self.facts.graph_inputs) or t in self.facts.initializers
            name = t if keeps_name else self.fresh(f"{t}_dequantized")
            e = self.enc[t]
            self.node("DequantizeLinear", [self.integer(t), *self.qparams(t)], name, **_axis(e))
        elif t in self.facts.initializers:
            name = t
            self.inits.append(self.facts.initializers[t])
        else:
            name = self.raw.get(t, t)
        self.float_of[t] = name
        return name

    # --- emitting nodes --------------------------------------------------------------------
    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], target: Target, **kw) -> None:
        """`op` writes `target` as an integer tensor; a folded Relu/Clip is skipped or becomes Clip."""
        name = self.fresh(f"{target.name}_{'unclamped' if target.post else 'quantized'}")
        attrs = kw.pop("attrs", [])
        new = helper.make_node(op, inputs, [name], name=self.fresh(f"{node.name or target.name}_{op}"), **kw)
        new.attribute.extend(attrs)
        self.nodes.append(new)
        for i, (clamp, bound) in enumerate(target.post):
            limit = self.const(f"{target.name}_{clamp.lower()}", bound.astype(storage_type(target.encoding)))
            clamped = self.fresh(f"{target.name}_quantized" if i == len(target.post) - 1 else f"{name}_{clamp}")
            self.node(clamp, [name, limit], clamped)
            name = clamped
        self.skipped.update(act.output[0] for act in target.acts)
        self.integer_of[target.name] = name
        self.qlinear_count += 1

    def alias(self, t: str, integer: str, e: Encoding) -> None:
        """`t` is `integer` on grid `e` (a data-movement op run on integers)."""
        self.enc.setdefault(t, e)
        self.integer_of[t] = integer

    def float_node(self, node: onnx.NodeProto) -> None:
        """The op as in the QDQ model: float inputs dequantized, float outputs quantized on demand; the outer
        tensors an If/Loop/Scan body reads by name exist as float under that name before it (openWakeWord's
        verifier If returns the Sigmoid's score, which is an integer tensor here)."""
        for t in sorted(body_reads([node])):
            if t in self.enc and t not in self.facts.initializers and self.raw.get(t) != t:
                name = self.dequantized(t)
                if name != t:
                    self.node("Identity", [name], t)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.input[:] = [self.dequantized(i) for i in node.input]
        for i, out in enumerate(node.output):
            if out in self.enc:
                self.raw[out] = self.fresh(f"{out}_prequant") if out in self.facts.graph_outputs else out
                new.output[i] = self.raw[out]
            elif out:
                self.float_of[out] = out
        self.nodes.append(new)


def body_reads(nodes) -> set[str]:
    """Names read inside the If/Loop/Scan bodies of `nodes` (nested ones too)."""
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            for body in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                names |= {i for n in body.node for i in n.input} | body_reads(body.node)
    return names


def _integer_clamps(e: Encoding, lo: np.ndarray, hi: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """clamp(y, lo, hi) = Min(Max(y, lo), hi) on `e`'s grid, leaving out what saturation to
    [qmin, qmax] already does (a Relu on an unsigned grid from 0 needs nothing)."""
    big = 3e38  # finite, so that infinite bounds quantize to the grid's ends
    qlo, qhi = e.quantize(np.clip(lo, -big, big)), e.quantize(np.clip(hi, -big, big))
    return [(op, q) for op, q, idle in (("Max", qlo, e.qmin), ("Min", qhi, e.qmax)) if np.any(q != idle)]


def _axis(e: Encoding) -> dict[str, int]:
    """Per-block weights were written as per-channel ones with a scale per block: onnxruntime refused the model."""
    if e.blocks is not None and e.blocks.axis is not None:
        return {"axis": e.blocks.axis, "block_size": e.blocks.size}
    return {"axis": e.axis} if e.axis is not None else {}

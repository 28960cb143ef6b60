"""OP_RULES: what each op means for quantization, as frozen data (STYLE.md Do 3).

- `weights`: input index -> per-channel axis (an int, or a function of the node and the weight's shape for
  Gemm's transB, MatMul's rank and a grouped ConvTranspose); only inputs that are initializers count as weights.
- `bias`: the input index of the bias, quantized with the weight's and input's scales.
- `shares_input_encoding`: data-invariant ops (QNN seed: "propagating encodings across data
  invariant Ops"); the output reuses input 0's encoding, so no requantization is written.
- `joins_inputs`: Concat — inputs and output share one encoding (the union of their ranges).
- `slope`: a per-channel parameter read elementwise (PReLU's slope), quantized as a weight: under
  --use_per_channel_quantization one symmetric grid per channel, along its one axis longer than 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from qtool.graph.attributes import attribute

Axis = int | Callable[[onnx.NodeProto, tuple[int, ...]], int]


def _gemm_weight_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    return 0 if attribute(node, "transB", 0) else 1  # output features of B


def _matmul_weight_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    return len(shape) - 1  # columns of B are the output features


def _matmul_left_weight_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    """A constant A (C @ x: a DFT or filterbank front end, torch's `weight @ x`): its rows are the output rows,
    the one axis whose scale stays constant over the sum an integer kernel accumulates."""
    return max(len(shape) - 2, 0)


def _conv_transpose_weight_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    """A ConvTranspose weight is [C_in, C_out/group, k...]: output channel o = g·(C_out/group) + j reads
    column j of the C_in/group rows of group g. One DequantizeLinear axis gives each output channel one scale
    that an integer kernel can apply to its accumulator (constant over the rows it sums) only along axis 1
    (a scale per column j, shared by the groups) or, when each group has one row (group == C_in), along
    axis 0 (a scale per group, shared by its C_out/group channels). The one with more scales is taken: axis 1
    for group 1 (exactly per output channel), axis 0 for a depthwise [C, 1, k, k] (exactly per output channel,
    where axis 1 had one scale for all). A group of several rows and columns ([16, 8, 1, 5], group 2) keeps
    axis 1: its exact form, a scale per (g, j), is no single axis, and axis 0 would vary along the sum."""
    group = attribute(node, "group", 1)
    return 0 if group > 1 and shape[:1] == (group,) and group > shape[1] else 1


def output_channels(node: onnx.NodeProto, shape: tuple[int, ...], axis: int | None) -> list[int] | None:
    """For a ConvTranspose whose weight channels along `axis` are not its output channels, the weight channel
    each output channel takes its scale from (its int32 bias is on input scale x that scale); else None."""
    group = attribute(node, "group", 1)
    if node.op_type != "ConvTranspose" or axis is None or len(shape) < 2 or group == 1:
        return None
    per_group = shape[1]  # C_out/group; output channel o = g·per_group + j
    if axis == 1:
        return [o % per_group for o in range(group * per_group)]
    return [o // per_group for o in range(group * per_group)] if axis == 0 and per_group > 1 else None


@dataclass(frozen=True)
class OpRule:
    weights: dict[int, Axis] = field(default_factory=dict)
    bias: int | None = None
    shares_input_encoding: bool = False
    joins_inputs: bool = False
    per_row: bool = False  # per-channel flag is --use_per_row_quantization, not per_channel
    quantize_constants: bool = False  # float initializer inputs are data (Add's constant term)
    slope: int | None = None  # a per-channel parameter read elementwise (PReLU's slope)


_SHARED = OpRule(shares_input_encoding=True)

OP_RULES: dict[str, OpRule] = {
    "Conv": OpRule(weights={1: 0}, bias=2),
    "ConvTranspose": OpRule(weights={1: _conv_transpose_weight_axis}, bias=2),
    "Gemm": OpRule(weights={1: _gemm_weight_axis}, bias=2, per_row=True),
    "MatMul": OpRule(weights={0: _matmul_left_weight_axis, 1: _matmul_weight_axis}, per_row=True),
    "Concat": OpRule(joins_inputs=True, quantize_constants=True),
    # an embedding table (Gather's data as an initializer) is a weight, one scale per feature under
    # --use_per_row_quantization (a few features carry a transformer's outliers); Gather on an
    # activation moves data and shares its input's encoding
    "Gather": OpRule(weights={0: _matmul_weight_axis}, shares_input_encoding=True, per_row=True),
    **{op: OpRule(quantize_constants=True) for op in ("Add", "Sub", "Mul", "Div")},
    # one slope per channel, not data: per channel, each grid holds its slope exactly (as good as a float slope);
    # the activation's asymmetric grid over all of ONet's slopes cost its outputs 0.1-0.2 dB (held out)
    "PRelu": OpRule(slope=1),
    **{
        op: _SHARED
        for op in (
            "Reshape",
            "Transpose",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "MaxPool",
            "Slice",
            "Split",
            "Pad",
            "Expand",
            "Tile",
            "Identity",
            "DepthToSpace",
            "SpaceToDepth",
            "ReduceMax",
            "ReduceMin",
            "GlobalMaxPool",
        )
    },
}

# Ops after which the activation needs no quantizer of its own when a ReLU follows
# (AIMET / QNN "relu squashing", FORMATS.md): the encoding sits on the ReLU's output.
SQUASHABLE_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "BatchNormalization"})
SQUASHING_ACTIVATIONS = frozenset({"Relu", "Clip"})

NO_RULE = OpRule()

# Inputs that are shapes, scales, sizes or fill values, not data: a Resize `scales` of 2.0 must stay
# exactly 2.0 (onnxruntime rejects a scale that does not), so they are never quantized.
CONTROL_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Pad": frozenset({1, 2, 3}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Reshape": frozenset({1}),
    "Expand": frozenset({1}),
    "Tile": frozenset({1}),
    "ConstantOfShape": frozenset({0}),
    "Range": frozenset({0, 1, 2}),
    "TopK": frozenset({1}),
    "Split": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
    "CumSum": frozenset({1}),
    "OneHot": frozenset({1, 2}),
}

# Ops of models quantized already (onnxruntime's dynamic or static QOperator form): quantizing
# their scale arithmetic as float layers gives a model that agrees with the shipped one by chance.
INTEGER_OPS = frozenset(
    {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
     "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QAttention", "MatMulIntegerToFloat",
     "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool",
     "QLinearSoftmax", "MatMulNBits"}
)  # fmt: skip


def is_control_input(node: onnx.NodeProto, index: int) -> bool:
    return node.domain in ("", "ai.onnx") and index in CONTROL_INPUTS.get(node.op_type, frozenset())


def float_input_reason(node: onnx.NodeProto, target: str | None) -> str | None:
    """Why `target` must leave `node`'s data input float, with its group (ORT moves a DQ down a Reshape), if it must."""
    dilated = any(a.name == "dilations" and set(a.ints) - {1} for a in node.attribute)
    if node.op_type == "AveragePool" and dilated:  # not its output: ORT moves a Q up to it; any target, as
        # every quantized model must load in onnxruntime
        return "onnxruntime would fuse it into a QLinearAveragePool, which rejects dilations, and fail to load"


def flat_outside(node: onnx.NodeProto, initializers: dict, array: Callable) -> tuple[float, float] | None:
    """The interval of input 0 outside which `node`'s output no longer changes (HardSwish is 0 below −3),
    or None: an input range may be cut to it at no cost (group_range.py)."""
    if node.domain not in ("", "ai.onnx") or not node.input:
        return None
    inf = float("inf")
    if node.op_type == "Relu":
        return 0.0, inf
    if node.op_type == "HardSwish":
        return -3.0, inf
    if node.op_type == "HardSigmoid":
        floats = {a.name: a.f for a in node.attribute}
        alpha, beta = floats.get("alpha", 0.2), floats.get("beta", 0.5)
        return (-beta / alpha, (1 - beta) / alpha) if alpha > 0 else None
    if node.op_type == "Clip":
        floats = {a.name: a.f for a in node.attribute}  # opset < 11: bounds are attributes
        bounds = [floats.get("min", -inf), floats.get("max", inf)]
        for k, name in enumerate(node.input[1:3]):
            if name and name not in initializers:
                return None
            if name:
                bounds[k] = float(array(name).reshape(-1)[0]) if array(name).size == 1 else None  # type: ignore[call-overload]
        return None if None in bounds else (bounds[0], bounds[1])
    return None


def saturates_outside(node: onnx.NodeProto, out_lo: float, out_hi: float, step: float) -> tuple[float, float] | None:
    """The interval of a Sigmoid's or Tanh's input outside which its output lies within half a step of its grid's
    end, or None: read through a grid of `step` over [out_lo, out_hi], the op is flat there (group_range.py).
    An Elu, α(eˣ − 1) below 0, is flat so toward −α below: madmom's CNNs feed it Conv outputs down to −2700 that
    all read as −1 (notes_cnn: a grid step of 11 where its live values span [−1, 105]). −α itself rounds to the
    level nearest it (levels are multiples of `step`: the grid holds 0), not to the observed end: [−1, 69] at a
    step of 0.27 reads −1 as −1.10, and a cut at half a step above −1 gave −0.82 to most of a TCN's outputs."""
    op_type = node.op_type
    if op_type == "Elu":
        alpha = attribute(node, "alpha", 1.0)
        if not (alpha > 0 and step > 0):
            return None
        end = max(round(-alpha / step), round(min(out_lo, 0.0) / step)) * step + step / 2  # rounds as −α does below
        return (math.log(end / alpha + 1), math.inf) if -alpha < end < 0 else None
    inverse = {"Sigmoid": lambda y: math.log(y / (1 - y)), "Tanh": math.atanh}.get(op_type)
    low, high = (0.0, 1.0) if op_type == "Sigmoid" else (-1.0, 1.0)
    if inverse is None or not step > 0:
        return None
    # a grid holds 0, and may end past the op's bound: an asymmetric 8-bit [-1, 1] holds 0 at -1.0039, which
    # put the low end's half step at -1, and Tanh never there: pyfrspell's bridge Gemm read as clipped
    ends = max(min(out_lo, 0.0), low) + step / 2, min(max(out_hi, 0.0), high) - step / 2
    first = inverse(ends[0]) if low < ends[0] < high else -math.inf
    last = inverse(ends[1]) if low < ends[1] < high else math.inf
    return (first, last) if first < last else None


SILU_DIP = -0.2784645  # x · Sigmoid(x) is smallest at x = −1.2785: the dip a grid must see below 0


def silu_saturates_below(out_lo: float, step: float) -> float | None:
    """The x below which x · Sigmoid(x) (a SiLU written as a Mul of x and its Sigmoid) reads 0 through a grid of
    `step` whose low end is `out_lo` (a grid holds 0), or None: its dip shrinks toward 0 below −1.28, and where it
    is within half a step (or the grid has no level below 0) every lower x reads the same."""
    if not step > 0:
        return None
    half = step / 2 if out_lo <= -step / 2 else math.inf
    if half > -SILU_DIP:
        return 0.0
    lo, hi = -100.0, -1.2785  # x · Sigmoid(x) rises toward 0 below its dip: bisect for −half
    if lo / (1 + math.exp(-lo)) <= -half:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid / (1 + math.exp(-mid)) > -half else (lo, mid)
    return lo


# Resize modes whose every output value is an input value or a convex combination of input values (antialiased
# or not): the output lies within the input's range, and a grid of its own only adds a requantization (a nearest
# downscale: 33.6 dB on its own grid, 35.5 on its input's). Cubic weights go negative and overshoot.
INTERPOLATING_MODES = frozenset({b"nearest", b"linear", b"bilinear"})


def rule_for(node: onnx.NodeProto) -> OpRule:
    if node.domain not in ("", "ai.onnx"):
        return NO_RULE
    if node.op_type in ("Resize", "Upsample"):
        mode = attribute(node, "mode", b"nearest")
        return _SHARED if mode in INTERPOLATING_MODES else NO_RULE
    return OP_RULES.get(node.op_type, NO_RULE)


def weight_axes(node: onnx.NodeProto, index: int, shape: tuple[int, ...], target: str | None = None) -> tuple[int, ...]:
    """weight_axis first, then any other axis a per-channel encoding given for the weight may run along: axis 1 of
    a grouped ConvTranspose whose groups are single rows, where qtool takes axis 0 (AIMET, QNN and onnxruntime
    quantize every ConvTranspose along axis 1; qtool's own --target qnn-htp QDQ model was refused by convert)."""
    chosen = weight_axis(node, index, shape, target)
    if node.op_type == "ConvTranspose" and target != "qnn-htp" and len(shape) >= 2:
        return (chosen, *[a for a in (1, 0) if a != chosen and (a == 1 or shape[0] == attribute(node, "group", 1) > 1)])
    return (chosen,)


def weight_axis(node: onnx.NodeProto, index: int, shape: tuple[int, ...], target: str | None = None) -> int:
    if target == "qnn-htp" and node.op_type == "ConvTranspose":  # onnxruntime's QNN EP sends any other axis of a
        return 1  # ConvTranspose weight to the CPU EP (conv_op_builder.cc): HTP's TransposeConv2d takes C_out/group only
    axis = rule_for(node).weights[index]
    return axis if isinstance(axis, int) else axis(node, tuple(shape))

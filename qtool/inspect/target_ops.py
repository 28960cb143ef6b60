"""Which ONNX ops each `--target` can run quantized on its accelerator, as data (STYLE.md Do 3).

An op outside its target's set still runs, but in float on the host CPU, which splits the graph
and adds a dequantize/quantize pair at each border. The sets are deliberately conservative
summaries of the vendors' tables; attribute limits (kernel sizes, strides) are not modelled:
- tidl: edgeai-tidl-tools `docs/supported_ops_rts_versions.md` (TIDL-RT layer mapping; ReLU,
  PReLU, LeakyReLU, Sigmoid, Tanh, HardSigmoid, ELU and GELU merge into TIDL_BatchNormLayer).
- vitis-dpu: Vitis AI UG1414 "Currently Supported Operators" (conv, deconv, depthwise, pooling,
  fully connected, eltwise add/mul, concat, upsample, ReLU/ReLU6/LeakyReLU, hard-sigmoid/swish);
  Softmax runs on the CPU (or the optional Softmax IP).
- qnn-htp: the QNN HTP backend's op set (most of ONNX's numeric ops; opset 23's RMSNormalization is its RmsNorm).
- ort-cpu: ops onnxruntime's QDQ transformers fuse into integer kernels (QLinearConv, QGemm,
  MatMulInteger, QLinearAdd/Mul, QLinearConcat, QLinearSigmoid/Softmax, ...) or that simply move
  quantized data (Reshape, Transpose, MaxPool, ...); the rest runs in float between DQ and Q.

Ops in IGNORED_OPS carry no data to quantize (shape arithmetic, Q/DQ themselves) and are never
reported.
"""

from __future__ import annotations

from typing import Any

from qtool.config import configs_dir, load_yaml
from qtool.errors import QtoolError


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


_MOVEMENT = _ops("Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Identity Dropout")

TARGET_OPS: dict[str, frozenset[str]] = {
    "tidl": _MOVEMENT
    | _ops(
        """Conv ConvTranspose BatchNormalization Relu PRelu LeakyRelu Sigmoid Tanh HardSigmoid HardSwish Elu
        Gelu Erf Clip MaxPool AveragePool GlobalAveragePool Add Mul Gemm MatMul Softmax ArgMax Resize Upsample
        DepthToSpace Pad ScatterND Gather LayerNormalization InstanceNormalization ReduceMean Sub Pow Sqrt
        Div"""
    ),
    "vitis-dpu": _MOVEMENT
    | _ops(
        """Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Clip HardSigmoid HardSwish MaxPool
        AveragePool GlobalAveragePool Add Mul Gemm MatMul Resize Upsample DepthToSpace SpaceToDepth Pad
        ReduceMax ReduceMean"""
    ),
    "qnn-htp": _MOVEMENT
    | _ops(
        """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Relu Clip PRelu LeakyRelu Sigmoid Tanh HardSigmoid
        HardSwish Elu Gelu Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool
        BatchNormalization InstanceNormalization LayerNormalization Gather GatherND Pad Resize DepthToSpace
        SpaceToDepth ReduceMean ReduceMax ReduceMin ReduceSum Max Min Abs Neg Exp Log Sqrt Pow Erf Where Cast
        Expand Tile ArgMax ArgMin TopK LRN Floor Ceil Reciprocal Softplus Sin Cos ScatterND CumSum GridSample
        Equal Greater Less Not And Or RMSNormalization"""
    ),
    "ort-cpu": _MOVEMENT
    | _ops(
        """Conv ConvTranspose Gemm MatMul Add Mul Relu Clip LeakyRelu Sigmoid Softmax MaxPool AveragePool
        GlobalAveragePool Resize Gather GatherElements Expand Pad Where ArgMax InstanceNormalization
        DepthToSpace SpaceToDepth Tile ReduceMin ReduceMax"""
    ),
}

TARGETS: tuple[str, ...] = tuple(sorted(TARGET_OPS))

# Accelerators move an unsupported op to the host (a warning); onnxruntime just runs it in float.
FALLBACK_SEVERITY = {"tidl": "warning", "vitis-dpu": "warning", "qnn-htp": "warning", "ort-cpu": "info"}

IGNORED_OPS = frozenset(
    {"Constant", "ConstantOfShape", "Shape", "Size", "Range", "QuantizeLinear", "DequantizeLinear", "Identity"}
)


def preset(target: str | None) -> dict[str, Any]:
    """The options `quantize --target` would use (configs/<target>.yaml), or {} without one.

    Lints read them to judge a finding's severity (per-channel weights, symmetric activations,
    percentile calibration, algorithms); a missing or unreadable preset only makes them stricter.
    """
    if target is None:
        return {}
    try:
        data = load_yaml(configs_dir() / f"{target}.yaml")
    except QtoolError:
        return {}
    return data if isinstance(data, dict) else {}

"""The convert pass registry: `convert_passes(options)` lists the passes in the order they run.

Adding a pass is one file in this folder and one line here.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnx_ir.passes import common

from qtool.graph.passes.div_to_mul import DivToMulPass
from qtool.graph.passes.einsum_to_matmul import EinsumToMatMulPass
from qtool.graph.passes.fix_input_dims import FixInputDimsPass
from qtool.graph.passes.fold_batchnorm import FoldBatchNormPass
from qtool.graph.passes.fold_batchnorm_forward import FoldBatchNormForwardPass
from qtool.graph.passes.fold_constants import FoldConstantsPass
from qtool.graph.passes.fold_conv_affine import FoldConvAffinePass
from qtool.graph.passes.fold_dense_batchnorm import FoldDenseBatchNormPass
from qtool.graph.passes.fold_dequantized_constants import FoldDequantizedConstantsPass
from qtool.graph.passes.fuse_conv_add import FuseConvAddPass
from qtool.graph.passes.fuse_hardswish import FuseHardSwishPass
from qtool.graph.passes.fuse_layernorm import FuseLayerNormPass
from qtool.graph.passes.fuse_matmul_add import FuseMatMulAddPass
from qtool.graph.passes.fuse_pad_into_conv import FusePadIntoConvPass
from qtool.graph.passes.fuse_sigmoid import FuseSigmoidPass
from qtool.graph.passes.fuse_softmax import FuseSoftmaxPass
from qtool.graph.passes.name_missing import NameMissingNodesPass
from qtool.graph.passes.pin_inputs import PinInputsPass, UnsetPinnedDefaultsPass
from qtool.graph.passes.remove_add_zero import RemoveAddZeroPass
from qtool.graph.passes.remove_dropout import RemoveDropoutPass
from qtool.graph.passes.remove_identity import RemoveIdentityPass
from qtool.graph.passes.sink_layout import SinkLayoutPass
from qtool.graph.passes.spell_out_defaults import SpellOutDefaultsPass
from qtool.graph.passes.split_affine_over_concat import SplitAffineOverConcatPass
from qtool.graph.passes.split_at_source import SplitAtSourcePass
from qtool.graph.passes.untie_biases import UntieBiasesPass
from qtool.graph.passes.weighted_sum_to_matmul import WeightedSumToMatMulPass

# onnxscript folds a node whose inputs are small and checks its output's size only once it has computed it: a
# 600-byte Expand to [20000, 20000, 10] took 23 GB. A node whose inferred output is past its limit and larger than
# its distinct constant inputs (a big weight's Transpose makes no more than it reads, and folds) is not run.
FOLD_OUTPUT_LIMIT = 1 << 22
FOLD_INPUT_LIMIT = 1 << 22  # onnxscript folds no node reading a constant larger than this


def _too_large(node: ir.Node) -> bool:
    read = sum(x.const_value.size for x in {x for x in node.inputs if x is not None and x.const_value is not None})
    for out in node.outputs:
        dims = list(out.shape) if out.shape is not None else []
        if dims and all(isinstance(d, int) for d in dims) and math.prod(dims) > max(FOLD_OUTPUT_LIMIT, read):  # type: ignore[arg-type]
            return True
    return False


def _should_fold(node: ir.Node) -> bool | None:
    """onnxscript keeps ConstantOfShape unfolded (model size); a small one feeding shape arithmetic
    (TF-style "same" padding computes Pad's pads so) must fold, or the Pad stays dynamic. A Transpose of
    an embedding table a Gather reads too (a tied lm_head) stays: folded, the file would hold the table
    twice, and quantized twice (the matmulnbits export shares one copy between the Gather and the head)."""
    if _too_large(node):
        return False
    if node.op_type == "Transpose" and node.inputs and node.inputs[0] is not None:
        table = node.inputs[0]
        tied = table.is_initializer() and any(u.node.op_type == "Gather" and u.idx == 0 for u in table.uses())
        return False if tied else None
    if node.op_type != "ConstantOfShape":
        return None
    shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
    if shape is None:
        return False
    size = int(abs(shape.numpy()).prod())
    return size <= 64 or (size <= FOLD_INPUT_LIMIT and _read_only_with_constants(node.outputs[0]))


def _read_only_with_constants(zeros: ir.Value) -> bool:
    """A ConstantOfShape whose readers fold too: swift-f0 builds each filterbank at run time, ScatterElements
    writing its taps into zeros, and the MatMul read it as an activation (the taps a float weight no slot
    quantizes); folded, it is the MatMul's weight."""
    uses = list(zeros.uses())
    readers_fold = all(x is None or x is zeros or x.const_value is not None for u in uses for x in u.node.inputs)
    return bool(uses) and readers_fold and not zeros.is_graph_output()


def convert_passes(
    input_dims: dict[str, tuple[int, ...]],
    input_values: dict[str, tuple[float, ...]] | None = None,
    keep: frozenset[str] = frozenset(),
) -> list[ir.passes.PassBase]:
    """`keep`: tensor names an overrides file (or imported encodings) gives; the rewrites that would take a name
    away leave such a tensor as it is."""
    return [
        SpellOutDefaultsPass(),  # before any shape inference: onnx's STFT rule misreads a missing `onesided`
        UnsetPinnedDefaultsPass(frozenset(input_values or {})),  # a default --input_value replaces
        common.RemoveInitializersFromInputsPass(),  # old exports list weights as inputs; they are constants
        NameMissingNodesPass(),  # before any rewrite, so names follow the source graph's order
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        FixInputDimsPass(input_dims, {name: len(values) for name, values in (input_values or {}).items()}),
        PinInputsPass(input_values or {}),  # before folding: an If on a pinned input folds to its branch
        common.ShapeInferencePass(),
        FoldConstantsPass(
            shape_inference=True, input_size_limit=FOLD_INPUT_LIMIT, output_size_limit=FOLD_OUTPUT_LIMIT, should_fold=_should_fold
        ),
        FoldDequantizedConstantsPass(),  # what folding left reading a constant it computed
        common.RemoveUnusedNodesPass(),  # folding bypasses paddle2onnx's Identities and leaves them as second readers
        FoldBatchNormPass(),
        FoldBatchNormForwardPass(keep),  # what no Conv before took: a pre-activation BatchNorm -> unpadded Conv
        FuseLayerNormPass(),
        FusePadIntoConvPass(),
        SplitAffineOverConcatPass(),  # a BatchNorm after a Concat scales each branch on its own grid
        SinkLayoutPass(keep),  # tf2onnx's NHWC BatchNorm after an NCHW Conv, its Conv1D's bias after a Squeeze
        FuseConvAddPass(),  # paddle2onnx's bias Add first: Conv -> Add(bias) -> Mul(s) -> Add(t) is then one affine
        FoldConvAffinePass(),
        FuseConvAddPass(),  # after the affine fold: a Conv · s + t is one rule, its + t is not a bias
        EinsumToMatMulPass(),  # before the bias fuse: an einsum's projection can take its bias Add
        WeightedSumToMatMulPass(keep),  # attention pooling's Mul -> ReduceSum: no grid for the product
        FuseMatMulAddPass(),
        FoldDenseBatchNormPass(),  # Gemm -> Relu -> Mul -> Add -> Gemm (Keras Dense, ReLU, BatchNorm)
        SplitAtSourcePass(keep),  # after the bias fusions: a Conv split by its output channels takes its bias along
        UntieBiasesPass(),  # after the fusions that make biases: each layer's own int32 grid
        FuseHardSwishPass(),
        FuseSigmoidPass(keep),  # 1 / (1 + Exp(y)), as paddle2onnx writes DBNet's binarization
        FuseSoftmaxPass(keep),  # Exp(x - max) / ReduceSum(...), as tf2onnx and jax2tf write a hand-made softmax
        DivToMulPass(),
        RemoveDropoutPass(),
        RemoveAddZeroPass(keep),  # dynamo's scores + zeros for an attention without a mask
        RemoveIdentityPass(),  # keeps the Identity an If branch returns an outer tensor through (its name)
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        NameMissingNodesPass(),
        common.TopologicalSortPass(),
        common.ShapeInferencePass(),
    ]

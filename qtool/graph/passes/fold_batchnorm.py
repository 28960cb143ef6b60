"""Fold BatchNormalization into the Conv/ConvTranspose/Gemm before it.

W' = W·γ/√(σ²+ε);  B' = (B − μ)·γ/√(σ²+ε) + β   (ONNX BatchNormalization, ε default 1e-5).
The rewrite rules are onnxscript's (`_fuse_batchnorm.py`); this pass only names and logs them.
The fused node keeps the BatchNormalization's output name, which overrides refer to.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

logger = logging.getLogger(__name__)


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold BN whose parameters are constants and whose producer has no other users."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(node.op_type == "BatchNormalization" for node in model.graph)
        rules = [fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_conv_transpose_rule, fuse_batchnorm_into_gemm_rule]
        RewritePass(rules)(model)
        after = sum(node.op_type == "BatchNormalization" for node in model.graph)
        logger.info("fold_batchnorm: folded %d of %d BatchNormalization nodes", before - after, before)
        return ir.passes.PassResult(model, modified=after != before)

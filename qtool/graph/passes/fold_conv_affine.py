"""Fold a constant scale and shift next to a Conv into its weights and bias: Conv(x)·s + t, and
Conv(x·s + t) when the Conv has no padding (a pointwise conv after an activation's affine).

PP-LCNetV3 ("learnable affine blocks"; PP-OCRv4 det and rec have 28 each) exports them as a scalar
Mul and Add after the Conv. Left apart, each is an op between two quantizers: two extra
requantizations per block (qairt-converter squashes them into the Conv too). After: W' = W·s,
B' = B·s + t; before: W' = W·s, B' = B + t·ΣW.
The rewrite rule is onnxscript's (`_fuse_conv_affine.py`); the Conv keeps its name.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.pattern import RewriteRuleSet
from onnxscript.rewriter.rules.common import affine_conv_fusion_rule, conv_affine_fusion_rule

logger = logging.getLogger(__name__)


def _only_user(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [use.node for use in value.uses()]
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _conv_names(model: ir.Model) -> dict[str, str]:
    """Conv name by the output a folded Conv will write: its own, or its Conv -> Mul -> Add chain's."""
    found = {}
    for node in model.graph:
        if node.op_type != "Conv" or not node.name:
            continue
        found[node.outputs[0].name] = node.name
        mul = _only_user(node.outputs[0], "Mul")
        add = _only_user(mul.outputs[0], "Add") if mul is not None else None
        if add is not None:
            found[add.outputs[0].name] = node.name
    return found


class FoldConvAffinePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        heads = _conv_names(model)
        before = sum(1 for _ in model.graph)
        # Paddle writes the scale first (Mul(s, conv)): match either operand order
        RewritePass(RewriteRuleSet([conv_affine_fusion_rule, affine_conv_fusion_rule], commute=True))(model)
        for node in model.graph:
            if node.op_type == "Conv" and node.outputs[0].name in heads:
                node.name = heads[node.outputs[0].name]
        folded = (before - sum(1 for _ in model.graph)) // 2
        logger.info("fold_conv_affine: %d Mul/Add pairs folded into their Conv", folded)
        return ir.passes.PassResult(model, modified=folded > 0)

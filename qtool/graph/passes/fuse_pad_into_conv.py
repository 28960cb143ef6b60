"""Fold a constant-zero Pad into the Conv after it (the Conv's own `pads`).

TF-style "same" padding exports as Pad -> Conv. Left apart, the Pad is a float op between two
quantizers on every backend that fuses Conv alone (onnxruntime keeps Q/DQ around it: EfficientNet-
Lite has 17). The rewrite rule is onnxscript's (`_fuse_pad_into_conv.py`); the Conv keeps its name.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules.common import fuse_pad_into_conv_rule

logger = logging.getLogger(__name__)


class FusePadIntoConvPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        convs = {n.outputs[0].name: n.name for n in model.graph if n.op_type == "Conv"}
        before = sum(n.op_type == "Pad" for n in model.graph)
        RewritePass([fuse_pad_into_conv_rule])(model)
        for node in model.graph:
            if node.op_type == "Conv" and node.outputs[0].name in convs:
                node.name = convs[node.outputs[0].name]
        after = sum(n.op_type == "Pad" for n in model.graph)
        logger.info("fuse_pad_into_conv: %d Pad folded", before - after)
        return ir.passes.PassResult(model, modified=after != before)

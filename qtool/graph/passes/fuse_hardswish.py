"""Fuse a decomposed hard-swish, x·Clip(x + 3, 0, 6)/6 (or x·HardSigmoid(x)), into HardSwish.

Exporters without the op (Paddle's p2o: PP-OCRv4 det has 24, rec 28) write four ops, each
quantized on its own: three extra requantizations per activation, and calibration probes for each.
QNN, TIDL and the DPU run HardSwish as one op. HardSwish is opset 14, which `convert` upgrades to
when the model has a Clip or HardSigmoid. The rewrite rules are onnxscript's (`_fuse_hardswish.py`);
they run before Div -> Mul, which they match on.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules.common import fuse_hardswish_rules

logger = logging.getLogger(__name__)

HARDSWISH_OPSET = 14


class FuseHardSwishPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.opset_imports.get("", 0) < HARDSWISH_OPSET:
            return ir.passes.PassResult(model, modified=False)
        before = sum(n.op_type == "HardSwish" for n in model.graph)
        RewritePass(fuse_hardswish_rules())(model)
        fused = sum(n.op_type == "HardSwish" for n in model.graph) - before
        logger.info("fuse_hardswish: %d hard-swish activations fused", fused)
        return ir.passes.PassResult(model, modified=fused > 0)

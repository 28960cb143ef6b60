"""A bias constant several layers share gets a copy per layer (the weights stay shared).

An int32 bias sits on its layer's accumulator grid, input scale x weight scale, which onnxruntime's
QLinearConv / QGemm and QNN read it on whatever its own scale says. Layers that share a bias (weight-tied
transformers: ALBERT, chython-rxnmap's 8 tied layers) read inputs of different scales, and one int32 grid is
right for one of them only: rxnmap's other 52 of 61 uses were added at the wrong scale (22.9 dB in Q/DQ
arithmetic, 17.8 as onnxruntime's fused kernels run it). A copy each gets each its own grid; one weight grid
serves every layer that shares a weight.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import onnx_ir as ir

from qtool.graph.passes.constants import new_constant

if TYPE_CHECKING:
    from onnx_ir._core import Usage

logger = logging.getLogger(__name__)

BIAS_INPUTS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def _as_bias(use: Usage) -> bool:
    """`use` reads its value as a layer's bias: a Conv / Gemm's input 2, or the constant an Add adds to a
    MatMul's output (a Linear as exporters split it)."""
    node = use.node
    if node.domain != "":
        return False
    if BIAS_INPUTS.get(node.op_type) == use.idx:
        return True
    other = node.inputs[1 - use.idx] if node.op_type == "Add" and len(node.inputs) == 2 and use.idx < 2 else None
    producer = other.producer() if other is not None else None
    return producer is not None and producer.op_type == "MatMul"


class UntieBiasesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        copies = 0
        for value in list(model.graph.initializers.values()):
            uses = [u for u in value.uses() if _as_bias(u)]
            if len(uses) < 2 or value.const_value is None:
                continue
            for k, use in enumerate(uses[1:], start=1):
                copy = new_constant(model.graph, f"{value.name}_{k}", value.const_value.numpy().copy())
                use.node.replace_input_with(use.idx, copy)
                copies += 1
        logger.info("untie_biases: %d copies of shared biases", copies)
        return ir.passes.PassResult(model, modified=bool(copies))

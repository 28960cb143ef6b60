"""Fold BatchNormalization into the Conv/ConvTranspose/Gemm before it.

W' = W·γ/√(σ²+ε);  B' = (B − μ)·γ/√(σ²+ε) + β   (ONNX BatchNormalization, ε default 1e-5).
The rewrite rules are onnxscript's (`_fuse_batchnorm.py`); this pass only names and logs them.
The fused node keeps the BatchNormalization's output name, which overrides refer to.

Cross-layer equalization's high-bias absorption needs each folded BN's β and γ (QNN seed: "CLE
requires batchnorms ... beta/gamma"), so the pass records them per output tensor in the model's
metadata (`qtool.batchnorm`: {tensor: {"gamma": [...], "beta": [...]}}).

A BatchNorm behind a Squeeze of spatial axes (paddle's Conv2D → squeeze(2) → BatchNorm1D: PP-OCRv6's tiny
recogniser) is moved before the Squeeze first, where it reads the Conv's channels on the same axis 1.
A constant per-channel Add or Mul between the Conv or ConvTranspose and the BatchNorm (paddle2onnx's bias Add: its
DB heads write ConvTranspose -> Add -> BatchNorm) is taken into the Conv first (fuse_conv_add.fuse), so the
BatchNorm follows it directly.
"""

from __future__ import annotations

import json
import logging

import onnx_ir as ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

from qtool.graph.model import METADATA_BATCHNORM
from qtool.graph.passes.fuse_conv_add import fuse
from qtool.io.files import load_json

logger = logging.getLogger(__name__)


def _stats(node: ir.Node) -> dict[str, list[float]] | None:
    gamma, beta = (node.inputs[i].const_value if node.inputs[i] is not None else None for i in (1, 2))
    if gamma is None or beta is None:
        return None
    return {"gamma": gamma.numpy().astype(float).tolist(), "beta": beta.numpy().astype(float).tolist()}


def _sink_squeeze(bn: ir.Node, graph: ir.Graph) -> bool:
    """Conv → Squeeze(axes ≥ 2) → BN  becomes  Conv → BN → Squeeze; the Squeeze keeps BN's output name."""
    squeeze = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    if squeeze is None or squeeze.op_type != "Squeeze" or len(squeeze.inputs) < 2 or len(bn.outputs) != 1:
        return False
    conv = squeeze.inputs[0].producer()
    axes = squeeze.inputs[1].const_value if squeeze.inputs[1] is not None else None
    rank = squeeze.inputs[0].shape.rank() if squeeze.inputs[0].shape is not None else None
    if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or axes is None or rank is None:
        return False
    alone = len(squeeze.inputs[0].uses()) == 1 and len(squeeze.outputs[0].uses()) == 1  # the BN reads the Squeeze alone
    if not alone or squeeze.outputs[0].is_graph_output() or any(int(a) % rank < 2 for a in axes.numpy().ravel()):
        return False
    source, squeezed, out = squeeze.inputs[0], squeeze.outputs[0], bn.outputs[0]
    ir.convenience.replace_all_uses_with(out, squeezed, replace_graph_outputs=True)
    bn.replace_input_with(0, source)
    squeeze.replace_input_with(0, out)
    out.name, squeezed.name = f"{out.name}__bn", out.name
    out.shape, squeezed.shape = source.shape, out.shape
    graph.remove(bn)
    graph.insert_before(squeeze, bn)
    return True


def _absorb_affine(bn: ir.Node, graph: ir.Graph) -> bool:
    """Conv -> Add(t) [-> Mul(s) ...] -> BN  becomes  Conv(bias t, ...) -> BN, the Conv writing the last op's output."""
    layer = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    while layer is not None and layer.op_type in ("Add", "Sub", "Mul"):  # back through the ops to the layer
        layer = next((x.producer() for x in layer.inputs if x is not None and x.const_value is None), None)
    absorbed = False
    while layer is not None and layer.op_type in ("Conv", "ConvTranspose") and (layer := fuse(graph, layer)) is not None:
        absorbed = True  # fuse takes only a per-channel constant op; the BatchNorm, reached, ends it
    return absorbed


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold BN whose parameters are constants and whose producer has no other users."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        bn_nodes = [node for node in model.graph if node.op_type == "BatchNormalization"]
        sunk = sum(_sink_squeeze(node, model.graph) for node in bn_nodes)
        absorbed = sum(_absorb_affine(node, model.graph) for node in bn_nodes)
        bns = {node.outputs[0].name: _stats(node) for node in bn_nodes}
        producers = {
            n.outputs[0].name: n.inputs[0].producer().name for n in bn_nodes if n.inputs[0].producer() is not None
        }
        rules = [fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_conv_transpose_rule, fuse_batchnorm_into_gemm_rule]
        RewritePass(rules)(model)
        left = {node.outputs[0].name for node in model.graph if node.op_type == "BatchNormalization"}
        for node in model.graph:  # the fused node keeps the Conv's name, which reports show
            original = producers.get(node.outputs[0].name) if node.outputs else None
            if original and node.op_type != "BatchNormalization":
                node.name = original
        folded = {name: stats for name, stats in sorted(bns.items()) if name not in left and stats is not None}
        if folded:
            recorded = load_json(model.metadata_props.get(METADATA_BATCHNORM, "{}"), f"metadata {METADATA_BATCHNORM}")
            recorded = recorded if isinstance(recorded, dict) else {}
            model.metadata_props[METADATA_BATCHNORM] = json.dumps({**recorded, **folded}, sort_keys=True)
        logger.info(
            "fold_batchnorm: folded %d of %d BatchNormalization nodes (%d behind a Squeeze, %d behind a bias or scale)",
            len(bns) - len(left),
            len(bns),
            sunk,
            absorbed,
        )
        return ir.passes.PassResult(model, modified=len(left) != len(bns) or sunk + absorbed > 0)  # a BN moved: a change

"""Spell out STFT's `onesided` where a model leaves it to its default, 1 (the graph is unchanged).

onnx's shape inference (1.23.2, fixed upstream by onnx#7731) reads a missing `onesided` as 0 and gives
an STFT frame_length bins instead of frame_length / 2 + 1. The wrong shape reached the converted
model's value_info, and onnxruntime then refused the MatMul that applies the mel filters (onnx-asr
0.12.0's whisper, kaldi, nemo and gigaam front ends: convert exit 0, a model nothing could load).
"""

from __future__ import annotations

import onnx_ir as ir


class SpellOutDefaultsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        spelled = 0
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type == "STFT" and node.domain in ("", "ai.onnx") and "onesided" not in node.attributes:
                node.attributes["onesided"] = ir.AttrInt64("onesided", 1)
                spelled += 1
        return ir.passes.PassResult(model, modified=bool(spelled))

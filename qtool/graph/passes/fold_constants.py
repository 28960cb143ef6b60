"""onnxscript's constant folding, a node whose op rule fails left as it is.

onnxscript's rule for SplitToSequence reads a scalar `split` that is not a constant as a 1-D one and raises
('Error during constant folding for node ...', an AttributeError inside): convert and quantize stopped with
'internal error' on a model onnxruntime runs. Such a node is not folded; the rest of the graph is.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnxscript.optimizer import _constant_folding

logger = logging.getLogger(__name__)


class FoldConstantsPass(_constant_folding.FoldConstantsPass):
    def process_node(self, node: ir.Node, is_function: bool) -> _constant_folding.Replacement | None:
        try:
            return super().process_node(node, is_function=is_function)
        except RuntimeError as e:  # raised from the rule's own exception; anything else is not the rule's
            if not str(e).startswith("Error during constant folding"):
                raise
            logger.info("fold_constants: %s (%s); left unfolded", e, e.__cause__)
            return None

"""Give unnamed or duplicate-named nodes a deterministic name: `<op_type>_<index>`.

Tensor names are never touched (overrides and reports refer to them); only node names,
which the seeds' reports and qairt's layer names need, are filled in.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

logger = logging.getLogger(__name__)


class NameMissingNodesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        taken = {node.name for node in model.graph if node.name}
        seen: set[str] = set()
        renamed = 0
        for index, node in enumerate(model.graph):
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            candidate = f"{node.op_type}_{index}"
            while candidate in taken or candidate in seen:
                candidate += "_"
            node.name = candidate
            seen.add(candidate)
            renamed += 1
        logger.info("name_missing: named %d nodes", renamed)
        return ir.passes.PassResult(model, modified=bool(renamed))

"""Fix the graph inputs' shapes: `--input_dim NAME DIMS` first, then a dynamic batch -> 1.

qairt requires batch 1 ("The tool requires the batch dimension ... to be set to 1"). A dynamic
dim still left is an error naming the input, the dim and the flag that fixes it.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from qtool.errors import ModelError, UsageError, did_you_mean

logger = logging.getLogger(__name__)


class FixInputDimsPass(ir.passes.InPlacePass):
    def __init__(self, input_dims: dict[str, tuple[int, ...]]):
        super().__init__()
        self.input_dims = input_dims

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
        for name in self.input_dims:
            if name not in inputs:
                raise UsageError(
                    f"--input_dim names {name!r}, which is not a graph input", hint=did_you_mean(name, inputs)
                )
        modified = False
        for value in inputs.values():
            dims = self._fixed_dims(value)
            if value.shape is None or tuple(value.shape) != dims:
                value.shape = ir.Shape(dims)
                modified = True
        return ir.passes.PassResult(model, modified=modified)

    def _fixed_dims(self, value: ir.Value) -> tuple[int, ...]:
        if value.name in self.input_dims:
            wanted = self.input_dims[value.name]
            if value.shape is not None and len(value.shape) != len(wanted):
                raise UsageError(
                    f"--input_dim {value.name} gives {len(wanted)} dims, the input has rank {len(value.shape)}"
                )
            return wanted
        if value.shape is None:
            raise ModelError(f"input {value.name!r} has no shape", hint=f"give it with --input_dim {value.name} DIMS")
        dims = list(value.shape)
        if dims and not isinstance(dims[0], int):
            logger.info("fix_input_dims: %s batch %s -> 1", value.name, dims[0])
            dims[0] = 1
        for i, d in enumerate(dims):
            if not isinstance(d, int):
                raise ModelError(
                    f"input {value.name!r} dim {i} ({d}) is dynamic",
                    hint=f"set it with --input_dim {value.name} "
                    + ",".join(str(x) if isinstance(x, int) else "N" for x in dims),
                )
        return tuple(dims)

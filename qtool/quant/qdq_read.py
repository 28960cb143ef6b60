"""Read a QDQ model back: its Encodings, and the float model with every Q/DQ removed
(qairt's DLC_STRIP_QUANT idea). Inverse of `qdq.write_qdq`, and general enough for QDQ models
from other quantizers (onnxruntime, AIMET, Quark) that use the same node pattern.

A weight is `DequantizeLinear(initializer)`: it becomes a float initializer named like the
DequantizeLinear output. An activation is `QuantizeLinear(x) -> DequantizeLinear -> y`: the pair is
removed and its encoding keyed by `x` (or by `y` when `y` is a graph output, whose name wins).
A blocked DequantizeLinear (`block_size`) is a per-block weight; its channel axis is the one its
consumer's rule names, and the weights the model's LPBQ metadata lists come back as LPBQ.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from qtool import encoding as enc
from qtool import runtime
from qtool.encoding import Blocks, Encoding
from qtool.errors import DataError, ModelError
from qtool.graph import external_data
from qtool.graph.constant_size import constant_value
from qtool.graph.model import default_opset
from qtool.io.encodings import Encodings
from qtool.io.files import load_json, quoted
from qtool.quant import blocks
from qtool.quant.graph_facts import FLOATING_TYPES
from qtool.quant.qdq import FLOAT_METADATA, LPBQ_METADATA, NARROW_METADATA, sliced
from qtool.quant.qdq_movement import moved_axis, movement_chain
from qtool.quant.rules import SQUASHABLE_PRODUCERS, rule_for, weight_axis

logger = logging.getLogger(__name__)

_NUMERIC = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.UINT8,
                      TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.INT64})  # fmt: skip
_BITS = {
    TensorProto.INT4: (4, True),
    TensorProto.UINT4: (4, False),
    TensorProto.INT8: (8, True),
    TensorProto.UINT8: (8, False),
    TensorProto.INT16: (16, True),
    TensorProto.UINT16: (16, False),
    TensorProto.INT32: (32, True),
}


def _attr_axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _block_size(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "block_size"), 0)


def _channel_axis(readers: list[tuple[onnx.NodeProto, int]], shape: tuple[int, ...]) -> int | None:
    """The per-channel axis the op reading a weight quantizes along (rules.py), if any reads it so."""
    return next((weight_axis(node, index, shape) for node, index in readers if index in rule_for(node).weights), None)


def _blocked(node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray, channel: int | None) -> tuple:
    """(scale, zero point, Blocks) of a blocked DequantizeLinear in the encoding shape."""
    axis = _attr_axis(node) % scale.ndim
    scale, zp = blocks.from_onnx([scale, np.broadcast_to(zp, scale.shape)], axis, channel)
    return scale.ravel(), zp.ravel(), Blocks(_block_size(node), axis, scale.shape)


Constants = dict[str, np.ndarray]  # a Constant node's output -> its value (exporters write scales so)


SMALL_CAST = 1 << 16  # values: a scale or zero point cast, not a weight


def _constant_nodes(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> Constants:
    """Constant nodes' values, and a Cast's of one: PyTorch's export without constant folding casts each
    fake-quantizer's zero point so, and its QAT models were refused ('the zero point ... is not a constant')."""
    found: Constants = {}
    for node in graph.node:
        if (value := constant_value(node)) is not None:
            found[node.output[0]] = value
        elif node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.input and node.output:
            source = inits.get(node.input[0])
            value = external_data.array(source) if source is not None and math.prod(source.dims) <= SMALL_CAST else found.get(node.input[0])
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            if value is not None and value.dtype.kind in "biuf" and to in _NUMERIC:
                found[node.output[0]] = value.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
    return found


def _value(name: str, inits: dict[str, onnx.TensorProto], constants: Constants, what: str) -> np.ndarray:
    if name in inits:
        return external_data.array(inits[name])
    if name in constants:
        return constants[name]
    raise ModelError(f"{what}, {quoted(name)}, is not a constant (an initializer or a Constant node)")


def _checked(node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray, shape: tuple[int, ...] | None) -> None:
    """The DequantizeLinear's parameters as ONNX defines them, and usable: a scale that is finite and positive,
    a zero point of its shape, a per-channel axis within the tensor and a scale per channel, block_size blocks
    covering the blocked axis; `shape` is the quantized tensor's, when known (a weight)."""
    what = f"{node.op_type} {quoted(node.name or node.output[0])}"
    if not (scale.size and np.all(np.isfinite(scale)) and np.all(scale != 0)):  # a negative one mirrors (_mirrored)
        raise ModelError(f"{what}: scale {quoted(node.input[1])} holds no value, or values that are not finite and nonzero")
    if len(node.input) > 2 and node.input[2] and zp.size != scale.size:
        raise ModelError(f"{what}: zero point shape {list(zp.shape)} is not the scale's {list(scale.shape)}")
    if shape is None:
        return
    axis, size = _attr_axis(node), _block_size(node)
    if size > 0 and scale.ndim and -len(shape) <= axis < len(shape) and shape[axis] % size:  # ONNX allows a short last block
        raise ModelError(f"{what}: block_size {size} does not divide the {shape[axis]} values along axis {axis}: qtool reads whole blocks only")
    if scale.size <= 1:
        return
    if not -len(shape) <= axis < len(shape):
        raise ModelError(f"{what}: axis {axis} is outside its {len(shape)}-D tensor")
    dim = shape[axis]
    if size == 0 and (scale.ndim != 1 or scale.size != dim):
        raise ModelError(f"{what}: {scale.size} scales for {dim} channels along axis {axis}")
    blocks_of = [-(-d // size) if k == axis % len(shape) else d for k, d in enumerate(shape)] if size > 0 else None
    if size != 0 and list(scale.shape) != blocks_of:
        raise ModelError(f"{what}: scale shape {list(scale.shape)} is not {size}-blocks of {list(shape)} along axis {axis}")


def _encoding(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], int_type: int, channel: int | None = None,
    constants: Constants | None = None, shape: tuple[int, ...] | None = None,
) -> Encoding:
    if int_type not in _BITS:
        raise ModelError(f"{node.op_type} {node.name!r} uses an unsupported type {TensorProto.DataType.Name(int_type)}")
    bitwidth, signed = _BITS[int_type]
    constants = constants or {}
    scale = _value(node.input[1], inits, constants, f"the scale of {node.op_type} {quoted(node.name)}").astype(np.float64)
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zp = (_value(zp_name, inits, constants, f"the zero point of {node.op_type} {quoted(node.name)}").astype(np.int64)
          if zp_name else np.zeros(scale.shape, np.int64))  # fmt: skip
    given = inits[zp_name].data_type if zp_name in inits else onnx.helper.np_dtype_to_tensor_dtype(constants[zp_name].dtype) if zp_name else int_type
    if given != int_type:  # onnxruntime refuses the model; export wrote one and inspect read a grid it does not have
        raise ModelError(f"{node.op_type} {quoted(node.name or node.output[0])}: zero point {quoted(zp_name)} is {_type_name(given)}, "
                         f"its integers {_type_name(int_type)}: ONNX takes both of one type")  # fmt: skip
    _checked(node, scale, zp, shape)
    scale, zp = np.abs(scale), np.where(scale < 0, sum(_range(int_type)) - zp, zp)  # the same values (_mirrored)
    ends = np.abs(np.stack([-(2 ** (bitwidth - 1)) * signed - zp, 2 ** (bitwidth - signed) - 1 - zp]) * scale)
    if ends.max() > float(np.finfo(np.float32).max):  # dequantized to inf: stripped and fp16 models of NaN, exit 0
        raise ModelError(f"{node.op_type} {quoted(node.name or node.output[0])}: scale {quoted(node.input[1])} "
                         f"({scale.max():g}) makes a grid past float32's range (3.4e38)")  # fmt: skip
    layout = _blocked(node, scale, zp, channel) if _block_size(node) > 0 and scale.ndim > 0 else None
    scale, zp = (layout[0], layout[1]) if layout else (scale.ravel(), zp.ravel())
    shift = 2 ** (bitwidth - 1) if signed else 0
    symmetric = bool(signed and not zp.any())
    axis = channel if layout else _attr_axis(node) if scale.size > 1 else None
    if axis is not None and shape:
        axis %= len(shape)  # ONNX's axis may count from the end (-1 on a [C_out, C_in] weight)
    e = enc.from_scale_offset(scale, -(zp + shift), bitwidth, symmetric=symmetric, axis=axis)
    return dataclasses.replace(e, blocks=layout[2]) if layout else e


def _type_name(data_type: int) -> str:
    return TensorProto.DataType.Name(data_type).lower() if data_type in TensorProto.DataType.values() else str(data_type)


def _range(int_type: int) -> tuple[int, int]:
    bitwidth, signed = _BITS[int_type]
    return (-(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1) if signed else (0, 2**bitwidth - 1)


def _mirrored(node: onnx.NodeProto, ints: np.ndarray, scale: np.ndarray, int_type: int) -> np.ndarray:
    """The stored integers where a negative scale mirrors the grid: onnxruntime's 4-bit block quantizer signs each
    block's scale so its largest magnitude lands on -8 (refused as 'not finite and positive'). s·(q − z) is |s|·(q' −
    z') with q' = lo + hi − q and z' = lo + hi − z, the encoding `_encoding` reads: the same values, exactly."""
    negative = scale < 0
    if not negative.any():
        return ints
    if scale.size > 1:  # per channel along the axis, or per block of it
        axis = _attr_axis(node) % ints.ndim
        size = _block_size(node)
        negative = (np.repeat(negative, size, axis=axis).take(range(ints.shape[axis]), axis=axis) if size else
                    negative.reshape([-1 if k == axis else 1 for k in range(ints.ndim)]))  # fmt: skip
    return np.where(negative, sum(_range(int_type)) - ints.astype(np.int64), ints)


def _stored_grid(e: Encoding, int_type: int) -> Encoding:
    """e on the grid the weight is stored on: an asymmetric int8 weight (onnxruntime's WeightSymmetric=False)
    has an unsigned encoding (zero point + 128), and its signed integers dequantized on it were 128 steps off."""
    bitwidth, signed = _BITS.get(int_type, (e.bitwidth, False))
    if not signed or e.signed:
        return e
    return dataclasses.replace(e, offset=enc.Values(np.asarray(e.offset) + 2 ** (bitwidth - 1), np.int64))


def _check_block_axis(dq: onnx.NodeProto, readers: list[tuple[onnx.NodeProto, int]], rank: int) -> None:
    """Blocks along another axis than qtool's (a MatMul weight's outputs) were read as qtool's, the grid moved to
    other weights: re-quantized from the export's 1.0.0 encodings (no block axis there), other numbers."""
    wanted = {blocks.block_axis(n, i, rank) for n, i in readers} - {None}
    if _block_size(dq) and wanted and _attr_axis(dq) % rank not in wanted:
        raise ModelError(f"{dq.op_type} {quoted(dq.name or dq.output[0])}: its blocks run along axis {_attr_axis(dq)}; "
                         f"qtool reads this weight's blocks along axis {min(wanted)}, its inputs")  # fmt: skip


def _scale_type(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto], constants: Constants) -> type:
    """DequantizeLinear gives its scale's type: a float16 model's weights dequantized to float32 made a stripped
    model onnxruntime refused (Conv's inputs of two types), written with exit 0."""
    scale = inits.get(dq.input[1])
    half = scale.data_type == TensorProto.FLOAT16 if scale is not None else constants[dq.input[1]].dtype == np.float16
    return np.float16 if half else np.float32


def _pair_encoding(q_node: onnx.NodeProto, dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto], constants: Constants) -> Encoding:
    """The one grid a Q -> DQ pair quantizes to. Q and DQ of different scales or zero points rescale: read as the DQ's
    grid alone, export's stripped and QOperator models computed something else (2.4 on outputs of 4.5), with exit 0."""
    int_type = _q_output_type(q_node, inits, constants)
    e, q = (_encoding(n, inits, int_type, None, constants) for n in (dq, q_node))
    if (q.scale, q.offset, q.axis) != (e.scale, e.offset, e.axis):
        raise ModelError(f"QuantizeLinear {quoted(q_node.name or q_node.output[0])} and DequantizeLinear "
                         f"{quoted(dq.name or dq.output[0])} after it use different scales or zero points: qtool reads a pair as one grid")  # fmt: skip
    return e


def qdq_encodings(model: onnx.ModelProto, where: str | None = None) -> Encodings:
    """The encodings of a QDQ model, without dequantizing its weights (a float copy costs the model's size)."""
    return read_qdq(model, weights=False, where=where)[1]


def read_qdq(
    model: onnx.ModelProto, weights: bool = True, scratch: str | None = None, where: str | None = None
) -> tuple[onnx.ModelProto, Encodings]:
    """Return (float model without Q/DQ, encodings); without `weights` the model is not usable (its
    weights are not dequantized), only its encodings; with `scratch` (a file in a temporary folder) the
    dequantized weights go there, lazy (lazy_weights.spilled), not into memory. `model` is not modified.
    A Q/DQ whose parameters do not make sense is a ModelError naming `where` (the model's file)."""
    try:
        return _read_qdq(model, weights, scratch)
    except ModelError as e:
        e.where = e.where or where
        raise


def _read_qdq(model: onnx.ModelProto, weights: bool, scratch: str | None) -> tuple[onnx.ModelProto, Encodings]:
    out = external_data.without_initializers(model)  # a whole copy's arena would keep the replaced integers too
    graph = out.graph
    inits = {i.name: i for i in model.graph.initializer}
    constants = _constant_nodes(graph, inits)
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for reader in graph.node:
        for index, name in enumerate(reader.input):
            readers.setdefault(name, []).append((reader, index))
    outputs = {o.name for o in graph.output}
    taken = {*inits, *producers, *readers, *outputs, *(i.name for i in graph.input)}
    opset = default_opset(model)

    def known(name: str) -> np.ndarray | None:
        return external_data.array(inits[name]) if name in inits else constants.get(name)

    def moved(start: str, e: Encoding, shape: tuple[int, ...]) -> tuple[list[onnx.NodeProto], list, Encoding]:
        """The data movement a weight goes through alone to its layer, and its grid where it arrives
        (qdq_movement); none for blocks, or where its channels split or merge on the way."""
        if e.blocks:
            return [], [], e
        chain, moves, shapes = movement_chain(start, readers, outputs, known, opset, shape)
        axis = moved_axis(None if e.axis is None else e.axis % len(shape), chain, shapes)
        return ([], [], e) if axis == -1 or not chain else (chain, moves, dataclasses.replace(e, axis=axis))

    found = Encodings()
    rename: dict[str, str] = {}
    drop: set[int] = set()
    new_inits: dict[str, list[onnx.TensorProto]] = {}  # an integer weight -> its float values, one a DequantizeLinear
    pairs: dict[str, tuple[Encoding, list[str]]] = {}  # an activation's Q/DQ grid, and its readers' first outputs
    for node in graph.node:
        if _casts_to(node, TensorProto.FLOAT):  # qdq.py's float16 simulation: a float16 weight, or an activation cast to it and back
            half = producers.get(node.input[0])
            weight = inits.get(node.input[0])
            if weight is not None and weight.data_type == TensorProto.FLOAT16 and len(readers[weight.name]) == 1:
                if weights:
                    values = external_data.array(weight).astype(np.float32)
                    new_inits[node.input[0]] = [numpy_helper.from_array(values, node.output[0])]
                found.params[node.output[0]] = enc.float_encoding(16)
                drop.add(id(node))
            elif _casts_to(half, TensorProto.FLOAT16) and len(readers[half.output[0]]) == 1:  # read here alone
                x, y = half.input[0], node.output[0]
                found.activations[y if y in outputs else x] = enc.float_encoding(16)
                rename.update({x: y} if y in outputs else {y: x})
                drop.update((id(node), id(half)))
            continue
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:
            shape = tuple(inits[source].dims)
            channel = _channel_axis(readers.get(node.output[0], []), shape)
            e = _encoding(node, inits, inits[source].data_type, channel, constants, shape)
            _check_block_axis(node, readers.get(node.output[0], []), len(shape))
            chain, moves, moved_e = moved(node.output[0], e, shape)
            name = chain[-1].output[0] if chain else _float_name(node, taken)
            rename.update({node.output[0]: name} if name != node.output[0] else {})
            taken.add(name)
            if weights:
                grid = _stored_grid(e, inits[source].data_type)
                scale = _value(node.input[1], inits, constants, "the scale")
                ints = _mirrored(node, external_data.array(inits[source]), scale, inits[source].data_type)
                values = sliced("dequantize", grid, ints, _scale_type(node, inits, constants))
                new_inits.setdefault(source, []).append(_float_weight(values, moves, name, scratch))
            found.params[name] = moved_e
            drop.update(id(n) for n in (node, *chain))
            continue
        q_node = producers.get(source)
        if q_node is None or q_node.op_type != "QuantizeLinear":
            continue
        e = _pair_encoding(q_node, node, inits, constants)
        x, y = q_node.input[0], node.output[0]
        # a QuantizeLinear an integer op reads too stays (a QOperator model's QLinearAdd beside a blocked MatMul's DQ)
        q_node_alone = {id(q_node)} if all(r.op_type == "DequantizeLinear" for r, _ in readers[source]) else set()
        if _folded_relu(e, producers.get(x)):
            name = _relu_back(node, producers[x], x, alone=len(readers[x]) == 1 and not {x, y} & outputs)
            found.activations[name] = e  # on the ReLU's output, where qtool's plan squashes it
            rename.update({y: name} if name != y else {})
            drop.update(q_node_alone)
            continue
        if x in inits and len(readers[x]) == 1 and not {x, y} & outputs and inits[x].data_type in FLOATING_TYPES:
            # a weight fake-quantized in the graph (PyTorch's QAT export unfolded): its grid is a parameter's; read
            # as an activation's, quantize put the weight on a per-tensor grid of its own
            shape = tuple(inits[x].dims)
            grid = _encoding(node, inits, _q_output_type(q_node, inits, constants), None, constants, shape)
            chain, moves, moved_grid = moved(y, grid, shape)
            end = chain[-1].output[0] if chain else x
            found.params[end] = moved_grid
            if not chain:
                rename[y] = x
            if weights:  # the weight the network computes with, as a DequantizeLinear(int8) export of it reads
                dtype = _scale_type(node, inits, constants)
                values = sliced("dequantize", grid, sliced("quantize", grid, external_data.array(inits[x]), np.int32), dtype)
                new_inits[x] = [_float_weight(values, moves, end, scratch)]
            drop.update(id(n) for n in (q_node, node, *chain))
            continue
        name = y if y in outputs else x
        found.activations[name] = e
        pairs[name] = (e, [r.output[0] for r, _ in readers.get(y, []) if r.output])
        if y in outputs and (x not in producers or x in outputs):  # no node's output to rename into y
            _identity(node, x)
        elif y in outputs:
            rename[x] = y
        else:
            rename[y] = x
        drop.update(q_node_alone if node.op_type == "Identity" else {id(node), *q_node_alone})
    _rebuild(graph, drop, rename, new_inits, model.graph.initializer)
    _lpbq_back(out, found)
    _narrow_back(out, found)
    _floats_back(out, found, {t: (e, frozenset(_resolve(o, rename) for o in r)) for t, (e, r) in pairs.items()})
    return out, found


def _float_name(dq: onnx.NodeProto, taken: set[str]) -> str:
    """The float weight's name: onnxruntime's quantize_static stores weight W as 'W_quantized', read as
    'W_DequantizeLinear_Output', so W, the float model's name, where no tensor has it (the encodings export writes
    are then for the float model; they named a tensor it has not); else what the DequantizeLinear writes."""
    stem = dq.output[0].removesuffix("_DequantizeLinear_Output")
    return stem if dq.input[0] == f"{stem}_quantized" and stem != dq.output[0] and stem not in taken else dq.output[0]


def _float_weight(values: np.ndarray, moves: list, name: str, scratch: str | None) -> onnx.TensorProto:
    """A weight's float values, moved as its data movement moves them (qdq_movement), as the initializer `name`:
    lazy in `scratch` when large (external_data.weight_tensor), so a float copy does not hold the model's weights."""
    for move in moves:
        values = move(values)
    return numpy_helper.from_array(values, name) if scratch is None else external_data.weight_tensor(values, name, scratch)


def _identity(dq: onnx.NodeProto, x: str) -> None:
    """The pair's DequantizeLinear as Identity(x): a graph input (or output) Q/DQ'd straight into a graph output
    kept no node making that output, and the stripped and fp16 models were invalid, written with exit 0."""
    dq.op_type, dq.domain = "Identity", ""
    dq.input[:] = [x]
    del dq.attribute[:]


def _folded_relu(e: Encoding, producer: onnx.NodeProto | None) -> bool:
    """onnxruntime's quantize_static drops a ReLU after a Conv (Gemm, MatMul, Add) and lets the output's grid,
    which then starts at exactly 0, clip instead: the float graph needs the ReLU back to compute what the QDQ
    model computes (EfficientWord-Net's shipped _qint8 ResNet-50 read back 49 ReLUs short: -3.1 dB from float).
    Quantizing ReLU(x) on a grid from 0 is quantizing x on it, so the quantized model does not change."""
    squashable = producer is not None and producer.op_type in SQUASHABLE_PRODUCERS and producer.domain in ("", "ai.onnx")
    return squashable and not e.is_float and len(e.min) == 1 and e.min[0] == 0.0 and e.max[0] > 0.0


def _relu_back(dq: onnx.NodeProto, producer: onnx.NodeProto, x: str, alone: bool) -> str:
    """`dq` becomes ReLU(x), in its place. When the Q read `x` alone, the ReLU writes `x` (the name the grid
    had) and the producer a new name; else the ReLU writes the DequantizeLinear's output. Returns the ReLU's output."""
    source = f"{x}/before_relu" if alone else x
    if alone:
        producer.output[:] = [source if o == x else o for o in producer.output]
        dq.output[:] = [x]
    del dq.attribute[:]
    dq.op_type, dq.domain, dq.name = "Relu", "", f"{dq.name or x}/Relu"
    dq.input[:] = [source]
    return dq.output[0]


def _casts_to(node: onnx.NodeProto | None, dtype: int) -> bool:
    return node is not None and node.op_type == "Cast" and onnx.helper.get_node_attr_value(node, "to") == dtype


def _marked(model: onnx.ModelProto, key: str, parse: Callable[[Any], Any], shape: str) -> Any | None:
    """Metadata `key` (removed from the model) parsed from JSON by `parse`; {} when absent, None when malformed."""
    text = _pop_metadata(model, key)
    try:
        return parse(load_json(text, f"model metadata {key}") if text is not None else {})
    except (DataError, ValueError, TypeError, AttributeError, KeyError, IndexError):
        logger.warning("model metadata %r is not a JSON object of %s: ignored", key, shape)
        return None


def _pop_metadata(model: onnx.ModelProto, key: str) -> str | None:
    """The value of metadata `key`, removed from the model (a stripped model loses qtool's marks)."""
    text = next((p.value for p in model.metadata_props if p.key == key), None)
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return text


def _floats_back(model: onnx.ModelProto, found: Encodings, pairs: dict[str, tuple[Encoding, frozenset[str]]]) -> None:
    """The tensors FLOAT_METADATA names (kept float by the plan, so without Q/DQ) get their float encodings back;
    the grid a Q/DQ pair on one gave its integer readers goes to `found.converts` (the QOperator export's)."""
    parts = _marked(model, FLOAT_METADATA, lambda m: {p: {str(n): int(b) for n, b in m.get(p, {}).items()}
                                                      for p in ("activations", "params")}, "float bitwidths")  # fmt: skip
    if parts is None:
        return
    names = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    names |= {i.name for i in model.graph.initializer}
    for part, table in (("activations", found.activations), ("params", found.params)):
        for name, bitwidth in parts[part].items():
            # the plan's word wins over a Q/DQ on the same tensor: that one is its copy converted for an
            # integer reader (a float16 tensor into an 8-bit Gemm), which an encodings file cannot name
            if name in names and bitwidth in (16, 32):
                if part == "activations" and name in pairs:
                    found.converts[name] = pairs[name]
                table[name] = enc.float_encoding(bitwidth)


def _narrow_back(model: onnx.ModelProto, found: Encodings) -> None:
    """The weights NARROW_METADATA names (7-bit grids, and 4-bit ones unpacked, stored in 8 bits) get their bitwidth
    back: an unpacked 4-bit weight was exported as an 8-bit one on its 4-bit scale."""
    marked = _marked(model, NARROW_METADATA, lambda m: {str(n): int(b) for n, b in m.items()}, "bitwidths")
    for name, bitwidth in (marked or {}).items():
        e = found.params.get(name)
        if e is None or e.bitwidth == bitwidth:  # a MatMulNBits' weight now, or packed to INT4 beside them
            continue
        ok = not e.is_float and e.bitwidth == 8 and bitwidth in (4, 7)
        offset = np.asarray(e.offset if ok else (), np.int64) + (128 - 2 ** (bitwidth - 1) if ok and e.signed else 0)
        if not ok or not ((offset <= 0) & (offset >= 1 - 2**bitwidth)).all():
            logger.warning("weight %r is marked %r bits, which its storage does not fit: read as stored", name, bitwidth)
            continue
        narrow = enc.from_scale_offset(e.scale, offset, bitwidth, symmetric=e.is_symmetric)
        found.params[name] = dataclasses.replace(e, bitwidth=bitwidth, min=narrow.min, max=narrow.max, offset=narrow.offset)


def _lpbq_back(model: onnx.ModelProto, found: Encodings) -> None:
    """The weights LPBQ_METADATA names become LPBQ again; the stripped model loses the mark."""
    items = _marked(model, LPBQ_METADATA, lambda m: [(str(n), int(v[0]), int(v[1])) for n, v in m.items()],
                    "[bitwidth, decompressed_bw]")  # fmt: skip
    for name, bitwidth, decompressed_bw in items or []:
        e = found.params.get(name)
        if e is None:  # a MatMulNBits' weight now (export --format matmulnbits, quantize --target ort-cpu)
            continue
        fits = 2 <= bitwidth <= e.bitwidth  # 4-bit blocks unpacked are stored in int8
        lpbq = blocks.as_lpbq(e, bitwidth, decompressed_bw) if fits else None
        if lpbq is None:
            logger.warning("weight %r is marked LPBQ, but its block scales are not; read as plain per-block", name)
        else:
            found.params[name] = lpbq


def _q_output_type(q_node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], constants: Constants) -> int:
    zero_point = q_node.input[2] if len(q_node.input) > 2 else ""
    if zero_point in inits:
        return inits[zero_point].data_type
    if zero_point in constants:  # an int8 zero point read as uint8 shifted every range by 128
        return onnx.helper.np_dtype_to_tensor_dtype(constants[zero_point].dtype)
    for attribute in q_node.attribute:
        if attribute.name == "output_dtype" and attribute.i:
            return attribute.i
    return TensorProto.UINT8


def _resolve(name: str, rename: dict[str, str]) -> str:
    return rename.get(name, name)


def _rename_reads(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """`node`'s inputs, and its subgraphs' nodes' inputs (outer-scope reads), renamed."""
    node.input[:] = [_resolve(i, rename) for i in node.input]
    for attr in node.attribute:
        for body in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
            for inner in body.node:
                _rename_reads(inner, rename)


def _rebuild(
    graph: onnx.GraphProto, drop: set[int], rename: dict[str, str], new_inits: dict[str, list[onnx.TensorProto]],
    initializers: Iterable[onnx.TensorProto],
) -> None:
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        _rename_reads(node, rename)
        node.output[:] = [_resolve(o, rename) for o in node.output]
    # a weight an If or Loop body reads from the outer scope is used too (openWakeWord's verifier head)
    while True:  # a removed Q/DQ's scale, and the Constant a Cast of it read
        used = {i for n in kept for i in runtime.reads(n)} | {o.name for o in graph.output}
        pruned = [n for n in kept if n.op_type not in ("Constant", "Cast") or n.output[0] in used]
        if len(pruned) == len(kept):
            break
        kept = pruned
    # a dequantized weight takes its integer initializer's place, so the order survives a round trip; an integer
    # weight two DequantizeLinears read (initializers deduplicated) gives each its own, where the last one alone was kept;
    # one another node reads too stays (a QOperator model's QLinearConv, whose weight a ConvTranspose's DequantizeLinear
    # shares: inspect -l ran a float view without it, 'onnxruntime cannot load it', exit 3)
    inits = [t for i in initializers for t in [*new_inits.get(i.name, []), *([i] if i.name in used else [])]]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(inits)
    stale = set(rename)
    kept_info = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)

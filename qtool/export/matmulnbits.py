"""`matmulnbits`: the QDQ model with each MatMul (or Gemm) that reads a 4-bit per-block weight
turned into onnxruntime's `com.microsoft.MatMulNBits`, which runs it without dequantizing the
weight first (onnxruntime docs/ContribOperators.md; the packing of its matmul_nbits_quantizer.py).

MatMulNBits(A, B, scales[, zero_points][, g_idx, bias]) with attributes K, N, bits = 4, block_size:
- B: uint8 [N, K/block_size, block_size/2], each output channel's K weights on the unsigned grid
  (q + 8 for int4), two a byte, the first in the low nibble.
- scales: float [N, K/block_size] (float16 in a float16 model: A's type).
- zero_points: uint8 [N, ceil(K/block_size / 2)], packed the same way; left out when every one is
  8, the operator's default (symmetric int4 weights, qtool's).
A Gemm qualifies when it is A·B (+ a 1-D bias C): alpha 1, beta 1 on a C, no transA; one with a 4-bit block
weight that does not is named, with its reason, in one line (a warning, or the error when none converts). A Gather of an
embedding table blocked along its features becomes `GatherBlockQuantized` (gather_axis 0,
quantize_axis 1, uint8 data packed as B is), which reads only the rows it gathers instead of
dequantizing the whole table on every run. A tied lm_head, MatMul(x, Transpose(table)), is the
table's own MatMulNBits (N = tokens, K = features: the table's rows and blocks are B's); the Gather then
reads the same bytes through a Reshape to [V, D/2] (onnxruntime folds it when it loads the model), so the
file holds the table once. A table something else reads too keeps its DequantizeLinear and its Gather.
MatMuls and Gemms convert first, so that a converted head frees its table for the Gather. Other MatMuls,
activations' Q/DQ and everything else stay as they are; a model with none to convert is an error. A weight
DequantizeLinear left whose integers all fit 4 bits (quantize writes a 4-bit weight a byte a value unless
--pack_4_bit_weights: the ViT's per-channel Conv patch embedding) is stored as INT4/UINT4, same values.
`accuracy_level` (--matmulnbits_accuracy_level) is left unset by default: the kernel then computes
in float, as the QDQ model does; 4 quantizes A to int8 per block inside the kernel (what onnxruntime
itself picks when it fuses a QDQ model's blocked DequantizeLinear -> MatMul), several times faster
at batch 1.
"""

from __future__ import annotations

import logging

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.errors import UsageError
from qtool.export.job import ExportJob, Files
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.graph.lazy_weights import scratch_file
from qtool.io.files import quoted

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
_DROPPABLE = ("DequantizeLinear", "Transpose")  # what a converted weight leaves unread
_INT4 = {TensorProto.INT4: 8, TensorProto.UINT4: 0, TensorProto.INT8: 8, TensorProto.UINT8: 0}  # -> shift to unsigned


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pack(u: np.ndarray) -> np.ndarray:
    """Unsigned 4-bit values, last axis even, two a byte, the first in the low nibble."""
    u = u.astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


class _Graph:
    def __init__(self, model: onnx.ModelProto, scratch: str | None = None):
        self.model = model
        self.scratch = scratch  # a file the packed weights go to, read lazily (else they are held in memory)
        self.shared: dict[str, list[str]] = {}  # a table's DequantizeLinear output -> [B, scales(, zero points)]
        self.skipped: list[str] = []  # "'W' (alpha 0.5)": a Gemm's 4-bit block weight MatMulNBits cannot compute
        self.refresh()

    def refresh(self) -> None:
        self.inits = {i.name: i for i in self.model.graph.initializer}
        self.producers = {o: n for n in self.model.graph.node for o in n.output}

    def transposed_table(self, name: str) -> tuple[str, tuple] | None:
        """`name` = Transpose(perm [1, 0]) of a 4-bit table [N, K] blocked along K (a tied lm_head's
        weight): (the table's dequantized name, its block weight), already in MatMulNBits' row order."""
        t = self.producers.get(name)
        if t is None or t.op_type != "Transpose" or t.domain not in ("", "ai.onnx"):
            return None
        if list(_attrs(t).get("perm", [1, 0])) != [1, 0]:  # type: ignore[call-overload]
            return None
        found = self.block_weight(t.input[0], 1)
        return (t.input[0], found) if found else None

    def add(self, name: str, array: np.ndarray) -> str:
        """An initializer `name` holding `array`, written once (a weight two nodes read)."""
        if name not in self.inits:
            array = np.ascontiguousarray(array)
            made = external_data.weight_tensor(array, name, self.scratch) if self.scratch else numpy_helper.from_array(array, name)
            self.model.graph.initializer.append(made)
            self.inits[name] = self.model.graph.initializer[-1]
        return name

    def array(self, name: str) -> np.ndarray | None:
        return external_data.array(self.inits[name]) if name in self.inits else None

    def block_weight(self, name: str, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """(unsigned 4-bit weight [N, K], scales [N, K/B], unsigned zero points [N, K/B], B) of a
        4-bit blocked DequantizeLinear feeding `name` with its blocks along `axis`; else None."""
        dq = self.producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2 or dq.input[0] not in self.inits:
            return None
        attrs, init = _attrs(dq), self.inits[dq.input[0]]
        size = int(attrs.get("block_size", 0))  # type: ignore[call-overload]
        if init.data_type not in _INT4 or len(init.dims) != 2 or size < 16 or size & (size - 1):
            return None
        if int(attrs.get("axis", 1)) % 2 != axis or init.dims[axis] % size:  # type: ignore[call-overload]
            return None
        # int16 holds q + 8 of any int8: int64 copies were 16 bytes a weight value (a 250 MB LM head's 1 GB)
        u, scale = self.array(dq.input[0]).astype(np.int16), self.array(dq.input[1])  # type: ignore[union-attr]
        zp = self.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale, np.int64)
        if zp is None or scale is None:
            return None
        shift = _INT4[init.data_type]
        u += shift
        zp = zp.astype(np.int64) + shift
        if u.min() < 0 or u.max() > 15 or zp.min() < 0 or zp.max() > 15:  # int8 holding wider values
            return None
        if axis == 0:  # [K, N] -> rows of K per output channel
            u, scale, zp = u.T, scale.T, zp.T
        # a float16 model's scales stay float16: MatMulNBits takes its scales in A's type (float32 ones beside a
        # float16 A wrote a model onnxruntime refuses to load, exit 0)
        return u, scale.astype(np.float16 if scale.dtype == np.float16 else np.float32), zp, size


def _bias(g: _Graph, node: onnx.NodeProto, n: int) -> str | None:
    """A Gemm's C when it is a bias MatMulNBits can take (1-D, N values), "" when there is none."""
    if len(node.input) < 3 or not node.input[2]:
        return ""
    c = node.input[2]
    source = g.producers.get(c)
    shape = g.inits[c].dims if c in g.inits else None
    if shape is None and source is not None and source.op_type == "DequantizeLinear" and source.input[0] in g.inits:
        shape = g.inits[source.input[0]].dims
    return c if shape is not None and list(shape) == [n] else None


def _convertible(g: _Graph, node: onnx.NodeProto) -> tuple[tuple, str, str] | None:
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if node.op_type == "MatMul":
        found = g.block_weight(node.input[1], 0)
        tied = g.transposed_table(node.input[1]) if found is None else None
        return (found, "", "") if found else (tied[1], "", tied[0]) if tied else None
    if node.op_type != "Gemm":
        return None
    attrs = _attrs(node)
    found = g.block_weight(node.input[1], 1 if attrs.get("transB", 0) else 0)
    if found is None:
        return None
    bias = _bias(g, node, found[0].shape[0])
    why = [f"{k} {attrs[k]:g}" for k in ("alpha", "beta") if attrs.get(k, 1.0) != 1.0 and (k == "alpha" or bias != "")]
    why += ["transA"] * bool(attrs.get("transA", 0)) + ([f"C {quoted(node.input[2])} not 1-D of its N"] if bias is None else [])
    if why:  # it stays DequantizeLinear -> Gemm, said once for all (to_matmulnbits)
        g.skipped.append(f"{quoted(node.input[1])} ({', '.join(why)})")
        return None
    return found, bias, ""


def _replacement(g: _Graph, node: onnx.NodeProto, found: tuple, level: int) -> onnx.NodeProto:
    """The MatMulNBits of `node`; found = (block weight, bias, the dequantized table a tied head reads)."""
    (u, scale, zp, size), bias, table = found
    n, k = u.shape
    prefix = f"{table or node.input[1]}_nbits"
    b = g.add(f"{prefix}_B", _pack(u.reshape(n, k // size, size)))
    inputs = [node.input[0], b, g.add(f"{prefix}_scales", scale)]
    if np.any(zp != 8):
        inputs.append(g.add(f"{prefix}_zero_points", _packed_zero_points(zp)))
    if table:  # GatherBlockQuantized can read the same bytes
        g.shared[table] = inputs[1:]
    if bias:
        inputs += [""] * (5 - len(inputs)) + [bias]
    name = node.name or f"{node.output[0]}_MatMulNBits"
    level_attr = {"accuracy_level": level} if level else {}
    return helper.make_node("MatMulNBits", inputs, list(node.output), name=name, domain=MS_DOMAIN,
                            K=k, N=n, bits=4, block_size=size, **level_attr)  # fmt: skip


def _packed_zero_points(zp: np.ndarray) -> np.ndarray:
    """[rows, blocks] unsigned 4-bit zero points two a byte, an odd count padded with 8 (MatMulNBits' and
    GatherBlockQuantized's layout)."""
    return _pack(np.pad(zp, ((0, 0), (0, zp.shape[1] % 2)), constant_values=8))


def _drop_unused(model: onnx.ModelProto) -> None:
    """Dequantize (and Transpose) nodes and initializers nothing reads any more (the replaced weights)."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in _DROPPABLE and not used & set(n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _gather(g: _Graph, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """A Gather (axis 0) of a 4-bit table blocked along its features as GatherBlockQuantized: data uint8
    [V, D/2] (q + 8, two a byte, low nibble first), scales [V, D/B], zero points packed as MatMulNBits' when
    not all 8 (its default); the data a Reshape of a tied head's MatMulNBits B where there is one."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or _attrs(node).get("axis", 0) not in (0, -2):
        return None
    readers = sum(name == node.input[0] for n in g.model.graph.node for name in n.input)
    found = g.block_weight(node.input[0], 1) if readers == 1 else None  # the table read by something else too
    if found is None:
        return None
    u, scale, zp, size = found
    prefix = f"{node.input[0]}_gbq"
    data, made = f"{prefix}_data", []
    if node.input[0] in g.shared:
        b, *params = g.shared[node.input[0]]
        shape = g.add(f"{prefix}_shape", np.array([u.shape[0], u.shape[1] // 2], np.int64))
        made = [helper.make_node("Reshape", [b, shape], [data], name=f"{prefix}_Reshape")]
    else:
        g.add(data, _pack(u))
        params = [g.add(f"{prefix}_scales", scale)]
        if np.any(zp != 8):
            params.append(g.add(f"{prefix}_zero_points", _packed_zero_points(zp)))
    name = node.name or f"{node.output[0]}_GatherBlockQuantized"
    return [*made, helper.make_node("GatherBlockQuantized", [data, node.input[1], *params], list(node.output), name=name,
                                    domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=size, bits=4)]  # fmt: skip


def _pack_left(g: _Graph) -> None:
    """Each weight (int8/uint8 initializer read only by DequantizeLinear) whose integers and zero point all
    fit 4 bits as INT4/UINT4 (opset 21), two a byte: the dequantized values are the same, the bytes half."""
    if next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), 0) < 21:
        return
    readers: dict[str, set[tuple[str, int]]] = {}
    for node in g.model.graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, set()).add((node.op_type, i))
    narrow = {TensorProto.INT8: (ml_dtypes.int4, -8, 7), TensorProto.UINT8: (ml_dtypes.uint4, 0, 15)}
    only_dq = {("DequantizeLinear", 0), ("DequantizeLinear", 2)}
    for dq in [n for n in g.model.graph.node if n.op_type == "DequantizeLinear" and n.domain in ("", "ai.onnx")]:
        names = [n for n in [dq.input[0], *dq.input[2:3]] if n]
        tensors = [g.inits.get(n) for n in names]
        types = {t.data_type for t in tensors if t is not None}
        if None in tensors or len(types) != 1 or not types <= set(narrow):
            continue
        if any(not readers[n] <= only_dq for n in names):  # something reads the integers themselves
            continue
        to, low, high = narrow[tensors[0].data_type]  # type: ignore[union-attr]
        arrays = [g.array(n) for n in names]
        if all(a.size and low <= a.min() and a.max() <= high for a in arrays):  # type: ignore[union-attr]
            for tensor, a in zip(tensors, arrays, strict=True):
                tensor.CopyFrom(numpy_helper.from_array(a.astype(to), tensor.name))  # type: ignore[union-attr]


def _rewrite(model: onnx.ModelProto, replace) -> int:
    """Each node replaced by `replace(node)` (a list of nodes, or None to keep it); the number replaced."""
    nodes, converted = [], 0
    for node in model.graph.node:
        made = replace(node)
        nodes += made if made is not None else [node]
        converted += made is not None
    if converted:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        _drop_unused(model)
    return converted


def to_matmulnbits(
    model: onnx.ModelProto, accuracy_level: int = 0, skipped: list[str] | None = None, scratch: str | None = None
) -> int:
    """Convert `model` in place; the number of MatMul/Gemm (and Gather) nodes converted. The Gemms whose 4-bit
    block weight MatMulNBits cannot take go to `skipped`, or without it into one warning line; `scratch`: a file
    the packed weights are written to and read lazily from."""
    g = _Graph(model, scratch)

    def matmul(node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        found = _convertible(g, node)
        return [_replacement(g, node, found, accuracy_level)] if found is not None else None

    converted = _rewrite(model, matmul)
    g.refresh()  # a converted tied head no longer reads its table
    converted += _rewrite(model, lambda node: _gather(g, node))
    if converted:
        g.refresh()
        _pack_left(g)
    if converted and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if skipped is not None:
        skipped += g.skipped
    elif g.skipped:
        logger.warning("matmulnbits: %s", _skipped_line(g.skipped))
    return converted


def natively(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` for a session of its QDQ arithmetic: a copy whose 4-bit block MatMuls and Gathers are MatMulNBits
    (accuracy level 0: the dequantized weights in float, summed in another order) and GatherBlockQuantized, where it
    has any, else `model`. A session folds each weight's DequantizeLinear to float, 8x a 4-bit weight's bytes: the
    2.35 GB decoder's W4 B32 evaluation held its 2.35 GB of float weights, where these keep the 0.3 GB of 4-bit ones."""
    if not any(n.op_type == "DequantizeLinear" and _attrs(n).get("block_size") for n in model.graph.node):
        return model
    copied = gm.copy(model)
    try:
        converted = to_matmulnbits(copied, skipped=[], scratch=scratch_file("nbits-weights.data"))
    except OSError:  # no scratch space (a full disk): the session folds the weights
        return model
    return copied if converted else model


def _skipped_line(skipped: list[str]) -> str:
    many = len(skipped) > 1
    return (f"{len(skipped)} Gemm{'s' * many} with a 4-bit block weight stay{'s' * (not many)} DequantizeLinear -> Gemm, "
            f"as MatMulNBits computes A·B + a bias of N values only: {', '.join(skipped[:3])}{' ...' * (len(skipped) > 3)}")


# `quantize --target ort-cpu` writes the MatMulNBits itself; the hint said to quantize with the flags it had been
# quantized with (DeepFilterNet3's df_dec at W4 block 32)
WRITTEN_ALREADY = ("quantize --target ort-cpu wrote its MatMulNBits: it is this format's model already, and their"
                   " scales are in the .encodings.json quantize wrote beside it")  # fmt: skip
# another tool's (onnxruntime's matmul_4bits_quantizer, a model hub's int4 build): no qtool run, no encodings file
OTHER_TOOL = "its MatMulNBits are another tool's: it is this format's model already, with no encodings file beside it"


def matmulnbits_hint(model: onnx.ModelProto) -> str | None:
    """What a model that already holds MatMulNBits is, by who wrote them (qtool marks the models it converted)."""
    if not any(n.op_type == "MatMulNBits" and n.domain == MS_DOMAIN for n in model.graph.node):
        return None
    return WRITTEN_ALREADY if gm.METADATA_CONVERTED in gm.metadata(model) else OTHER_TOOL


def export(job: ExportJob) -> Files:
    model, skipped = gm.copy(job.model), []
    if not to_matmulnbits(model, job.options.matmulnbits_accuracy_level, skipped):
        flags = "quantize with --weights_bitwidth 4 --weights_block_size 32"
        if skipped:  # the hint's flags were given: the reason is the Gemm's
            raise UsageError(f"matmulnbits: no MatMul or Gemm to convert: {_skipped_line(skipped)}", where=job.where)
        raise UsageError(
            "matmulnbits: no MatMul or Gemm reads a 4-bit per-block weight (blocks of 16 or more along its inputs)",
            where=job.where,
            hint=matmulnbits_hint(model) or flags,
        )
    if skipped:
        logger.warning("%s: matmulnbits: %s", job.where, _skipped_line(skipped))
    gm.check(model, job.where)
    return {job.file(".matmulnbits.onnx"): model}

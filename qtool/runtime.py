"""onnxruntime sessions, built the same way everywhere (threads, optimisation level, extra outputs, the
custom-op libraries of --op_package_lib)."""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import itertools
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from qtool.errors import ModelError, UsageError
from qtool.graph import external_data
from qtool.graph.inline_write import write_inline
from qtool.graph.lazy_weights import scratch_file
from qtool.graph.node_order import reads  # runtime.reads: callers prune and stage by it
from qtool.io.files import env_bytes
from qtool.io.outputs import file_kind

logger = logging.getLogger(__name__)
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (in the given order). Their shapes and
    every value_info are left for onnxruntime to infer: declared ones are hints that exporters get
    wrong, and onnxruntime fails on a wrong one where the graph itself would run."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return copy


def downstream(nodes: Iterable[onnx.NodeProto], sources: Iterable[str]) -> set[str]:
    """`sources` and every tensor computed from any of them (`nodes` in graph order)."""
    found = set(sources)
    for node in nodes:
        if any(name in found for name in reads(node)):
            found.update(node.output)
    return found


def pruned(
    model: onnx.ModelProto,
    names: list[str],
    given: dict[str, np.ndarray] | None = None,
    index: tuple[dict[str, int], dict[str, onnx.TensorProto]] | None = None,
) -> onnx.ModelProto:
    """A model returning only `names`, with only the nodes they depend on: a layer's input costs the
    model up to that layer, not the whole of it. Tensors in `given` (examples of their values) become the
    graph's inputs: the nodes that compute them are left out. `index`: (tensor -> index of the node making
    it, initializer name -> initializer) of `model`, for a caller pruning one model many times.
    Built from the parts it keeps: a copy of the whole model first was most of a staged comparison's
    setup (a U-Net's 252 stages: 29 s of 45 MB copies)."""
    graph = model.graph
    if index is None:
        index = ({out: i for i, node in enumerate(graph.node) for out in node.output},
                 {t.name: t for t in graph.initializer})  # fmt: skip
    producers, initializers = index
    given = given or {}
    needed, stack, fed = set(), list(names), set()
    while stack:
        name = stack.pop()
        if name in given:
            fed.add(name)
            continue
        k = producers.get(name)
        if k is not None and k not in needed:
            needed.add(k)
            stack.extend(reads(graph.node[k]))
    nodes = [graph.node[i] for i in sorted(needed)]
    nodes = late_constants(nodes, set(initializers))
    read = {name for node in nodes for name in reads(node)}
    inputs = list(graph.input)
    used = read | set(names) | {i.name for i in inputs}  # (IR < 4 lists initializers as inputs)
    copy = _shell(model)
    copy.graph.node.extend(nodes)
    declared = {o.name: o for o in graph.output}
    for name in dict.fromkeys(names):  # shapes left for onnxruntime to infer, as with_outputs does
        copy.graph.output.append(declared[name] if name in declared else onnx.ValueInfoProto(name=name))
    # onnxruntime drops unused initializers, then misses their OrtValues
    copy.graph.initializer.extend(t for name, t in initializers.items() if name in used)
    if given:
        inputs = [i for i in inputs if i.name in read and i.name not in given]
        inputs += [_info(name, given[name]) for name in sorted(fed)]
    copy.graph.input.extend(inputs)
    return copy


# GraphProto fields pruned() fills itself; the rest (name, doc_string, annotations) are copied as they are
_GRAPH_PARTS = frozenset({"node", "initializer", "input", "output", "value_info"})


def _shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with a graph of none of its nodes, tensors, inputs or outputs, without copying them."""
    shell = onnx.ModelProto()
    external_data.copy_fields(model, shell, skip={"graph"})
    external_data.copy_fields(model.graph, shell.graph, skip=_GRAPH_PARTS)
    return shell


def late_constants(nodes: list[onnx.NodeProto], initializers: set[str]) -> list[onnx.NodeProto]:
    """`nodes` with each node that reads only initializers (a weight's DequantizeLinear or Cast) moved
    to just before its first reader: onnxruntime runs them in list order, and a QDQ model lists them
    all first, so every weight was dequantized (a float copy of the model) before the first layer ran."""
    constant = [bool(node.input) and all(not i or i in initializers for i in reads(node)) for node in nodes]
    source = {out: k for k, node in enumerate(nodes) if constant[k] for out in node.output}
    order, placed = [], set()
    for k, node in enumerate(nodes):
        if constant[k]:
            continue
        for name in reads(node):
            j = source.get(name)
            if j is not None and j not in placed:
                placed.add(j)
                order.append(nodes[j])
        order.append(node)
    return order + [node for k, node in enumerate(nodes) if constant[k] and k not in placed]


def _info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    """Its type and rank; the sizes stay free, as other samples' may differ where the model lets them."""
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), [None] * value.ndim)


def runner(
    model: onnx.ModelProto,
    names: list[str],
    threads: int = 0,
    where: str = "model",
    given: dict[str, np.ndarray] | None = None,
    *,
    folded: bool = False,
    arena: bool = True,
    index: tuple[dict[str, int], dict[str, onnx.TensorProto]] | None = None,
    shared: bool = False,
) -> Runner:
    """feed -> {name: value} for the tensors `names`, running only the part of `model` they need
    (from the tensors in `given`, fed in place of what computes them); `folded`, `arena`: see `session`;
    `index`: see `pruned`. `shared` (without `index`): the session reads the weights as OrtValues of `model`'s
    tensors, as calibration's does, not from a pruned copy serialized and parsed again (bc's float session of
    ddddocr's CRNN, 54 MB of weights, built 45-100 MB higher)."""
    weights = None
    if shared:
        model, weights = external_data.weightless(model, WEIGHT_BYTES)
    return _part_runner(model, names, threads, where, given, folded=folded, arena=arena, index=index, weights=weights)


def _part_runner(
    model: onnx.ModelProto, names: list[str], threads: int, where: str, given: dict[str, np.ndarray] | None, *,
    folded: bool = False, arena: bool = True, index: tuple | None = None, weights: list[onnx.TensorProto] | None = None,
) -> Runner:  # fmt: skip
    """runner's work; `weights`: the tensors `model`'s stubs stand for (external_data.weightless)."""
    part = pruned(model, names, given, index)
    if weights is not None:  # only the weights the part reads: the rest are no initializers of it
        kept = {t.name for t in part.graph.initializer}
        weights = [t for t in weights if t.name in kept]
    sess = session(part, threads, where, folded=folded, arena=arena, weights=weights)
    inputs = {i.name for i in sess.get_inputs()}
    return lambda feed: dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in inputs}), strict=True))


def staged(
    model: onnx.ModelProto, names: list[str], sizes: dict[str, int], budget: int, threads: int = 0
) -> Callable[[dict[str, np.ndarray]], Iterator[dict[str, np.ndarray]]]:
    """feed -> the values of `names` a stage at a time: consecutive names (graph order) fetching at most `budget`
    bytes a sample (`sizes`; a name past it alone), each stage run from what the ones before left alive. A fetched
    value lives to the end of its run: bc's float means fetched every layer of dnsmos at once, 350 MB a sample.
    The sessions read `model`'s weights (runner's `shared`), without arena, each built on its first sample."""
    nodes = list(model.graph.node)
    at = {out: k for k, node in enumerate(nodes) for out in node.output}
    light, weights = external_data.weightless(model, WEIGHT_BYTES)
    activations = downstream(nodes, {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer})
    groups: list[list[str]] = []
    for name in sorted(names, key=lambda n: at.get(n, -1)):
        if not groups or sum(sizes.get(n, 0) for n in groups[-1]) + sizes.get(name, 0) > budget:
            groups.append([])
        groups[-1].append(name)
    carries = []  # per stage, the activations made up to its last name that later nodes or stages read
    for g, group in enumerate(groups):
        end = max(at.get(n, -1) for n in group)
        later = {n for node in nodes[end + 1 :] for n in reads(node)} | {n for rest in groups[g + 1 :] for n in rest}
        carries.append({out for node in nodes[: end + 1] for out in node.output} & activations & later)
    runners: list[Runner | None] = [None] * len(groups)

    def run(feed: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        carried: dict[str, np.ndarray] = {}
        for g, group in enumerate(groups):
            compute = sorted((set(group) | carries[g]) - carried.keys())
            if runners[g] is None and compute:
                runners[g] = _part_runner(light, compute, threads, "model", carried or None, arena=False, weights=weights)
            values = {**carried, **(runners[g]({**feed, **carried}) if compute else {})}  # type: ignore[misc]
            carried = {n: values[n] for n in carries[g]}
            yield {n: values[n] for n in group}
            del values

    return run


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def give_back() -> None:
    """Return to the system the heap that freed tensors left. glibc raises its mmap threshold (to 32 MiB)
    whenever a large block is freed, so the weights and activations of a session that is gone end up on
    its heap, which free() keeps: the next stage's peak would stack on them (inspect on a 2.35 GB
    decoder: 0.65 GB left after calibration, 1 GB after the reference outputs)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def gives_back(fn: Callable) -> Callable:
    """`fn`, and give_back once it returns, when its sessions and values are gone: the next function's sessions
    would stack on their heap. Auto's trials calibrate and compare a dozen times, and MTCNN's P-Net climbed 72 ->
    120 MB of peak through them, 112 with each call's heap given back."""

    @functools.wraps(fn)
    def giving_back(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            give_back()

    return giving_back


@functools.cache
def max_qdq_opset(wanted: int) -> int:
    """The highest opset <= `wanted` (and >= 13) whose QuantizeLinear and DequantizeLinear this
    onnxruntime implements: a model of a newer opset than its kernels runs, its Q/DQ would not."""
    for opset in range(wanted, 13, -1):
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ]
        inits = [
            helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("z", onnx.TensorProto.UINT8, [], [0]),
        ]
        graph = helper.make_graph(
            nodes, "probe", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], inits,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, onnx.IR_VERSION)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # NOT_IMPLEMENTED for this opset's kernels
            continue
        return opset
    return 13


SESSION_PROTO_ENV = "QTOOL_SESSION_PROTO_BYTES"
SESSION_PROTO_BYTES = 1_900_000_000  # protobuf serializes at most 2 GiB
NO_ARENA_BYTES = 64 << 20  # sessions of larger models allocate without onnxruntime's arena
WEIGHT_BYTES = 1024  # initializers at least this large travel as OrtValues past the limit


def session_proto_limit() -> int:
    return env_bytes(SESSION_PROTO_ENV, SESSION_PROTO_BYTES)


def _values(tensors: list[onnx.TensorProto]) -> dict[str, ort.OrtValue]:
    """Views of the tensors' bytes as OrtValues (no copy): they must outlive the session."""
    return {
        t.name: ort.OrtValue.ortvalue_from_numpy(
            np.frombuffer(t.raw_data, dtype=helper.tensor_dtype_to_np_dtype(t.data_type)).reshape(tuple(t.dims))
        )
        for t in tensors
    }


def _built(
    model: onnx.ModelProto, options: ort.SessionOptions, limit: int, disabled: set[str],
    weights: list[onnx.TensorProto] | None = None,
) -> ort.InferenceSession:  # fmt: skip
    """Lazy weights are mapped by onnxruntime from their files (named relative to one folder, no
    copy in this process); weights held in memory travel in the protobuf, or as OrtValues past it;
    `weights`: the tensors `model`'s stubs stand for (external_data.weightless), as OrtValues."""
    # an ORT-format model's bytes are used in place (no copy); ONNX bytes are parsed into onnxruntime's own proto
    options.add_session_config_entry("session.use_ort_model_bytes_directly", "1")
    options.add_session_config_entry("session.use_ort_model_bytes_for_initializers", "1")
    with external_data.on_disk(model) as folder:
        if folder is not None:
            options.add_session_config_entry(FOLDER_KEY, folder)
        if weights is None and external_data.proto_size(model) <= limit:
            if folder is None and (built := _from_file(model, options, disabled)) is not None:
                return built
            return _without_bytes(ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"],
                                                       None, disabled_optimizers=disabled))  # fmt: skip
        if weights is None:  # no single protobuf holds a model past 2 GiB: its large initializers go as OrtValues
            model, weights = external_data.weightless(model, WEIGHT_BYTES)
        values = _values(weights)
        options.add_external_initializers(list(values), list(values.values()))
        built = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"], None,
                                     disabled_optimizers=disabled)  # fmt: skip
        built.qtool_weights = values  # type: ignore[attr-defined]  # the OrtValues must outlive the session
        return _without_bytes(built)


_SESSION_FILES = itertools.count()


def _from_file(model: onnx.ModelProto, options: ort.SessionOptions, disabled: set[str]) -> ort.InferenceSession | None:
    """`model` read by onnxruntime from a scratch file written tensor by tensor; None where that fails: a file
    that cannot be written (a full disk), or a model onnxruntime refuses, whose error, retried from bytes, then
    reads as it always did (from a file it names the scratch path). From bytes the weights met three times at
    once: the serialized model, pybind11's std::string copy of it and onnxruntime's parsed proto (a session of
    Silero VAD's 1.2 MB built at +6.3 MB resident, from a file at +3.0; its quantize 100.7 -> 98.4 MB peak)."""
    path = None
    try:
        path = scratch_file(f"session-{next(_SESSION_FILES)}.onnx")
        with open(path, "wb") as handle:
            write_inline(model, handle)
        return ort.InferenceSession(path, options, ["CPUExecutionProvider"], None, disabled_optimizers=disabled)
    except Exception:  # OSError, or onnxruntime's own error types
        return None
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _without_bytes(built: ort.InferenceSession) -> ort.InferenceSession:
    """The session without the serialized model its Python object keeps to rebuild itself on another provider
    (onnxruntime's own TODO: "bad as we're holding the memory indefinitely"); a CPU session never rebuilds, and
    onnxruntime parsed the ONNX bytes into its own copy. Each live session held a copy of its model: 1.2 MB of
    Silero's, two sessions at a time in the comparisons, on a 96 MB process."""
    built._model_bytes = None  # type: ignore[attr-defined]
    return built


FOLDER_KEY = "session.model_external_initializers_file_folder_path"

# onnxruntime's integer kernels are one deployment of a QDQ model, and on some CPUs not its arithmetic: x86
# without VNNI (AVX2, AVX-512F) multiplies u8 activations by s8 weights in pairs summed into int16
# (vpmaddubsw), which saturates once |w| passes 64 (the bundled digits CNN: 13.5 dB there, 37.2 dB in QDQ
# arithmetic). A model for QNN, TIDL or a DPU is judged on what it means: Q/DQ computed in float.
def integer_kernels(target: str | None) -> bool:
    """Whether a model quantized for `target` is evaluated on onnxruntime's integer kernels (as deployed)."""
    return target == "ort-cpu"


# The custom-op libraries (onnxruntime-extensions' tokenizers, image decoders: ops of domains onnxruntime does not
# implement) every session of the running command registers; set for one command by custom_ops.
_libraries: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("qtool_op_libraries", default=())
OWN_DOMAINS = ("ai.onnx.ml", "ai.onnx.preview", "com.microsoft", "com.ms.")  # onnxruntime's own kernels (prefixes)
LIBRARY_FLAG = "--op_package_lib"


@contextlib.contextmanager
def custom_ops(paths: Iterable[Path]) -> Iterator[None]:
    """Every session made inside registers these shared libraries (SessionOptions.register_custom_ops_library).
    Each is checked here, before any work: a regular file that onnxruntime loads."""
    libraries = tuple(_loadable(path) for path in paths)
    token = _libraries.set(tuple(dict.fromkeys(_libraries.get() + libraries)))
    try:
        yield
    finally:
        _libraries.reset(token)


def library_inputs(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """The libraries as a command's inputs (outputs.command): no output may replace one."""
    return [(LIBRARY_FLAG, path) for path in paths]


def _loadable(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as e:  # ValueError: a NUL byte
        raise UsageError(f"{LIBRARY_FLAG}: {getattr(e, 'strerror', None) or e}", where=str(path)) from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{LIBRARY_FLAG}: is {file_kind(mode)}, not a regular file (a shared library)", where=str(path))
    absolute = os.path.abspath(path)  # dlopen searches the library path for a bare name
    try:
        ort.SessionOptions().register_custom_ops_library(absolute)
    except Exception as e:  # not a library, another ABI, no RegisterCustomOps symbol: onnxruntime's own types
        reason = ort_reason(e)
        raise UsageError(f"{LIBRARY_FLAG}: onnxruntime cannot load it as a custom-op library: {reason}",
                         where=str(path)) from None  # fmt: skip
    return absolute


def _unregistered(reason: str) -> ModelError | None:
    """onnxruntime's "ai.onnx.contrib:StringLength(-1) is not a registered function/op", when the op's domain
    is none of onnxruntime's own, said as what it is: a custom op, which a library given to qtool implements."""
    found = re.search(r"([\w.-]+):([\w.-]+)\(-?\d+\) is not a registered function/op", reason)
    if found is None or found[1] == "ai.onnx" or found[1].startswith(OWN_DOMAINS):
        return None
    given = "none of the libraries given implements it: " if _libraries.get() else ""
    return ModelError(
        f"onnxruntime has no kernel for {found[2]}, a custom op of domain {found[1]!r}",
        hint=f"{given}give the shared library that implements it with {LIBRARY_FLAG} PATH; "
        "onnxruntime-extensions' is onnxruntime_extensions.get_library_path()",
    )


# onnxruntime prefixes a message with the C++ source line and function that raised it ("/onnxruntime_src/...h:46
# void onnxruntime::...ValidateOpsetForDomain(const std::unordered_map<...>&, ...) "): clipped to a line's
# length, that was all an opset-99 model's error said
_CXX_WHERE = re.compile(r"(?:Load model from \S+ failed:)?/\S+\.(?:h|cc|cpp|hpp):\d+ [^(]*\([^)]*\)\s*")


def ort_reason(error: Exception) -> str:
    """An onnxruntime exception's first line, without the C++ location, clipped to 300 characters."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return _CXX_WHERE.sub("", text)[:300]


def session(
    model: onnx.ModelProto,
    threads: int = 0,
    where: str = "model",
    optimized: bool = False,
    *,
    folded: bool = False,
    arena: bool = True,
    integer_kernels: bool = True,
    weights: list[onnx.TensorProto] | None = None,
    layout: bool = True,
) -> ort.InferenceSession:
    """A CPU session. `optimized` runs onnxruntime's full graph optimisation (QDQ -> integer
    kernels, as a deployment would); otherwise only basic rewrites, so that every tensor a caller
    asks for exists as it does in the graph (calibration, per-layer comparisons). `folded` (unoptimized
    only) dequantizes constant weights once, at load, with onnxruntime's own DequantizeLinear kernel,
    instead of on every run; prepacking is off, so that a kernel reads such a weight as it reads a
    computed one and every value equals the unfolded run's bit for bit. `arena=False`: no arena whatever
    the model's size, for sessions that run a few samples each, one after another (see below).
    `integer_kernels=False` (optimized only): the other fusions, but Q/DQ not turned into integer kernels,
    so a QDQ model computes its own arithmetic in float; and no layout rewrites (see below)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no spinning between runs: every caller folds each run's values in numpy before the next, and the pool's
    # threads spun on the cores that work needed (inspect --reference on orinet, 2 cores: 36.8 -> 20.7 s)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # errors reach the user as one line from the exception; onnxruntime's own log would repeat them
    options.log_severity_level = 3 if logging.getLogger("qtool").isEnabledFor(logging.INFO) else 4
    ort.set_default_logger_severity(options.log_severity_level)  # a kernel's own warnings go to the default logger
    for library in _libraries.get():
        options.register_custom_ops_library(library)
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimized else level.ORT_ENABLE_BASIC
    disabled: set[str] = set()
    if optimized and not layout:  # `layout=False`: full optimisation but onnxruntime's NCHWc blocked layout
        disabled = {"NchwcTransformer"}
    if optimized and not integer_kernels:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        # the graph as written: ENABLE_ALL's layout rewrite (NchwcTransformer) re-blocks Conv sums, and on a QDQ
        # model each changed sum can flip a rounding that later layers carry on. open_nsfw's 12 held-out crops
        # scored 33.9 dB under it and 37.3 as written (ORT_DISABLE_ALL, bit for bit ENABLE_EXTENDED's there), two
        # ambiguous crops carrying the difference. Not on every model: a MatMul's folded, prepacked weights sum
        # in another order, and an SVTRv2 recogniser's 16 samples scored 25.7 dB here, 32.4 under DISABLE_ALL
        # (helper-38): on so flip-prone a model every runtime's figure is one draw of its noise
        options.graph_optimization_level = level.ORT_ENABLE_EXTENDED
    if folded:  # constant folding skips DequantizeLinear unless QDQ handling is off
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        options.add_session_config_entry("session.disable_prepacking", "1")
    elif not optimized:
        # QDQ handling duplicates a DequantizeLinear whose output is also fetched (a probed activation) and
        # appends the copy to the node list, which puts every weight's DequantizeLinear ahead of it in the
        # order below: all weights dequantized before the first layer, what late_constants avoids. Off,
        # nothing is duplicated; constant folding off then keeps the weights' DequantizeLinear per run
        # (without QDQ handling it would fold them). Same values, bit for bit.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        disabled = {"ConstantFolding"}
    # Run nodes in list order: calibration places each reduction right after its producer, and
    # onnxruntime's default order would keep every activation alive until the end (3x the RSS).
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # onnxruntime's arena keeps a run's peak and its memory pattern plans another: a QDQ model run
    # unfused (its weights dequantized per run) held 2x its float weights after two runs
    # and what it holds is not given back when the session goes: SLANet's per-layer comparison in 7
    # stages grew 0.1 -> 1.0 GB with arenas, to 0.55 GB without
    options.enable_cpu_mem_arena = arena and external_data.byte_size(model) < NO_ARENA_BYTES
    limit = session_proto_limit()
    try:
        return _built(model, options, limit, disabled, weights)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        reason = ort_reason(e)
        if (custom := _unregistered(reason)) is not None:
            custom.where = where
            raise custom from e
        if not optimized:
            raise ModelError(f"onnxruntime cannot load it: {reason}", where=where) from e
    # A valid model that only onnxruntime's own rewrites break (its QDQ fusion copies a dilated
    # AveragePool's attributes onto QLinearAveragePool, which has none): run it unfused, and say so,
    # since a deployment on onnxruntime's default settings would fail the same way.
    unfused = session(model, threads, where, arena=arena, weights=weights)  # (QDQ arithmetic in float, unfused)
    logger.warning("%s: onnxruntime's full optimisation fails on it, so it ran unfused: %s", where, reason)
    return unfused

"""A node that makes a huge tensor out of constants alone, or a Loop that surely runs for hours, found before
anything computes it.

onnxruntime folds constant nodes when it loads a model, and onnxscript's folder in convert computes a node before
it checks its output's size: a 200-byte model whose Expand makes [20000, 20000, 10] floats out of a one-element
constant took 16-23 GB, whatever its declared output shape said. So did an outer-product Add, MatMul or Einsum of
two 40000-value constants, a Resize or OneHot whose scales or depth are constants, a ConstantOfShape or Expand
whose shape a Concat or Mul of small constants computes, and 31 Concats doubling one value (6-7 GB each).

The sizes come from the constants alone, never from a declaration: the nodes that read only constants (and the
nodes that read only those, and so on; zero-input RandomNormal too) are copied into a probe graph, with every
constant of at most SMALL values given by value and the larger ones by type and shape, and onnx's shape inference
with data propagation sizes each output. The shape an Expand or ConstantOfShape is given, a Tile's repeats or a
Pad's pads are also read from the values directly, where inference stops short. Past LIMIT_VALUES the model is
refused: no real model computes a gigavalue constant.

A Loop whose trip count is a constant and whose condition provably stays true (absent, or a constant the body
passes on unchanged) runs exactly that many times: past LIMIT_ITERATIONS it would run for hours on each sample
(10^12 iterations of one Add: never ends), and its scan outputs stack one body output per iteration. torch's
`while` loops (trip count INT64_MAX, a condition the body computes) are left alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.node_order import subgraphs

LIMIT_VALUES = 1 << 30
LIMIT_ITERATIONS = 1 << 24  # onnxruntime spends microseconds per Loop iteration: 16 M is a minute
SMALL = 1 << 12  # a shape, repeats or pads: read as values; anything larger only by its dims
STANDARD = ("", "ai.onnx")
LIMIT_SHAPE_VALUES = 1 << 20  # a 1-D tensor onnx's data propagation holds, ~150 bytes a value: 150 MB
BUILT = "out of constants: no model needs one, and it would be built in memory"
# the ops whose 1-D outputs onnx's shape inference computes value by value (data propagation: shape arithmetic),
# Shape and Size the ones that start it from a tensor that is not a constant
PROPAGATED = frozenset({"Add", "Cast", "Concat", "Div", "Gather", "Identity", "Mul", "Reshape", "Shape", "Size",
                        "Slice", "Squeeze", "Sub", "Unsqueeze"})  # fmt: skip
SHAPE_OF = frozenset({"Shape", "Size"})


def huge_constant(model: onnx.ModelProto) -> str | None:
    """What the first node that would make more than LIMIT_VALUES values from constants alone (or a Loop that
    would run past LIMIT_ITERATIONS) is, or None."""
    return _graph_huge(model, model.graph, {})


def _graph_huge(model: onnx.ModelProto, graph: onnx.GraphProto, outer: dict[str, onnx.TensorProto]) -> str | None:
    tensors = {**outer, **{t.name: t for t in graph.initializer}}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD and node.output and (t := _constant(node)) is not None:
            tensors[node.output[0]] = t
    declared = {v.name: v for v in [*graph.input, *graph.value_info] if v.type.tensor_type.HasField("shape")}
    derived = _derived(graph, tensors, declared)
    counts = [i for n in graph.node if n.op_type == "Loop" for i in n.input[:2]]  # a trip count Mul computes
    shapes, computed = _inferred_shapes(model, derived, tensors, declared, read=counts)
    tensors.update(computed)
    made = {id(n) for n in derived}
    sizes = {name: math.prod(dims) for name, dims in shapes.items()}  # once: per node, 4000 weights' DQs took 18 s
    for node in graph.node:
        if node.op_type == "Loop" and (said := _loop_huge(node, tensors)) is not None:
            return said
        size = _made_size(node, tensors, sizes) if id(node) in made else 0
        if size > LIMIT_VALUES:
            return f"node {node.name or node.output[0]!r} ({node.op_type}) makes a constant of {size:,} values {BUILT}"
        if size > LIMIT_SHAPE_VALUES and node.op_type in PROPAGATED and all(len(shapes.get(o, ())) <= 1 for o in node.output):
            return (f"node {node.name or node.output[0]!r} ({node.op_type}) computes {size:,} values of shape arithmetic"
                    " out of constants and shapes: onnx's shape inference would hold each one (~150 bytes)")
        for sub in subgraphs(node):
            if (said := _graph_huge(model, sub, tensors)) is not None:
                return said
    return None


def _made_size(node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto], sizes: dict[str, int]) -> int:
    """The values a node's outputs hold beyond those its inputs hold: a Cast or Transpose of a weight the model
    already holds makes nothing new, and is not refused however large."""
    try:
        size = _output_size(node, [tensors.get(i) if i else None for i in node.input]) or 0
    except (ValueError, TypeError, IndexError, OverflowError):  # values that do not fit the op: the checker says
        size = 0
    size = max([size] + [sizes.get(o, 0) for o in node.output if o])
    return size if size > sum(sizes.get(i, 0) for i in set(node.input) if i and node.op_type not in SHAPE_OF) else 0


def _constant(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node makes: its `value` as it is (a large one is not copied into numpy), another value
    attribute's numbers as float32 or their own integer type (a sparse or string one: None)."""
    if len(node.attribute) == 1 and node.attribute[0].name == "value":
        return node.attribute[0].t
    value = constant_value(node)
    if value is None:
        return None
    return numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, node.output[0])


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The numbers a Constant node makes (from any of its value attributes), else None: another op, a sparse or a
    string value."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attribute = node.attribute[0]
    try:
        value = np.asarray(onnx.numpy_helper.to_array(attribute.t) if attribute.name == "value"
                           else helper.get_attribute_value(attribute))  # fmt: skip
    except (ValueError, TypeError):
        return None
    return value if value.dtype.kind in "biuf" else None


def _derived(graph: onnx.GraphProto, tensors: dict[str, onnx.TensorProto],
             declared: dict[str, onnx.ValueInfoProto]) -> list[onnx.NodeProto]:  # fmt: skip
    """The standard-domain nodes without subgraphs (Constant nodes aside: their values are in `tensors`) whose
    inputs are all constants or these nodes' outputs, in an order inference can follow, whatever order the graph
    lists them in (Kahn's). A Shape or Size of a tensor whose shape is declared reads no values: it counts too."""
    candidates = [n for n in graph.node if n.domain in STANDARD and n.op_type != "Constant" and not any(subgraphs(n))]
    missing = [set() if n.op_type in SHAPE_OF and n.input and n.input[0] in declared
               else {i for i in n.input if i and i not in tensors} for n in candidates]  # fmt: skip
    readers: dict[str, list[int]] = {}
    for k, names in enumerate(missing):
        for name in names:
            readers.setdefault(name, []).append(k)
    ready, found = [k for k, names in enumerate(missing) if not names], []
    while ready:
        k = ready.pop()
        found.append(candidates[k])
        for name in candidates[k].output:
            for r in readers.pop(name, []) if name else []:
                missing[r].discard(name)
                if not missing[r]:
                    ready.append(r)
    return found


def _inferred_shapes(model: onnx.ModelProto, derived: list[onnx.NodeProto], tensors: dict[str, onnx.TensorProto],
                     declared: dict[str, onnx.ValueInfoProto], *,
                     read: list[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, onnx.TensorProto]]:  # fmt: skip
    """Each derived node's output shape that shape inference fixes, on a probe of those nodes alone, and the values
    of the small ones. A shape, repeats or scales that small constant arithmetic computes (a Concat of two
    constants) reach inference only as values: the nodes whose inputs and outputs are all small are computed
    (onnx's reference evaluator), and inference runs again with their values. onnx's own data propagation held
    every value it computed, small or not: 31 Concats doubling one constant took it to 23 GB. The values of `read`
    (Loops' trip counts) are computed too."""
    shapes = {name: tuple(t.dims) for name, t in tensors.items()}
    shapes.update(_inferred(model, derived, tensors, declared))
    computed = _evaluated(model, _feeding_unknowns(derived, shapes, read), tensors, shapes)
    if computed:
        known = {**tensors, **computed}
        shapes.update(_inferred(model, [n for n in derived if not set(n.output) <= set(computed)], known, declared))
    return shapes, computed


def _feeding_unknowns(derived: list[onnx.NodeProto], shapes: dict[str, tuple[int, ...]], read: list[str]) -> list[onnx.NodeProto]:
    """The derived nodes that a node of unknown output size reads from, directly or not (in their order): only
    their values can tell inference more (a QDQ model's hundred small DequantizeLinears need no computing)."""
    producer = {o: k for k, n in enumerate(derived) for o in n.output if o}
    stack = [*read, *(i for n in derived if any(o and o not in shapes for o in n.output) for i in n.input)]
    needed: set[int] = set()
    while stack:
        if (k := producer.get(stack.pop())) is not None and k not in needed:
            needed.add(k)
            stack.extend(derived[k].input)
    return [n for k, n in enumerate(derived) if k in needed]


def _evaluated(model: onnx.ModelProto, derived: list[onnx.NodeProto], tensors: dict[str, onnx.TensorProto],
               shapes: dict[str, tuple[int, ...]]) -> dict[str, onnx.TensorProto]:  # fmt: skip
    """The outputs of the derived nodes whose inputs have values and whose outputs inference found small."""
    if not derived:  # the evaluator's import alone is 6 MB, the peak of a small model's quantize (Silero 99 -> 105)
        return {}
    from onnx.reference import ReferenceEvaluator  # 0.1 s to import: only for a model with such nodes

    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    computed: dict[str, onnx.TensorProto] = {}
    for node in derived:
        feeds = {i: _array(computed.get(i) or tensors.get(i)) for i in node.input if i}
        if any(v is None for v in feeds.values()) or not all(o in shapes and math.prod(shapes[o]) <= SMALL for o in node.output if o):
            continue
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        except Exception:  # an op the evaluator lacks or values that do not fit it: inference alone says
            continue
        for name, value in zip(node.output, outputs, strict=False):
            if name and isinstance(value, np.ndarray) and value.size <= SMALL:
                computed[name] = numpy_helper.from_array(value, name)
    return computed


def _inferred(model: onnx.ModelProto, nodes: list[onnx.NodeProto], tensors: dict[str, onnx.TensorProto],
              declared: dict[str, onnx.ValueInfoProto]) -> dict[str, tuple[int, ...]]:  # fmt: skip
    if not nodes:
        return {}
    made = {o for n in nodes for o in n.output}
    read = sorted({i for n in nodes for i in n.input if i and i not in made})
    small = [tensors[name] for name in read if _values(tensors.get(name)) is not None]
    large = [helper.make_tensor_value_info(name, tensors[name].data_type, tensors[name].dims) if name in tensors
             else declared[name] for name in read if _values(tensors.get(name)) is None]  # fmt: skip
    probe = helper.make_model(helper.make_graph(nodes, "probe", large, [], small), opset_imports=model.opset_import)
    probe.ir_version = max(model.ir_version, 4)
    try:
        graph = onnx.shape_inference.infer_shapes(probe, strict_mode=False).graph
    except Exception:  # inference raises several unrelated types on odd graphs; the values below still count
        return {}
    shapes = {}
    for value in graph.value_info:
        dims = value.type.tensor_type.shape.dim if value.type.tensor_type.HasField("shape") else None
        if dims is not None and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _loop_huge(node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]) -> str | None:
    """A Loop that runs exactly its constant trip count, if that or its stacked scan outputs are past the limits."""
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    trips = _values(tensors.get(node.input[0])) if node.input and node.input[0] else None
    if body is None or trips is None or trips.size != 1 or len(body.input) < 2 or not body.output:
        return None
    if len(node.input) > 1 and node.input[1]:
        cond = _values(tensors.get(node.input[1]))
        if cond is None or cond.size != 1 or not cond.item():
            return None
    kept = body.output[0].name
    passed = {n.output[0]: n.input[0] for n in body.node if n.op_type == "Identity" and n.output and n.input}
    if passed.get(kept, kept) != body.input[1].name:
        return None
    count, named = int(trips.item()), f"node {node.name or node.output[0]!r} (Loop)"
    if count > LIMIT_ITERATIONS:
        return f"{named} would run {count:,} times (a constant trip count, a condition that stays true): no model needs that"
    carried = len(node.input) - 2
    for value in body.output[1 + carried :]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims) and count * math.prod(d.dim_value for d in dims) > LIMIT_VALUES:
            return f"{named} stacks {count:,} iterations' outputs, {count * math.prod(d.dim_value for d in dims):,} values {BUILT}"
    return None


def _array(tensor: onnx.TensorProto | None) -> np.ndarray | None:
    if tensor is None or math.prod(tensor.dims) > SMALL or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError):  # a string tensor, data that does not fit its dims: onnx.checker says
        return None


def _values(tensor: onnx.TensorProto | None) -> np.ndarray | None:
    found = _array(tensor)
    return None if found is None else found.reshape(-1)


def _output_size(node: onnx.NodeProto, inputs: list[onnx.TensorProto | None]) -> int | None:
    dims = list(inputs[0].dims) if inputs and inputs[0] is not None else []
    second = _values(inputs[1]) if len(inputs) > 1 else None
    if node.op_type == "ConstantOfShape":
        shape = _values(inputs[0]) if inputs else None
        return None if shape is None else math.prod(int(d) for d in shape)
    if node.op_type == "Expand" and second is not None and inputs[0] is not None:
        return math.prod(np.broadcast_shapes(tuple(dims), tuple(int(d) for d in second)))
    if node.op_type == "Tile" and second is not None and len(second) == len(dims) and inputs[0] is not None:
        return math.prod(d * int(r) for d, r in zip(dims, second, strict=True))
    if node.op_type == "Pad" and inputs and inputs[0] is not None:
        pads = second if second is not None else next((list(a.ints) for a in node.attribute if a.name == "pads"), None)
        if pads is not None and len(pads) == 2 * len(dims):
            return math.prod(d + int(pads[k]) + int(pads[k + len(dims)]) for k, d in enumerate(dims))
    return None


def densify_sparse(graph: onnx.GraphProto, where: str) -> None:
    """Sparse initializers and Constant(sparse_value) as dense tensors, in place (onnx-ir reads neither: convert was
    an internal error, or 'Node input 'k' is not a graph input'); one past LIMIT_VALUES values is refused."""
    from qtool.errors import ModelError

    def dense(sparse: onnx.SparseTensorProto, name: str) -> onnx.TensorProto:
        dims = tuple(sparse.dims)
        if (size := math.prod(dims)) > LIMIT_VALUES:
            raise ModelError(f"sparse tensor {name!r} is {size} values dense {list(dims)}: no model needs one", where=where)
        values, indices = numpy_helper.to_array(sparse.values).reshape(-1), numpy_helper.to_array(sparse.indices)
        out = np.zeros(size, values.dtype)
        out[indices.reshape(-1) if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)] = values
        return numpy_helper.from_array(out.reshape(dims), name)

    graph.initializer.extend(dense(s, s.values.name) for s in graph.sparse_initializer)
    del graph.sparse_initializer[:]
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "sparse_value":
                attribute.CopyFrom(helper.make_attribute("value", dense(attribute.sparse_tensor, node.output[0])))
        for inner in subgraphs(node):
            densify_sparse(inner, where)

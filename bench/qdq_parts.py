"""Split a QDQ model's error into its weights' and its activations' part, and redraw its weight rounding.

    .venv/bin/python bench/qdq_parts.py weights-float QDQ FLOAT OUT      # activations quantized, weights float
    .venv/bin/python bench/qdq_parts.py weights-only QDQ FLOAT OUT       # FLOAT with QDQ's dequantized weights
    .venv/bin/python bench/qdq_parts.py jitter QDQ FLOAT OUT SEED LO HI  # int8 weights requantized, scales x (1 + U(LO, HI))
    .venv/bin/python bench/qdq_parts.py score MODEL_NAME FLOAT QDQ...    # per-sample SQNR on the zoo's validation list

QDQ is qtool's (DequantizeLinear of an integer initializer) or quantize_static's (QuantizeLinear -> DequantizeLinear
of a constant, behind the Cast a float16 model's weight goes through); FLOAT the float model it was quantized from
(`qtool convert`'s), whose nodes keep their names. Made for UVDoc's gap (bench/README.md): each tool's weights and
activations scored apart, and how far the weights' rounding alone moves one page.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

BENCH = Path(__file__).resolve().parent


def _dequantized(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, lo=None, hi=None) -> np.ndarray:
    shape = [1] * x.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = -1
    scale, zero = scale.astype(np.float64).reshape(shape), zero.astype(np.float64).reshape(shape)
    q = x.astype(np.float64) if lo is None else np.clip(np.round(x / scale) + zero, lo, hi)
    return ((q - zero) * scale).astype(np.float32)


def weight_slots(model: onnx.ModelProto):
    """(node, input slot, DequantizeLinear, float weight it quantizes, its initializer) for every weight a
    DequantizeLinear gives a node: qtool's (an integer initializer: no float weight) or quantize_static's."""
    inits = {t.name for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            dq = made.get(name)
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") or dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:
                yield node, k, dq, None, None
                continue
            q = made.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            cast = made.get(q.input[0])
            if q.input[0] in inits:
                yield node, k, dq, q.input[0], q.input[0]
            elif cast is not None and cast.op_type == "Cast" and cast.input[0] in inits:
                yield node, k, dq, q.input[0], cast.input[0]


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def weights_float(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> onnx.ModelProto:
    floats = {n.name: n for n in float_model.graph.node}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    have = {t.name for t in qdq.graph.initializer} | {o for n in qdq.graph.node for o in n.output}
    for node, k, _, float_weight, _ in list(weight_slots(qdq)):
        if float_weight is not None:  # quantize_static's: the float weight (behind its Cast) is in the graph
            node.input[k] = float_weight
            continue
        original = floats[node.name].input[k]
        name = original if original not in have else f"{original}_float"
        if name not in have:
            qdq.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(float_inits[original]), name))
            have.add(name)
        node.input[k] = name
    return _pruned(qdq)


def _pruned(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes no output depends on (the weights' Q/DQ left unread)."""
    needed, keep = {o.name for o in model.graph.output}, []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    return model


def weights_only(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> onnx.ModelProto:
    inits, floats = _arrays(qdq), {n.name: n for n in float_model.graph.node}
    targets = {t.name: t for t in float_model.graph.initializer}
    for node, k, dq, _, source in weight_slots(qdq):
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        scale, zero = inits[dq.input[1]], inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else np.zeros(1, np.int8)
        if source is None:
            name, values = floats[node.name].input[k], _dequantized(inits[dq.input[0]], scale, zero, axis)
        else:
            info = np.iinfo(zero.dtype)
            name, values = source, _dequantized(inits[source].astype(np.float32), scale, zero, axis, info.min, info.max)
        if name in targets:
            targets[name].CopyFrom(numpy_helper.from_array(values, name))
    return float_model


def jitter(qdq: onnx.ModelProto, float_model: onnx.ModelProto, seed: int, lo: float, hi: float) -> onnx.ModelProto:
    rng, floats, values = np.random.default_rng(seed), {n.name: n for n in float_model.graph.node}, _arrays(float_model)
    tensors = {t.name: t for t in qdq.graph.initializer}
    for node, k, dq, _, source in weight_slots(qdq):
        quantized = numpy_helper.to_array(tensors[dq.input[0]]) if source is None else None
        if quantized is None or quantized.dtype != np.int8 or node.name not in floats:
            continue
        scale = numpy_helper.to_array(tensors[dq.input[1]]).astype(np.float32)
        scale = (scale * (1 + rng.uniform(lo, hi, scale.shape))).astype(np.float32)
        weight, axis = values[floats[node.name].input[k]], next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        requantized = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
        tensors[dq.input[0]].CopyFrom(numpy_helper.from_array(requantized, dq.input[0]))
        tensors[dq.input[1]].CopyFrom(numpy_helper.from_array(scale, dq.input[1]))
    return qdq


def score(name: str, reference: str, models: list[str]) -> None:
    sys.path.insert(0, str(BENCH))
    from metrics import make_session  # the zoo's session: Q/DQ in float, extended optimizations
    from transformers_suite import input_spec, read_feeds

    cache = BENCH / ".cache"
    entry = json.loads((cache / "manifest.json").read_text())["zoo"][name]
    feeds = list(read_feeds(cache / entry["val_list"], input_spec(entry)))
    ref = make_session(reference, 2)
    names = [o.name for o in ref.get_outputs()]
    expected = [ref.run(names, feed) for feed in feeds]
    for path in models:
        session, signal, noise = make_session(path, 2), np.zeros(len(names)), np.zeros(len(names))
        pages = []
        for feed, want in zip(feeds, expected, strict=True):
            got = session.run(names, feed)
            s = np.array([np.sum(np.square(w.astype(np.float64))) for w in want])
            e = np.array([np.sum(np.square(w.astype(np.float64) - g.astype(np.float64))) for w, g in zip(want, got, strict=True)])
            signal, noise = signal + s, noise + e
            pages.append(10 * np.log10(s[0] / e[0]))
        worst = np.argsort(pages)[:3]
        pooled = " ".join(f"{n} {10 * np.log10(s / e):.2f}" for n, s, e in zip(names, signal, noise, strict=True))
        print(f"{path}: {pooled} dB; {names[0]} median sample {np.median(pages):.2f}, worst samples "
              + ", ".join(f"{int(i)}: {pages[i]:.1f}" for i in worst))  # fmt: skip


def main(argv: list[str]) -> int:
    modes = {"weights-float": 4, "weights-only": 4, "jitter": 7}
    if argv and argv[0] == "score" and len(argv) >= 4:
        score(argv[1], argv[2], argv[3:])
        return 0
    if not argv or modes.get(argv[0]) != len(argv):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    qdq, float_model = onnx.load(argv[1]), onnx.load(argv[2])
    if argv[0] == "weights-float":
        out = weights_float(qdq, float_model)
    elif argv[0] == "weights-only":
        out = weights_only(qdq, float_model)
    else:
        out = jitter(qdq, float_model, int(argv[4]), float(argv[5]), float(argv[6]))
    onnx.save(out, argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

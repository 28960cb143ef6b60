"""Where a quantized model's output error comes from (issue 23's block analysis): the float model run with some of
its weights replaced by the dequantized weights of QDQ models, output SQNR and argmax agreement over the first N
samples of an input list (positions an `attention_mask` input masks out left out).

    python bench/weight_swap.py FLOAT.onnx LIST N NAME=RECIPE ...

RECIPE: `BASE.onnx` (every weight a DequantizeLinear of constants feeds, dequantized) or `float`, then
`+WEIGHT:SOURCE` items, SOURCE a QDQ model (its dequantized WEIGHT), `float` (the float weight) or a `.npy` file.
A weight's name is its float initializer's (a QDQ model's DequantizeLinear output keeps it). Run in the project
venv from the repository root; e.g. whisper_base_dec with B32 weights but the tied table float:
`b32+tablefloat=runs/whisper_base_dec/blocks_b32_a32.onnx+whisper.proj_out.weight:float`.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers_suite import read_feeds


def dequantized(path: str) -> dict[str, np.ndarray]:
    """Every weight and bias a DequantizeLinear of initializers writes in `path` (per tensor, channel or block), as
    float32."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or not all(x in inits for x in dq.input if x):
            continue
        q, scale = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in dq.input[:2])
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0
        attrs = {a.name: a.i for a in dq.attribute}
        axis, block = attrs.get("axis", 1) % q.ndim, attrs.get("block_size", 0)
        if block:  # scale / zero point [.., ceil(K/B), ..]: each repeated over its block, the last one cut at K
            scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
            zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis) if np.ndim(zero) else zero
        elif np.ndim(scale) == 1:  # per channel along axis
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        out[dq.output[0]] = ((q - zero) * scale).astype(np.float32)
    return out


def main() -> None:
    reference, listing, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = onnx.load(reference)
    floats = {i.name: numpy_helper.to_array(i) for i in base.graph.initializer}
    spec = {
        i.name: ([d.dim_value for d in i.type.tensor_type.shape.dim], "int64" if i.type.tensor_type.elem_type == 7 else "float32")
        for i in base.graph.input
    }  # fmt: skip
    feeds = list(itertools.islice(read_feeds(listing, spec), count))
    keep = [f["attention_mask"].astype(bool).reshape(-1) if "attention_mask" in f else slice(None) for f in feeds]

    def run(model: onnx.ModelProto) -> list[np.ndarray]:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return [session.run(None, f)[0] for f in feeds]

    def flat(x: np.ndarray, k) -> np.ndarray:
        return x.reshape(-1, x.shape[-1])[k].astype(np.float64)

    truth, sources = run(base), {}

    def source(path: str) -> dict[str, np.ndarray]:
        if path not in sources:  # dequantized once a path, however many items name it
            sources[path] = dequantized(path)
        return sources[path]

    signal = sum(float(np.sum(flat(r, k) ** 2)) for r, k in zip(truth, keep, strict=True))
    for arg in sys.argv[4:]:
        name, recipe = arg.split("=", 1)
        first, *items = recipe.split("+")
        values = dict(floats)
        if first != "float":
            values.update(source(first))
        for item in items:
            weight, path = item.split(":", 1)
            values[weight] = (floats[weight] if path == "float" else np.load(path) if path.endswith(".npy")
                              else source(path)[weight])  # fmt: skip
        model = onnx.ModelProto()
        model.CopyFrom(base)
        for init in model.graph.initializer:
            if not np.array_equal(values[init.name], floats[init.name]):
                init.CopyFrom(numpy_helper.from_array(values[init.name].astype(floats[init.name].dtype), init.name))
        outs = run(model)
        noise = sum(float(np.sum((flat(o, k) - flat(r, k)) ** 2)) for o, r, k in zip(outs, truth, keep, strict=True))
        agree = np.concatenate([flat(o, k).argmax(-1) == flat(r, k).argmax(-1) for o, r, k in zip(outs, truth, keep, strict=True)])
        print(f"{name}: SQNR {10 * np.log10(signal / noise):.2f} dB, argmax agreement {agree.mean():.4f} (n={agree.size})")


if __name__ == "__main__":
    main()

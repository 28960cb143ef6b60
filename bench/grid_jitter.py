"""Is a zoo row's SQNR gap a fluke of where its grids fell? Score quantized models with their activation grids moved.

A paired bootstrap over the held-out inputs (zoo_suite.delta_interval) keeps each model's grids fixed, so it cannot
tell a model whose outputs sit near their rounding edges from one whose outputs do not. This scores each model on
the zoo's validation list as written and then `--draws` times with every activation scale multiplied by
1 + U(−r, r) (one draw per distinct grid, so tensors that share an encoding keep sharing it; weights and tensors
computed from constants untouched), against the converted float model, and prints per model the pooled SQNR of each
output, the draws' mean, sd and range, and the input that holds the largest share of the pooled noise. Run in
the zoo's venv from the repo root:

  python bench/grid_jitter.py oww_hey_mycroft \
      bench/.cache/runs/oww_hey_mycroft/zoo_qtool_w8a8.quant.onnx bench/.cache/runs/oww_hey_mycroft/zoo_ort_pre.quant.onnx

`--keep NAME` holds a tensor's grid where it is (a logit whose lowest level was placed on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, MANIFEST, RUNS
from transformers_suite import input_spec, read_feeds, session


def activation_scales(model: onnx.ModelProto, keep: set[str]) -> list[str]:
    """The scale initializers of the QuantizeLinear nodes that read data: not a weight, not a Cast of one."""
    constant = {i.name for i in model.graph.initializer}
    for node in model.graph.node:  # onnxruntime quantizes a float16 model's weights behind a Cast
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in constant:
            constant.update(node.output)
    return sorted({n.input[1] for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[0] not in constant and n.input[0] not in keep})  # fmt: skip


def jittered(model: onnx.ModelProto, scales: list[str], seed: int, spread: float) -> onnx.ModelProto:
    """`model` with each distinct grid among `scales` scaled by its own 1 + U(−spread, spread)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in copy.graph.initializer}
    factors: dict[bytes, np.ndarray] = {}
    for name in scales:
        scale = numpy_helper.to_array(inits[name])
        factor = factors.setdefault(scale.tobytes(), 1 + spread * rng.uniform(-1, 1, scale.shape))
        inits[name].CopyFrom(numpy_helper.from_array((scale * factor).astype(scale.dtype), name))
    return copy


def noise(model: onnx.ModelProto, feeds: list[dict], refs: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """[sample, output] squared error of outputs `names` against `refs`."""
    sess = session_of(model)
    errors = np.zeros((len(feeds), len(names)))
    for i, (feed, ref) in enumerate(zip(feeds, refs, strict=True)):
        for k, (out, want) in enumerate(zip(sess.run(names, feed), ref, strict=True)):
            errors[i, k] = float(np.sum((out.astype(np.float64) - want.astype(np.float64)) ** 2))
    return errors


def session_of(model: onnx.ModelProto):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:  # bench sessions load from a path
        f.write(model.SerializeToString())
        f.flush()
        return session(f.name, 2)


def db(signal: np.ndarray, errors: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10 * np.log10(signal / errors.sum(axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="zoo model name (bench/.cache/manifest.json)")
    parser.add_argument("quantized", nargs="+", type=Path)
    parser.add_argument("--draws", type=int, default=12)
    parser.add_argument("--spread", type=float, default=0.01, help="r: each grid's scale times 1 + U(-r, r)")
    parser.add_argument("--keep", action="append", default=[], help="a tensor whose grid stays put")
    args = parser.parse_args()
    entry = json.loads(MANIFEST.read_text())["zoo"][args.model]
    reference = session(RUNS / args.model / "zoo.conv.onnx", 2)
    inputs = {i.name for i in reference.get_inputs()}
    feeds = [
        {k: v for k, v in f.items() if k in inputs} for f in read_feeds(CACHE / entry["val_list"], input_spec(entry))
    ]
    outputs = [o.name for o in reference.get_outputs()]
    refs = [reference.run(outputs, f) for f in feeds]
    signal = np.array([sum(float(np.sum(r[k].astype(np.float64) ** 2)) for r in refs) for k in range(len(outputs))])
    for path in args.quantized:
        model = onnx.load(str(path))
        scales = activation_scales(model, set(args.keep))
        errors = noise(model, feeds, refs, outputs)
        draws = np.array([db(signal, noise(jittered(model, scales, seed, args.spread), feeds, refs, outputs))
                          for seed in range(args.draws)])  # fmt: skip
        grids = len({numpy_helper.to_array(i).tobytes() for i in model.graph.initializer if i.name in set(scales)})
        print(f"{path.name}: {grids} activation grids, {args.draws} draws of ±{args.spread:.1%}")
        for k, name in enumerate(outputs):
            share = errors[:, k] / errors[:, k].sum() if errors[:, k].sum() else errors[:, k]
            worst = int(np.argmax(share))
            print(f"  {name}: {db(signal, errors)[k]:.2f} dB as written; jittered mean {draws[:, k].mean():.2f}, "
                  f"sd {draws[:, k].std():.2f}, {draws[:, k].min():.2f} to {draws[:, k].max():.2f}; "
                  f"input {worst} holds {share[worst]:.0%} of the noise")  # fmt: skip


if __name__ == "__main__":
    main()

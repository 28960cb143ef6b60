"""Where a QDQ model's output error comes from, by activation (issue 21's YOLOv8 analysis): the QDQ model run with
the QuantizeLinear -> DequantizeLinear pair of some activations taken out (those tensors float, every weight and
every other activation as written), output SQNR against the float model over the first N samples of an input list.

    .venv/bin/python bench/activation_swap.py FLOAT.onnx QDQ.onnx LIST N [--part OUT:AXIS:START[:END]]...
        [--prefix K1,K2,...] [NAME=REGEX ...]

NAME=REGEX: the activations whose name matches REGEX (re.search) float. --prefix: the first K quantized
activations in graph order float, for each K: where along the depth the error enters (nudenet's YOLOv8n: its
first 22 activations float take the class scores 12.6 -> 20.1 dB, all 241 to 23.5). --part: an output's channel
range scored apart as well (nudenet's class scores: output0:1:4). Rows `none` (the QDQ model as written) and
`all` (every activation float: what its weights alone cost) come first. Run from the repository root.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics import make_session
from transformers_suite import read_feeds


def quantized_activations(model: onnx.ModelProto) -> list[str]:
    """The tensors a QuantizeLinear of a non-constant reads, in graph order."""
    constants = {i.name for i in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]


def without_grids(model: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """`model` with the QuantizeLinear -> DequantizeLinear pairs of `names` taken out: their readers read the float
    tensor. A pair whose dequantized output is a graph output stays (nothing else could write that name), and so
    does the QuantizeLinear it shares with the pairs taken out."""
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    quantize = {n.output[0]: n.input[0] for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in names}
    rename = {
        n.output[0]: quantize[n.input[0]]
        for n in nodes
        if n.op_type == "DequantizeLinear" and n.input[0] in quantize and n.output[0] not in outputs
    }
    readers: dict[str, list[str]] = {}  # a QuantizeLinear's output -> the outputs of the nodes reading it
    for n in nodes:
        for name in n.input:
            if name in quantize:
                readers.setdefault(name, []).extend(n.output)
    # a QuantizeLinear goes only when every reader went: one shared with a DequantizeLinear that writes a graph
    # output still feeds it
    dropped = set(rename) | {q for q in quantize if readers.get(q) and all(r in rename for r in readers[q])}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in nodes:
        if any(o in dropped for o in node.output):
            continue
        kept = out.graph.node.add()
        kept.CopyFrom(node)
        for i, name in enumerate(kept.input):
            kept.input[i] = rename.get(name, name)
    return out


def parse_part(text: str) -> tuple[str, int, int, int | None]:
    name, axis, start, *end = text.split(":")
    return name, int(axis), int(start), int(end[0]) if end and end[0] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("qdq")
    parser.add_argument("listing")
    parser.add_argument("count", type=int)
    parser.add_argument("--part", action="append", default=[], type=parse_part)
    parser.add_argument("--prefix", default="")
    parser.add_argument("groups", nargs="*")
    args = parser.parse_intermixed_args()

    reference, qdq = onnx.load(args.reference), onnx.load(args.qdq)
    spec = {i.name: ([d.dim_value for d in i.type.tensor_type.shape.dim], "float32") for i in reference.graph.input}
    feeds = list(itertools.islice(read_feeds(args.listing, spec), args.count))
    names = [o.name for o in reference.graph.output]

    def run(model: onnx.ModelProto) -> list[list[np.ndarray]]:
        with tempfile.TemporaryDirectory() as scratch:  # make_session opens a path
            onnx.save(model, Path(scratch) / "model.onnx")
            session = make_session(Path(scratch) / "model.onnx", threads=1)
        return [session.run(names, f) for f in feeds]

    def views(outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        found = {n: o for n, o in zip(names, outs, strict=True)}
        for name, axis, start, end in args.part:
            part = found[name].take(range(start, end or found[name].shape[axis]), axis=axis)
            found[f"{name} axis {axis} [{start}:{end or ''}]"] = part
        return found

    truth = [views(o) for o in run(reference)]

    def report(label: str, floated: set[str]) -> None:
        got = [views(o) for o in run(without_grids(qdq, floated))]
        cells = []
        for key in truth[0]:
            signal = sum(float(np.sum(t[key].astype(np.float64) ** 2)) for t in truth)
            noise = sum(
                float(np.sum((g[key].astype(np.float64) - t[key]) ** 2)) for g, t in zip(got, truth, strict=True)
            )
            cells.append(f"{key} {10 * np.log10(signal / noise) if noise else float('inf'):.2f}")
        print(f"{label} ({len(floated)} float): " + ", ".join(cells) + " dB", flush=True)

    acts = quantized_activations(qdq)
    report("none", set())
    report("all", set(acts))
    for k in [int(k) for k in args.prefix.split(",") if k]:
        report(f"first {k} ({acts[min(k, len(acts)) - 1]})", set(acts[:k]))
    for group in args.groups:
        label, pattern = group.split("=", 1)
        report(label, {a for a in acts if re.search(pattern, a)})


if __name__ == "__main__":
    main()

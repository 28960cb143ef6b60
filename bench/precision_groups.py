"""Which tensors of a transformer cost the accuracy at 8 bits: W8A16 with one structural group of activations
pinned back to 8 bits (every other activation 16-bit), on the held-out validation samples.

    .venv/bin/python bench/precision_groups.py all_minilm_l6_v2 [--groups lnin,ffn2,...]

Groups, found by graph structure: `lnin` the LayerNormalization inputs (the residual sums), `lnout` their
outputs, `ffn1` the MLP's first MatMul (+ bias) outputs, `gelu` the activation outputs, `ffn2` the second
MatMul (+ bias) outputs (the branch added into the residual), `softmax` the attention probabilities, `scores`
the Softmax inputs and the two tensors before them, `ctx` the attention context (probabilities @ V), `emb` the
embedding Gathers and their sums, `rest` every other activation. The 8-bit encodings are the plain W8A8 run's
(min-max, per-row weights), given as overrides, so each row differs from W8A16 in that group only. Needs the
transformers suite's prepared models (bench/README.md) and its W8A8 run (`bench/run.py --suite transformers`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import onnx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import CACHE, MINMAX, RUNS, qtool_exe  # noqa: E402

FLAGS = ["--use_per_row_quantization", "--use_per_channel_quantization", "--bias_bitwidth", "32", *MINMAX]  # as its rows ran


def groups(model: onnx.ModelProto, encoded: set[str]) -> dict[str, list[str]]:
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def outs(*ops: str) -> list[str]:
        return [o for n in model.graph.node if n.op_type in ops for o in n.output]

    def with_bias(t: str) -> list[str]:
        return [t, *(r.output[0] for r in readers.get(t, []) if r.op_type == "Add")]

    found = {"lnin": [n.input[0] for n in model.graph.node if n.op_type == "LayerNormalization"]}
    found["lnout"] = outs("LayerNormalization")
    found["gelu"] = outs("Gelu")
    found["ffn1"] = [t for g in found["gelu"] for t in with_bias(producer[g].input[0])]
    found["ffn2"] = [t for g in found["gelu"] for r in readers.get(g, []) for t in with_bias(r.output[0])]
    found["softmax"] = outs("Softmax")
    found["scores"] = [t for s in found["softmax"] for t in _behind(producer, producer[s].input[0], 3)]
    found["ctx"] = [m.output[0] for s in found["softmax"] for m in _through(readers, s, "Where") if m.op_type == "MatMul"]
    first_norm = found["lnin"][0] if found["lnin"] else None  # the embeddings' sum, before the first LayerNorm
    found["emb"] = [*outs("Gather"), *_behind(producer, first_norm, 3)] if first_norm else outs("Gather")
    named = {t for ts in found.values() for t in ts}
    found["rest"] = [t for t in encoded if t not in named]
    return {k: [t for t in v if t in encoded] for k, v in found.items()}


def _through(readers: dict, tensor: str, op: str) -> list[onnx.NodeProto]:
    """The readers of `tensor`, looking through one `op` node (a mask's Where after a Softmax)."""
    found = []
    for r in readers.get(tensor, []):
        found += readers.get(r.output[0], []) if r.op_type == op else [r]
    return found


def _behind(producer: dict, tensor: str, depth: int) -> list[str]:
    chain = [tensor]
    while len(chain) < depth and chain[-1] in producer and producer[chain[-1]].input:
        chain.append(producer[chain[-1]].input[0])
    return chain


def run(name: str, wanted: list[str] | None) -> None:
    runs = RUNS / name
    model, calib, val = runs / "qtool.conv.onnx", CACHE / "data" / name / "calib.txt", CACHE / "data" / name / "val.txt"
    w8a8 = json.loads((runs / "tf_qtool_w8a8.quant.encodings.json").read_text())["activation_encodings"]
    found = groups(onnx.load(str(model), load_external_data=False), set(w8a8))
    rows = []
    for group in ["none", *(wanted or found)]:
        tensors = found.get(group, [])
        overrides = runs / f"groups_{group}.json"
        overrides.write_text(
            json.dumps({"activation_encodings": {t: w8a8[t] for t in tensors}, "param_encodings": {}})
        )
        out = runs / f"groups_{group}.quant.onnx"
        cmd = [qtool_exe(), "quantize", "-i", model, "--input_list", calib, "--eval_list", val, "-o", out, *FLAGS,
               "--act_bitwidth", "16", "--quantization_overrides", overrides, "--json"]  # fmt: skip
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if done.returncode != 0:
            rows.append(f"| {group} | {len(tensors)} | failed: {done.stderr.strip().splitlines()[-1]} | |")
            continue
        output = json.loads(done.stdout)["outputs (float vs quantized)"][0]
        rows.append(f"| {group} | {len(tensors)} | {output['sqnr_db']:.1f} | {output['cosine']:.4f} |")
        print(rows[-1], flush=True)
    print(f"\n{name}: W8A16 with one group of activations at 8 bits (held-out val)\n")
    print("| 8-bit group | tensors | SQNR dB | cosine |\n| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a transformers-suite model name, e.g. all_minilm_l6_v2")
    parser.add_argument("--groups", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    run(args.model, args.groups.split(",") if args.groups else None)

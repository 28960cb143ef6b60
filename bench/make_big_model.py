"""A model past protobuf's 2 GiB, for qtool's external-data paths (issue 22): numpy only, no torch.

    .venv/bin/python bench/make_big_model.py /tmp/big          # 33 x MatMul(4096x4096) + Tanh: 2.2 GB
    /usr/bin/time -v .venv/bin/qtool quantize -i /tmp/big/model.onnx --input_list /tmp/big/list.txt \\
        -o /tmp/big/out/q.onnx --use_per_row_quantization --evaluate_samples 2

The weights go to model.onnx.data beside model.onnx (external data); four random input samples
and their input_list are written too. Seeded: the same arguments give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--layers", type=int, default=33)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(args.layers):
        w = rng.standard_normal((args.width, args.width), dtype=np.float32) / np.float32(np.sqrt(args.width))
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Tanh", [f"h{i}"], [f"t{i}"])]
        x = f"t{i}"
    nodes[-1].output[0] = "y"
    shape = [1, 8, args.width]
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(args.folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    lines = []
    for k in range(args.samples):
        path = args.folder / f"s{k}.raw"
        rng.standard_normal(shape, dtype=np.float32).tofile(path)
        lines.append(str(path))
    (args.folder / "list.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

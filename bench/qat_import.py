"""How a PyTorch QAT export comes through `qtool convert` + `qtool quantize` (14fcaa5): a model whose Linear layers
fake-quantize their inputs (per tensor) and weights (per channel, with a learned clip: 0.9 of each row's max),
exported by both of torch's exporters (TorchScript with and without constant folding, dynamo), converted, quantized
on 8 samples, and scored against the QAT model itself (the function training fitted) on 64 held-out inputs.

Run with the transformers bench venv (torch): `/work/benchvenv/bin/python bench/qat_import.py .venv/bin/qtool OUT_DIR`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn


class FakeQuantLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero, 0, -128, 127)
        return nn.functional.linear(torch.fake_quantize_per_tensor_affine(x, 0.05, 0, -128, 127), w, self.bias)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = FakeQuantLinear(32, 64), FakeQuantLinear(64, 32)
        for lin in (self.a, self.b):
            lin.register_buffer("w_scale", lin.weight.detach().abs().amax(1) / 127 * 0.9)  # a learned clip
            lin.register_buffer("w_zero", torch.zeros(lin.out_features, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def sqnr(reference: str, model: str, inputs: list[np.ndarray]) -> float:
    def run(path: str) -> np.ndarray:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.stack([session.run(None, {name: x})[0] for x in inputs])

    want, got = run(reference), run(model)
    return float(10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()))


def main(qtool: str, out: Path) -> None:
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    model = Block().eval()
    example = torch.randn(1, 10, 32)
    exports = {"torchscript, folded": dict(dynamo=False, do_constant_folding=True),
               "torchscript, unfolded": dict(dynamo=False, do_constant_folding=False), "dynamo": dict(dynamo=True)}  # fmt: skip
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(1, 10, 32)).astype(np.float32) for _ in range(8)]
    held_out = [rng.normal(size=(1, 10, 32)).astype(np.float32) for _ in range(64)]
    for k, x in enumerate(calib):
        x.tofile(out / f"x{k}.raw")
    for tag, flags in exports.items():
        stem = out / tag.replace(", ", "_")
        torch.onnx.export(model, (example,), f"{stem}.onnx", opset_version=17, **flags)
        name = ort.InferenceSession(f"{stem}.onnx", providers=["CPUExecutionProvider"]).get_inputs()[0].name
        (out / "list.txt").write_text("".join(f"{name}:=x{k}.raw\n" for k in range(len(calib))))
        subprocess.run([qtool, "convert", "-i", f"{stem}.onnx", "-o", f"{stem}.conv.onnx"], check=True, capture_output=True)
        subprocess.run([qtool, "quantize", "-i", f"{stem}.conv.onnx", "--input_list", out / "list.txt", "-o",
                        f"{stem}.quant.onnx", "--use_per_channel_quantization"], check=True, capture_output=True)  # fmt: skip
        print(f"{tag}: quantized vs the QAT model {sqnr(f'{stem}.onnx', f'{stem}.quant.onnx', held_out):.2f} dB, "
              f"converted float vs the QAT model {sqnr(f'{stem}.onnx', f'{stem}.conv.onnx', held_out):.2f} dB")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

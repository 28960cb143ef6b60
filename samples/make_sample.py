"""Build qtool's bundled sample: a small digits CNN as ONNX plus its data.

Run from the repository root:

    python samples/make_sample.py

It needs ``torch==2.13.0`` (CPU build), ``scikit-learn``, ``onnx``,
``onnxruntime`` and ``numpy``. It is deterministic (fixed seeds, deterministic
algorithms, one thread) and writes, next to this script:

- ``digits_cnn.onnx``: opset 13, input ``image`` [batch,1,8,8] float32 in
  [0, 1], output ``logits`` [batch,10]; BatchNormalization nodes are kept.
- ``calib/calib_NNN.raw`` + ``input_list.txt``: 64 calibration samples
  taken from the training split.
- ``val/val_NNN.raw`` + ``val_list.txt`` + ``val_labels.txt``: 300 held-out
  samples never used for training.
- ``overrides.json``: an example AIMET 0.6.1 quantization-overrides file.
- ``README.md``: what these files are, with the float held-out accuracy.

Every ``.raw`` file is one 1x1x8x8 float32 little-endian C-order tensor with
no header (256 bytes).
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn

SEED = 0
HERE = Path(__file__).resolve().parent
ONNX_NAME = "digits_cnn.onnx"
N_VAL = 300
N_CALIB = 64
EPOCHS = 15
BATCH = 64
MIN_ACCURACY = 0.95
RAW_BYTES = 1 * 1 * 8 * 8 * 4


class DigitsCNN(nn.Module):
    """Tiny CNN exercising Conv/BN/ReLU, depthwise, residual Add and Concat."""

    def __init__(self) -> None:
        """Create the layers; names become the ONNX initializer names."""
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.bn_dw = nn.BatchNorm2d(32)
        self.pw = nn.Conv2d(32, 32, 1)
        self.bn_pw = nn.BatchNorm2d(32)
        self.side = nn.Conv2d(32, 32, 1)
        self.bn_side = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map N x 1 x 8 x 8 images in [0, 1] to N x 10 logits."""
        stem = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn_dw(self.dw(stem)))
        y = self.bn_pw(self.pw(y))
        res = torch.relu(y + stem)
        side = torch.relu(self.bn_side(self.side(stem)))
        z = self.pool(torch.cat([res, side], dim=1))
        z = torch.relu(self.bn2(self.conv2(z)))
        return self.fc(torch.flatten(self.gap(z), 1))


def seed_everything(seed: int) -> None:
    """Make Python, NumPy and torch deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def load_splits() -> dict[str, np.ndarray]:
    """Load digits as N x 1 x 8 x 8 float32 in [0, 1] and split it."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    val_idx, train_idx = order[:N_VAL], order[N_VAL:]
    calib_idx = train_idx[:N_CALIB]
    return {
        "x_train": x[train_idx],
        "y_train": y[train_idx],
        "x_val": x[val_idx],
        "y_val": y[val_idx],
        "x_calib": x[calib_idx],
    }


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train(data: dict[str, np.ndarray]) -> nn.Module:
    """Train the CNN with Adam for a fixed number of epochs."""
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        acc = accuracy(model, data["x_val"], data["y_val"])
        print(f"epoch {epoch + 1:2d}: loss {loss.item():.4f} held-out acc {acc:.4f}")
    model.eval()
    return model


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export with the TorchScript exporter, keeping BatchNorm nodes.

    ``do_constant_folding=False`` keeps BatchNormalization in the graph
    (qtool folds it itself); ``verify_onnx`` checks that it is there.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=13,
            do_constant_folding=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    # Re-save so the file is one self-contained protobuf (no external data).
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=False)


def verify_onnx(model: nn.Module, path: Path, x: np.ndarray) -> np.ndarray:
    """Check the ONNX file and that ORT matches torch; return ORT logits."""
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RuntimeError(f"unexpected external data: {external}")
    if not any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        raise RuntimeError("BatchNormalization was folded away by the exporter")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    return got


def write_raw_set(x: np.ndarray, folder: str, list_name: str) -> None:
    """Write one headerless 1x1x8x8 float32 LE file per sample plus a list."""
    out_dir = HERE / folder
    out_dir.mkdir(exist_ok=True)
    for stale in out_dir.glob(f"{folder}_*.raw"):
        stale.unlink()
    lines = []
    for i, sample in enumerate(x):
        name = f"{folder}/{folder}_{i:03d}.raw"
        data = np.ascontiguousarray(sample[None], dtype="<f4").tobytes(order="C")
        if len(data) != RAW_BYTES:
            raise RuntimeError(f"{name}: {len(data)} bytes, expected {RAW_BYTES}")
        (HERE / name).write_bytes(data)
        lines.append(name)
    (HERE / list_name).write_text("\n".join(lines) + "\n")


def first_conv_weight(proto: onnx.ModelProto) -> str | None:
    """Name of the first Conv's weight initializer, if it is one."""
    inits = {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            name = node.input[1]
            return name if name in inits else None
    return None


def write_overrides(path: Path) -> None:
    """Write an AIMET 0.6.1 overrides example (input activation only).

    The first Conv's weight is deliberately not overridden: qtool folds the
    following BatchNormalization into it, which changes its min/max.
    """
    proto = onnx.load(str(path), load_external_data=False)
    print("initializers:", [t.name for t in proto.graph.initializer])
    print("first conv weight:", first_conv_weight(proto))
    overrides = {
        "version": "0.6.1",
        "activation_encodings": {
            "image": [
                {
                    "bitwidth": 8,
                    "dtype": "int",
                    "is_symmetric": "False",
                    "min": 0.0,
                    "max": 1.0,
                }
            ]
        },
        "param_encodings": {},
    }
    text = json.dumps(overrides, indent=2) + "\n"
    (HERE / "overrides.json").write_text(text)


README_TEMPLATE = """\
# qtool sample: digits CNN

Generated by `make_sample.py`: run `python samples/make_sample.py` from the
repository root (needs `torch==2.13.0`, `scikit-learn`, `onnx`, `onnxruntime`,
`numpy`). It is deterministic: fixed seeds, one thread.

- `digits_cnn.onnx`: a small CNN trained on scikit-learn's 8x8 digits.
  Opset 13; input `image` [batch,1,8,8] float32 in [0,1]; output `logits`
  [batch,10]. Ops: Conv+BatchNormalization+Relu, depthwise Conv (group 32),
  pointwise Conv, residual Add+Relu, Concat, MaxPool, GlobalAveragePool,
  Flatten, Gemm. BatchNormalization nodes are kept (not folded).
- `calib/calib_000.raw` ... `calib_{last_calib}.raw`: {n_calib} calibration
  samples from the training split; `input_list.txt` lists them.
- `val/val_000.raw` ... `val_{last_val}.raw`: {n_val} held-out samples never
  used for training; `val_list.txt` lists them and `val_labels.txt` holds
  their labels (one integer per line, same order).
- `overrides.json`: example quantization overrides in AIMET 0.6.1 layout
  (`image` as 8-bit asymmetric in [0, 1]; no param overrides, since
  BatchNorm folding changes the conv weights).

List paths are relative to this folder. Each `.raw` file is one 1x1x8x8
float32 tensor, little-endian, C order, no header ({raw_bytes} bytes).
Pixels are the digits' 0..16 values divided by 16.

Float held-out accuracy: torch {acc_torch:.4f}, ONNX Runtime {acc_ort:.4f}
({n_val} samples).
"""


def write_readme(acc_torch: float, acc_ort: float) -> None:
    """Write samples/README.md."""
    text = README_TEMPLATE.format(
        n_calib=N_CALIB,
        last_calib=f"{N_CALIB - 1:03d}",
        n_val=N_VAL,
        last_val=f"{N_VAL - 1:03d}",
        acc_torch=acc_torch,
        acc_ort=acc_ort,
        raw_bytes=RAW_BYTES,
    )
    (HERE / "README.md").write_text(text)


def main() -> None:
    """Train, export, verify and write every sample file."""
    seed_everything(SEED)
    data = load_splits()
    model = train(data)
    acc_torch = accuracy(model, data["x_val"], data["y_val"])
    if acc_torch < MIN_ACCURACY:
        raise RuntimeError(f"held-out accuracy {acc_torch:.4f} < {MIN_ACCURACY}")
    onnx_path = HERE / ONNX_NAME
    export_onnx(model, onnx_path)
    logits = verify_onnx(model, onnx_path, data["x_val"])
    acc_ort = float((logits.argmax(axis=1) == data["y_val"]).mean())
    write_raw_set(data["x_calib"], "calib", "input_list.txt")
    write_raw_set(data["x_val"], "val", "val_list.txt")
    labels = "\n".join(str(int(v)) for v in data["y_val"]) + "\n"
    (HERE / "val_labels.txt").write_text(labels)
    write_overrides(onnx_path)
    write_readme(acc_torch, acc_ort)
    print(f"held-out accuracy: torch {acc_torch:.4f}, onnxruntime {acc_ort:.4f}")


if __name__ == "__main__":
    main()

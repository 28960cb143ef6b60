"""A voice-activity detector as audio exporters write one: an STFT as two Conv1d over a DFT basis, the
power spectrum re² + im², log(power + eps), an LSTM over the frames and a per-frame sigmoid. The power
spectrum of audio with loud and quiet stretches spans far more than 16 linear bits: the model that
`--mixed_precision auto` must rescue by keeping it in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLES, WINDOW, HOP, HIDDEN = 4096, 64, 32, 16
BINS = WINDOW // 2 + 1
FRAMES = (SAMPLES - WINDOW) // HOP + 1


def stft_lstm_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    n = np.arange(WINDOW)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WINDOW)
    k = np.arange(BINS)[:, None]
    real = (window * np.cos(2 * np.pi * k * n / WINDOW)).astype(np.float32)[:, None, :]
    imag = (-window * np.sin(2 * np.pi * k * n / WINDOW)).astype(np.float32)[:, None, :]
    w_in = rng.normal(scale=0.3, size=(1, 4 * HIDDEN, BINS)).astype(np.float32)
    w_rec = rng.normal(scale=0.3, size=(1, 4 * HIDDEN, HIDDEN)).astype(np.float32)
    bias = np.zeros((1, 8 * HIDDEN), np.float32)
    head = rng.normal(scale=0.5, size=(HIDDEN, 1)).astype(np.float32)
    conv = {"strides": [HOP]}
    nodes = [
        helper.make_node("Conv", ["audio", "dft_re"], ["re"], name="stft_re", **conv),
        helper.make_node("Conv", ["audio", "dft_im"], ["im"], name="stft_im", **conv),
        helper.make_node("Mul", ["re", "re"], ["re2"], name="re_sq"),
        helper.make_node("Mul", ["im", "im"], ["im2"], name="im_sq"),
        helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
        helper.make_node("Add", ["power", "eps"], ["power_eps"], name="floor"),
        helper.make_node("Log", ["power_eps"], ["log_power"], name="log"),
        helper.make_node("Transpose", ["log_power"], ["frames"], name="to_frames", perm=[2, 0, 1]),
        helper.make_node("LSTM", ["frames", "w_in", "w_rec", "b"], ["hidden"], name="lstm", hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["hidden", "axis1"], ["h"], name="squeeze"),
        helper.make_node("MatMul", ["h", "head"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["speech"], name="prob"),
    ]
    inits = [
        numpy_helper.from_array(real, "dft_re"),
        numpy_helper.from_array(imag, "dft_im"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(w_in, "w_in"),
        numpy_helper.from_array(w_rec, "w_rec"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(head, "head"),
    ]
    graph = helper.make_graph(
        nodes,
        "stft_lstm_vad",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, SAMPLES])],
        [helper.make_tensor_value_info("speech", TensorProto.FLOAT, [FRAMES, 1, 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def speechlike(rng: np.random.Generator) -> np.ndarray:
    """Voiced bursts (harmonics of a wandering pitch) between stretches 40-60 dB quieter."""
    t = np.arange(SAMPLES) / 16000
    pitch = rng.uniform(90, 250)
    voiced = sum(np.sin(2 * np.pi * pitch * h * t + rng.uniform(0, 6)) / h for h in range(1, 8))
    envelope = np.full(SAMPLES, 10 ** -rng.uniform(2, 3))
    for _ in range(rng.integers(1, 4)):
        start = rng.integers(0, SAMPLES - 1024)
        envelope[start : start + rng.integers(512, 1024)] = rng.uniform(0.3, 1.0)
    noise = rng.normal(scale=1e-3, size=SAMPLES)
    return (envelope * voiced + noise).astype(np.float32).reshape(1, 1, SAMPLES)


def write_stft_case(folder: Path, calib: int = 12, val: int = 8) -> tuple[Path, Path, Path]:
    """The model, a calibration input_list and a held-out one (different seeds)."""
    onnx.save(stft_lstm_model(), folder / "vad.onnx")
    lists = []
    for name, count, seed in (("calib", calib, 1), ("val", val, 2)):
        rng = np.random.default_rng(seed)
        for k in range(count):
            speechlike(rng).tofile(folder / f"{name}{k}.raw")
        (folder / f"{name}.txt").write_text("".join(f"{name}{k}.raw\n" for k in range(count)))
        lists.append(folder / f"{name}.txt")
    return folder / "vad.onnx", lists[0], lists[1]

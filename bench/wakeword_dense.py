"""A wake-word head's output SQNR over every 16-embedding window of the zoo's speech stream, not the 64 the zoo scores.

    .venv/bin/python bench/wakeword_dense.py {calib,val} FLOAT.onnx QUANTIZED.onnx ...

The zoo's oww rows score 64 windows, half of them just after a wake phrase. A head's output is a Sigmoid score
near 0 on almost every window, so its pooled SQNR is set by the few windows scored between 0.05 and 0.5, where
the logit's 8-bit rounding moves the score most: hey_jarvis's 43.0 dB (qtool W8A8) against 65.7 (quantize_static)
is one window (p = 0.19) whose logit lands on either side of a rounding midpoint, with identical activation
ranges. Over all 913 windows of the held-out stream the order is the other way (42.8 against 41.2 dB). This
rebuilds openwakeword's features from the stream's wav (bench/prepare_zoo.wakeword_features) and runs every
window through each model (Q/DQ in float, as the zoo's QDQ rows are scored); the worst windows' share is printed
because even 913 windows leave a few deciding.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

ZOO = Path(__file__).resolve().parent / ".cache" / "zoo"


def session(model: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def windows(split: str) -> np.ndarray:
    """[n, 16, 96]: every window of 16 consecutive embeddings of the split's stream (prepare_zoo's pipeline)."""
    with wave.open(str(ZOO / split / "speech.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32)
    mel, emb = session(str(ZOO / "models" / "oww_melspectrogram.onnx")), session(str(ZOO / "models" / "oww_embedding.onnx"))
    spec = mel.run(None, {"input": pcm[None]})[0].squeeze() / 10.0 + 2.0
    frames = np.stack([spec[i : i + 76] for i in range(0, len(spec) - 76 + 1, 8)])[..., None].astype(np.float32)
    embedded = np.concatenate([emb.run(None, {"input_1": frames[i : i + 64]})[0] for i in range(0, len(frames), 64)])
    embedded = embedded.reshape(len(frames), 96)
    return np.stack([embedded[i : i + 16] for i in range(len(embedded) - 16 + 1)]).astype(np.float32)


def scores(model: str, x: np.ndarray) -> np.ndarray:
    s = session(model)
    name = s.get_inputs()[0].name
    return np.array([s.run(None, {name: w[None]})[0].ravel() for w in x], np.float64)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("calib", "val"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    x = windows(argv[0])
    reference = scores(argv[1], x)
    print(f"{argv[0]}: {len(x)} windows, {int((reference >= 0.5).any(axis=1).sum())} float positives")
    for model in argv[2:]:
        noise = ((scores(model, x) - reference) ** 2).sum(axis=1)
        worst = np.argsort(noise)[::-1][:3]
        where = ", ".join(f"{int(i)} (score {reference[i, 0]:.3f})" for i in worst)
        print(f"{model}: {10 * np.log10((reference**2).sum() / noise.sum()):.2f} dB; worst windows {where}, "
              f"the first {noise[worst[0]] / noise.sum():.0%} of the noise")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

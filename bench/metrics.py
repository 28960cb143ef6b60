"""Task metrics for the benchmark models, numpy + onnxruntime only (runs in the project venv).

One `evaluate(model_path, val_input_list, ground_truth, reference=None) -> dict` per model family:

- recogniser (PP-OCRv4 rec): CTC greedy decoding with the model's dictionary -> character accuracy
  (1 - total edit distance / total ground-truth characters) and exact line accuracy, spaces ignored as
  PaddleOCR's RecMetric does by default (the model often drops or adds a space at a word gap);
- orientation (PP-OCR cls): accuracy of the 0/180 decision;
- detector (PP-OCRv4 det): probability map thresholded at 0.3, 8-connected components, each component's box
  expanded the way DB post-processing unclips (offset = area x ratio / perimeter, ratio 1.0), one-to-one
  IoU >= 0.5 matching against the lines' ink boxes -> box recall, precision, and mean best IoU per line;
- classifier (EfficientNet-Lite0): top-1 agreement and mean logit cosine with the torch model's logits.

`reference` (another ONNX model, normally the float one) adds `sqnr_db`: output SQNR against it over the
validation set, 10·log10(Σ ref² / Σ (out - ref)²). The classifier gets it from its ground-truth logits.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import numpy as np
import onnxruntime as ort

SHAPES = {  # input shapes the data sets were made for (NCHW float32 raw files)
    "recogniser": (1, 3, 48, 320),
    "orientation": (1, 3, 48, 192),
    "detector": (1, 3, 480, 640),
    "classifier": (1, 3, 224, 224),
}
DET_THRESHOLD = 0.3
DET_UNCLIP = 1.0  # DB uses 1.6 on its shrunk kernels; 1.0 brings 0.3-regions back to the ink box
IOU_MATCH = 0.5


# ---------------------------------------------------------------- inputs and inference


def read_input_list(path: str | Path) -> list[Path]:
    """qairt input_list: one sample per line, paths relative to the list's folder; `#`/`%` lines skipped.
    A line with several inputs (`name:=file ...`) is not used by these single-input models."""
    path = Path(path)
    files = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#%":
            continue
        entry = line.split()[0].split(":=")[-1]
        files.append(path.parent / entry)
    return files


def load_raw(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    data = np.fromfile(path, dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} float32 values, expected {shape}")
    return data.reshape(shape)


def make_session(model_path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """For quality: a QDQ model runs its own arithmetic (Q/DQ in float), not onnxruntime's integer kernels, which
    on x86 without VNNI saturate u8 x s8 pair sums (qtool/runtime.py: the digits sample 13.5 dB there, 37.2 dB
    in its arithmetic). On a VNNI CPU both agree within rounding, so rows from either kind of machine compare;
    latency rows still run the integer kernels."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    # as qtool's own report (qtool/runtime.py): ENABLE_ALL's NCHWc layout rewrite changes a QDQ model's arithmetic
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def run_model(model_path: str | Path, files: list[Path], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Yield the first output of the model for each raw file, one sample at a time."""
    session = make_session(model_path)
    name = session.get_inputs()[0].name
    for file in files:
        yield session.run(None, {name: load_raw(file, shape)})[0]


class Sqnr:
    """Running output SQNR: signal and noise energy summed over every sample."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def update(self, out: np.ndarray, ref: np.ndarray) -> None:
        ref64 = ref.astype(np.float64)
        self.signal += float(np.sum(ref64**2))
        self.noise += float(np.sum((out.astype(np.float64) - ref64) ** 2))

    def db(self) -> float:
        if self.noise == 0.0:
            return float("inf")
        return 10.0 * float(np.log10(self.signal / self.noise))


def outputs_with_reference(model_path, files, shape, reference) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Pairs (output, reference output or None), the two models run in lockstep."""
    outs = run_model(model_path, files, shape)
    refs = run_model(reference, files, shape) if reference else repeat(None)
    yield from zip(outs, refs, strict=False)


# ---------------------------------------------------------------- recogniser


def load_dictionary(path: str | Path) -> list[str]:
    """PP-OCR CTC classes: blank, the dictionary lines, then the space that PP-OCR appends."""
    return ["<blank>", *Path(path).read_text(encoding="utf-8").splitlines(), " "]


def ctc_greedy_decode(probs: np.ndarray, chars: list[str]) -> str:
    """probs: [T, C]. Best class per step, repeats collapsed, blanks (class 0) dropped."""
    best = probs.argmax(axis=-1)
    keep = np.ones_like(best, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    return "".join(chars[i] for i in best[keep])


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one row at a time."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def evaluate_recogniser(model_path, val_input_list, ground_truth, reference=None, dictionary=None) -> dict:
    """Character accuracy = 1 - Σ edit distance / Σ len(truth) over the validation lines."""
    files = read_input_list(val_input_list)
    truth = Path(ground_truth).read_text(encoding="utf-8").splitlines()[: len(files)]
    chars = load_dictionary(dictionary or Path(ground_truth).parents[2] / "models" / "ppocr_keys.txt")
    sqnr, errors, exact, examples = Sqnr(), 0, 0, []
    pairs = outputs_with_reference(model_path, files, SHAPES["recogniser"], reference)
    for text, (out, ref) in zip(truth, pairs, strict=True):
        pred = ctc_greedy_decode(out[0], chars).replace(" ", "")
        text = text.replace(" ", "")
        dist = edit_distance(pred, text)
        errors, exact = errors + dist, exact + (dist == 0)
        if dist and len(examples) < 3:
            examples.append(f"{text!r}->{pred!r}")
        if ref is not None:
            sqnr.update(out, ref)
    total = sum(len(t.replace(" ", "")) for t in truth)
    result = {"char_acc": max(0.0, 1.0 - errors / total), "line_acc": exact / len(truth), "n": len(truth)}
    return _with_sqnr(result, sqnr, reference) | {"errors": examples}


# ---------------------------------------------------------------- orientation classifier


def evaluate_orientation(model_path, val_input_list, ground_truth, reference=None) -> dict:
    """Accuracy of argmax over (0°, 180°) against the labels (0 or 1, one per line)."""
    files = read_input_list(val_input_list)
    labels = [int(v) for v in Path(ground_truth).read_text().split()][: len(files)]
    sqnr, correct = Sqnr(), 0
    pairs = outputs_with_reference(model_path, files, SHAPES["orientation"], reference)
    for label, (out, ref) in zip(labels, pairs, strict=True):
        correct += int(np.argmax(out[0]) == label)
        if ref is not None:
            sqnr.update(out, ref)
    return _with_sqnr({"accuracy": correct / len(labels), "n": len(labels)}, sqnr, reference)


def _with_sqnr(result: dict, sqnr: Sqnr, reference) -> dict:
    if reference:
        result["sqnr_db"] = sqnr.db()
    return result


# ---------------------------------------------------------------- detector


def label_components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """8-connected components of a boolean mask by BFS; returns (x0, y0, x1, y1, pixels) per component."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    boxes = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, x0, y0, x1, y1, count = deque([(y, x)]), x, y, x, y, 0
        while queue:
            cy, cx = queue.popleft()
            count += 1
            x0, y0, x1, y1 = min(x0, cx), min(y0, cy), max(x1, cx), max(y1, cy)
            for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        boxes.append((int(x0), int(y0), int(x1) + 1, int(y1) + 1, count))
    return boxes


def detect_boxes(prob: np.ndarray) -> list[list[float]]:
    """Boxes [x0, y0, x1, y1] from a probability map: threshold, components, DB-style unclip."""
    boxes = []
    for x0, y0, x1, y1, count in label_components(prob > DET_THRESHOLD):
        w, h = x1 - x0, y1 - y0
        if min(w, h) < 3 or count < 10:
            continue
        d = w * h * DET_UNCLIP / (2 * (w + h))
        boxes.append([x0 - d, y0 - d, x1 + d, y1 + d])
    return boxes


def iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(pred: list[list[float]], truth: list[list[float]]) -> int:
    """Greedy one-to-one matching by descending IoU; returns the number of pairs with IoU >= 0.5."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, matched = set(), set(), 0
    for score, i, j in pairs:
        if score < IOU_MATCH:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matched += 1
    return matched


def best_ious(pred: list[list[float]], truth: list[list[float]]) -> list[float]:
    """For each ground-truth box, its best IoU with any predicted box (0 when none overlaps)."""
    return [max((iou(p, t) for p in pred), default=0.0) for t in truth]


def evaluate_detector(model_path, val_input_list, ground_truth, reference=None) -> dict:
    """Box recall (matched ground-truth lines / all lines), precision and mean best IoU over the pages."""
    files = read_input_list(val_input_list)
    pages = json.loads(Path(ground_truth).read_text())[: len(files)]
    sqnr, matched, n_pred, ious = Sqnr(), 0, 0, []
    pairs = outputs_with_reference(model_path, files, SHAPES["detector"], reference)
    for page, (out, ref) in zip(pages, pairs, strict=True):
        pred, truth = detect_boxes(out[0, 0]), [line["box"] for line in page]
        matched, n_pred = matched + match_boxes(pred, truth), n_pred + len(pred)
        ious += best_ious(pred, truth)
        if ref is not None:
            sqnr.update(out, ref)
    result = {
        "recall": matched / len(ious),
        "precision": matched / max(n_pred, 1),
        "mean_iou": float(np.mean(ious)),
        "n": len(ious),
    }
    return _with_sqnr(result, sqnr, reference)


# ---------------------------------------------------------------- image classifier


def evaluate_classifier(model_path, val_input_list, ground_truth, reference=None) -> dict:
    """Top-1 agreement and mean cosine of the logits with the reference logits saved in ground_truth (.npy).
    `reference` is unused: the saved logits are the reference and always give sqnr_db."""
    del reference
    files = read_input_list(val_input_list)
    ref_logits = np.load(ground_truth)[: len(files)]
    sqnr, agree, cosines = Sqnr(), 0, []
    for ref, out in zip(ref_logits, run_model(model_path, files, SHAPES["classifier"]), strict=True):
        out = out.reshape(-1)
        agree += int(out.argmax() == ref.argmax())
        cosines.append(float(out @ ref / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12)))
        sqnr.update(out, ref)
    return {"top1_agree": agree / len(files), "cosine": float(np.mean(cosines)), "sqnr_db": sqnr.db(), "n": len(files)}


EVALUATORS = {
    "recogniser": evaluate_recogniser,
    "orientation": evaluate_orientation,
    "detector": evaluate_detector,
    "classifier": evaluate_classifier,
}


def evaluate(task: str, model_path, val_input_list, ground_truth, reference=None) -> dict:
    """Dispatch to the evaluator for `task` (the manifest's task name)."""
    return EVALUATORS[task](model_path, val_input_list, ground_truth, reference=reference)

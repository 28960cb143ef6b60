"""Is a detector row's F1 gap the method's, or where its score threshold cuts? A zoo detector's F1 is taken at one
score threshold (nudenet's and platedet's 0.25, ddddocr's YOLOX 0.1, the layout PicoDet's 0.4), and a float box
whose score sits near it is kept or lost by a quantization error of either sign: platedet's 30 validation boxes
hold 5 at 0.27-0.32, and its sqnr and min-max models lose 4 and 0 of them at 0.25 while sqnr is the better model
at 0.5 and 0.6 and on every output's SQNR. This scores each quantized model's detections against the float
model's (the shipped model, as run.py does; QDQ arithmetic, metrics.make_session) on the zoo's validation list at
several thresholds, and for the first two models the 90% interval of their F1 difference at each, by a paired
bootstrap over the validation images. Run from the repo root:

  python bench/detector_f1.py platedet bench/.cache/runs/platedet/zoo_qtool_w8a8.quant.onnx other.quant.onnx

--val-list scores another list instead: more images from the same generator (prepare_zoo.platedet_samples("val",
128) written as raw files: its first 32 are the zoo's), where 32 images leave the bench's one threshold to chance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, MANIFEST
from metrics import make_session
from transformers_suite import input_spec, read_feeds
from zoo_suite import SEG_CONF, SEG_IOU, SEG_MASKS, match_f1, picodet_boxes, yolov8_boxes, yolox_boxes

# task -> (its boxes at a score threshold, the thresholds scored; the bench's own among them)
DECODERS = {
    "yolov8": (lambda outs, t: yolov8_boxes(outs[0], t), (0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)),
    "yolov8seg": (
        lambda outs, t: yolov8_boxes(outs[0], t, SEG_MASKS, SEG_IOU),
        (0.15, 0.2, SEG_CONF, 0.3, 0.4, 0.5, 0.6),
    ),
    "yolox": (lambda outs, t: yolox_boxes(outs[0], score_thr=t), (0.05, 0.1, 0.15, 0.2, 0.3)),
    "picodet": (lambda outs, t: picodet_boxes(outs, conf=t), (0.3, 0.4, 0.5, 0.6)),
}


def f1(counts: np.ndarray) -> float:
    """F1 of summed (matched, found, truth) rows."""
    matched, found, truth = counts.sum(0)
    return 2 * matched / max(found + truth, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the zoo model's name (bench/.cache/manifest.json)")
    parser.add_argument("quantized", nargs="+", help="quantized models of it")
    parser.add_argument("--thresholds", help="comma-separated score thresholds (default: the task's)")
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    parser.add_argument("--val-list", help="another validation list (more images from prepare_zoo's generator)")
    args = parser.parse_args()
    entry = json.loads(MANIFEST.read_text())["zoo"][args.model]
    if entry["task"] not in DECODERS:
        sys.exit(f"{args.model}: task {entry['task']!r} is not a detector's ({', '.join(DECODERS)})")
    boxes, thresholds = DECODERS[entry["task"]]
    if args.thresholds:
        thresholds = tuple(float(t) for t in args.thresholds.split(","))
    reference = make_session(CACHE / entry["model"], 2)
    models = [make_session(path, 2) for path in args.quantized]
    names = [o.name for o in reference.get_outputs()]
    counts = np.zeros((len(models), len(thresholds), 0, 3))
    for feed in read_feeds(Path(args.val_list) if args.val_list else CACHE / entry["val_list"], input_spec(entry)):
        want = reference.run(names, feed)
        row = np.zeros((len(models), len(thresholds), 1, 3))
        for m, sess in enumerate(models):
            outs = sess.run(names, {i.name: feed[i.name] for i in sess.get_inputs()})
            for k, t in enumerate(thresholds):
                row[m, k, 0] = match_f1(boxes(outs, t), boxes(want, t))
        counts = np.concatenate([counts, row], axis=2)
    images = counts.shape[2]
    labels = [f"#{m + 1}" for m in range(len(models))]
    print(f"{args.model}: F1 % against the float model's boxes, {images} validation images; "
          + ", ".join(f"{label} {path}" for label, path in zip(labels, args.quantized, strict=True)))  # fmt: skip
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, images, images) for _ in range(args.draws)]
    for k, t in enumerate(thresholds):
        line = f"score >= {t:g}: {int(counts[0, k, :, 2].sum())} float boxes, " + ", ".join(
            f"{label} {100 * f1(counts[m, k]):.1f}" for m, label in enumerate(labels)
        )
        if len(models) > 1:
            a, b = counts[0, k], counts[1, k]
            gaps = [f1(a[d]) - f1(b[d]) for d in draws]
            low, high = np.percentile(gaps, [5, 95])
            line += f"; #1 - #2 {100 * (f1(a) - f1(b)):+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
        print(line)


if __name__ == "__main__":
    main()

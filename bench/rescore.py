"""Score EfficientNet-Lite0 models on a larger validation draw than the bench's 200 crops (run in the bench venv).

Top-1 agreement over 200 crops of 17 photos moves by several points between models a few tenths of a dB apart
(bench/README.md). This draws `--crops` other crops of the same validation photos (seed 98865; the bench's own
set uses 98765), takes the float ONNX model's logits as the reference, and scores each model given:

  /work/benchvenv/bin/python bench/rescore.py bench/.cache/runs/efficientnet_lite0/algo_w4_adaround.quant.onnx ...

The crops and the reference logits are kept in bench/.cache/data/efficientnet_lite0/rescore_<N>/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metrics
import prepare

SEED = prepare.SEEDS["val"] + 100


def draw(count: int) -> tuple[Path, Path]:
    """The input_list of `count` crops and the float model's logits on them, written once."""
    folder = prepare.DATA / "efficientnet_lite0" / f"rescore_{count}"
    listing, logits = folder / "crops.txt", folder / "float_logits.npy"
    if not (listing.exists() and logits.exists()):
        prepare.write_split(folder, "crops", prepare.photo_crops(prepare.EFFNET_VAL_PHOTOS, count, SEED))
        model, files = prepare.MODELS / "efficientnet_lite0.onnx", metrics.read_input_list(listing)
        np.save(
            logits, np.stack([out.reshape(-1) for out in metrics.run_model(model, files, metrics.SHAPES["classifier"])])
        )
    return listing, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="quantized EfficientNet-Lite0 ONNX models")
    parser.add_argument("--crops", type=int, default=1000, help="validation crops to draw [1000]")
    args = parser.parse_args()
    missing = [m for m in args.models if not Path(m).is_file()]
    if missing:
        parser.error(f"no such model: {missing[0]}")
    listing, logits = draw(args.crops)
    for model in args.models:
        found = metrics.evaluate_classifier(model, listing, logits)
        print(
            f"{model}: top1_agree {found['top1_agree']:.1%}, cosine {found['cosine']:.4f}, "
            f"SQNR {found['sqnr_db']:.2f} dB over {found['n']} crops"
        )


if __name__ == "__main__":
    main()

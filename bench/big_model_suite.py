"""Models past 2 GB (issue 22): wall time and peak RSS of every qtool command on make_big_model.py's
model, next to onnxruntime's quantize_static(..., use_external_data_format=True) on the same model and data.

    .venv/bin/python bench/big_model_suite.py /tmp/big                 # 33 x 4096^2 MatMul: 2.2 GB
    .venv/bin/python bench/big_model_suite.py /tmp/b400 --layers 6     # the same pipeline at 403 MB
    # /tmp/b400's model.onnx re-saved inline (onnx.save without external data) and its list.txt, measured inline:
    QTOOL_EXTERNAL_DATA_BYTES=1800000000 .venv/bin/python bench/big_model_suite.py /tmp/b400i

The model is generated into the folder unless it is there already (make_big_model.py, seeded); a folder
make_big_decoder.py wrote (model.onnx and calib.txt) is measured the same way, on its 32 sequences. Steps, each
in its own process (bench/common.py `measure`: wall time, peak RSS from os.wait4, killed above --mem-limit):
`qtool convert`, `qtool quantize` (W8A8 per-row, --evaluate_samples 2), `qtool inspect --reference`,
`qtool export` (qdq and encodings), then quantize_static (QDQ, u8 activations, s8 per-channel weights,
MinMax, external data, no pre-processing: quant_pre_process cannot take a model past 2 GB). Prints a
markdown table (S = the fp32 model's bytes, .onnx plus .data) and writes it as JSON to <folder>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, measure, qtool_exe


def _model(folder: Path, layers: int, width: int) -> Path:
    model = folder / "model.onnx"
    if not model.exists():
        cmd = [sys.executable, str(BENCH / "make_big_model.py"), str(folder), "--layers", str(layers), "--width", str(width)]
        subprocess.run(cmd, check=True)
    return model


def _steps(folder: Path, model: Path) -> list[tuple[str, list[str]]]:
    out, q = folder / "out", qtool_exe()
    listing = str(folder / ("calib.txt" if (folder / "calib.txt").exists() else "list.txt"))  # make_big_decoder.py
    conv, quant = str(out / "c.onnx"), str(out / "q.onnx")
    return [
        ("qtool convert", [q, "convert", "-i", str(model), "-o", conv]),
        ("qtool quantize", [q, "quantize", "-i", conv, "--input_list", listing, "-o", quant,
                            "--use_per_row_quantization", "--evaluate_samples", "2", "--act_quantizer_calibration",
                            "min-max"]),
        ("qtool inspect --reference", [q, "inspect", quant, "--reference", conv, "--input_list", listing]),
        ("qtool export", [q, "export", "-i", quant, "-o", str(out / "export"), "--format", "qdq", "--format", "encodings"]),
        ("onnxruntime quantize_static", [sys.executable, __file__, "--ort-worker", str(model), listing,
                                         str(folder / "ort" / "q.onnx")]),
    ]  # fmt: skip


def _feeds(model: str, listing: str):
    """One feed per input_list line (`path` or `name:=path ...`, float32 raw files), cast and shaped as the
    model's inputs."""
    import numpy as np
    import onnx
    from onnx import helper

    inputs = onnx.load(model, load_external_data=False).graph.input
    types = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in inputs}
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs}
    base = Path(listing).parent
    for line in Path(listing).read_text().splitlines():
        pairs = [p.split(":=", 1) if ":=" in p else [inputs[0].name, p] for p in line.split()]
        if pairs:
            yield {n: np.fromfile(base / f, dtype=np.float32).astype(types[n]).reshape(shapes[n]) for n, f in pairs}


def ort_worker(model: str, listing: str, output: str) -> None:
    """quantize_static with external data, run from the output's folder (it writes temporaries to the cwd)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    os.chdir(Path(output).parent)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = _feeds(model, listing)

        def get_next(self):
            return next(self.feeds, None)

    start = time.perf_counter()
    quantize_static(
        model, output, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True,
    )  # fmt: skip
    print(f"ORT-SECONDS: {time.perf_counter() - start:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--layers", type=int, default=33)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--mem-limit", type=float, default=12000.0, help="MB of RSS above which a step is killed")
    parser.add_argument("--skip-ort", action="store_true")
    args = parser.parse_args()
    # the same external-data layout at any size: a scaled-down model takes a 2.2 GB one's paths
    os.environ.setdefault("QTOOL_EXTERNAL_DATA_BYTES", "1000000")
    model = _model(args.folder, args.layers, args.width)
    data = model.with_name(model.name + ".data")  # absent for a model saved inline
    size = model.stat().st_size + (data.stat().st_size if data.exists() else 0)
    rows = []
    print(f"model {model}: S = {size / 1e6:.0f} MB\n\n| step | status | wall s | peak RSS MB | peak / S |\n|---|---|---|---|---|")
    for name, cmd in _steps(args.folder, model):
        if args.skip_ort and name.startswith("onnxruntime"):
            continue
        log = args.folder / "logs" / (name.replace(" ", "_").replace("-", "") + ".log")
        step = measure(cmd, log, mem_limit_mb=args.mem_limit)
        ratio = step.peak_mb * 2**20 / size
        rows.append({"step": name, "status": step.status, "seconds": round(step.seconds, 1),
                     "peak_mb": round(step.peak_mb, 1), "peak_over_size": round(ratio, 2), "error": step.error})  # fmt: skip
        print(f"| {name} | {step.status} | {step.seconds:.1f} | {step.peak_mb:.0f} | {ratio:.2f} |", flush=True)
    result = {"model_bytes": size, "layers": args.layers, "width": args.width, "rows": rows}
    (args.folder / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-worker":
        ort_worker(*sys.argv[2:])
    else:
        main()

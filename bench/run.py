"""Benchmark qtool against onnxruntime's quantize_static on real models (`make bench`, project venv).

For every model that bench/prepare.py put in bench/.cache/manifest.json:
  float     the float model: its task metrics; time/peak = plain fp32 inference over the calibration samples
            (the floor any calibration has to pay);
  ort       onnxruntime.quantization: quant_pre_process, then quantize_static (QDQ, QUInt8 activations, QInt8
            per-channel weights, MinMax) over the calibration input_list;
  qtool     `qtool convert --input_dim ...` then `qtool quantize --use_per_channel_quantization --bias_bitwidth 32`.
Every timed step runs in its own subprocess, so its wall time and peak RSS (os.wait4's ru_maxrss) are its own.
A failing step is reported in the table and the run goes on. Writes bench/results.md and bench/results.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
RUNS = CACHE / "runs"
MANIFEST = CACHE / "manifest.json"
PREPARE_HINT = """bench/.cache is not prepared. From the repo root run (see bench/README.md):
  python3 -m venv /work/benchvenv
  /work/benchvenv/bin/pip install -r bench/requirements.txt
  /work/benchvenv/bin/python bench/prepare.py"""
TIMEOUT_S = 3600


@dataclass
class Step:
    """One timed subprocess: exit code, wall seconds, peak RSS in MB and the tail of its log."""

    rc: int
    seconds: float
    peak_mb: float
    log: Path
    error: str = ""


@dataclass
class Row:
    model: str
    variant: str
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    peak_mb: float | None = None
    note: str = ""
    kind: str = ""  # the VARIANTS key that produced the row
    commit: str = ""  # git describe of the tree that produced it


# ---------------------------------------------------------------- subprocesses


def measure(cmd: list[str], log: Path, timeout: float = TIMEOUT_S) -> Step:
    """Run cmd with output to log; wall time and the child's own peak RSS from os.wait4."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        except OSError as exc:
            return Step(127, 0.0, 0.0, log, f"cannot start {cmd[0]}: {exc}")
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    step = Step(proc.returncode, seconds, usage.ru_maxrss / 1024.0, log)
    if step.rc != 0:
        step.error = last_error_line(log, step.rc)
    return step


def last_error_line(log: Path, rc: int) -> str:
    """The most telling line of a failed step's log: the last non-blank one, with the exit code."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    reason = "killed (timeout or out of memory)" if rc < 0 else (lines[-1] if len(lines) > 1 else "no output")
    return f"exit {rc}: {reason}"


def worker(*args: str) -> list[str]:
    """Command line that runs one of this file's worker modes in a fresh interpreter."""
    return [sys.executable, str(Path(__file__).resolve()), *args]


def qtool_exe() -> str:
    beside = Path(sys.executable).parent / "qtool"
    return str(beside if beside.exists() else REPO / ".venv" / "bin" / "qtool")


# ---------------------------------------------------------------- worker modes (run in child processes)


def fixed_shape_model(model_path: str, dims: list[int]):
    """The model at opset >= 13 (per-channel DequantizeLinear needs it) with its first input's shape fixed to
    dims (these OCR exports have dynamic H/W); stale value_info and output shapes (Paddle's exports carry -1
    batch dims there) are dropped for re-inference."""
    import onnx
    import onnx.version_converter

    model = onnx.load(model_path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        model = onnx.version_converter.convert_version(model, 13)
        print(f"ORT-PRE: opset {opset} -> 13 (onnx.version_converter)")
    shape = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(shape.dim, dims, strict=True):
        dim.Clear()
        dim.dim_value = value
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    return model


def ort_pre_process(fixed: Path, pre: Path) -> str:
    """quant_pre_process as onnxruntime recommends; where its symbolic shape inference cannot handle the
    model, retry without it, then fall back to the fixed-shape model. Returns what was done."""
    from onnxruntime.quantization import quant_pre_process

    for label, kwargs in [
        ("quant_pre_process", {}),
        ("quant_pre_process(skip_symbolic_shape)", {"skip_symbolic_shape": True}),
    ]:
        try:
            quant_pre_process(str(fixed), str(pre), **kwargs)
            return label
        except Exception as exc:
            print(f"{label} failed: {type(exc).__name__}: {exc}")
    pre.write_bytes(fixed.read_bytes())
    return "no pre-processing"


def raw_feeds(list_path: str, dims: list[int]):
    """Yield {input: array} per line of an input_list (read lazily, one sample at a time)."""
    import numpy as np

    sys.path.insert(0, str(BENCH))
    from metrics import read_input_list

    for file in read_input_list(list_path):
        yield np.fromfile(file, dtype=np.float32).reshape(dims)


def worker_fp32(model_path: str, list_path: str, dims: str) -> None:
    """Plain fp32 inference over every sample of list_path (the calibration floor)."""
    sys.path.insert(0, str(BENCH))
    from metrics import make_session

    shape = [int(v) for v in dims.split(",")]
    session = make_session(model_path)
    name = session.get_inputs()[0].name
    count = sum(1 for x in raw_feeds(list_path, shape) if session.run(None, {name: x}) is not None)
    print(f"fp32 inference over {count} samples")


def worker_ort(model_path: str, list_path: str, dims: str, output: str, mode: str = "pre") -> None:
    """onnxruntime's recommended path: quant_pre_process (mode "pre"; "raw" skips it), then quantize_static
    (QDQ, u8 activations, s8 per-channel weights, MinMax)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    shape = [int(v) for v in dims.split(",")]
    fixed, pre = Path(output).with_suffix(".fixed.onnx"), Path(output).with_suffix(".pre.onnx")
    onnx.save(fixed_shape_model(model_path, shape), str(fixed))
    if mode == "pre":
        print(f"ORT-PRE: {ort_pre_process(fixed, pre)}")
    else:
        pre.write_bytes(fixed.read_bytes())

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
            self.feeds = raw_feeds(list_path, shape)

        def get_next(self):
            return next(({self.name: x} for x in self.feeds), None)

    quantize_static(
        str(pre),
        output,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    print(f"wrote {output}")


WORKERS = {"_fp32": worker_fp32, "_ort": worker_ort}


# ---------------------------------------------------------------- one model


def evaluate_row(row: Row, entry: dict, model_path: Path, reference: Path | None) -> Row:
    """Fill row.metrics with the task metrics of model_path on the validation set (errors become notes)."""
    from metrics import evaluate

    try:
        row.metrics = evaluate(
            entry["task"], model_path, CACHE / entry["val_list"], CACHE / entry["ground_truth"], reference=reference
        )
    except Exception as exc:  # a quantized model onnxruntime cannot run is a result, not a crash
        row.note = (row.note + "; " if row.note else "") + f"evaluation failed: {type(exc).__name__}: {exc}"[:300]
    return row


def run_float(name: str, entry: dict) -> Row:
    model, calib = CACHE / entry["model"], CACHE / entry["calib_list"]
    dims = ",".join(map(str, entry["dims"]))
    step = measure(worker("_fp32", str(model), str(calib), dims), RUNS / name / "fp32.log")
    row = Row(name, "float", seconds=step.seconds, peak_mb=step.peak_mb, note=step.error)
    return evaluate_row(row, entry, model, None)


def run_ort(name: str, entry: dict, mode: str = "pre") -> Row:
    """quantize_static in a worker process; mode "raw" skips quant_pre_process."""
    model, calib = CACHE / entry["model"], CACHE / entry["calib_list"]
    out = RUNS / name / f"ort_{mode}.quant.onnx"
    dims = ",".join(map(str, entry["dims"]))
    out.unlink(missing_ok=True)
    step = measure(worker("_ort", str(model), str(calib), dims, str(out), mode), RUNS / name / f"ort_{mode}.log")
    label = "ort minmax" if mode == "pre" else "ort minmax, no pre-process"
    row = Row(name, label, seconds=step.seconds, peak_mb=step.peak_mb)
    pre = [ln[9:] for ln in step.log.read_text().splitlines() if ln.startswith("ORT-PRE: ")]
    row.note = ", ".join(p for p in pre if p != "quant_pre_process")
    if step.rc != 0:
        row.note = ", ".join(filter(None, [row.note, f"quantize_static failed ({step.error})"]))
        return row
    return evaluate_row(row, entry, out, model)


def run_ort_raw(name: str, entry: dict) -> Row:
    return run_ort(name, entry, "raw")


def run_qtool(name: str, entry: dict) -> Row:
    """qtool convert (not timed in the table) then qtool quantize (timed), both through the CLI."""
    model, calib = CACHE / entry["model"], CACHE / entry["calib_list"]
    conv, quant = RUNS / name / "qtool.conv.onnx", RUNS / name / "qtool.quant.onnx"
    dims = ",".join(map(str, entry["dims"]))
    for path in (conv, quant):
        path.unlink(missing_ok=True)
    row = Row(name, "qtool minmax")
    step = measure(
        [qtool_exe(), "convert", "-i", str(model), "--input_dim", entry["input"], dims, "-o", str(conv)],
        RUNS / name / "qtool_convert.log",
    )
    if step.rc != 0:
        row.note = f"qtool convert failed ({step.error})"
        return row
    step = measure(
        [
            qtool_exe(),
            "quantize",
            "-i",
            str(conv),
            "--input_list",
            str(calib),
            "-o",
            str(quant),
            "--use_per_channel_quantization",
            "--bias_bitwidth",
            "32",
        ],
        RUNS / name / "qtool_quantize.log",
    )
    row.seconds, row.peak_mb = step.seconds, step.peak_mb
    if step.rc != 0:
        row.note = f"qtool quantize failed ({step.error})"
        return row
    row.note = qtool_phases(step.log)
    return evaluate_row(row, entry, quant, model)


def qtool_phases(log: Path) -> str:
    """The split of qtool's own time that its report prints ('calibration seconds', 'evaluation seconds')."""
    found = re.findall(r"^\s*(\w+) seconds\s+([0-9.]+)\s*$", log.read_text(errors="replace"), flags=re.MULTILINE)
    return ", ".join(f"{phase} {float(sec):.1f} s" for phase, sec in found)


VARIANTS = {"float": run_float, "ort": run_ort, "ort-raw": run_ort_raw, "qtool": run_qtool}


# ---------------------------------------------------------------- report


PERCENT_KEYS = ["char_acc", "line_acc", "accuracy", "recall", "precision", "top1_agree"]


def format_metrics(metrics: dict) -> str:
    parts = [f"{k} {100 * metrics[k]:.2f}%" for k in PERCENT_KEYS if k in metrics]
    parts += [f"{k} {metrics[k]:.4f}" for k in ("mean_iou", "cosine") if k in metrics]
    return ", ".join(parts) or "-"


def format_row(row: Row) -> str:
    sqnr = row.metrics.get("sqnr_db")
    cells = [
        row.model,
        row.variant,
        format_metrics(row.metrics),
        "-" if sqnr is None else f"{sqnr:.1f}",
        "-" if row.seconds is None else f"{row.seconds:.1f}",
        "-" if row.peak_mb is None else f"{row.peak_mb:.0f}",
        (row.note + (f" [{row.commit}]" if row.commit != git_commit() else "")).replace("|", "\\|"),
    ]
    return "| " + " | ".join(cells) + " |"


@functools.cache
def git_commit() -> str:
    """`git describe --always --dirty` of the repo: the qtool the numbers belong to."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> str:
    import onnxruntime

    return f"qtool {git_commit()}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores"


def render(rows: list[Row], manifest: dict) -> str:
    counts = manifest.get("counts", {})
    header = [
        "# qtool benchmark",
        "",
        f"Calibration samples per model: {counts.get('calib')}; validation: {counts.get('val')} "
        f"({counts.get('det_val')} pages for the detector). {environment()}.",
        "",
        "time / peak MB: `float` = plain fp32 inference over the calibration samples; `ort` = quant_pre_process + "
        "quantize_static (`no pre-process`: quantize_static alone); `qtool` = `qtool quantize` (convert excluded; "
        "the notes give the split its report prints). Each is a separate process; peak MB is its maximum RSS. SQNR: output vs the float model (EfficientNet: vs the torch logits). A row from an "
        "earlier partial run names its commit in brackets.",
        "",
        "| model | variant | metrics | SQNR dB | time s | peak MB | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    return "\n".join(header + [format_row(r) for r in rows]) + "\n"


def write_results(rows: list[Row], manifest: dict) -> str:
    text = render(rows, manifest)
    (BENCH / "results.md").write_text(text)
    (BENCH / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, default=str) + "\n")
    return text


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset of the manifest's models")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    return parser.parse_args()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](*sys.argv[2:])
        return 0
    args = parse_args()
    if not MANIFEST.exists():
        print(PREPARE_HINT, file=sys.stderr)
        return 2
    sys.path.insert(0, str(BENCH))
    manifest = json.loads(MANIFEST.read_text())
    names = args.models.split(",") if args.models else list(manifest["models"])
    unknown = [n for n in names if n not in manifest["models"]] + [
        v for v in args.variants.split(",") if v not in VARIANTS
    ]
    if unknown:
        print(
            f"unknown model or variant: {', '.join(unknown)} (models: {', '.join(manifest['models'])})", file=sys.stderr
        )
        return 2
    rows = previous_rows(manifest) if args.models or args.variants != ",".join(VARIANTS) else {}
    for name in names:
        for variant in args.variants.split(","):
            print(f"[bench] {name}: {variant} ...", file=sys.stderr, flush=True)
            row = VARIANTS[variant](name, manifest["models"][name])
            row.kind, row.commit = variant, git_commit()
            rows[(name, variant)] = row
            print(format_row(row), file=sys.stderr, flush=True)
            write_results(ordered(rows, manifest), manifest)
    print(write_results(ordered(rows, manifest), manifest))
    return 0


def previous_rows(manifest: dict) -> dict[tuple[str, str], Row]:
    """Rows of the last results.json, kept when a run covers only some models or variants."""
    path = BENCH / "results.json"
    old = [Row(**r) for r in json.loads(path.read_text())] if path.exists() else []
    return {(r.model, r.kind): r for r in old if r.model in manifest["models"] and r.kind in VARIANTS}


def ordered(rows: dict[tuple[str, str], Row], manifest: dict) -> list[Row]:
    models, kinds = list(manifest["models"]), list(VARIANTS)
    return [rows[k] for k in sorted(rows, key=lambda k: (models.index(k[0]), kinds.index(k[1])))]


if __name__ == "__main__":
    sys.exit(main())

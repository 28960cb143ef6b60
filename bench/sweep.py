"""The calibration-size sweep (issue 4): `run.py --suite sweep`.

For each model, N in --sizes (calibration sets written by `prepare.py --sweep`; the detector stops at 256) and
method in --methods (min-max, entropy, percentile), each in its own process:
  float   plain fp32 inference over the same N samples (the floor any calibration pays);
  qtool   `qtool quantize --act_quantizer_calibration METHOD --use_per_channel_quantization --bias_bitwidth 32
          --json` on the converted model (its report's "calibration seconds" recorded beside the wall time);
  ort     quant_pre_process + quantize_static (QDQ, u8/s8 per-channel) with the same CalibrationMethod
          (Percentile at qtool's 99.99); killed at --ort-timeout s or --mem-limit-mb and recorded as timeout/OOM,
          larger N of that method then skipped.
Every quantized model is evaluated on the validation set (task metric and output SQNR vs float).
"""

from __future__ import annotations

import re
import sys

from common import (
    CACHE,
    ORT_METHODS,
    QTOOL_W8A8,
    RUNS,
    Row,
    cell,
    commit_note,
    convert_entry,
    evaluate_row,
    load_cell,
    md_table,
    report_extra,
    run_fp32_step,
    run_ort_step,
    run_qtool_quantize,
    task_score,
    timed_row,
)

HISTOGRAM = {"entropy", "percentile"}
TARGETS = {"rss_ratio": 1.10, "calib_vs_fp32": {"min-max": 1.5, "entropy": 2.0, "percentile": 2.0}}


def sweep_lists(manifest: dict, name: str) -> dict[int, str]:
    return {int(n): path for n, path in manifest.get("sweep", {}).get(name, {}).items()}


def run(names: list[str], manifest: dict, args, emit) -> None:
    sizes = [int(v) for v in args.sizes.split(",")]
    methods = args.methods.split(",")
    tools = args.tools.split(",")
    for name in names:
        entry, lists = manifest["models"][name], sweep_lists(manifest, name)
        if not lists:
            print(f"[bench] sweep: no sweep sets for {name}: run prepare.py --sweep", file=sys.stderr)
            continue
        model = CACHE / entry["model"]
        failed_ort: dict[str, tuple[str, Row]] = {}  # method -> (why, row) of a smaller N that was killed
        for n in sizes:
            if n not in lists:
                print(f"[bench] sweep: {name} has no N={n} set (max {max(lists)})", file=sys.stderr)
                continue
            calib = CACHE / lists[n]
            if "float" in tools:
                print(f"[bench] sweep {name} N={n}: fp32", file=sys.stderr, flush=True)
                row = run_fp32_step(name, entry, calib, f"sweep_fp32_{n}")
                row.kind, row.params = f"float:{n}", {"N": n}
                emit(row)
            for method in methods:
                if "qtool" in tools:
                    print(f"[bench] sweep {name} N={n}: qtool {method}", file=sys.stderr, flush=True)
                    emit(run_qtool(name, entry, calib, n, method, args))
                if "ort" in tools:
                    print(f"[bench] sweep {name} N={n}: ort {method}", file=sys.stderr, flush=True)
                    row = Row(name, f"ort {ORT_METHODS[method]}", kind=f"ort:{method}:{n}")
                    if method in failed_ort:
                        why, failed = failed_ort[method]
                        row.status, row.extra = "skipped", {**failed.extra, "skipped because": why}
                        row.add_note(f"skipped: {why}")
                    else:
                        row, out = run_ort_step(
                            name,
                            entry,
                            calib,
                            f"sweep_ort_{method}_{n}",
                            method=ORT_METHODS[method],
                            timeout=args.ort_timeout,
                            mem_limit_mb=args.mem_limit_mb,
                        )
                        row.kind = f"ort:{method}:{n}"
                        if out is not None:
                            evaluate_row(row, entry, out, model)
                        elif row.status in ("timeout", "OOM"):
                            failed_ort[method] = (f"{row.status} at N={n}", row)
                    row.params = {"N": n, "method": method}
                    emit(row)


def run_qtool(name: str, entry: dict, calib, n: int, method: str, args) -> Row:
    row = Row(name, f"qtool {method}", kind=f"qtool:{method}:{n}", params={"N": n, "method": method})
    conv, error = convert_entry(name, entry)
    if conv is None:
        row.add_note(error)
        return row
    out = RUNS / name / f"sweep_qtool_{method}_{n}.quant.onnx"
    flags = [*QTOOL_W8A8, "--act_quantizer_calibration", method]
    log = RUNS / name / f"sweep_qtool_{method}_{n}.log"
    step, report = run_qtool_quantize(conv, calib, out, flags, log, args.timeout)
    timed_row(row, step)
    if step.status != "ok":
        row.add_note("qtool quantize failed")
        return row
    row.extra = report_extra(report)
    return evaluate_row(row, entry, out, CACHE / entry["model"])


# ---------------------------------------------------------------- report


def index(rows: list[Row]) -> dict[tuple[str, str], Row]:
    return {(r.model, r.kind): r for r in rows}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def flag(value: float | None, limit: float, at_most: bool) -> str:
    if value is None:
        return "-"
    ok = value <= limit if at_most else value >= limit
    return f"{value:.2f}× {'✓' if ok else '✗'}"


def result_cell(row: Row | None, what: str) -> str:
    if row is None:
        return "-"
    if row.status not in ("ok", ""):
        return row.status
    if what == "s":
        return cell(row.seconds)
    if what == "mb":
        return cell(row.peak_mb, "{:.0f}")
    score = task_score(row)
    return f"{cell(None if score is None else 100 * score, '{:.2f}')} / {cell(row.metrics.get('sqnr_db'))}"


def render(rows: list[Row], manifest: dict) -> list[str]:
    found = index(rows)
    models = [m for m in manifest["models"] if any(r.model == m for r in rows)]
    sizes = sorted({r.params.get("N") for r in rows if r.params.get("N")})
    methods = [m for m in ORT_METHODS if any(r.params.get("method") == m for r in rows)]
    lines = [
        "## sweep: calibration samples N × method, qtool vs quantize_static vs fp32 inference (issue 4)",
        "",
        "`bench/run.py --suite sweep`. Calibration sets from `prepare.py --sweep` (the first 64 are the default "
        "set; the detector stops at N=256: 480×640 pages are 3.7 MB each). fp32 s = plain fp32 inference over the "
        "same N samples (wall of its process; in-process seconds in results.json). qtool s = the whole "
        "`qtool quantize` process (it also evaluates the result on ≤ 64 calibration samples), calib s = its "
        'report\'s "calibration seconds". ort s = quant_pre_process + quantize_static. task = char_acc / accuracy '
        "/ recall / top1_agree in % on the validation set, then output SQNR dB vs float. timeout / OOM: the "
        "step was killed at the limit shown in results.json. onnxruntime's pre-processing notes (opset → 13, "
        "skip_symbolic_shape for the classifier) are as in the default suite.",
        "",
    ]
    table = []
    for model in models:
        for n in sizes:
            fp32 = found.get((model, f"float:{n}"))
            for method in methods:
                q, o = found.get((model, f"qtool:{method}:{n}")), found.get((model, f"ort:{method}:{n}"))
                if q is None and o is None:
                    continue
                stale = commit_note(q) if q else ""
                table.append(
                    [
                        model,
                        str(n),
                        method,
                        result_cell(fp32, "s"),
                        result_cell(q, "s"),
                        cell(q.extra.get("calibration seconds") if q else None),
                        result_cell(q, "mb"),
                        result_cell(q, "task"),
                        result_cell(o, "s"),
                        result_cell(o, "mb"),
                        result_cell(o, "task"),
                        load_cell(q) if q else "-",
                        "; ".join(
                            filter(None, [q.note if q else "", f"ort: {ort_note(o)}" if o and ort_note(o) else ""])
                        )
                        + stale,
                    ]
                )
    header = ["model", "N", "method", "fp32 s", "qtool s", "calib s", "qtool MB", "qtool task / SQNR"]
    header += ["ort s", "ort MB", "ort task / SQNR", "load", "notes"]
    lines += [*md_table(header, table), "", *render_targets(found, models, sizes, methods)]
    return lines


def ort_note(row: Row | None) -> str:
    """A row's note without the pre-processing steps every onnxruntime row of a model shares."""
    parts = (row.note if row else "").split("; ")
    return "; ".join(p for p in parts if p and not p.startswith(("opset ", "quant_pre_process")))


def render_targets(found: dict, models: list[str], sizes: list[int], methods: list[str]) -> list[str]:
    """Issue 4's targets, one row per model and method."""
    lines = [
        "### sweep targets",
        "",
        "RSS N=max/N=16: qtool's peak RSS at the largest N run (1024; detector 256) over N=16 (target ≤ 1.10×; "
        "onnxruntime's in brackets). calib/fp32: qtool's \"calibration seconds\" over fp32 inference in-process "
        "seconds over the same samples, at the largest N (targets: min-max ≤ 1.5×, histograms ≤ 2×). At N=256: "
        "onnxruntime's wall time and peak RSS over qtool's (targets: ≥ 3× faster; ≥ 5× less memory for "
        "entropy/percentile); in brackets the time ratio against qtool without its evaluation pass (it checks the "
        "written model on ≤ 64 calibration samples; onnxruntime checks nothing). ≥: onnxruntime was killed "
        "(OOM/timeout), so the true ratio is higher. ✓ met, ✗ missed, ? unknown.",
        "",
    ]
    table = []
    for model in models:
        done = [n for n in sizes if any((model, f"qtool:{m}:{n}") in found for m in methods)]
        if not done:
            continue
        top = max(done)
        for method in methods:
            q16, qtop = found.get((model, f"qtool:{method}:16")), found.get((model, f"qtool:{method}:{top}"))
            o16, otop = found.get((model, f"ort:{method}:16")), found.get((model, f"ort:{method}:{top}"))
            rss = ratio(qtop and qtop.peak_mb, q16 and q16.peak_mb)
            ort_rss = ratio(otop and otop.peak_mb, o16 and o16.peak_mb)
            fp32 = found.get((model, f"float:{top}"))
            calib = ratio(
                qtop.extra.get("calibration seconds") if qtop else None,
                fp32.extra.get("inference seconds") if fp32 else None,
            )
            q256, o256 = found.get((model, f"qtool:{method}:256")), found.get((model, f"ort:{method}:256"))
            if o256 is not None and o256.status == "skipped" and "peak MB at kill" not in o256.extra:
                killed_at = re.search(r"at N=(\d+)", o256.note)  # rows from before the bound was copied
                failed = found.get((model, f"ort:{method}:{killed_at.group(1)}")) if killed_at else None
                o256.extra.update(failed.extra if failed else {})
            speed, memory = vs_ort(q256, o256, method)
            table.append(
                [
                    model,
                    method,
                    str(top),
                    flag(rss, TARGETS["rss_ratio"], True) + (f" [{ort_rss:.2f}×]" if ort_rss else ""),
                    flag(calib, TARGETS["calib_vs_fp32"][method], True),
                    speed,
                    memory,
                ]
            )
    header = ["model", "method", "N max", "RSS N=max/N=16", "calib/fp32 at N max", "N=256 ort/qtool time"]
    return lines + md_table([*header, "N=256 ort/qtool peak RSS"], table)


def vs_ort(q: Row | None, o: Row | None, method: str) -> tuple[str, str]:
    """(time ratio, memory ratio) cells of onnxruntime over qtool. The time ratio also comes without qtool's
    evaluation pass (onnxruntime does none). A killed onnxruntime step gives lower bounds from where it was
    killed; one skipped after a kill at a smaller N, a memory bound only."""
    if q is None or o is None or q.seconds is None or q.peak_mb is None:
        return "-", "-"
    mem_target = method in HISTOGRAM
    calib_only = q.seconds - (q.extra.get("evaluation seconds") or 0.0)
    if o.status == "ok":
        memory = flag(ratio(o.peak_mb, q.peak_mb), 5.0, False) if mem_target else f"{o.peak_mb / q.peak_mb:.2f}×"
        speed = flag(ratio(o.seconds, q.seconds), 3.0, False) + f" [{o.seconds / calib_only:.2f}×]"
        return speed, memory
    if o.status in ("timeout", "OOM", "skipped"):
        memory = o.extra.get("peak MB at kill", 0) / q.peak_mb
        mem_cell = f"≥ {memory:.1f}×{' ✓' if memory >= 5 and mem_target else ''} (ort {o.status})"
        if o.status == "skipped":
            return f"ort {ort_note(o).removeprefix('skipped: ')} (skipped)", mem_cell
        speed = o.extra.get("killed after s", 0) / q.seconds
        return f"≥ {speed:.1f}× {'✓' if speed >= 3 else '?'} (ort {o.status})", mem_cell
    return f"ort {o.status}", f"ort {o.status}"

"""The algorithms (issue 5), mixed (issue 7) and speed (issue 6) suites of `run.py --suite ...`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from common import (
    CACHE,
    MINMAX,
    ORT_METHODS,
    QTOOL_W8A8,
    RUNS,
    Row,
    cell,
    commit_note,
    convert_entry,
    dims_of,
    evaluate_row,
    format_metrics,
    load_cell,
    log_value,
    md_table,
    measure,
    report_extra,
    run_ort_step,
    run_qtool_quantize,
    task_score,
    timed_row,
    worker,
)


def qtool_row(
    name: str, entry: dict, variant: str, kind: str, flags: list[str], tag: str, args, calib: Path | None = None
) -> tuple[Row, Path | None]:
    """One measured `qtool quantize FLAGS --json` on the converted model over the default calibration set,
    evaluated on the validation set. Returns (row, quantized model or None)."""
    row = Row(name, variant, kind=kind, params={"flags": " ".join(flags)})
    conv, error = convert_entry(name, entry)
    if conv is None:
        row.add_note(error)
        return row, None
    out = RUNS / name / f"{tag}.quant.onnx"
    calib = calib or CACHE / entry["calib_list"]
    step, report = run_qtool_quantize(conv, calib, out, flags, RUNS / name / f"{tag}.log", args.timeout)
    timed_row(row, step)
    if step.status != "ok":
        row.add_note("qtool quantize failed")
        return row, None
    row.extra = report_extra(report)
    return evaluate_row(row, entry, out, CACHE / entry["model"]), out


def float_row(name: str, entry: dict) -> Row:
    """The float model's task metrics (not timed): the reference line of a table."""
    return evaluate_row(Row(name, "float", kind="float"), entry, CACHE / entry["model"], None)


def progress(suite: str, name: str, what: str) -> None:
    print(f"[bench] {suite} {name}: {what} ...", file=sys.stderr, flush=True)


def score_cell(row: Row | None) -> str:
    score = None if row is None else task_score(row)
    return "-" if score is None else f"{100 * score:.2f}%"


# ---------------------------------------------------------------- algorithms (issue 5)


ALGORITHMS = {  # variant -> --apply_algorithms values
    "min-max": [],
    "cle": ["cle"],
    "adaround": ["adaround"],
    "bc": ["bc"],
    "cle+adaround": ["cle", "adaround"],
    "cle+adaround+bc": ["cle", "adaround", "bc"],
}
W4_MODELS = ["efficientnet_lite0"]
W4_VARIANTS = ["min-max", "adaround", "cle+adaround"]
# AdaRound's and BRECQ's W4A8 tables keep the first and the last layer at 8 bits; this row is that
# convention, for comparison with them (the target is the all-4-bit cle+adaround row)
W4_EDGES = "cle+adaround, first+last W8"
ALGO_TARGETS = {  # issue 5: (metric, target, how): "abs" = at least; "float-pts" = within points of float
    "efficientnet_lite0": [("top1_agree", 0.95, "abs"), ("cosine", 0.995, "abs")],
    "ppocrv4_rec": [("char_acc", 0.99, "abs")],
    "ppocrv4_det": [("recall", 0.005, "float-pts")],
    "ppocr_cls_mobile_v2": [("accuracy", 0.005, "float-pts")],
}
W4_TARGET = ("top1_agree", 0.80)


def algorithm_flags(algorithms: list[str], bits: int = 8) -> list[str]:
    flags = ([] if bits == 8 else ["--weights_bitwidth", str(bits)]) + QTOOL_W8A8 + MINMAX
    for name in algorithms:
        flags += ["--apply_algorithms", name]
    return flags


def edge_layers_8bit(name: str, entry: dict) -> Path:
    """Overrides that keep the first and the last weighted layer's weights at 8 bits."""
    import onnx

    conv, _ = convert_entry(name, entry)
    graph = onnx.load(str(conv), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    layers = [n.input[1] for n in graph.node if n.op_type in MAC_OPS and len(n.input) > 1 and n.input[1] in weights]
    params = {w: [{"bitwidth": 8, "dtype": "int", "is_symmetric": "True"}] for w in (layers[0], layers[-1])}
    path = RUNS / name / "edges_8bit.encodings.json"
    path.write_text(json.dumps({"activation_encodings": {}, "param_encodings": params}, indent=1))
    return path


def run_algorithms(names: list[str], manifest: dict, args, emit) -> None:
    for name in names:
        entry = manifest["models"][name]
        emit(float_row(name, entry))
        for variant, algos in ALGORITHMS.items():
            progress("algorithms", name, f"W8A8 {variant}")
            row, _ = qtool_row(
                name, entry, variant, f"w8:{variant}", algorithm_flags(algos), f"algo_w8_{variant}", args
            )
            row.params["weights"] = 8
            emit(row)
        if name in W4_MODELS:
            for variant in [*W4_VARIANTS, W4_EDGES]:
                progress("algorithms", name, f"W4A8 {variant}")
                flags = [*algorithm_flags(ALGORITHMS[variant.split(",")[0]], 4)]
                flags += ["--config", str(Path(__file__).parent / "w4a8.yaml")]
                if variant == W4_EDGES:
                    flags += ["--quantization_overrides", str(edge_layers_8bit(name, entry))]
                tag = f"algo_w4_{variant.split(',')[0]}" + ("_edges8" if variant == W4_EDGES else "")
                calib = CACHE / entry["calib_w4_list"] if "calib_w4_list" in entry else None
                row, _ = qtool_row(name, entry, f"W4A8 {variant}", f"w4:{variant}", flags, tag, args, calib)
                if calib is None:
                    row.add_note("no W4 calibration set (run bench/prepare.py): on the default set")
                row.params["weights"] = 4
                emit(row)
        for method, ort_name in ORT_METHODS.items():
            progress("algorithms", name, f"ort {ort_name}")
            calib = CACHE / entry["calib_list"]
            row, out = run_ort_step(
                name, entry, calib, f"algo_ort_{method}", method=ort_name, timeout=args.ort_timeout,
                mem_limit_mb=args.mem_limit_mb,
            )  # fmt: skip
            row.kind, row.variant, row.params = f"ort:{method}", f"ort {ort_name}", {"method": method}
            if out is not None:
                evaluate_row(row, entry, out, CACHE / entry["model"])
            emit(row)


def target_check(model: str, row: Row | None, floor: Row | None) -> str:
    """✓/✗ per issue 5 target for one row, with the gap."""
    if row is None or not row.metrics:
        return "-"
    parts = []
    for key, value, how in ALGO_TARGETS.get(model, []):
        if key not in row.metrics:
            continue
        got = row.metrics[key]
        if how == "float-pts":
            if floor is None or key not in floor.metrics:
                continue
            delta = 100 * (got - floor.metrics[key])  # quantized minus float: negative is a loss
            ok = round(-delta, 6) <= 100 * value  # 98.5 - 98.0 is 0.5000000000000004 in floats
            parts.append(f"{key} {delta:+.2f} pts vs float {'✓' if ok else '✗'}")
        else:
            scale = 100 if key != "cosine" else 1
            ok = got >= value
            parts.append(f"{key} ≥ {scale * value:g}{'%' if scale == 100 else ''} {'✓' if ok else '✗'}")
    return ", ".join(parts)


def render_algorithms(rows: list[Row], manifest: dict) -> list[str]:
    lines = [
        "## algorithms: cle / adaround / bc alone and combined (issue 5)",
        "",
        "`bench/run.py --suite algorithms`. qtool W8A8 = `qtool quantize --use_per_channel_quantization "
        "--bias_bitwidth 32 [--apply_algorithms A ...]` over the 64-sample calibration set; W4A8 adds "
        "`--weights_bitwidth 4 --config bench/w4a8.yaml` over its own 512-sample set (two crops of each of 251 "
        "photos: the 22 above and 229 of GCompris's; bench/README.md). ort best = the best (task metric) of "
        "quantize_static MinMax / Entropy / Percentile (QDQ, u8/s8 per-channel, with quant_pre_process); the others are in results.json. time s / peak MB: the "
        "quantize process. SQNR: output vs float on the validation set. Targets (issue 5): EfficientNet top-1 ≥ 95% "
        "and cosine ≥ 0.995; rec char_acc ≥ 99.0%; det recall and cls accuracy within 0.5 pts of float; W4A8 "
        "cle+adaround EfficientNet top-1 ≥ 80%.",
        "",
    ]
    table = []
    for model in [m for m in manifest["models"] if any(r.model == m for r in rows)]:
        mine = {r.kind: r for r in rows if r.model == model}
        floor = mine.get("float")
        ort = [r for k, r in mine.items() if k.startswith("ort:")]
        best_ort = max(ort, key=lambda r: task_score(r) or -1.0) if ort else None
        ordered = [mine.get("float")] + [mine.get(f"w8:{v}") for v in ALGORITHMS]
        ordered += [mine.get(f"w4:{v}") for v in [*W4_VARIANTS, W4_EDGES]] + [best_ort]
        for row in filter(None, ordered):
            variant = row.variant if row.kind.startswith(("w4", "float")) else f"W8A8 {row.variant}"
            if row is best_ort:
                others = ", ".join(
                    f"{r.variant[4:]} {score_cell(r) if r.status == 'ok' else r.status}" for r in ort if r is not row
                )
                variant = f"ort best ({row.variant[4:]})"
                row_note = "; ".join(filter(None, [row.note, f"others: {others}" if others else ""]))
            else:
                algos = re.sub(r" \([^)]*\)", "", str(row.extra.get("algorithms", "")))  # drop the pair lists
                row_note = "; ".join(filter(None, [row.note, algos]))
            check = (
                target_check(model, row, floor)
                if row.kind.startswith("w8")
                else (
                    f"top1_agree ≥ 80% {'✓' if row.metrics.get('top1_agree', 0) >= W4_TARGET[1] else '✗'}"
                    if row.kind == "w4:cle+adaround" and row.metrics
                    else "-"
                )
            )
            table.append(
                [
                    model,
                    variant,
                    format_metrics(row.metrics),
                    cell(row.metrics.get("sqnr_db")),
                    cell(row.seconds),
                    cell(row.peak_mb, "{:.0f}"),
                    load_cell(row),
                    check,
                    row_note[:300] + commit_note(row),
                ]
            )
    header = ["model", "variant", "metrics", "SQNR dB", "time s", "peak MB", "load", "targets", "notes"]
    return lines + md_table(header, table)


# ---------------------------------------------------------------- mixed precision (issue 7)


MIXED_TARGETS = {  # model -> mixed-precision flag sets tried (issue 7: rec char_acc ≥ 99.3%, effnet top-1 ≥ 98%)
    # rec has ~280 candidates: exact sensitivity (one evaluation each) takes ~20 min there, so proxy
    "ppocrv4_rec": [
        ["--target_sqnr", "12", "--mixed_precision_sensitivity", "proxy"],
        ["--target_sqnr", "16", "--mixed_precision_sensitivity", "proxy"],
        ["--mixed_precision_factor", "1.2", "--mixed_precision_sensitivity", "proxy"],
    ],
    "efficientnet_lite0": [
        ["--target_sqnr", "23.5"],
        ["--mixed_precision_factor", "1.5"],
        ["--target_sqnr", "30"],
        ["--target_sqnr", "30", "--mixed_precision_sensitivity", "proxy"],
        ["--apply_algorithms", "adaround", "--target_sqnr", "30"],  # adaround first; raised layers get float weights
        ["--apply_algorithms", "adaround", "--mixed_precision_factor", "1.25"],  # the best within ~25% of MACs
        # the ceiling: 5% of the validation crops have top-2 logits within 0.036, so 98% needs ~40 dB,
        # which only (nearly) everything at 16 bits reaches
        ["--apply_algorithms", "adaround", "--target_sqnr", "36"],
        ["--apply_algorithms", "adaround", "--target_sqnr", "40"],
    ],
    "ppocr_cls_mobile_v2": [["--target_sqnr", "40"]],
    "ppocrv4_det": [["--target_sqnr", "16"]],
}
MIXED_GOALS = {"ppocrv4_rec": ("char_acc", 0.993, 20.0), "efficientnet_lite0": ("top1_agree", 0.98, 25.0)}
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
BITS = {2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 12: 32, 21: 4, 22: 4, 17: 8, 18: 8, 19: 8, 20: 8}  # onnx dtype -> bits


def qdq_mac_share(path: Path) -> dict:
    """MACs of Conv/ConvTranspose/Gemm/MatMul in a QDQ model and the share that runs with a 16-bit operand
    (input activation or weight dequantized from 16 bits), from onnx shape inference: the bench's own count,
    independent of qtool's cost model."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    missing = {
        t
        for n in model.graph.node
        if n.op_type in MAC_OPS
        for t in (n.output[0], n.input[0])
        if t not in inits and (not shapes.get(t) or 0 in shapes[t])
    }
    if missing:  # shapes onnx cannot infer (EfficientNet's computed padding): run it once on zeros
        shapes.update(runtime_shapes(model, sorted(missing)))

    def bits(name: str) -> int:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return 32
        src = dq.input[0]
        if src in inits:
            return BITS.get(inits[src].data_type, 8)
        q = producer.get(src)
        if q is not None and q.op_type == "QuantizeLinear":
            if len(q.input) > 2 and q.input[2] in inits:
                return BITS.get(inits[q.input[2]].data_type, 8)
            dtype = next((a.i for a in q.attribute if a.name == "output_dtype"), 2)
            return BITS.get(dtype, 8)
        return 8

    def dims(name: str) -> list[int]:
        if name in inits:
            return list(inits[name].dims)
        dq = producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            return list(inits[dq.input[0]].dims)
        return shapes.get(name, [])

    total = wide = unknown = 0
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        out, a, w = shapes.get(node.output[0], []), dims(node.input[0]), dims(node.input[1])
        if not out or 0 in out or not w:
            unknown += 1
            continue
        if node.op_type == "Conv":
            macs = int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            macs = int(np.prod(a)) * int(np.prod(w[1:])) if a else 0
        else:
            trans = node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            macs = int(np.prod(out)) * ((a[-2] if trans else a[-1]) if a else 0)
        total += macs
        if max(bits(node.input[0]), bits(node.input[1])) == 16:
            wide += macs
    return {
        "macs": total,
        "macs_16bit": wide,
        "macs_16bit_pct": 100 * wide / total if total else None,
        "unknown": unknown,
    }


def runtime_shapes(model, names: list[str]) -> dict[str, list[int]]:
    """Shapes of the named tensors from one onnxruntime run on zeros (graph optimisations off, so the
    names survive)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(dims, dtype=np.float32)
    outs = session.run(names, feeds)
    return {n: list(o.shape) for n, o in zip(names, outs, strict=True)}


def run_mixed(names: list[str], manifest: dict, args, emit) -> None:
    extra = [flag.split("=", 1) for flag in (args.mixed_target or [])]
    for name in names:
        entry = manifest["models"][name]
        targets = [[f"--{k.lstrip('-')}", v] for k, v in extra] if extra else MIXED_TARGETS.get(name, [])
        if not targets:
            continue
        emit(float_row(name, entry))
        progress("mixed", name, "single W8A8 run")
        row, out = qtool_row(name, entry, "W8A8 (no mixed)", "single", [*QTOOL_W8A8, *MINMAX], "mixed_single", args)
        if out is not None:
            row.extra["bench mac share"] = qdq_mac_share(out)
        emit(row)
        for target in targets:
            label = " ".join(target)
            progress("mixed", name, label)
            flags = [*QTOOL_W8A8, "--mixed_precision", "auto", *target]
            tag = "mixed_" + "_".join(t.lstrip("-") for t in target)
            row, out = qtool_row(name, entry, f"auto {label}", f"auto:{label}", flags, tag, args)
            row.params["target"] = label
            if out is not None:
                row.extra["bench mac share"] = qdq_mac_share(out)
            emit(row)


def chosen_point(row: Row) -> dict | None:
    """The pareto row of the chosen model: the one with as many 16-bit layers as the report lists."""
    layers = row.extra.get("16-bit layers")
    if layers is None or "pareto" not in row.extra:
        return None
    count = 0 if layers == "none" else len([v for v in str(layers).split(",") if v.strip()])
    return next((p for p in row.extra["pareto"] if p.get("layers_16bit") == count), {"layers_16bit": count})


def render_mixed(rows: list[Row], manifest: dict) -> list[str]:
    lines = [
        "## mixed: `--mixed_precision auto` under an accuracy target (issue 7)",
        "",
        "`bench/run.py --suite mixed` (other targets: `--mixed-target target_sqnr=18`, repeatable). W8A8 per-channel "
        "flags plus `--mixed_precision auto` and the target, over the 64-sample calibration set (which is also "
        "what the search evaluates on). 16-bit MACs: qtool = `macs_16bit_%` of the report's pareto row with the "
        "chosen layer count; bench = share of Conv/Gemm/MatMul MACs with a 16-bit input or weight in the written "
        "QDQ model (onnx shape inference). search × = the auto run's wall time over the single W8A8 run's. "
        "Targets: rec char_acc ≥ 99.3% with ≤ 20% MACs 16-bit; EfficientNet top-1 ≥ 98% with ≤ 25%.",
        "",
    ]
    table = []
    for model in [m for m in manifest["models"] if any(r.model == m for r in rows)]:
        mine = {r.kind: r for r in rows if r.model == model}
        single = mine.get("single")
        for row in [mine.get("float"), single] + [r for k, r in mine.items() if k.startswith("auto:")]:
            if row is None:
                continue
            point = chosen_point(row) if row.kind.startswith("auto:") else None
            share = row.extra.get("bench mac share") or {}
            layers = row.extra.get("16-bit layers")
            n_layers = point.get("layers_16bit") if point else (0 if row.kind == "single" else None)
            qtool_pct = point.get("macs_16bit_pct", point.get("macs_16bit_%")) if point else None
            times = None if single is None or not single.seconds or not row.seconds else row.seconds / single.seconds
            goal = MIXED_GOALS.get(model)
            check = "-"
            if goal and row.kind.startswith("auto:") and goal[0] in row.metrics:
                pct = share.get("macs_16bit_pct")
                ok_acc, ok_mac = row.metrics[goal[0]] >= goal[1], pct is not None and pct <= goal[2]
                check = f"{goal[0]} {'✓' if ok_acc else '✗'}, MACs {'✓' if ok_mac else '✗'}"
            names = [v.strip() for v in str(layers or "").split(",") if v.strip() and layers != "none"]
            listed = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
            note = "; ".join(filter(None, [row.note, f"16-bit: {listed}" if names else ""]))
            table.append(
                [
                    model,
                    row.variant,
                    format_metrics(row.metrics),
                    cell(row.metrics.get("sqnr_db")),
                    cell(n_layers, "{}"),
                    cell(qtool_pct, "{:.2f}"),
                    cell(share.get("macs_16bit_pct"), "{:.2f}"),
                    cell(row.seconds),
                    cell(times, "{:.1f}×"),
                    cell(row.peak_mb, "{:.0f}"),
                    load_cell(row),
                    check,
                    note[:400] + commit_note(row),
                ]
            )
    header = ["model", "variant", "metrics", "SQNR dB", "16-bit layers", "16-bit MACs % (qtool)"]
    header += ["16-bit MACs % (bench)", "time s", "search ×", "peak MB", "load", "targets", "notes"]
    return lines + md_table(header, table)


# ---------------------------------------------------------------- speed (issue 6)


SPEED_MODELS = ["efficientnet_lite0", "ppocr_cls_mobile_v2", "ppocrv4_det"]


def run_speed(names: list[str], manifest: dict, args, emit) -> None:
    for name in names if args.models else [n for n in names if n in SPEED_MODELS]:
        entry = manifest["models"][name]
        progress("speed", name, "qtool --target ort-cpu")
        quant_row, out = qtool_row(
            name, entry, "qtool --target ort-cpu", "qtool-ort-cpu", ["--target", "ort-cpu"], "speed_ort_cpu", args
        )
        models = {"float": CACHE / entry["model"]}
        conv, _ = convert_entry(name, entry)
        if conv is not None:
            models["float (converted)"] = conv
        if out is not None:
            models["qtool ort-cpu"] = out
        ort_out = RUNS / name / "ort_pre.quant.onnx"
        if ort_out.exists():
            models["ort quantize_static"] = ort_out
        progress("speed", name, f"latency of {', '.join(models)}")
        cmd = worker("_latency", str(CACHE / entry["val_list"]), dims_of(entry), str(args.runs), "2")
        step = measure([*cmd, *map(str, models.values())], RUNS / name / "speed_latency.log", timeout=args.timeout)
        stats = json.loads(log_value(step.log, "LATENCY") or "{}")
        base = stats.get(str(models["float"]), {}).get("median_ms")
        for label, path in models.items():
            row = Row(name, label, kind=f"latency:{label}", load=list(step.load), status=step.status)
            row.extra = {"latency": stats.get(str(path), {}), "model": str(path)}
            row.extra["rounds"] = int(log_value(step.log, "LATENCY-ROUNDS") or 0)
            if label == "qtool ort-cpu":
                row.metrics, row.seconds, row.peak_mb = quant_row.metrics, quant_row.seconds, quant_row.peak_mb
                row.note = quant_row.note
            median = row.extra["latency"].get("median_ms")
            if base and median:
                row.extra["speedup"] = base / median
                best = stats[str(models["float"])]["min_ms"] / row.extra["latency"]["min_ms"]
                row.extra["speedup of the fastest runs"] = best
            if step.status != "ok":
                row.add_note(step.error)
            emit(row)


def render_speed(rows: list[Row], manifest: dict) -> list[str]:
    lines = [
        "## speed: onnxruntime CPU latency, 2 threads, batch 1 (issue 6)",
        "",
        "`bench/run.py --suite speed` (also part of `make bench`). One process per model times every variant in "
        "turn (10 warm-up runs each, then 50 rounds, more for fast models so that they last ≥ 3 s; median and p10–p90 in ms), so load changes hit all alike. "
        "`float` = the original model, `float (converted)` = after `qtool convert`, `qtool ort-cpu` = "
        "`qtool quantize --target ort-cpu` on the 64-sample calibration set (its task metrics in the metrics "
        "column), `ort quantize_static` = the default suite's MinMax QDQ model. speedup = float median / median "
        "(in brackets: float min / min, the least disturbed runs). "
        "Target: qtool ort-cpu ≥ 1.5× faster than float on the convnets.",
        "",
    ]
    table = []
    for model in [m for m in manifest["models"] if any(r.model == m for r in rows)]:
        for row in [r for r in rows if r.model == model]:
            lat = row.extra.get("latency", {})
            speedup = row.extra.get("speedup")
            check = ""
            if row.variant == "qtool ort-cpu" and speedup is not None:
                check = " ✓" if speedup >= 1.5 else " ✗"
            table.append(
                [
                    model,
                    row.variant,
                    cell(lat.get("median_ms"), "{:.2f}"),
                    f"{lat['p10_ms']:.2f}–{lat['p90_ms']:.2f}" if lat else "-",
                    cell(speedup, "{:.2f}×") + check + cell(row.extra.get("speedup of the fastest runs"), " ({:.2f}×)"),
                    format_metrics(row.metrics, short=True) if row.metrics else "",
                    load_cell(row),
                    row.note[:200] + commit_note(row),
                ]
            )
    header = ["model", "variant", "median ms", "p10–p90 ms", "speedup (min)", "metrics", "load", "notes"]
    return lines + md_table(header, table)

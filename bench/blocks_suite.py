"""The blocks suite of `run.py --suite blocks` (issue 23): 4-bit weights per channel, per block and LPBQ, with
ranges by weight error or by output error (clipsearch), and GPTQ rounding, against onnxruntime's
matmul_nbits_quantizer, on the transformers suite's models and on the zoo's trained transformers (ZOO).

Per model (bench/prepare_transformers.py's), every row scored on the held-out validation samples against the
float model (transformers_suite's metrics: embedding cosine, top-1 / next-token agreement, output SQNR):
- `qtool W4 ...`: `qtool quantize --weights_bitwidth 4` on the `qtool convert`ed model, per channel
  (`--use_per_channel_quantization --use_per_row_quantization`), `--weights_block_size 32` / `64`, LPBQ B32
  (`--use_lpbq`), B32 / B64 asymmetric (`--use_asymmetric_blocks`: a zero point per block); ranges by weight
  error (the plan's `mse`, no data) or by output error (`--apply_algorithms
  clipsearch`, 64 calibration samples), B32 + clipsearch + GPTQ (`adaround`, 64 samples); with float
  activations (`--act_bitwidth 32`: weight-only) and, for three of them, 16-bit activations (`--act_bitwidth 16`);
- `ort RTN` / `ort GPTQ`: onnxruntime's MatMulNBitsQuantizer (RTNWeightOnlyQuantConfig / GPTQWeightOnlyQuantConfig,
  4-bit, block 32, symmetric like qtool's; GPTQ on the same 64 calibration samples) on the float model, in a worker
  run by the bench venv's python (BLOCKS_ORT_PYTHON; its GPTQ imports torch);
- `qtool ... → export matmulnbits`: `qtool export --format matmulnbits` of the weight-only B32 + clipsearch model,
  `accuracy_level` unset (float A, as the QDQ model) or 4 (`--matmulnbits_accuracy_level 4`: A quantized to int8
  per block inside the kernel);
- `one token`: a causal LM only: the same torch model and weights exported for ONE token (input_ids [1, 1]: the
  regime of a decode step at batch 1, every MatMul a vector-matrix product) in the bench venv, `qtool quantize`d
  weight-only W4 B32 (ranges by weight error: no data) and exported as above; latency and size only (the
  accuracy is the sequence model's), its latency on a feed of token 1 against that one-token float model.
Time / peak MB are the quantizing (or exporting) process's; size is the written model's bytes; latency is
onnxruntime CPU at batch 1, one intra-op thread, paired with the float model in the same worker (alternating runs,
so the shared machine's load hits both alike): median ms and the ratio fp32 / model (> 1: faster than fp32).
Rows to run: BLOCKS_KINDS=kind,kind (default: all of KINDS).
Zoo models (bench/prepare_zoo.py's, ZOO: transformers with real weights nothing here was tuned on) are quantized from
the zoo suite's converted float model (`zoo.conv.onnx`, every input's shape fixed) and scored against that model, not
the shipped one (flan-t5's encoder ships quantize_dynamic'd: its float weights are int8 values), over every output
(zoo_suite's metrics: SQNR, cosine, argmax agreement for masked / tagging tasks); latency and size against it too.
Every qtool row also records the weight SQNR of its MatMul/Gemm weights (the written model's dequantized weights
against the float model's, pooled: Σw² / Σ(w − ŵ)²).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
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
    qtool_exe,
    report_extra,
    timed_row,
)
from transformers_suite import HINT, converted, evaluate_into, input_spec, read_feeds, task_cell

# the zoo's transformer encoders (bench/prepare_zoo.py): flan-t5-small's encoder (T5, 8 layers, d 512; weights int8
# as shipped), g2p-id's BERT masked LM (hidden 128), khmersm's 3-layer tagging encoder (hidden 192)
ZOO = ("flan_t5_small_enc", "g2p_id_bert", "khmersm")

W4 = ["--weights_bitwidth", "4", "--encodings_format", "1.0.0"]
PER_CHANNEL = ["--use_per_channel_quantization", "--use_per_row_quantization"]
BASES = {  # scheme name -> (label, flags)
    "pc": ("W4 per-channel", PER_CHANNEL),
    "b32": ("W4 B32", ["--weights_block_size", "32"]),
    "b64": ("W4 B64", ["--weights_block_size", "64"]),
    "lpbq32": ("W4 LPBQ B32", ["--weights_block_size", "32", "--use_lpbq"]),
    "b32a": ("W4 B32 asymmetric", ["--weights_block_size", "32", "--use_asymmetric_blocks"]),
    "b64a": ("W4 B64 asymmetric", ["--weights_block_size", "64", "--use_asymmetric_blocks"]),
}
# suffix -> (label, algorithm); smoothquant with alpha: auto is activation-aware scaling (AWQ's) scored on the plan's grids
ALGOS = {"cs": ("clipsearch", "clipsearch"), "gptq": ("GPTQ", "adaround"), "sq": ("smoothquant (alpha auto)", "smoothquant")}
ACTS = {"a32": ("float", ["--act_bitwidth", "32"]), "a16": ("A16", ["--act_bitwidth", "16", *MINMAX])}  # the rows' ranges
ALGORITHM_YAML = "adaround:\n  num_batches: 64\nclipsearch:\n  num_batches: 64\nsmoothquant:\n  alpha: auto\n"
ORT_ALGOS = {"ort:rtn": "ort RTN B32", "ort:gptq": "ort GPTQ B32"}
EXPORTS = {"nbits:b32-cs": "b32-cs:a32", "nbits4:b32-cs": "b32-cs:a32", "nbits4:b32a": "b32a:a32"}  # kind -> the kind it exports
STEPS = {"step:nbits": 0, "step:nbits4": 4}  # one-token decoder rows -> accuracy_level
STEP_FLAGS = [*W4, "--weights_block_size", "32", "--act_bitwidth", "32"]
RTN = ["pc", "b32", "b64", "lpbq32", "b32a", "b64a"]  # scales by weight error (the plan's mse search)
SMOOTHED = ["pc-sq", "b32-sq", "b32a-sq"]  # activation-aware scales, then ranges by weight error
SEARCHED = ["pc-cs", "b32-cs", "b64-cs", "lpbq32-cs", "b32a-cs", "pc-cs-gptq", "b32-cs-gptq", "b32a-cs-gptq"]  # scales by output error, then GPTQ
A16 = ["pc-cs", "b32-cs", "lpbq32-cs"]
KINDS = [*(f"{s}:a32" for s in RTN + SMOOTHED + SEARCHED), *(f"{s}:a16" for s in A16), *ORT_ALGOS, *EXPORTS, *STEPS]


def scheme(name: str) -> tuple[str, list[str], list[str]]:
    """`b32-cs-gptq` -> (label, quantize flags, algorithms)."""
    base, *suffixes = name.split("-")
    label, flags = BASES[base]
    return " + ".join([label, *(ALGOS[s][0] for s in suffixes)]), flags, [ALGOS[s][1] for s in suffixes]


# ---------------------------------------------------------------- worker modes (child processes)


def worker_ort(model_path: str, list_path: str, spec_json: str, algo: str, output: str) -> None:
    """onnxruntime's MatMulNBitsQuantizer, 4-bit, block 32, symmetric: RTN, or GPTQ on the calibration samples."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        GPTQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
        RTNWeightOnlyQuantConfig,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = list(read_feeds(list_path, json.loads(spec_json)))
            self.at = 0

        def get_next(self):
            self.at += 1
            return self.feeds[self.at - 1] if self.at <= len(self.feeds) else None

        def __iter__(self):
            return iter(self.feeds)

    start = time.perf_counter()
    config = (
        RTNWeightOnlyQuantConfig() if algo == "rtn" else GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader())
    )
    quantizer = MatMulNBitsQuantizer(model_path, bits=4, block_size=32, is_symmetric=True, algo_config=config)
    quantizer.process()
    onnx.save_model(quantizer.model.model, output)
    print(f"ORT-SECONDS: {time.perf_counter() - start:.3f}")


def worker_latency(reference: str, model_path: str, list_path: str, spec_json: str, runs: str) -> None:
    """Batch-1 CPU latency of model_path and of the float reference, one intra-op thread, alternating runs."""
    import onnxruntime as ort

    spec = json.loads(spec_json)  # list "-": every input all ones (token 1, mask 1)
    feed = {n: np.ones(s, d) for n, (s, d) in spec.items()} if list_path == "-" else next(read_feeds(list_path, spec))
    sessions = []
    for path in (reference, model_path):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.log_severity_level = 3
        sessions.append(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
    times: list[list[float]] = [[], []]
    for i in range(5 + int(runs)):
        for k, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feed)
            if i >= 5:
                times[k].append(1000 * (time.perf_counter() - start))
    fp32, model = (float(np.median(t)) for t in times)
    print("LATENCY: " + json.dumps({"fp32_ms": fp32, "model_ms": model}))


def worker_step(output: str) -> None:
    """prepare_transformers' causal LM (same seed, same weights) exported for one token (bench venv: torch)."""
    import prepare_transformers as pt

    feed = {"input_ids": np.array([[101]], np.int64), "attention_mask": np.ones((1, 1), np.int64)}
    pt.export(pt.causal_lm(), feed, "logits", Path(output))


WORKERS = {"_ort": worker_ort, "_latency": worker_latency, "_step": worker_step}


def worker(*args: str, python: str = sys.executable) -> list[str]:
    return [python, str(Path(__file__).resolve()), *args]


def ort_python() -> str:
    """onnxruntime's GPTQ (its vendored neural_compressor) imports torch: the bench venv has it."""
    found = os.environ.get("BLOCKS_ORT_PYTHON", "/work/benchvenv/bin/python")
    return found if Path(found).exists() else sys.executable


# ---------------------------------------------------------------- rows


def float_model(name: str, entry: dict) -> tuple[Path | None, str]:
    """The float model the qtool rows quantize: `qtool convert`ed (a zoo model: the zoo suite's conversion, every
    input's shape fixed; it is also the reference those rows are scored against)."""
    if name in ZOO:
        from zoo_suite import converted as zoo_converted

        return zoo_converted(name, entry)
    return converted(name, entry)


def weight_sqnr(quantized: Path, reference: Path) -> float | None:
    """SQNR dB of every MatMul/Gemm weight a DequantizeLinear of constants feeds in `quantized` (its blocks, channels,
    zero points) against the same-named float weight of `reference`, pooled over the weights."""
    import onnx
    from onnx import numpy_helper

    model, floats = onnx.load(str(quantized)), onnx.load(str(reference))
    inits = {i.name: i for i in model.graph.initializer}
    weights = {i.name: i for i in floats.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    signal = noise = 0.0
    for node in model.graph.node:
        dq = made.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.output[0] not in weights:
            continue
        if not all(x in inits for x in dq.input if x):
            continue
        q, scale = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in dq.input[:2])
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0
        attrs = {a.name: a.i for a in dq.attribute}
        axis, block = attrs.get("axis", 1) % q.ndim, attrs.get("block_size", 0)
        if block:  # scale / zero point [.., K/B, ..]: each repeated over its block
            scale = np.repeat(scale, block, axis=axis)
            zero = np.repeat(zero, block, axis=axis) if np.ndim(zero) else zero
        elif np.ndim(scale) == 1 and q.ndim > 1:  # per channel along axis
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) else zero
        w = numpy_helper.to_array(weights[dq.output[0]]).astype(np.float64)
        signal += float(np.sum(w**2))
        noise += float(np.sum(((q - zero) * scale - w) ** 2))
    return round(10 * float(np.log10(signal / noise)), 3) if noise > 0 and signal > 0 else None


def zoo_scored(row: Row, name: str, out: Path, reference: Path) -> Row:
    """A zoo model's row scored by zoo_suite's worker against the converted float model (every output; SQNR and
    cosine of its first, argmax agreement where the task has one)."""
    from zoo_suite import _evaluated

    result = _evaluated(row, name, out, reference)
    if "error" in result:
        row.add_note(f"evaluation failed: {result['error']}")
        return row
    m = result.get("metrics", {})
    first = next(iter(m.get("outputs", {}).values()), {})
    row.metrics = {k: m[k] for k in ("sqnr_db", "median_sample_sqnr_db") if k in m}
    if "cosine" in first:
        row.metrics["cosine"] = first["cosine"]
    if "agree" in m:
        row.metrics.update(top1_agree=m["agree"], n=m["n"])
    return row


def _finish(row: Row, entry: dict, name: str, out: Path, args, step_model: Path | None = None) -> Row:
    """Size, latency against fp32 and the task metrics of a written model (a one-token model: against the
    one-token float model, on a feed of ones, no metrics)."""
    reference = step_model or (float_model(name, entry)[0] if name in ZOO else CACHE / entry["model"])
    row.extra["size MB"] = round(out.stat().st_size / 1e6, 2)
    row.extra["fp32 size MB"] = round(reference.stat().st_size / 1e6, 2)
    spec = {n: ([1, 1], d) for n, (_, d) in input_spec(entry).items()} if step_model else input_spec(entry)
    listing = "-" if step_model else str(CACHE / entry["val_list"])
    cmd = worker("_latency", str(reference), str(out), listing, json.dumps(spec), str(args.runs))
    step = measure(cmd, RUNS / name / f"blocks_latency_{out.stem}.log", timeout=600)
    found = log_value(step.log, "LATENCY")
    if step.status == "ok" and found:
        row.extra.update(json.loads(found))
    else:
        row.add_note(f"latency failed ({step.error})")
    if step_model:
        return row
    return zoo_scored(row, name, out, reference) if name in ZOO else evaluate_into(row, entry, out, reference)


def qtool_row(name: str, entry: dict, kind: str, args) -> Row:
    name_of, act = kind.split(":")
    label, flags, algorithms = scheme(name_of)
    act_label, act_flags = ACTS[act]
    flags = [*W4, *flags, *act_flags, *(f for a in algorithms for f in ("--apply_algorithms", a))]
    if algorithms:
        yaml = RUNS / name / "blocks_algorithms.yaml"
        yaml.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine's first blocks row comes before any other
        yaml.write_text(ALGORITHM_YAML)
        flags += ["--config", str(yaml)]
    if algorithms or act != "a32":
        flags += ["--input_list", str(CACHE / entry["calib_list"])]
    row = Row(name, f"qtool {label}, {act_label} activations", kind=kind, params={"flags": " ".join(flags)})
    conv, error = float_model(name, entry)
    if conv is None:
        row.add_note(error)
        return row
    out = RUNS / name / f"blocks_{name_of}_{act}.onnx"
    out.unlink(missing_ok=True)
    cmd = [qtool_exe(), "quantize", "-i", str(conv), "-o", str(out), *flags, "--evaluate_samples", "0", "--json"]
    step = measure(cmd, RUNS / name / f"blocks_{name_of}_{act}.log", timeout=args.timeout)
    timed_row(row, step)
    if step.status != "ok":
        row.add_note("qtool quantize failed")
        return row
    from common import qtool_report

    row.extra.update(report_extra(qtool_report(step.log)))
    row.extra["weight sqnr"] = weight_sqnr(out, conv)
    return _finish(row, entry, name, out, args)


def ort_row(name: str, entry: dict, kind: str, args) -> Row:
    algo = kind.split(":")[1]
    out = RUNS / name / f"blocks_ort_{algo}.onnx"
    out.unlink(missing_ok=True)
    spec = json.dumps(input_spec(entry))
    source = float_model(name, entry)[0] if name in ZOO else CACHE / entry["model"]
    cmd = worker("_ort", str(source), str(CACHE / entry["calib_list"]), spec, algo, str(out),
                 python=ort_python())  # fmt: skip
    step = measure(cmd, RUNS / name / f"blocks_ort_{algo}.log", timeout=args.timeout, mem_limit_mb=args.mem_limit_mb)
    row = timed_row(Row(name, ORT_ALGOS[kind], kind=kind), step)
    if step.status != "ok":
        row.add_note("matmul_nbits_quantizer failed")
        return row
    return _finish(row, entry, name, out, args)


def _nbits(row: Row, source: Path, folder: Path, level: int, args) -> Path | None:
    """`qtool export --format matmulnbits` of `source` into `folder` (log: folder.log): the model, or None."""
    cmd = [qtool_exe(), "export", "-i", str(source), "-o", str(folder), "--format", "matmulnbits",
           "--matmulnbits_accuracy_level", str(level)]  # fmt: skip
    step = measure(cmd, folder.with_suffix(".log"), timeout=args.timeout)
    timed_row(row, step)
    written = sorted(folder.glob("*.onnx")) if folder.exists() else []
    if step.status != "ok" or not written:
        row.add_note("qtool export failed")
        return None
    return written[0]


def export_row(name: str, entry: dict, kind: str, args) -> Row:
    name_of, act = EXPORTS[kind].split(":")
    level = 4 if kind.startswith("nbits4") else 0
    source = RUNS / name / f"blocks_{name_of}_{act}.onnx"
    label = f"qtool {scheme(name_of)[0]} → export matmulnbits" + (", accuracy_level 4" if level else "")
    row = Row(name, label, kind=kind, params={"accuracy_level": level})
    if not source.exists():
        row.add_note(f"no {source.name} (its quantize row failed)")
        return row
    written = _nbits(row, source, RUNS / name / f"blocks_{kind.split(':')[0]}_{name_of}", level, args)
    return _finish(row, entry, name, written, args) if written else row


def step_row(name: str, entry: dict, kind: str, args) -> Row:
    """One token through the causal LM: its one-token export, weight-only W4 B32, MatMulNBits at `STEPS[kind]`."""
    level = STEPS[kind]
    row = Row(name, "one token: qtool W4 B32 → export matmulnbits" + (", accuracy_level 4" if level else ""),
              kind=kind, params={"flags": " ".join(STEP_FLAGS), "accuracy_level": level})  # fmt: skip
    fp32, quant = RUNS / name / "blocks_step_fp32.onnx", RUNS / name / "blocks_step_b32.onnx"
    if not fp32.exists():
        step = measure(worker("_step", str(fp32), python=ort_python()), RUNS / name / "blocks_step_export.log",
                       timeout=args.timeout, mem_limit_mb=args.mem_limit_mb)  # fmt: skip
        if step.status != "ok":
            row.add_note(f"one-token export failed ({step.error})")
            return row
    quant.unlink(missing_ok=True)
    cmd = [qtool_exe(), "quantize", "-i", str(fp32), "-o", str(quant), *STEP_FLAGS, "--json"]
    if measure(cmd, RUNS / name / "blocks_step_b32.log", timeout=args.timeout).status != "ok":
        row.add_note("qtool quantize failed")
        return row
    folder = RUNS / name / f"blocks_step_nbits{level}"
    written = _nbits(row, quant, folder, level, args)
    return _finish(row, entry, name, written, args, step_model=fp32) if written else row


def blocks_models(manifest: dict) -> dict:
    """The suite's models: the transformers suite's, then the zoo's in ZOO that are prepared (or recorded)."""
    zoo = manifest.get("zoo", {})
    return {**manifest.get("transformers", {}), **{n: zoo[n] for n in ZOO if n in zoo}}


def run(names: list[str], manifest: dict, args, emit) -> None:
    models = blocks_models(manifest)
    if not models:
        print(HINT, file=sys.stderr)
        return
    chosen = os.environ["BLOCKS_KINDS"].split(",") if os.environ.get("BLOCKS_KINDS") else KINDS
    for name in [n for n in names if n in models] if args.models else list(models):
        entry = models[name]
        for kind in chosen:
            print(f"[bench] blocks {name}: {kind} ...", file=sys.stderr, flush=True)
            if kind in ORT_ALGOS:
                emit(ort_row(name, entry, kind, args))
            elif kind in EXPORTS:
                emit(export_row(name, entry, kind, args))
            elif kind in STEPS:
                if entry.get("task") == "causal_lm":  # a decode step: decoders only
                    emit(step_row(name, entry, kind, args))
            else:
                emit(qtool_row(name, entry, kind, args))


# ---------------------------------------------------------------- table


def weights_note(row: Row) -> str:
    found = row.extra.get("weight sqnr")
    return f"MatMul/Gemm weights {found:.2f} dB; " if found is not None else ""


def render(rows: list[Row], manifest: dict) -> list[str]:
    models = blocks_models(manifest)
    lines = [
        "## blocks: 4-bit weights per channel, per block, LPBQ, GPTQ vs onnxruntime's matmul_nbits_quantizer "
        "(issue 23)",
        "",
        "`bench/run.py --suite blocks` on the transformers suite's models (`qtool convert`ed), scored on their "
        "held-out validation samples against the float model (task metric and cosine as in the transformers "
        "suite; SQNR dB over the same outputs). qtool = `qtool quantize " + " ".join(W4) + "` plus the row's "
        "scheme (per-channel: `" + " ".join(PER_CHANNEL) + "`; `--weights_block_size 32|64`, `--use_lpbq`, "
        "`--use_asymmetric_blocks` (asymmetric: a zero point per block); "
        "a Gather's embedding table takes the same scheme: per channel = per feature, blocks = per token per B "
        "features) and activations (`--act_bitwidth 32`: float, weight-only, no data; `--act_bitwidth 16`: "
        "calibrated on the 64 samples). Ranges: by weight error (the plan's `mse`) or, `+ clipsearch`, by output "
        "error (`--apply_algorithms clipsearch`, 64 calibration samples); `+ GPTQ` = `--apply_algorithms "
        "adaround` (64 samples). ort = onnxruntime's MatMulNBitsQuantizer (4-bit, block 32, symmetric; GPTQ on "
        "the same 64 samples; it quantizes MatMuls only: Gather tables stay float). matmulnbits = `qtool export "
        "--format matmulnbits` of the weight-only model named (MatMulNBits, GatherBlockQuantized; `accuracy_level 4`: "
        "`--matmulnbits_accuracy_level 4`, A quantized to int8 per block in the kernel). one token: the causal LM "
        "exported for input_ids [1, 1] (a batch-1 decode step), weight-only W4 B32 by weight error, latency against "
        "that one-token float model on token 1 (no task metrics). time s / peak "
        "MB: the quantizing or exporting process. size: the written model against the float export. latency: "
        "onnxruntime CPU, batch 1, one thread, median ms, paired with the float model "
        "in one process; ×fp32 = fp32 ms / model ms. Zoo rows (" + ", ".join(ZOO) + "; trained transformers "
        "nothing was tuned on; flan-t5's encoder ships quantize_dynamic'd, so its float weights are int8 values): "
        "quantized from and scored against the zoo suite's converted float model over every output (task metric: "
        "argmax agreement at the masked letters / tags). notes: the pooled weight SQNR of the row's MatMul/Gemm "
        "weights against the float ones (qtool rows since helper-66's).",
        "",
    ]
    table = []
    order = list(models)
    chosen = [r for r in rows if r.model in models]
    for row in sorted(chosen, key=lambda r: (order.index(r.model), KINDS.index(r.kind) if r.kind in KINDS else 99)):
        x = row.extra
        size = f"{x['size MB']:.1f} / {x['fp32 size MB']:.1f}" if "size MB" in x else "-"
        latency = (
            f"{x['model_ms']:.1f} / {x['fp32_ms']:.1f} ({x['fp32_ms'] / x['model_ms']:.2f}×)"
            if "model_ms" in x
            else "-"
        )
        table.append(
            [
                row.model,
                row.variant,
                task_cell(row),
                cell(row.metrics.get("cosine"), "{:.4f}"),
                cell(row.metrics.get("sqnr_db"), "{:.2f}"),
                cell(row.seconds),
                cell(row.peak_mb, "{:.0f}"),
                size,
                latency,
                load_cell(row),
                weights_note(row) + row.note[:200] + commit_note(row),
            ]
        )
    header = ["model", "variant", "task metric", "cosine", "SQNR dB", "time s", "peak MB", "MB / fp32 MB",
              "latency ms / fp32 ms", "load", "notes"]  # fmt: skip
    return lines + md_table(header, table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](*sys.argv[2:])
    else:
        print("worker modes only; run the suite with bench/run.py --suite blocks", file=sys.stderr)
        sys.exit(2)

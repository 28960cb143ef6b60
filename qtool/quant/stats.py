"""The calibration cache: observers' state saved to a file and merged back, skipping inference.

Sharded calibration (one file per CI job, merged at the end) and re-quantizing with other
bitwidths, schemas or overrides without running the model again (TIDL's "save the quantization
parameters and reuse"). The file is JSON: the hash of the model's graph, the hashes of the
input_list files, the calibration method, and per tensor its observer state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import onnx

from qtool.errors import DataError, UsageError
from qtool.graph import external_data
from qtool.graph.inline_write import write_graph, write_tensor
from qtool.io.digest import sha256
from qtool.io.files import load_json, read_bytes, read_text, write_text
from qtool.quant.observers import OBSERVERS, Observer, count_problem, from_state

FORMAT = "qtool-calibration-stats/1"


def model_hash(model: onnx.ModelProto) -> str:
    """The graph's bytes; past protobuf's 2 GiB, part by part (nodes, then each initializer)."""
    graph = model.graph
    h = sha256()  # lazy weights as if inline, streamed a weight at a time: read in and serialized, a 403 MB model's
    hashed = SimpleNamespace(write=h.update)  # ranges export held 1.4 GB, and a 2.35 GB decoder's 4.7 (kept pages)
    if external_data.byte_size(model) < external_data.PROTOBUF_LIMIT:
        write_graph(graph, hashed)
        return h.hexdigest()
    for part in (*graph.node, *graph.input, *graph.output):
        h.update(part.SerializeToString(deterministic=True))
    for init in graph.initializer:
        write_tensor(init, hashed)
    return h.hexdigest()


def save_stats(
    path: str | os.PathLike[str],
    model: onnx.ModelProto,
    observers: dict[str, Observer],
    input_lists: list[Path],
    samples: int,
    calibration: str = "min-max",
    percentile: float = 99.99,
) -> None:
    doc = {
        "format": FORMAT,
        "calibration": calibration,  # the method the ranges were read by: a --load_stats run naming none reads them so
        **({"percentile": percentile} if calibration == "percentile" else {}),  # ... at the percentile they were read at
        "samples": samples,
        "model_sha256": model_hash(model),
        "input_lists": {str(p): sha256(read_bytes(p, "input_list")).hexdigest() for p in input_lists},
        "tensors": {name: observers[name].state() for name in sorted(observers)},
    }
    write_text(path, json.dumps(doc, sort_keys=True, indent=1) + "\n")


def _read(path: Path) -> dict:
    doc = load_json(read_text(path, "stats file"), str(path), "not a qtool stats file: ")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("tensors"), dict):
        raise DataError(f"not a qtool stats file (expected format {FORMAT!r})", where=str(path))
    return doc


def _saved_by(doc: dict) -> tuple[object, object]:
    """The method of a file saved before qtool recorded it, as its tensors' states name it (a histogram's select
    and percentile q): read as min-max, an old percentile-95 shard wrote another model and was refused beside a
    new one of the same method. States of no one method (hand-made): min-max, which any state serves."""
    found = {(s.get("method"), s.get("q") if s.get("method") == "percentile" else None)
             for s in doc["tensors"].values() if isinstance(s, dict) and s.get("method") in OBSERVERS}  # fmt: skip
    return next(iter(found)) if len(found) == 1 else ("min-max", None)


def recorded_calibration(paths: list[Path]) -> tuple[str, float | None]:
    """The activation range method the run that saved `paths` used (for a file that names none, saved before
    qtool recorded it, the one its states were observed by) and, for percentile, the percentile it read them at,
    so that replaying them without naming one writes the model that run wrote."""
    methods: dict[Path, tuple[str, float | None]] = {}
    for path in paths:
        doc = _read(path)
        method, value = (doc["calibration"], doc.get("percentile")) if "calibration" in doc else _saved_by(doc)
        if not isinstance(method, str) or method not in OBSERVERS:
            raise DataError(f"'calibration' must be one of {', '.join(OBSERVERS)}, not {json.dumps(method)}", where=str(path))
        if value is not None and (method != "percentile" or type(value) not in (int, float) or not 90 <= value <= 100):
            raise DataError(f"'percentile' must be a number in [90, 100] beside 'calibration' percentile, not {json.dumps(value)}",
                            where=str(path))  # fmt: skip
        methods[path] = method, value
    if len(set(methods.values())) > 1:  # percentile 99.9 and 99.99 too: merged, one of them would be read otherwise
        named = ", ".join(f"{path}: {method}" + (f" {value:g}" if value is not None else "")
                          for path, (method, value) in methods.items())  # fmt: skip
        raise UsageError(f"--load_stats files were calibrated by different methods ({named})",
                         hint="name the one to read them by: --act_quantizer_calibration METHOD")  # fmt: skip
    return next(iter(methods.values()), ("min-max", None))


def load_stats(
    paths: list[Path], model: onnx.ModelProto, method: str, percentile: float = 99.99
) -> tuple[dict[str, Observer], int]:
    """Merge saved observer states (each file must come from this very model); returns them and
    the total number of samples they saw."""
    wanted = model_hash(model)
    merged: dict[str, Observer] = {}
    samples = 0
    seen: dict[bytes, Path] = {}  # the statistics' digest -> the first file holding them
    for path in paths:
        doc = _read(path)
        if (same := seen.setdefault(sha256(json.dumps(doc["tensors"], sort_keys=True).encode()).digest(), path)) != path:
            raise UsageError(f"holds the statistics {same} holds (a copy?): merged, its samples would count twice",
                             where=str(path), hint="give each shard once")  # fmt: skip
        if doc.get("model_sha256") != wanted:
            raise DataError(
                "was saved for a different model (graph hash differs)",
                where=str(path),
                hint="recalibrate with --save_stats",
            )
        count = doc.get("samples", 0)
        if (problem := count_problem(count)) is not None:
            raise DataError(f"'samples' must be {problem}", where=str(path))
        samples += count
        for name, state in sorted(doc["tensors"].items()):
            try:
                observer = from_state(name, state, method, percentile)
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"tensor {name!r}: {e}", where=str(path)) from e
            if name in merged:
                merged[name].merge(observer)
            else:
                merged[name] = observer
    return merged, samples

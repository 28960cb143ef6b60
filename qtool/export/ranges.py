"""`ranges`: each activation's range as a calibration stats file, so `qtool quantize
--load_stats` can re-quantize the stripped model without running calibration again (TIDL's
"save the quantization parameters and reuse").

The file is exactly what qtool/quant/stats.py reads: format, the graph hash of the STRIPPED model
as `quantize -i <stem>.stripped.onnx` will calibrate it (normalised first unless it is already a
converted model, as every qtool QDQ model is), and a min-max observer state per activation.
The calibrated range itself is not in the QDQ model, so each range is the one that gives the
same encoding back: the grid's [min, max] for asymmetric encodings (tf maps it onto itself), and
±(2^(bw-1) - 1)·scale for symmetric ones (symmetric divides the absmax by 2^(bw-1) - 1). Power-of-2
scales survive too: both are exact multiples of the scale. Float, precision-only and
per-channel encodings have no range and are left out. Re-quantize with the same flags
(schema, bitwidths, --act_power_of_2) to get the same model.
"""

from __future__ import annotations

import json

import onnx

from qtool.encoding import Encoding
from qtool.export.job import ExportJob, Files
from qtool.graph import model as gm
from qtool.graph.convert import normalise
from qtool.quant import stats
from qtool.quant.observers import MinMax


def encoding_range(e: Encoding) -> tuple[float, float]:
    """The range that the encoding's own schema maps back onto `e`; a per-channel activation's (the residual
    stream's) is the union of its channels' (a stats file holds one range a tensor)."""
    if e.is_symmetric:
        limit = (2 ** (e.bitwidth - 1) - 1) * max(e.scale)
        return -limit, limit
    return min(e.min), max(e.max)


def observers(job: ExportJob) -> dict[str, MinMax]:
    found = {}
    for name, e in sorted(job.found.activations.items()):
        e = job.found.converts.get(name, (e,))[0] if e.is_float else e  # a float tensor's grid for integer readers
        if e.is_float:
            continue
        observer = MinMax(name)
        observer.lo, observer.hi = encoding_range(e)
        observer.count = 1
        found[name] = observer
    return found


def calibrated_model(job: ExportJob) -> onnx.ModelProto:
    """The graph `quantize` hashes: the stripped model, normalised unless its converted mark still matches (as
    quantize reads it: a 16-bit model's stripped graph keeps its source's mark but not the graph it marked, and
    every --load_stats of its ranges was 'saved for a different model')."""
    if gm.is_converted(job.stripped):
        return job.stripped
    return normalise(job.stripped, {}, job.where)


def export(job: ExportJob) -> Files:
    tensors = observers(job)
    doc = {
        "format": stats.FORMAT,
        "samples": 0,
        "model_sha256": stats.model_hash(calibrated_model(job)),
        "input_lists": {},
        "tensors": {name: tensors[name].state() for name in sorted(tensors)},
    }
    return {job.file(".ranges.json"): json.dumps(doc, sort_keys=True, indent=1) + "\n"}

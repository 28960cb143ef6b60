"""`fixpoint`: each tensor's Vitis AI Q-format for power-of-2 targets (vitis-dpu; TIDL only with --param_power_of_2).

A power-of-2 encoding stores x = (q - zero_point) · 2^-fix_point, where `fix_point` is the number
of fractional bits (Vitis AI's `fix_point`, UG1414; scale = 2^-fix_point, so it may be negative for
ranges wider than the grid). Symmetric encodings are signed with zero point 0, the DPU's case.
JSON, sorted by tensor name:

    {"format": "qtool-fixpoint/1",
     "tensors": {"conv.weight": {"kind": "param", "bitwidth": 8, "signed": true, "fix_point": 7},
                 "w_pc": {..., "fix_point": [7, 6], "axis": 0}, "x": {..., "zero_point": 128}}}

Per-channel encodings list one fix_point per channel. A scale that is not a power of two is a
UsageError naming the first such tensor (activations first, then params, each sorted by name).
"""

from __future__ import annotations

import json
from typing import Any

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import UsageError
from qtool.export.job import ExportJob, Files

FORMAT = "qtool-fixpoint/1"


def _entry(name: str, kind: str, e: Encoding, where: str) -> dict[str, Any]:
    bits = enc.fix_point(e)
    if bits is None:
        raise UsageError(
            f"tensor {name!r} has scale {e.scale[0]:.9g}, not a power of two; fixpoint needs power-of-2 encodings",
            where=where,
            hint="quantize with --target vitis-dpu, or --act_power_of_2 --param_power_of_2; an override (given, or "
            "carried from convert --quantization_overrides) keeps its own scale: drop its entry, or quantize with "
            "--ignore_quantization_overrides",
        )
    entry: dict[str, Any] = {"kind": kind, "bitwidth": e.bitwidth, "signed": e.signed}
    entry["fix_point"] = bits if e.axis is not None else bits[0]
    if e.axis is not None:
        entry["axis"] = e.axis
    zero_point = [int(z) for z in e.zero_point()]
    if any(zero_point):
        entry["zero_point"] = zero_point if e.axis is not None else zero_point[0]
    return entry


def export(job: ExportJob) -> Files:
    tensors: dict[str, dict[str, Any]] = {}
    for kind, table in (("activation", job.found.activations), ("param", job.found.params)):
        for name, e in sorted(table.items()):
            if not e.is_float and e.scale:
                tensors[name] = _entry(name, kind, e, job.where)
    doc = {"format": FORMAT, "tensors": dict(sorted(tensors.items()))}
    return {job.file(".fixpoint.json"): json.dumps(doc, indent=1) + "\n"}

"""`fp16`: the whole float model in half precision (qairt's `--float_bitwidth 16`).

The stripped model through `to_float16`: weights and activations float16, inputs and outputs
still float32 behind Cast nodes, so it takes the same raw files as the float model.
"""

from __future__ import annotations

from qtool.export.job import ExportJob, Files
from qtool.graph import model as gm
from qtool.graph.float16 import to_float16


def export(job: ExportJob) -> Files:
    model = to_float16(job.stripped)
    gm.set_metadata(model, gm.METADATA_FLOAT_BITWIDTH, "16")
    return {job.file(".fp16.onnx"): model}

"""`stripped`: the float model with every Q/DQ removed (qairt's DLC_STRIP_QUANT flow).

Its encodings go with it through the `encodings` format; `qtool quantize -i <stripped>
--quantization_overrides <encodings> --enable_float_fallback` rebuilds the QDQ model byte for byte.
"""

from __future__ import annotations

from qtool.export.job import ExportJob, Files


def export(job: ExportJob) -> Files:
    return {job.file(".stripped.onnx"): job.stripped}

"""`qtool export`: every requested artefact built in memory, then written."""

from __future__ import annotations

import onnx

from qtool import runtime
from qtool.config import ExportOptions
from qtool.errors import UsageError
from qtool.export import ExportJob, build, write_files
from qtool.export.matmulnbits import matmulnbits_hint
from qtool.graph import model as gm
from qtool.io import outputs
from qtool.io.outputs import check_output_folder
from qtool.quant.qdq_read import qdq_encodings
from qtool.report import Report


def export(o: ExportOptions) -> Report:
    """Every --format's files for a QDQ model, built in memory first so a failing format writes nothing;
    then written together, so a failing write leaves none of them either."""
    inputs = [("-i", o.input_network), *runtime.library_inputs(o.op_package_lib)]
    with outputs.command(inputs) as tx, runtime.custom_ops(o.op_package_lib):
        check_output_folder(o.output_path)
        model, data_files = gm.load_with_files(o.input_network)
        tx.add_inputs("-i's external data", data_files)
        return _export(o, model)


def _export(o: ExportOptions, model: onnx.ModelProto) -> Report:
    found = qdq_encodings(model, str(o.input_network))
    if not len(found):
        raise UsageError("has no QuantizeLinear/DequantizeLinear encodings to export", where=str(o.input_network),
                         hint=matmulnbits_hint(model))  # fmt: skip
    job = ExportJob(model, found, o.input_network.name.removesuffix(".onnx"), o)
    written = write_files(build(job, o.formats), o.output_path, o.external_data)
    return Report(
        "qtool export",
        {"input": str(o.input_network), "encodings": len(found), "written": ", ".join(str(p) for p in written)},
    )

"""`qtool export`: every requested artefact built in memory, then written."""

from __future__ import annotations

import os
import tempfile

import onnx

from qtool import runtime
from qtool.api.common import encodings_path
from qtool.config import ExportOptions
from qtool.errors import UsageError
from qtool.export import ExportJob, build, write_files
from qtool.export.matmulnbits import matmulnbits_hint
from qtool.graph import external_data
from qtool.graph import model as gm
from qtool.io import outputs
from qtool.io.outputs import check_output_folder
from qtool.quant.qdq_read import qdq_encodings
from qtool.quant.rules import INTEGER_OPS
from qtool.report import Report


def export(o: ExportOptions) -> Report:
    """Every --format's files for a QDQ model, built in memory first so a failing format writes nothing;
    then written together, so a failing write leaves none of them either."""
    inputs = [("-i", o.input_network), *runtime.library_inputs(o.op_package_lib)]
    with outputs.command(inputs) as tx, runtime.custom_ops(o.op_package_lib):
        check_output_folder(o.output_path)
        _check_beside_input(o)
        model, data_files = gm.load_with_files(o.input_network)
        tx.add_inputs("-i's external data", data_files)
        with tempfile.TemporaryDirectory(prefix="qtool-") as scratch:
            try:
                return _export(o, model, os.path.join(scratch, "float-weights.data"))
            finally:
                external_data.forget(scratch)


def _check_beside_input(o: ExportOptions) -> None:
    """`--format encodings` writes `<stem>.encodings.json`, the name quantize gave -i's encodings: exported into
    -i's folder it replaced them without a word (in another --encodings_format too). They are not export's to
    replace."""
    mine = o.output_path / f"{o.input_network.name.removesuffix('.onnx')}.encodings.json"
    theirs = encodings_path(o.input_network)
    try:
        same = "encodings" in o.formats and os.path.samefile(mine, theirs)
    except (OSError, ValueError):  # either missing: nothing to replace
        return
    if same:
        raise UsageError(f"--format encodings would replace the encodings quantize wrote with -i {o.input_network}",
                         where=str(mine), hint="export into another folder (-o), or move that file away first")  # fmt: skip


def _not_qdq_hint(model: onnx.ModelProto) -> str:
    """What a model without Q/DQ encodings is: onnxruntime's QOperator form (QLinearConv...) has Q and DQ nodes at
    its ends only, and was told it had none, as a float model was, without saying what export takes."""
    if integer := sorted({n.op_type for n in model.graph.node if n.op_type in INTEGER_OPS}):
        return (f"it is in onnxruntime's integer form ({', '.join(integer)}): export reads QDQ models; quantize its "
                "float original with qtool quantize (or quantize_static with QuantFormat.QDQ)")  # fmt: skip
    return "export reads the QDQ model qtool quantize writes: quantize this model first"


def _export(o: ExportOptions, model: onnx.ModelProto, scratch: str) -> Report:
    found = qdq_encodings(model, str(o.input_network))
    if not len(found):
        raise UsageError("has no QuantizeLinear/DequantizeLinear encodings to export", where=str(o.input_network),
                         hint=matmulnbits_hint(model) or _not_qdq_hint(model))  # fmt: skip
    # a MatMulNBits' weight has no DequantizeLinear: the encodings left it out, exit 0, and stripped kept its integers
    if matmulnbits_hint(model) and (lost := [f for f in o.formats if f in ("stripped", "encodings", "fp16", "fixpoint")]):
        ours = "; their scales are in the .encodings.json quantize wrote" if gm.METADATA_CONVERTED in gm.metadata(model) else ""
        raise UsageError(f"--format {lost[0]}: it holds MatMulNBits (onnxruntime's 4-bit form), whose weights that format "
                         "cannot carry", where=str(o.input_network),
                         hint=f"export the QDQ model they were made from (quantize without --target ort-cpu writes one){ours}")  # fmt: skip
    job = ExportJob(model, found, o.input_network.name.removesuffix(".onnx"), o, scratch)
    written = write_files(build(job, o.formats), o.output_path, o.external_data)
    return Report(
        "qtool export",
        {"input": str(o.input_network), "encodings": len(found), "written": ", ".join(str(p) for p in written)},
    )

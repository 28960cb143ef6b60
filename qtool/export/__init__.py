"""EXPORTERS: one writer per `qtool export --format` value, keyed by that value (STYLE.md Do 2).

Adding a format means one module under qtool/export/ and one line here. Each module's docstring
says what it writes and which spec it follows.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from qtool.errors import UsageError, did_you_mean
from qtool.export import encodings, fixpoint, fp16, matmulnbits, qdq, qoperator, ranges, stripped
from qtool.export.job import Exporter, ExportJob, Files
from qtool.graph import model as gm
from qtool.io.files import write_text

EXPORTERS: dict[str, Exporter] = {
    "qdq": qdq.export,
    "qoperator": qoperator.export,
    "encodings": encodings.export,
    "stripped": stripped.export,
    "ranges": ranges.export,
    "fp16": fp16.export,
    "fixpoint": fixpoint.export,
    "matmulnbits": matmulnbits.export,
}
FORMAT_NAMES = tuple(EXPORTERS)

__all__ = ["EXPORTERS", "FORMAT_NAMES", "ExportJob", "Exporter", "Files", "build", "write_files"]


def build(job: ExportJob, formats: tuple[str, ...]) -> Files:
    """Every requested format's files, in memory; nothing is written if any format fails."""
    for name in formats:
        if name not in EXPORTERS:
            raise UsageError(f"unknown export format {name!r}", hint=did_you_mean(name, EXPORTERS))
    files: Files = {}
    for name in dict.fromkeys(formats):
        files.update(EXPORTERS[name](job))
    return files


def write_files(files: Files, folder: Path, external: bool = False) -> list[Path]:
    written = []
    for name, content in files.items():
        path = folder / name
        if isinstance(content, onnx.ModelProto):
            gm.save(content, path, external=external)
        else:
            write_text(path, content)
        written.append(path)
    return written

"""`encodings`: the QDQ model's encodings as AIMET JSON in `--encodings_format` legacy (0.6.1),
1.0.0 or 2.0.0 (FORMATS.md b.2; the layouts and the offset sign live in qtool/io/encodings.py).
"""

from __future__ import annotations

from qtool.errors import UsageError
from qtool.export.job import ExportJob, Files
from qtool.io import encodings as encio


def export(job: ExportJob) -> Files:
    fmt = job.options.encodings_format
    if fmt not in encio.FORMATS:
        raise UsageError(f"--encodings_format {fmt!r} is not one of {', '.join(encio.FORMATS)}")
    return {job.file(".encodings.json"): encio.json_pieces(job.found, fmt)}  # written as made: a decoder's is 478 MB

"""The exporter protocol: what every `qtool export --format` writer receives and returns.

An exporter is a function `(ExportJob) -> Files`: it builds its artefacts in memory and writes
nothing, so a run whose last format fails (fixpoint on a non-power-of-2 model) leaves no files;
`qtool.export.write_files` then saves them all atomically and deterministically. A JSON text may be
pieces made as they are written: an error there aborts the command's writes all the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import onnx

from qtool.config import ExportOptions
from qtool.io.encodings import Encodings

# file name (inside --output_path) -> an ONNX model, or the text of a JSON file (or its pieces, made as they are written)
Files = dict[str, onnx.ModelProto | str | Iterator[str]]


@dataclass(frozen=True)
class ExportJob:
    model: onnx.ModelProto  # the quantized QDQ model, as read
    found: Encodings  # what its Q/DQ hold, keyed by the stripped model's tensor names
    stem: str  # "digits_cnn.quant" for digits_cnn.quant.onnx; every file name starts with it
    options: ExportOptions
    scratch: str | None = None  # a file in a temporary folder for the stripped model's float weights

    @functools.cached_property
    def stripped(self) -> onnx.ModelProto:
        """The same graph with every Q/DQ removed (`read_qdq`), built for the formats that use it: its
        float weights, 4x the quantized model's, go to `scratch` (read lazily from there) where it is given."""
        from qtool.quant.qdq_read import read_qdq

        return read_qdq(self.model, scratch=self.scratch)[0]

    @property
    def where(self) -> str:
        return str(self.options.input_network)

    def file(self, suffix: str) -> str:
        return f"{self.stem}{suffix}"


Exporter = Callable[[ExportJob], Files]

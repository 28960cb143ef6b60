"""The four stages as library calls; the only place their order is written (DESIGN.md).

Each takes a frozen Options value and returns a Report; all files are written atomically.
"""

from qtool.api.common import encodings_path
from qtool.api.convert import convert
from qtool.api.export import export
from qtool.api.inspect import inspect_model
from qtool.api.quantize import Progress, quantize

__all__ = ["Progress", "convert", "encodings_path", "export", "inspect_model", "quantize"]

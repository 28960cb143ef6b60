"""qtool: convert and post-training-quantize ONNX models for 8/16-bit integer accelerators."""

from qtool.api import convert, export, inspect_model, quantize

__all__ = ["convert", "export", "inspect_model", "quantize"]

"""qtool: convert and post-training-quantize ONNX models for 8/16-bit integer accelerators.

The stage functions load lazily, so that `qtool` (the command) can install its signal handlers
before onnx and onnxruntime take their second of imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["convert", "export", "inspect_model", "quantize"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qtool import api

        return getattr(api, name)
    raise AttributeError(f"module 'qtool' has no attribute {name!r}")

"""Calibration: one onnxruntime session that exposes every tensor to observe, fed sample by sample.

Each output is folded into its observer and dropped at once (STYLE.md anti-pattern 2: never
keep per-sample outputs), so peak memory does not grow with the number of samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx

from qtool import runtime
from qtool.quant.observers import Observer, make_observer

logger = logging.getLogger(__name__)


def calibrate(
    model: onnx.ModelProto,
    tensors: list[str],
    feeds: Iterable[dict[str, np.ndarray]],
    *,
    observer: str = "min-max",
    percentile: float = 99.99,
    threads: int = 0,
) -> tuple[dict[str, Observer], int]:
    """Observe `tensors` over all `feeds`; returns the observers and the number of samples."""
    observers = {name: make_observer(observer, name, percentile) for name in tensors}
    if not tensors:
        return observers, 0
    sess = runtime.session(runtime.with_outputs(model, tensors), threads)
    inputs = {i.name for i in sess.get_inputs()}
    count = 0
    for feed in feeds:
        outputs = sess.run(tensors, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, outputs, strict=True):
            observers[name].update(value)
        count += 1
        logger.debug("calibrate: sample %d", count)
    return observers, count

"""gm.check leaves a large in-memory weight out of what onnx.checker serializes, after checking what the checker
checks of it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.errors import ModelError
from qtool.graph import external_data
from qtool.graph import model as gm


def _matmul(*weights: onnx.TensorProto) -> onnx.ModelProto:
    """x -> MatMul(w) -> MatMul(w2) ... for square weights."""
    nodes = [helper.make_node("MatMul", [f"x{i}", w.name], [f"x{i + 1}"]) for i, w in enumerate(weights)]
    k = weights[0].dims[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info(f"x{len(weights)}", TensorProto.FLOAT, [1, k])],
                              list(weights))  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_large_weight_is_checked_without_serializing_the_model() -> None:
    """onnx.checker serializes the model and parses it again: a 2.35 GB decoder's matmulnbits export peaked there at
    1.7 GB over the model. A weight of HEAVY_BYTES or more is now a typed input of the checked copy."""
    model = _matmul(*(numpy_helper.from_array(np.ones((1024, 1024), np.float32), f"w{i}") for i in range(3)))  # 4 MB each
    tracemalloc.start()
    try:
        gm.check(model, "m.onnx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20  # a weight's bytes, read to be measured; the serialized model was 12 MB
    light = external_data.checkable(model)
    assert not light.graph.initializer and [i.name for i in light.graph.input] == ["x0", "w0", "w1", "w2"]
    assert len(model.graph.initializer) == 3  # the model itself is untouched


@pytest.mark.parametrize("small", [False, True])
def test_a_bad_weight_is_refused_as_the_checker_refuses_it(small: bool) -> None:
    """Too few bytes, or a second value field: the checker's own words, whether the checker or qtool checks it."""
    shape = (8, 8) if small else (1024, 1024)
    for broken in ("short", "typed"):
        w = numpy_helper.from_array(np.ones(shape, np.float32), "w")
        if broken == "short":
            w.raw_data = w.raw_data[:-4]
        else:
            w.float_data.append(1.0)
        with pytest.raises(ModelError) as found:
            gm.check(_matmul(w), "m.onnx")
        need = 4 * shape[0] * shape[1]
        expected = (f"raw_data size ({need - 4} bytes) is too small for the declared shape and type ({need} bytes "
                    "required)" if broken == "short" else "should contain one and only one value field")  # fmt: skip
        assert f"onnx.checker: TensorProto (tensor name: w) {expected}" in str(found.value)

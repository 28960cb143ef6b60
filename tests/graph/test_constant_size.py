"""graph/constant_size.py on models with nothing to size: it must cost them nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_model_without_constant_arithmetic_never_imports_the_reference_evaluator() -> None:
    """onnx.reference's import is 6 MB, which was the peak of a small model's whole quantize (Silero VAD's 99 ->
    105 MB, over onnxruntime's 98): it is for the nodes that compute a shape out of constants, and only them."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
        from qtool.graph.constant_size import huge_constant
        weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
        assert huge_constant(helper.make_model(graph)) is None
        print("onnx.reference" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_sizing_is_linear_in_the_constants_a_qdq_model_dequantizes(monkeypatch) -> None:
    """Every DequantizeLinear of a weight is a node of constants: each one's sizes were recomputed from every shape
    known (4000 weights: 18 s at each read of the model, 1.5 s for 1000)."""
    import math
    import types

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from qtool.graph import constant_size

    calls = []
    counting = types.SimpleNamespace(**{k: getattr(math, k) for k in dir(math) if not k.startswith("_")})
    counting.prod = lambda values: calls.append(1) or math.prod(values)
    monkeypatch.setattr(constant_size, "math", counting)
    n, nodes, weights, last = 300, [], [], "x"
    for k in range(n):
        weights += [numpy_helper.from_array(np.zeros((4, 4), np.int8), f"w{k}"), numpy_helper.from_array(np.array(0.1, np.float32), f"s{k}")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{k}", f"s{k}"], [f"d{k}"]), helper.make_node("MatMul", [last, f"d{k}"], [f"y{k}"])]
        last = f"y{k}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 4])], weights)  # fmt: skip
    assert constant_size.huge_constant(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])) is None
    assert len(calls) < 20 * n, len(calls)  # 3 values known per weight; it was ~900 prods per DequantizeLinear

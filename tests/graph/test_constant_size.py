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

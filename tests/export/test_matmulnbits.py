"""`export --format matmulnbits`: 4-bit per-block MatMul/Gemm weights as com.microsoft.MatMulNBits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from block_models import embedding_model, mlp_model, patch_model, tied_model
from conftest import run_cli, save_model, write_samples
from onnx import numpy_helper

from qtool import runtime
from qtool.export import matmulnbits
from qtool.export.matmulnbits import _pack, natively, to_matmulnbits
from qtool.graph import external_data


def _quantize(tmp_path: Path, *flags: str) -> Path:
    source = save_model(mlp_model(), tmp_path / "m.onnx")
    output = tmp_path / "m.quant.onnx"
    listing = write_samples(tmp_path, mlp_model(), 4)
    result = run_cli(["quantize", "-i", source, "-o", output, "--input_list", listing, "--encodings_format", "1.0.0",
                      "--weights_bitwidth", "4", *flags])  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


def _export(qdq: Path, out: Path):
    return run_cli(["export", "-i", qdq, "-o", out, "--format", "matmulnbits"])


def _run(model: Path, x: np.ndarray, optimized: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimized:  # the QDQ model as written, op by op (onnxruntime would fuse it into MatMulNBits itself)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_nibbles_pack_low_first() -> None:
    assert _pack(np.array([1, 2, 3, 15])).tolist() == [0x21, 0xF3]


@pytest.mark.parametrize("packed", [True, False])
def test_weight_only_blocks_become_matmulnbits_and_compute_the_same(tmp_path: Path, packed: bool) -> None:
    """MatMul and Gemm(transB=1, bias) both convert; B holds q + 8 two a byte, low nibble first; the
    output is the QDQ model's (run unfused) up to float rounding. Unpacked int4 (int8 storage) too."""
    pack = ["--pack_4_bit_weights"] if packed else []
    qdq = _quantize(tmp_path, "--act_bitwidth", "32", "--weights_block_size", "32", *pack)
    result = _export(qdq, tmp_path / "out")
    assert result.exit_code == 0, result.output
    path = tmp_path / "out" / "m.quant.matmulnbits.onnx"
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2 and not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    attrs = {a.name: a.i for a in nodes[0].attribute}
    assert attrs == {"K": 64, "N": 96, "bits": 4, "block_size": 32}
    assert len(nodes[1].input) == 6 and nodes[1].input[5] == "B1"  # the Gemm's bias
    qdq_model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in [*qdq_model.graph.initializer, *model.graph.initializer]}
    dq = next(n for n in qdq_model.graph.node if n.output[0] == "W0")
    q = inits[dq.input[0]].astype(np.int64)  # [64, 96]
    expected = ((q.T + 8).reshape(96, 2, 32)[..., 0::2] | ((q.T + 8).reshape(96, 2, 32)[..., 1::2] << 4)).astype(np.uint8)
    np.testing.assert_array_equal(inits[nodes[0].input[1]], expected)
    np.testing.assert_array_equal(inits[nodes[0].input[2]], inits[dq.input[1]].T)
    x = np.random.default_rng(3).uniform(-1, 1, (8, 64)).astype(np.float32)
    reference = _run(qdq, x, optimized=False)
    np.testing.assert_allclose(_run(path, x), reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))


def test_with_8_bit_activations_it_matches_the_qdq_model_within_one_output_step(tmp_path: Path) -> None:
    qdq = _quantize(tmp_path, "--weights_block_size", "16", "--pack_4_bit_weights")
    assert _export(qdq, tmp_path / "out").exit_code == 0
    path = tmp_path / "out" / "m.quant.matmulnbits.onnx"
    model = onnx.load(str(path))
    step = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith("y_scale"))
    x = np.random.default_rng(4).uniform(-1, 1, (8, 64)).astype(np.float32)
    assert np.abs(_run(path, x) - _run(qdq, x, optimized=False)).max() <= float(step) * 1.001


def test_a_4_bit_weight_left_as_dequantizelinear_is_stored_as_int4(tmp_path: Path) -> None:
    """The Conv's 4-bit per-channel weight, a byte a value in the QDQ model (no --pack_4_bit_weights), keeps
    its DequantizeLinear in the export but as INT4, two a byte: half the bytes, the same output."""
    source = save_model(patch_model(), tmp_path / "m.onnx")
    qdq = tmp_path / "m.quant.onnx"
    result = run_cli(["quantize", "-i", source, "-o", qdq, "--act_bitwidth", "32", "--weights_bitwidth", "4",
                      "--weights_block_size", "16", "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _export(qdq, tmp_path / "out").exit_code == 0
    path = tmp_path / "out" / "m.quant.matmulnbits.onnx"
    model = onnx.load(str(path))
    assert sorted(n.op_type for n in model.graph.node if n.domain) == ["MatMulNBits"]
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    weight = next(i for i in model.graph.initializer if i.name == dq.input[0])
    assert weight.data_type == onnx.TensorProto.INT4 and len(weight.raw_data) == 32 * 3 * 4 * 4 // 2
    before = next(i for i in onnx.load(str(qdq)).graph.initializer if i.name == dq.input[0])
    np.testing.assert_array_equal(numpy_helper.to_array(weight).astype(np.int8), numpy_helper.to_array(before))
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    reference = _run(qdq, x, optimized=False)
    np.testing.assert_allclose(_run(path, x), reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))


@pytest.mark.parametrize(
    "flags", [["--use_per_row_quantization"], ["--weights_block_size", "32", "--weights_bitwidth", "8"]]
)
def test_weights_that_are_not_4_bit_blocks_are_an_error(tmp_path: Path, flags: list[str]) -> None:
    qdq = _quantize(tmp_path, *flags)
    result = _export(qdq, tmp_path / "out")
    assert result.exit_code == 2
    assert "matmulnbits: no MatMul or Gemm reads a 4-bit per-block weight" in result.stderr
    assert not (tmp_path / "out" / "m.quant.matmulnbits.onnx").exists()


def test_accuracy_level_4_quantizes_a_inside_the_kernel(tmp_path: Path) -> None:
    """--matmulnbits_accuracy_level 4: A is quantized to int8 per block inside the kernel (onnxruntime's
    own choice when it fuses QDQ): close to the QDQ model, not equal to it."""
    qdq = _quantize(tmp_path, "--act_bitwidth", "32", "--weights_block_size", "32", "--pack_4_bit_weights")
    out = tmp_path / "out"
    result = run_cli(["export", "-i", qdq, "-o", out, "--format", "matmulnbits", "--matmulnbits_accuracy_level", "4"])
    assert result.exit_code == 0, result.output
    path = out / "m.quant.matmulnbits.onnx"
    levels = [a.i for n in onnx.load(str(path)).graph.node for a in n.attribute if a.name == "accuracy_level"]
    assert levels == [4, 4]
    x = np.random.default_rng(6).uniform(-1, 1, (8, 64)).astype(np.float32)
    reference = _run(qdq, x, optimized=False)
    assert 10 * np.log10(np.sum(reference**2) / np.sum((_run(path, x) - reference) ** 2)) > 30


def test_target_ort_cpu_writes_matmulnbits_for_4_bit_blocks(tmp_path: Path) -> None:
    """`quantize --target ort-cpu` with 4-bit blocks writes the MatMulNBits model itself (the report counts
    the nodes), at the preset's accuracy_level 4 (close to the QDQ model of the same flags); with
    `--matmulnbits_accuracy_level 0` it computes what the QDQ model computes. With 8-bit weights (the
    preset's) nothing converts: the QDQ model is written as before."""
    flags = ["--act_bitwidth", "32", "--weights_block_size", "32", "--pack_4_bit_weights"]
    qdq = _quantize(tmp_path / "qdq", *flags)
    nbits = _quantize(tmp_path / "nbits", "--target", "ort-cpu", *flags, "--json")
    model = onnx.load(str(nbits))
    assert [n.op_type for n in model.graph.node].count("MatMulNBits") == 2
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    levels = [a.i for n in model.graph.node for a in n.attribute if a.name == "accuracy_level"]
    assert levels == [4, 4]  # the preset's: A quantized to int8 per block inside the kernel
    x = np.random.default_rng(4).uniform(-1, 1, (8, 64)).astype(np.float32)
    reference = _run(qdq, x, optimized=False)
    assert 10 * np.log10(np.sum(reference**2) / np.sum((_run(nbits, x) - reference) ** 2)) > 30
    exact = _quantize(tmp_path / "level0", "--target", "ort-cpu", *flags, "--matmulnbits_accuracy_level", "0")
    assert not [a for n in onnx.load(str(exact)).graph.node for a in n.attribute if a.name == "accuracy_level"]
    np.testing.assert_allclose(_run(exact, x), reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))
    eight = _quantize(tmp_path / "w8", "--target", "ort-cpu", "--weights_bitwidth", "8")
    assert "MatMulNBits" not in {n.op_type for n in onnx.load(str(eight)).graph.node}


@pytest.mark.parametrize("packed", [True, False])
def test_a_blocked_embedding_table_becomes_gatherblockquantized(tmp_path: Path, packed: bool) -> None:
    """Gather of a table blocked per token along its features -> com.microsoft.GatherBlockQuantized (uint8
    data [40, 32]: q + 8 two a byte, scales [40, 4]); with the MatMulNBits after it the model computes what
    the QDQ model computes, and no DequantizeLinear is left."""
    source = save_model(embedding_model(), tmp_path / "m.onnx")
    qdq = tmp_path / "m.quant.onnx"
    pack = ["--pack_4_bit_weights"] if packed else []
    result = run_cli(["quantize", "-i", source, "-o", qdq, "--act_bitwidth", "32", "--weights_bitwidth", "4",
                      "--weights_block_size", "16", "--encodings_format", "1.0.0", *pack])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _export(qdq, tmp_path / "out").exit_code == 0
    model = onnx.load(str(tmp_path / "out" / "m.quant.matmulnbits.onnx"))
    assert sorted(n.op_type for n in model.graph.node) == ["GatherBlockQuantized", "MatMulNBits"]
    node = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits[node.input[0]].shape == (40, 32) and inits[node.input[2]].shape == (40, 4)
    ids = np.array([[0, 2, 5, 7, 11, 20, 33, 39]], dtype=np.int64)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    out = ort.InferenceSession(str(tmp_path / "out" / "m.quant.matmulnbits.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(out.run(None, {"ids": ids})[0], reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))


def test_a_table_something_else_reads_too_keeps_its_dequantizelinear() -> None:
    """A tied lm_head (Transpose of the dequantized table) reads the table too: GatherBlockQuantized would
    add a second copy and save no time, so the Gather stays; alone, the same Gather converts."""
    h = onnx.helper
    q = np.random.default_rng(0).integers(-8, 8, (40, 32))

    def model(tied: bool) -> onnx.ModelProto:
        nodes = [
            h.make_node("DequantizeLinear", ["tq", "ts"], ["table"], axis=1, block_size=16),
            h.make_node("Gather", ["table", "ids"], ["e"]),
            *([h.make_node("Transpose", ["table"], ["tT"])] if tied else []),
        ]
        outputs = [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ["e", *(["tT"] if tied else [])]]
        graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 8])], outputs, [
            h.make_tensor("tq", onnx.TensorProto.INT4, [40, 32], q.ravel().tolist()),
            numpy_helper.from_array(np.full((40, 2), 0.1, np.float32), "ts"),
        ])  # fmt: skip
        return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])

    tied, alone = model(True), model(False)
    assert to_matmulnbits(tied) == 0 and [n.op_type for n in tied.graph.node].count("Gather") == 1
    assert to_matmulnbits(alone) == 1 and [n.op_type for n in alone.graph.node] == ["GatherBlockQuantized"]


def _tied_head(zero_point: int = 0) -> onnx.ModelProto:
    """ids -> Gather(table) -> MatMul(·, Transpose(table)): a tied lm_head over a 4-bit table [40, 32] blocked
    along its features (blocks of 16), as a QDQ model holds it when the table is too large for convert to fold
    the Transpose."""
    h = onnx.helper
    q = np.random.default_rng(1).integers(-8, 8, (40, 32))
    scales = np.random.default_rng(2).uniform(0.05, 0.2, (40, 2)).astype(np.float32)
    nodes = [
        h.make_node("DequantizeLinear", ["tq", "ts", "tz"], ["table"], axis=1, block_size=16),
        h.make_node("Gather", ["table", "ids"], ["e"]),
        h.make_node("Transpose", ["table"], ["tT"], perm=[1, 0]),
        h.make_node("MatMul", ["e", "tT"], ["logits"], name="lm_head"),
    ]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 8])],
                         [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 8, 40])], [
        h.make_tensor("tq", onnx.TensorProto.INT4, [40, 32], q.ravel().tolist()),
        numpy_helper.from_array(scales, "ts"),
        h.make_tensor("tz", onnx.TensorProto.INT4, [40, 2], [zero_point] * 80),
    ])  # fmt: skip
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])


def _logits(model: onnx.ModelProto, optimized: bool) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": np.array([[0, 3, 7, 11, 20, 33, 39, 3]], dtype=np.int64)})[0]


def test_a_tied_lm_head_is_the_tables_matmulnbits_and_the_gather_shares_its_bytes() -> None:
    """MatMul(x, Transpose(table)) becomes a MatMulNBits with N = tokens, K = features (the table's own rows
    and blocks); the Gather, its table no longer read by anything else, becomes GatherBlockQuantized over a
    Reshape of that same B, so the table is stored once. Computes what the QDQ model computes, with and
    without onnxruntime's graph optimizations (which fold the Reshape)."""
    qdq = _tied_head()
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    assert to_matmulnbits(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Reshape", "GatherBlockQuantized", "MatMulNBits"]
    reshape, gather, nbits = model.graph.node
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits[nbits.input[1]].shape == (40, 2, 8) and reshape.input[0] == nbits.input[1]
    assert gather.input[0] == reshape.output[0] and gather.input[2] == nbits.input[2]
    assert {a.name: a.i for a in nbits.attribute} == {"K": 32, "N": 40, "bits": 4, "block_size": 16}
    assert sum(a.nbytes for a in inits.values()) < 40 * 16 + 40 * 2 * 4 + 64  # one copy: data + scales + shape
    reference = _logits(qdq, optimized=False)
    for optimized in (False, True):
        np.testing.assert_allclose(_logits(model, optimized), reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))


def test_a_tied_head_with_zero_points_shares_them_with_its_gather() -> None:
    """Asymmetric blocks (--use_asymmetric_blocks): MatMulNBits and GatherBlockQuantized both take the packed
    zero points, so the Gather reads the head's B, scales and zero points: one copy, the same output."""
    qdq = _tied_head(zero_point=1)
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    assert to_matmulnbits(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Reshape", "GatherBlockQuantized", "MatMulNBits"]
    _, gather, nbits = model.graph.node
    assert list(gather.input[2:]) == list(nbits.input[2:4]) and nbits.input[3].endswith("_zero_points")
    reference = _logits(qdq, optimized=False)
    for optimized in (False, True):
        np.testing.assert_allclose(_logits(model, optimized), reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max()))

def test_a_small_tied_table_is_stored_once_through_convert_quantize_and_export(tmp_path: Path) -> None:
    """convert's constant folding made Transpose(table) a second initializer when the table is under its 4M
    values limit: the file held the table twice, and the export's tied-head detection missed it (two 4-bit
    copies). convert now keeps that Transpose, so the export shares one copy as for a large table."""
    source = save_model(tied_model(), tmp_path / "m.onnx")
    conv, qdq = tmp_path / "m.conv.onnx", tmp_path / "m.quant.onnx"
    assert run_cli(["convert", "-i", source, "-o", conv]).exit_code == 0
    converted = onnx.load(str(conv))
    assert [i.name for i in converted.graph.initializer] == ["table", "W"]
    assert "Transpose" in [n.op_type for n in converted.graph.node]
    result = run_cli(["quantize", "-i", conv, "-o", qdq, "--act_bitwidth", "32", "--weights_bitwidth", "4",
                      "--weights_block_size", "32", "--encodings_format", "1.0.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _export(qdq, tmp_path / "out").exit_code == 0
    model = onnx.load(str(tmp_path / "out" / "m.quant.matmulnbits.onnx"))
    assert sorted(n.op_type for n in model.graph.node) == [
        "GatherBlockQuantized",
        "MatMulNBits",
        "MatMulNBits",
        "Reshape",
    ]
    stored = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    table_4bit = 200 * 64 // 2 + 200 * 2 * 4  # packed data + block scales
    assert table_4bit < stored < 2 * table_4bit  # the table once (W is 64 x 64)
    ids = np.array([[0, 3, 7, 11, 20, 33, 150, 199]], dtype=np.int64)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    out = ort.InferenceSession(str(tmp_path / "out" / "m.quant.matmulnbits.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        out.run(None, {"ids": ids})[0], reference, rtol=1e-4, atol=1e-5 * float(np.abs(reference).max())
    )


def test_a_model_quantize_wrote_as_matmulnbits_is_said_to_be_one(tmp_path: Path) -> None:
    """`quantize --target ort-cpu` with 4-bit blocks writes the MatMulNBits itself (DeepFilterNet3's df_dec,
    helper-59's sweep): export --format matmulnbits found no 4-bit per-block weight and said to quantize with
    --weights_bitwidth 4 --weights_block_size 32, the flags it had been quantized with; with nothing but
    MatMulNBits left (weight-only), every format said only that it had no Q/DQ encodings."""
    flags = ["--weights_block_size", "32", "--target", "ort-cpu"]
    for name, more in (("a8", []), ("a32", ["--act_bitwidth", "32"])):
        nbits = _quantize(tmp_path / name, *flags, *more)
        result = _export(nbits, tmp_path / name / "out")
        assert result.exit_code == 2 and "it is this format's model already" in result.stderr, result.stderr


def test_another_tools_matmulnbits_model_is_not_said_to_be_quantizes(tmp_path: Path) -> None:
    """A MatMulNBits model from onnxruntime's matmul_4bits_quantizer or a model hub's int4 build: the hint sent its
    user to the .encodings.json qtool's quantize writes, of which there is none."""
    nbits = _quantize(tmp_path / "q", "--weights_block_size", "32", "--target", "ort-cpu", "--act_bitwidth", "32")
    model = onnx.load(str(nbits))
    del model.metadata_props[:]  # as another tool writes it: no mark of a qtool run
    onnx.save(model, str(tmp_path / "other.onnx"))
    for fmt in ("matmulnbits", "qoperator"):
        result = run_cli(["export", "-i", tmp_path / "other.onnx", "-o", tmp_path / fmt, "--format", fmt])
        assert result.exit_code == 2 and "another tool's" in result.stderr and ".encodings.json" not in result.stderr, result.stderr



def _gemms(x: str, first: str, second: str) -> onnx.ModelProto:
    """x -> `first` (W1 [32,32]) -> `second` (W2 [32,8]) -> y[1,8]."""
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float{x} x) => (float[1,8] y) {{
        h = {first}
        y = {second}
    }}
    """)
    rng = np.random.default_rng(4)
    for name, shape in (("W1", (32, 32)), ("W2", (32, 8)), ("C", (8,))):
        model.graph.initializer.append(numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name))
    return model


@pytest.mark.parametrize(
    ("x", "first", "second", "said"),
    [
        ("[1,32]", "MatMul (x, W1)", "Gemm <alpha = 0.5> (h, W2, C)", "1 Gemm with a 4-bit block weight stays "
         "DequantizeLinear -> Gemm, as MatMulNBits computes A·B + a bias of N values only: 'W2' (alpha 0.5)"),
        ("[32,1]", "Gemm <transA = 1> (x, W1)", "Gemm <beta = 2.0> (h, W2)", "'W1' (transA)"),  # beta without C: W2 converts
        ("[1,32]", "Gemm <alpha = 2.0> (x, W1)", "Gemm <beta = 0.5> (h, W2, C)", "no MatMul or Gemm to convert: 2 Gemms "
         "with a 4-bit block weight stay DequantizeLinear -> Gemm, as MatMulNBits computes A·B + a bias of N values "
         "only: 'W1' (alpha 2), 'W2' (beta 0.5)"),
    ],
)  # fmt: skip
def test_a_gemm_matmulnbits_cannot_compute_is_named_with_its_reason(tmp_path: Path, x: str, first: str, second: str,
                                                                    said: str) -> None:  # fmt: skip
    """A Gemm with alpha, beta (on a C) or transA reading a 4-bit block weight stayed DequantizeLinear -> Gemm without a
    word, and with no other MatMul the export said no MatMul or Gemm read a 4-bit per-block weight, with a hint
    to quantize with the flags the model had been quantized with."""
    model = _gemms(x, first, second)
    source = save_model(model, tmp_path / "m.onnx")
    qdq = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", source, "-o", qdq, "--input_list", write_samples(tmp_path, model, 4),
                      "--encodings_format", "1.0.0", "--weights_bitwidth", "4", "--weights_block_size", "16",
                      "--act_bitwidth", "32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = _export(qdq, tmp_path / "out")
    lines = [line for line in result.stderr.splitlines() if "matmulnbits:" in line]
    assert len(lines) == 1 and said in lines[0], result.stderr
    if "no MatMul" in said:  # nothing converts: refused, nothing written
        assert result.exit_code == 2 and lines[0].startswith("qtool: error:") and not (tmp_path / "out").exists()
        return
    assert result.exit_code == 0 and lines[0].startswith("qtool: WARNING:"), result.stderr
    nbits = onnx.load(str(tmp_path / "out" / "q.matmulnbits.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in nbits.graph.node) == 1


def test_a_block_weight_converts_without_wide_integer_copies() -> None:
    """block_weight read an int8 weight into int64 twice (q, then q + 8): 16 bytes a value beside its 1, 1 GB for
    a 2.35 GB decoder's 250 MB LM head. Now one int16 copy: the same packed bytes, at a few bytes a value."""
    import tracemalloc

    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    k, n, size = 1024, 256, 32
    q = rng.integers(-8, 8, (k, n)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (k // size, n)).astype(np.float32)
    dq = helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=0, block_size=size)
    graph = helper.make_graph(
        [dq, helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    tracemalloc.start()
    try:
        assert to_matmulnbits(model) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nbits = model.graph.node[0]
    expected = _pack((q.T.astype(np.int64) + 8).reshape(n, k // size, size))
    np.testing.assert_array_equal(inits[nbits.input[1]], expected)
    np.testing.assert_array_equal(inits[nbits.input[2]], scale.T)
    assert peak < 6 * q.size  # int16 values and the packed bytes; 17x the int8 weight before


def test_the_evaluation_runs_4_bit_blocks_as_matmulnbits_read_from_a_file(tmp_path: Path, monkeypatch) -> None:
    """quantize's evaluation session of a W4 block model (natively): its MatMuls as MatMulNBits at accuracy level 0,
    the QDQ arithmetic's values summed in another order, their packed weights read lazily from a scratch file (a
    session folds a DequantizeLinear to float, 8x a 4-bit weight's bytes); models without blocks, or where no
    scratch file can be written, are run as they are, the weights folded."""
    qdq = onnx.load(str(_quantize(tmp_path, "--act_bitwidth", "32", "--weights_block_size", "32")))
    native = natively(qdq)
    assert [n.op_type for n in native.graph.node].count("MatMulNBits") == 2
    assert not any(n.op_type == "DequantizeLinear" for n in native.graph.node)
    assert all(external_data.is_lazy(t) for t in native.graph.initializer if t.name.endswith("_nbits_B"))
    assert any(n.op_type == "DequantizeLinear" for n in qdq.graph.node)  # a copy: the model written is the QDQ one
    feed = {"x": np.random.default_rng(5).uniform(-1, 1, (8, 64)).astype(np.float32)}
    folded = runtime.session(qdq, optimized=True, integer_kernels=False).run(None, feed)[0]
    np.testing.assert_allclose(runtime.session(native, optimized=True, integer_kernels=False).run(None, feed)[0], folded,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    per_channel = onnx.load(str(_quantize(tmp_path / "pc", "--act_bitwidth", "32")))
    assert natively(per_channel) is per_channel

    def no_space(name: str) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matmulnbits, "scratch_file", no_space)
    assert natively(qdq) is qdq

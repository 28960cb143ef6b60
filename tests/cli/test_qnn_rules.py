"""End-to-end: every bitwidth/schema combination of the QNN seed runs in onnxruntime; overrides
mean what the seed says (float ops, partial overrides, INT32 ops); round trips are byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from qnn_models import add_mul_model, qtool, three_conv_model, write_case, write_json

from qtool.io.encodings import read_encodings


def run(model_path: Path, listing: Path) -> np.ndarray:
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.fromfile(listing.parent / "sample_0.raw", dtype=np.float32).reshape(1, 3, 8, 8)
    return sess.run(None, {"data_0": x})[0]


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    return write_case(tmp_path / "case", three_conv_model())


COMBOS = [
    ["--act_bitwidth", "8", "--weights_bitwidth", "8", "--bias_bitwidth", "8"],
    ["--act_bitwidth", "8", "--weights_bitwidth", "8", "--bias_bitwidth", "32", "--use_per_channel_quantization"],
    ["--act_bitwidth", "16", "--weights_bitwidth", "8", "--bias_bitwidth", "32"],
    ["--act_bitwidth", "16", "--weights_bitwidth", "16", "--bias_bitwidth", "32", "--use_per_channel_quantization"],
    ["--act_bitwidth", "8", "--weights_bitwidth", "4", "--bias_bitwidth", "32"],
    ["--act_bitwidth", "8", "--weights_bitwidth", "4", "--pack_4_bit_weights", "--use_per_channel_quantization"],
    ["--act_bitwidth", "16", "--weights_bitwidth", "4", "--pack_4_bit_weights", "--bias_bitwidth", "8"],
    ["--act_quantizer", "enhanced", "--param_quantizer", "adjusted"],
    ["--act_quantizer_schema", "symmetric", "--param_quantizer_schema", "symmetric"],
    ["--act_quantizer_schema", "unsignedsymmetric", "--param_quantizer_calibration", "sqnr"],
    ["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "99.5"],
    ["--act_quantizer_calibration", "mse", "--use_per_row_quantization", "--encodings_format", "1.0.0"],
]


@pytest.mark.parametrize("flags", COMBOS, ids=[" ".join(c) for c in COMBOS])
def test_every_combination_runs_in_onnxruntime(case: tuple[Path, Path], flags: list[str]) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, *flags)
    assert code == 0, err
    quant = run(out, listing)
    onnx.checker.check_model(onnx.load(out))
    assert np.isfinite(quant).all()
    enc = read_encodings(out.with_suffix(".encodings.json"))
    weight = enc.params["conv1_w_0"]
    wanted_bw = int(flags[flags.index("--weights_bitwidth") + 1]) if "--weights_bitwidth" in flags else 8
    assert weight.bitwidth == wanted_bw
    if "--use_per_channel_quantization" in flags:
        assert len(weight.scale) == 4 and set(weight.offset) == {-(2 ** (wanted_bw - 1))}


def test_packed_4_bit_weights_are_int4_initializers(case: tuple[Path, Path]) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    assert (
        qtool(
            "quantize",
            "-i",
            model,
            "--input_list",
            listing,
            "-o",
            out,
            "--weights_bitwidth",
            "4",
            "--pack_4_bit_weights",
        )[0]
        == 0
    )
    inits = {i.name: i for i in onnx.load(out).graph.initializer}
    packed = inits["conv1_w_0_quantized"]
    assert packed.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    assert len(packed.raw_data) == (4 * 3 * 9 + 1) // 2  # two values a byte
    unpacked_out = model.parent / "u.onnx"
    assert (
        qtool("quantize", "-i", model, "--input_list", listing, "-o", unpacked_out, "--weights_bitwidth", "4")[0] == 0
    )
    unpacked = {i.name: i for i in onnx.load(unpacked_out).graph.initializer}["conv1_w_0_quantized"]
    assert unpacked.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    values = onnx.numpy_helper.to_array(unpacked)
    assert values.max() - values.min() <= 15


def _seed_full_override() -> dict:
    acts = {name: [{"bitwidth": 8, "dtype": "int"}] for name in ("data_0", "conv1_1", "conv3_1")}
    acts["conv2_1"] = [{"bitwidth": 32, "dtype": "float"}]
    params = {f"conv{i}_{k}_0": [{"bitwidth": 8, "dtype": "int"}] for i in (1, 3) for k in ("w", "b")}
    params.update(
        {"conv2_w_0": [{"bitwidth": 32, "dtype": "float"}], "conv2_b_0": [{"bitwidth": 32, "dtype": "float"}]}
    )
    return {"activation_encodings": acts, "param_encodings": params}


def _seed_partial_override() -> dict:
    return {
        "activation_encodings": {"conv2_1": [{"bitwidth": 32, "dtype": "float"}]},
        "param_encodings": {
            "conv2_w_0": [{"bitwidth": 32, "dtype": "float"}],
            "conv2_b_0": [{"bitwidth": 32, "dtype": "float"}],
        },
        "version": "0.5.0",
    }


@pytest.mark.parametrize("overrides", [_seed_full_override(), _seed_partial_override()], ids=["full", "partial"])
def test_seed_mixed_precision_examples_make_conv2_float_between_convert_ops(
    case: tuple[Path, Path], overrides: dict
) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    path = write_json(model.parent / "o.json", overrides)
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", path)
    assert code == 0, err
    graph = onnx.load(out).graph
    init_names = {i.name for i in graph.initializer}
    assert "conv2_w_0" in init_names and "conv2_w_0_quantized" not in init_names  # float weight
    assert "conv1_w_0_quantized" in init_names and "conv3_w_0_quantized" in init_names
    conv = {n.name: n for n in graph.node}
    assert conv["conv2"].input[0] == "conv1_1_dequantized"  # convert op in: DQ before the float op
    assert conv["conv3"].input[0] == "conv2_1_converted"  # convert op out: Q/DQ after it
    assert not any(
        n.op_type == "QuantizeLinear" and n.input[0] == "conv2_1" and "converted" not in n.output[0] for n in graph.node
    )
    enc = read_encodings(out.with_suffix(".encodings.json"))
    assert enc.activations["conv2_1"].is_float and enc.params["conv2_b_0"].is_float
    assert np.isfinite(run(out, listing)).all()


def test_one_float_tensor_of_a_conv_makes_weight_and_bias_float(case: tuple[Path, Path]) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    path = write_json(
        model.parent / "o.json",
        {"activation_encodings": {}, "param_encodings": {"conv3_w_0": [{"bitwidth": 16, "dtype": "float"}]}},
    )
    assert (
        qtool(
            "quantize",
            "-i",
            model,
            "--input_list",
            listing,
            "-o",
            out,
            "--quantization_overrides",
            path,
            "--float_bias_bitwidth",
            "16",
        )[0]
        == 0
    )
    enc = read_encodings(out.with_suffix(".encodings.json"))
    # conv3's ReLU is squashed into it (no quantizer between them), so the ReLU output carries it
    assert "conv3_1" not in enc.activations
    assert enc.activations["relu"].is_float and enc.activations["relu"].bitwidth == 16
    assert enc.params["conv3_b_0"].is_float and enc.params["conv3_b_0"].bitwidth == 16


def test_int32_override_wraps_an_op_in_casts(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, add_mul_model())
    listing_text = listing.read_text()
    listing.write_text(listing_text)
    out = tmp_path / "q.onnx"
    path = write_json(
        tmp_path / "o.json",
        {
            "activation_encodings": {"a": [{"bitwidth": 32, "dtype": "int"}], "s": [{"bitwidth": 32, "dtype": "int"}]},
            "param_encodings": {},
        },
    )
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", path)
    assert code == 0, err
    nodes = onnx.load(out).graph.node
    ops = [n.op_type for n in nodes]
    add = next(n for n in nodes if n.name == "add")
    assert all(i.endswith("_int32") for i in add.input) and add.output[0] == "s_int32"
    i = ops.index("Add")
    assert ops[i - 1] == "Cast" and ops[i + 1] == "Cast" and ops[i + 2] == "QuantizeLinear"


def test_int32_override_on_an_op_with_weights_is_an_error(case: tuple[Path, Path]) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    path = write_json(
        model.parent / "o.json",
        {
            "activation_encodings": {
                "conv1_1": [{"bitwidth": 32, "dtype": "int"}],
                "conv2_1": [{"bitwidth": 32, "dtype": "int"}],
            },
            "param_encodings": {},
        },
    )
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", path)
    assert code == 4 and "without weights" in err and "conv2" in err and not out.exists()


@pytest.mark.parametrize("fmt", ["legacy", "1.0.0"])
def test_encodings_replayed_with_float_fallback_give_the_same_model(case: tuple[Path, Path], fmt: str) -> None:
    model, listing = case
    first, second = model.parent / "a.onnx", model.parent / "b.onnx"
    flags = ["--use_per_channel_quantization", "--bias_bitwidth", "32", "--encodings_format", fmt]
    assert qtool("quantize", "-i", model, "--input_list", listing, "-o", first, *flags)[0] == 0
    enc = first.with_suffix(".encodings.json")
    code, _, err = qtool(
        "quantize",
        "-i",
        model,
        "--enable_float_fallback",
        "--quantization_overrides",
        enc,
        "-o",
        second,
        "--encodings_format",
        fmt,
    )
    assert code == 0, err
    assert first.read_bytes() == second.read_bytes()
    assert enc.read_bytes() == second.with_suffix(".encodings.json").read_bytes()


def test_float_fallback_keeps_tensors_without_encodings_float(case: tuple[Path, Path]) -> None:
    model, _ = case
    out = model.parent / "q.onnx"
    path = write_json(
        model.parent / "o.json",
        {"activation_encodings": {"data_0": [{"bitwidth": 8, "min": -3.0, "max": 3.0}]}, "param_encodings": {}},
    )
    assert (
        qtool("quantize", "-i", model, "--enable_float_fallback", "--quantization_overrides", path, "-o", out)[0] == 0
    )
    graph = onnx.load(out).graph
    assert [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"] == ["data_0"]
    assert not any(i.name.endswith("_quantized") for i in graph.initializer)


BAD_OVERRIDES = [
    ({"activation_encodings": {}}, "missing section 'param_encodings'"),
    ({"activation_encodings": {"data_0": [{"min": 0, "max": 1}]}, "param_encodings": {}}, "missing 'bitwidth'"),
    ({"activation_encodings": {"data_0": [{"bitwidth": 8, "min": 0}]}, "param_encodings": {}}, "missing 'max'"),
    (
        {"activation_encodings": {"data_0": [{"bitwidth": 8, "min": 2, "max": 1}]}, "param_encodings": {}},
        "greater than max",
    ),
    (
        {"activation_encodings": {"data_0": [{"bitwidth": 12, "min": 0, "max": 1}]}, "param_encodings": {}},
        "bitwidth 12",
    ),
    (
        {
            "activation_encodings": {"data_0": [{"bitwidth": 8, "dtype": "bfloat", "min": 0, "max": 1}]},
            "param_encodings": {},
        },
        "dtype",
    ),
    (
        {
            "activation_encodings": {},
            "param_encodings": {"conv1_w_0": [{"bitwidth": 8, "min": -1, "max": 1, "is_symmetric": "True"}] * 3},
        },
        "channels",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_OVERRIDES, ids=[m for _, m in BAD_OVERRIDES])
def test_bad_overrides_are_one_line_errors_naming_the_rule(case: tuple[Path, Path], data: dict, message: str) -> None:
    model, listing = case
    out = model.parent / "q.onnx"
    path = write_json(model.parent / "o.json", data)
    code, _stdout, err = qtool(
        "quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", path
    )
    assert code == 4, err
    assert message in err and err.count("\n") == 1 and err.startswith("qtool: error:")
    assert not out.exists() and not out.with_suffix(".encodings.json").exists()


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--enable_float_fallback", "--input_list", "X"],
        ["--act_quantizer", "tf", "--act_quantizer_schema", "symmetric"],
        ["--percentile_calibration_value", "99"],
    ],
)
def test_flag_combinations_that_qairt_rejects(case: tuple[Path, Path], flags: list[str]) -> None:
    model, listing = case
    flags = [str(listing) if f == "X" else f for f in flags]
    if "--input_list" not in flags and flags:
        flags += ["--input_list", str(listing)]
    code, _, err = qtool("quantize", "-i", model, *flags)
    assert code == 2 and err.startswith("qtool: error:")


def test_weights_listed_among_activations_are_used_as_weights(case: tuple[Path, Path]) -> None:
    """AIMET 2.0.0 has a single list; a hand-written file may misplace a weight: the graph decides."""
    model, listing = case
    out = model.parent / "q.onnx"
    data = {"activation_encodings": {"conv2_w_0": [{"bitwidth": 8, "min": -2.0, "max": 2.0}]}, "param_encodings": {}}
    path = write_json(model.parent / "o.json", data)
    assert qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", path)[0] == 0
    weight = read_encodings(out.with_suffix(".encodings.json")).params["conv2_w_0"]
    assert weight.min[0] == pytest.approx(-2.0, abs=0.02) and weight.max[0] == pytest.approx(2.0, abs=0.02)


def test_op_types_to_quantize_leaves_other_ops_float(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path, add_mul_model())
    out = tmp_path / "q.onnx"
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--op_types_to_quantize", "Conv")
    assert code == 0, err
    enc = read_encodings(out.with_suffix(".encodings.json"))
    assert set(enc.activations) == {"x", "a"}  # the Conv's input and output; Add and Mul stay float
    assert set(enc.params) == {"w"}


def _linear_model(shared: bool) -> onnx.ModelProto:
    """x[1,6,8] -> MatMul(W) -> m -> Add(m, b) -> Tanh -> y; `shared`: m is also a graph output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(size=(8, 5)).astype(np.float32), "W")
    b = numpy_helper.from_array((rng.normal(size=5) * 4).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["h"]),
             helper.make_node("Tanh", ["h"], ["y"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5])]
    if shared:
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 6, 5]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])
    graph = helper.make_graph(nodes, "linear", [x], outputs, [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("shared", [False, True], ids=["bias-add", "matmul-output-read-twice"])
def test_a_matmul_and_its_bias_add_are_one_layer(tmp_path: Path, shared: bool) -> None:
    """The MatMul's output before its bias is not quantized (the bias joins the int32 accumulator, as a Gemm's
    does): the bias is an int32 parameter on x_scale·W_scale. Read by anything else, the output keeps its grid."""
    model, listing = write_case(tmp_path / "case", _linear_model(shared))
    out = tmp_path / "q.onnx"
    code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out, "--bias_bitwidth", "32")
    assert code == 0, err
    enc = read_encodings(out.with_suffix(".encodings.json"))
    assert ("m" in enc.activations) == shared and "h" in enc.activations
    bias = enc.params["b"]
    assert bias.bitwidth == (8 if shared else 32)
    if not shared:
        expected = enc.activations["x"].scale[0] * enc.params["W"].scale[0]
        assert bias.scale[0] == pytest.approx(expected, rel=1e-6)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_an_override_before_the_bias_moves_its_precision_and_drops_its_range(tmp_path: Path) -> None:
    model, listing = write_case(tmp_path / "case", _linear_model(False))
    for name, entry, expected in (("range", {"bitwidth": 8, "min": -0.5, "max": 0.5}, 8), ("bits", {"bitwidth": 16}, 16)):
        overrides = write_json(tmp_path / f"{name}.json", {"activation_encodings": {"m": [entry]}, "param_encodings": {}})
        out = tmp_path / f"{name}.onnx"
        code, _, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", out,
                             "--quantization_overrides", overrides)  # fmt: skip
        assert code == 0, err
        h = read_encodings(out.with_suffix(".encodings.json")).activations["h"]
        assert h.bitwidth == expected and "m" not in read_encodings(out.with_suffix(".encodings.json")).activations
        assert h.max[0] - h.min[0] > 1.0  # calibrated over the Add's output, not the override's [-0.5, 0.5]
        assert ("its range is before the bias" in err) == (name == "range")


def test_a_weight_its_op_types_to_quantize_leaves_float_is_said_so(tmp_path: Path) -> None:
    """A weight float because --op_types_to_quantize leaves its op out is the user's choice: the report said
    'read outside a slot qtool quantizes as a weight', as for an op qtool cannot quantize (helper-86's round 14)."""
    model, listing = write_case(tmp_path, _linear_model(shared=False))
    code, out, err = qtool("quantize", "-i", model, "--input_list", listing, "-o", tmp_path / "q.onnx",
                           "--op_types_to_quantize", "Tanh")  # fmt: skip
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if "float weights" in x]
    assert "MatMul 1: not in --op_types_to_quantize" in line and "outside a slot" not in line, line

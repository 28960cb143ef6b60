"""FuseSigmoidPass: 1 / (1 + Exp(y)) written out (Reciprocal, or Div of 1) becomes Sigmoid(-y), computing what it
did: DBNet's binarization Reciprocal(Exp(-50 · (P - T)) + 1), as paddle2onnx writes it, quantized op by op put
Exp's e^±50 on one 8-bit grid and its map came out near 1 everywhere."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.convert import normalise


def binarization(form: str) -> onnx.ModelProto:
    """x [1, 2, 8, 8] -> P = Sigmoid(Conv_p(x)), T = Sigmoid(Conv_t(x)), then 1 / (1 + Exp(y)) with y =
    -50 · (P - T) ('mul', DBNet's), Neg(50 · (P - T)) ('neg'), or P - T itself ('bare'), closed by Reciprocal or,
    for 'div', Div(1, ·); 'exp_read': the Exp is an output too, 'wide_one': the 1 is [1, 1, 1, 1, 1], adding a dim
    (both stay written out)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (1, 2, 3, 3)).astype(np.float32), n) for n in ("wp", "wt")]
    inits += [numpy_helper.from_array(np.array([c], np.float32), n) for n, c in (("k", -50.0), ("k50", 50.0))]
    inits.append(numpy_helper.from_array(np.ones([1] * (5 if form == "wide_one" else 1), np.float32), "one"))
    nodes = [helper.make_node("Conv", ["x", "wp"], ["cp"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["cp"], ["p"]),
             helper.make_node("Conv", ["x", "wt"], ["ct"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["ct"], ["t"]),
             helper.make_node("Sub", ["p", "t"], ["d"])]  # fmt: skip
    if form == "neg":
        nodes += [helper.make_node("Mul", ["d", "k50"], ["d50"]), helper.make_node("Neg", ["d50"], ["y"])]
    elif form == "bare":
        nodes.append(helper.make_node("Identity", ["d"], ["y"]))
    else:
        nodes.append(helper.make_node("Mul", ["k", "d"], ["y"]))
    nodes += [helper.make_node("Exp", ["y"], ["e"]), helper.make_node("Add", ["one", "e"], ["a"])]
    last = helper.make_node("Div", ["one", "a"], ["b"]) if form == "div" else helper.make_node("Reciprocal", ["a"], ["b"])
    outputs = [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1] * (form == "wide_one") + [1, 1, 8, 8])]
    if form == "exp_read":
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 1, 8, 8]))
    graph = helper.make_graph([*nodes, last], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              outputs, inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_each_written_out_logistic_becomes_one_sigmoid() -> None:
    x = np.random.default_rng(1).normal(0, 1, (1, 2, 8, 8)).astype(np.float32)
    for form in ("mul", "neg", "bare", "div"):
        source = binarization(form)
        model = normalise(source, {}, "m.onnx")
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("Sigmoid") == 3 and not {"Exp", "Reciprocal", "Div"} & set(ops), (form, ops)
        assert [o.name for o in model.graph.output] == ["b"]
        np.testing.assert_allclose(run(model, x), run(source, x), atol=1e-6, err_msg=form)


def test_an_exp_read_elsewhere_or_a_one_adding_a_dim_stays_written_out() -> None:
    for form in ("exp_read", "wide_one"):
        ops = [n.op_type for n in normalise(binarization(form), {}, "m.onnx").graph.node]
        assert "Exp" in ops and "Reciprocal" in ops, (form, ops)


def test_the_binarization_quantizes_near_its_float_map(tmp_path) -> None:
    """min-max over 8 inputs, scored on another: -0.5 dB with the Exp on its own grid (the map near 1 everywhere),
    36.0 dB as one Sigmoid."""
    onnx.save(binarization("mul"), tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    for i in range(8):
        rng.normal(0, 1, (1, 2, 8, 8)).astype(np.float32).tofile(tmp_path / f"{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f'{i}.raw'}\n" for i in range(8)))
    assert run_cli(["convert", "-i", tmp_path / "m.onnx", "-o", tmp_path / "c.onnx"]).exit_code == 0
    result = run_cli(["quantize", "-i", tmp_path / "c.onnx", "--input_list", tmp_path / "list.txt", "-o", tmp_path / "q.onnx",
                      "--act_quantizer_calibration", "min-max", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(3).normal(0, 1, (1, 2, 8, 8)).astype(np.float32)
    ref = run(onnx.load(str(tmp_path / "c.onnx")), x)
    got = run(onnx.load(str(tmp_path / "q.onnx")), x)
    assert 10 * np.log10((ref**2).sum() / ((got - ref) ** 2).sum()) > 20


def test_two_logistics_of_one_constant_and_a_name_taken_are_fused() -> None:
    """Follows 902a274: two logistics whose Muls read one -50 (both made 'k_negated') were an internal error
    (onnx_ir: 'Initializer 'k_negated' is already registered'), as was a model holding a 'k_negated' of its own."""
    source = binarization("mul")
    graph = source.graph
    graph.node.extend([helper.make_node("Mul", ["d", "k"], ["y2"]), helper.make_node("Exp", ["y2"], ["e2"]),
                       helper.make_node("Add", ["e2", "one"], ["a2"]), helper.make_node("Reciprocal", ["a2"], ["b2"]),
                       helper.make_node("Add", ["b2", "k_negated"], ["c2"])])  # fmt: skip
    graph.initializer.append(numpy_helper.from_array(np.array([7.0], np.float32), "k_negated"))
    graph.output.append(helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 1, 8, 8]))
    onnx.checker.check_model(source, full_check=True)
    model = normalise(source, {}, "m.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Sigmoid") == 4 and "Exp" not in ops, ops
    x = np.random.default_rng(4).normal(0, 1, (1, 2, 8, 8)).astype(np.float32)
    session = {"providers": ["CPUExecutionProvider"]}
    ours, theirs = (ort.InferenceSession(m.SerializeToString(), **session).run(None, {"x": x}) for m in (model, source))
    for got, want in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)

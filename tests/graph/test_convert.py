"""qtool.graph.convert.normalise and its passes, on the conftest factories: op counts before and
after, the passes' `modified` flag, onnxruntime outputs equal (explicit atol/rtol), onnx.checker."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import (
    constant_weights_model,
    conv_bn_model,
    dropout_model,
    dynamic_dim_model,
    input_shapes,
    two_input_model,
)

from qtool.errors import ModelError, UsageError
from qtool.graph.convert import MIN_OPSET, normalise
from qtool.graph.model import default_opset
from qtool.graph.passes.fix_input_dims import FixInputDimsPass
from qtool.graph.passes.fold_batchnorm import FoldBatchNormPass
from qtool.graph.passes.name_missing import NameMissingNodesPass
from qtool.graph.passes.remove_dropout import RemoveDropoutPass

ATOL, RTOL = 1e-4, 1e-4
FACTORIES = {
    "conv_bn": conv_bn_model,
    "conv_bn_output": lambda: conv_bn_model(bn_is_output=True),
    "two_inputs": two_input_model,
    "constant_weights": constant_weights_model,
    "dropout": dropout_model,
}


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, dtype, shape in input_shapes(model):
        if dtype.kind in "iu":
            out[name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            out[name] = rng.normal(0, 1, size=shape).astype(dtype)
    return out


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    for seed in range(3):
        feeds = feeds_for(before, seed)
        for a, b in zip(run(before, feeds), run(after, feeds), strict=True):
            np.testing.assert_allclose(b, a, atol=ATOL, rtol=RTOL)


# --- normalise on each factory ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_normalise_keeps_outputs_and_passes_checker(name: str) -> None:
    model = FACTORIES[name]()
    out = normalise(model, {}, name)
    onnx.checker.check_model(out, full_check=True)
    assert default_opset(out) >= MIN_OPSET
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]
    assert_same_outputs(model, out)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_normalise_does_not_modify_its_input(name: str) -> None:
    model = FACTORIES[name]()
    before = model.SerializeToString(deterministic=True)
    normalise(model, {}, name)
    assert model.SerializeToString(deterministic=True) == before


def test_batchnorm_folded_into_conv() -> None:
    model = conv_bn_model()
    out = normalise(model, {}, "m")
    assert ops(model) == Counter(Conv=1, BatchNormalization=1, Relu=1, Flatten=1, Gemm=1)
    assert ops(out) == Counter(Conv=1, Relu=1, Flatten=1, Gemm=1)
    assert_same_outputs(model, out)


def test_folded_conv_takes_the_batchnorm_output_name() -> None:
    model = conv_bn_model()
    out = normalise(model, {}, "m")
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    assert list(conv.output) == ["b"]  # the BN's output, which overrides refer to
    assert {n.output[0] for n in out.graph.node} == {"b", "r", "f", "y"}


def test_batchnorm_as_graph_output_keeps_the_output_name() -> None:
    model = conv_bn_model(bn_is_output=True)
    out = normalise(model, {}, "m")
    assert ops(out) == Counter(Conv=1)
    assert out.graph.node[0].output[0] == "y"
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)


def test_dropout_and_identity_removed() -> None:
    model = dropout_model()
    out = normalise(model, {}, "m")
    assert ops(model) == Counter(Identity=2, Relu=1, Dropout=1, Sigmoid=1)
    assert ops(out) == Counter(Relu=1, Sigmoid=1)
    assert out.graph.node[0].input[0] == "x" and out.graph.node[-1].output[0] == "y"
    assert_same_outputs(model, out)


def test_constant_weights_lifted_and_opset_upgraded() -> None:
    model = constant_weights_model()
    assert default_opset(model) == 11 and ops(model)["Constant"] == 2
    out = normalise(model, {}, "m")
    assert default_opset(out) >= 13
    assert "Constant" not in ops(out)
    assert {i.name for i in out.graph.initializer} == {"W", "B"}
    (conv,) = [n for n in out.graph.node if n.op_type == "Conv"]
    assert list(conv.input) == ["x", "W", "B"]
    assert_same_outputs(model, out)


def test_dynamic_batch_set_to_one() -> None:
    model = conv_bn_model()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    out = normalise(model, {}, "m")
    dims = out.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 8, 8]
    assert all(d.HasField("dim_value") for d in dims)


def test_unresolved_dynamic_dim_names_input_and_flag() -> None:
    with pytest.raises(ModelError) as info:
        normalise(dynamic_dim_model(), {}, "m")
    message = str(info.value)
    assert "'x'" in message and "dim 1" in message and "--input_dim x" in message
    assert info.value.exit_code == 3


def test_input_dim_resolves_a_dynamic_dim() -> None:
    out = normalise(dynamic_dim_model(), {"x": (1, 6)}, "m")
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [1, 6]
    onnx.checker.check_model(out, full_check=True)


def test_input_dim_for_an_unknown_input_suggests_names() -> None:
    with pytest.raises(UsageError, match=r"--input_dim names 'xx', which is not a graph input \(did you mean 'x'\?\)"):
        normalise(dynamic_dim_model(), {"xx": (1, 6)}, "m")


def test_input_dim_for_an_input_by_another_name_lists_the_inputs() -> None:
    """'--input_dim input 1,6' (the name of a tutorial's model) for an input called 'x' had no hint at all."""
    with pytest.raises(UsageError) as info:
        normalise(dynamic_dim_model(), {"input": (1, 6)}, "m")
    assert info.value.hint == "the model's inputs: 'x'"


def test_input_dim_with_the_wrong_rank() -> None:
    with pytest.raises(UsageError, match="--input_dim x gives 3 dims, the input has rank 2"):
        normalise(dynamic_dim_model(), {"x": (1, 6, 1)}, "m")


def test_tensor_names_preserved() -> None:
    model = two_input_model()
    out = normalise(model, {}, "m")
    before = {o for n in model.graph.node for o in n.output}
    after = {o for n in out.graph.node for o in n.output}
    assert after == before
    assert {i.name for i in out.graph.initializer} == {i.name for i in model.graph.initializer}


def test_unnamed_nodes_get_unique_deterministic_names() -> None:
    for factory in FACTORIES.values():
        first = normalise(factory(), {}, "m")
        names = [n.name for n in first.graph.node]
        assert all(names) and len(set(names)) == len(names)
        second = normalise(factory(), {}, "m")
        assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)


def test_node_names_filled_as_op_type_and_index() -> None:
    model = two_input_model()
    for node, name in zip(model.graph.node, ["g", "", "g", ""], strict=True):
        node.name = name
    out = normalise(model, {}, "m")
    assert [n.name for n in out.graph.node] == ["g", "ReduceMean_1", "Add_2", "MatMul_3"]


def test_fused_conv_keeps_its_node_name() -> None:
    model = conv_bn_model()
    for node, name in zip(model.graph.node, ["conv", "bn", "relu", "flatten", "fc"], strict=True):
        node.name = name
    out = normalise(model, {}, "m")
    assert [n.name for n in out.graph.node] == ["conv", "relu", "flatten", "fc"]


def test_unnamed_nodes_are_named_op_type_index_after_batchnorm_folding() -> None:
    """The index is the node's position in the source graph, so folding cannot shift it."""
    model = conv_bn_model()
    for node, name in zip(model.graph.node, ["conv", "bn", "relu", "", "fc"], strict=True):
        node.name = name
    out = normalise(model, {}, "m")
    assert [n.name for n in out.graph.node] == ["conv", "relu", "Flatten_3", "fc"]


# --- each pass: modified exactly when something changed -----------------------------------------


def _ir(model: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(model)


def _bytes(model: ir.Model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("make_pass", "changes", "unchanged"),
    [
        pytest.param(FoldBatchNormPass, conv_bn_model, dropout_model, id="fold_batchnorm"),
        pytest.param(RemoveDropoutPass, dropout_model, conv_bn_model, id="remove_dropout"),
        pytest.param(lambda: FixInputDimsPass({}), conv_bn_model, two_input_model, id="fix_input_dims"),
    ],
)
def test_pass_modified_flag(make_pass, changes, unchanged) -> None:
    model = _ir(changes())
    before = _bytes(model)
    result = make_pass()(model)
    assert result.modified is True
    assert _bytes(result.model) != before

    model = _ir(unchanged())
    before = _bytes(model)
    result = make_pass()(model)
    assert result.modified is False
    assert _bytes(result.model) == before


def test_name_missing_pass_modified_flag() -> None:
    proto = two_input_model()
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"
    model = _ir(proto)
    assert NameMissingNodesPass()(model).modified is False
    model.graph.node(1).name = "n0"  # a duplicate
    result = NameMissingNodesPass()(model)
    assert result.modified is True
    assert [n.name for n in result.model.graph] == ["n0", "ReduceMean_1", "n2", "n3"]


def test_dropout_in_training_mode_is_kept() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    train (float[1,4] x) => (float[1,4] y) {
        t = Constant <value = bool {1}> ()
        r = Constant <value = float {0.5}> ()
        y = Dropout (x, r, t)
    }
    """
    model = _ir(onnx.parser.parse_model(text))
    assert RemoveDropoutPass()(model).modified is False


def test_dropout_with_used_mask_is_kept() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    mask (float[1,4] x) => (float[1,4] y, bool[1,4] m) {
        y, m = Dropout (x)
    }
    """
    model = _ir(onnx.parser.parse_model(text))
    assert RemoveDropoutPass()(model).modified is False


def _with_initializers_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Older exporters (IR < 4, torch keep_initializers_as_inputs=True) list every weight as a graph input."""
    for init in model.graph.initializer:
        model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_initializers_listed_as_inputs_are_removed_and_batchnorm_folded() -> None:
    model = _with_initializers_as_inputs(conv_bn_model())
    out = normalise(model, {}, "m")
    assert [i.name for i in out.graph.input] == ["x"]
    assert "BatchNormalization" not in ops(out)


def test_an_if_branch_returning_an_outer_value_through_identity_stays_valid() -> None:
    """openWakeWord's models: `If(score >= t, then: verifier(x), else: Identity(score))`. Identity
    elimination used to leave the else branch with no node producing its output (checker error)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 1), 0.5, np.float32), "w")
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["score", "two"], ["doubled"])], "then", [],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["score"], ["kept"])], "else", [],
        [helper.make_tensor_value_info("kept", TensorProto.FLOAT, [1, 1])],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("ReduceMax", ["score"], ["top"], keepdims=0),
        helper.make_node("Greater", ["top", "half"], ["hit"]),
        helper.make_node("If", ["hit"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes, "wakeword", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [w, numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = normalise(model, {}, "m.onnx")
    onnx.checker.check_model(out, full_check=True)
    for x in (np.full((1, 4), -3.0, np.float32), np.full((1, 4), 3.0, np.float32)):  # both branches
        assert np.allclose(run(model, {"x": x})[0], run(out, {"x": x})[0])


def test_a_shape_only_the_data_decides_is_not_written() -> None:
    """[?, 2] for the boxes NonZero leaves: given such a partial shape, onnxruntime's reshape fusion wrote RetinaNet's
    [Shape(x)[0], 4] as [0, -1], which fails on an image without detections; the type stays."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes = [h.make_node("Greater", ["x", "zero"], ["m"]), h.make_node("NonZero", ["m"], ["nz"]),
             h.make_node("Transpose", ["nz"], ["t"], perm=[1, 0]), h.make_node("Cast", ["t"], ["tf"], to=T.FLOAT),
             h.make_node("Mul", ["x", "zero"], ["x0"]), h.make_node("ReduceSum", ["tf"], ["y"], keepdims=0)]  # fmt: skip
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, []), h.make_tensor_value_info("x0", T.FLOAT, [1, 4])],
                         [nh.from_array(np.array(0, np.float32), "zero")])  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    values = {v.name: v.type.tensor_type for v in normalise(model, {}, "m.onnx").graph.value_info}
    assert values["tf"].elem_type == T.FLOAT and not values["tf"].HasField("shape")  # [?, 2]: the type only
    assert [d.dim_value for d in values["m"].shape.dim] == [1, 4]  # a known shape stays


@pytest.mark.parametrize("op", ["Expand", "Pad"])
def test_a_constant_whose_output_is_huge_is_not_folded(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 600-byte model whose Expand (or Pad) of a constant makes [20000, 20000, 10] floats: onnxscript's folder
    ran it (23 GB) and only then found the output past its limit. The output's inferred size says no first."""
    from onnx import TensorProto, helper, numpy_helper

    from qtool.graph import passes

    arg = np.array([20000, 20000, 10] if op == "Expand" else [0, 0, 40000, 40000], np.int64)
    data = np.ones(1 if op == "Expand" else (1, 1), np.float32)
    nodes = [helper.make_node(op, ["c", "arg"], ["e"]), helper.make_node("ReduceSum", ["e"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(data, "c"), numpy_helper.from_array(arg, "arg")])  # fmt: skip
    asked = []
    decide = passes._should_fold
    monkeypatch.setattr(passes, "_should_fold", lambda node: asked.append((node.op_type, decide(node))) or asked[-1][1])
    with pytest.raises(ModelError, match=rf"bomb\.onnx as converted: node .* \({op}\) makes a constant"):  # unfolded, then refused
        normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {}, "bomb.onnx")
    assert (op, False) in asked


def test_a_large_weights_transpose_still_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Transpose of a weight past the output limit (a 4096 x 11008 MLP weight) makes no more than it reads:
    onnxscript folds it (its limit counts the single-use input it frees), and the MatMul then reads a weight, not a
    Transpose's output quantized as an activation. The limit, 4M elements, is lowered here for a small model."""
    from onnx import TensorProto, helper, numpy_helper

    from qtool.graph import passes

    monkeypatch.setattr(passes, "FOLD_OUTPUT_LIMIT", 1000)
    w = np.random.default_rng(0).normal(size=(40, 48)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])], [numpy_helper.from_array(w, "w")])  # fmt: skip
    out = normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {}, "m.onnx")
    assert [n.op_type for n in out.graph.node] == ["MatMul"]


def test_a_concat_of_one_constant_many_times_is_not_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its inputs count once each: 64 copies of a constant under the limit make 64x what the file holds, and
    onnxscript would compute them before finding the output too large."""
    from onnx import TensorProto, helper, numpy_helper

    from qtool.graph import passes

    monkeypatch.setattr(passes, "FOLD_OUTPUT_LIMIT", 1000)
    nodes = [helper.make_node("Concat", ["c"] * 64, ["e"], axis=0), helper.make_node("ReduceSum", ["e"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(np.ones(900, np.float32), "c")])  # fmt: skip
    asked = []
    decide = passes._should_fold
    monkeypatch.setattr(passes, "_should_fold", lambda node: asked.append((node.op_type, decide(node))) or asked[-1][1])
    out = normalise(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {}, "bomb.onnx")
    assert ("Concat", False) in asked and "Concat" in [n.op_type for n in out.graph.node]


def test_a_named_dim_takes_its_value_at_another_input() -> None:
    """One dim_param names one size: a torch LSTM's state [layers, batch, hidden] took no batch 1 from the inputs
    beside it (VoiceFilter-Lite's h0), nor DeepFilterNet's frame count S from the one input --input_dim gave."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "y"], ["s"]), onnx.helper.make_node("Identity", ["h"], ["h_out"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "S", 4]),
         onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, "S", 4]),
         onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, [3, "batch", 8])],
        [onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, None),
         onnx.helper.make_tensor_value_info("h_out", onnx.TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    out = normalise(model, {"x": (1, 6, 4)}, "m")
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in out.graph.input}  # fmt: skip
    assert shapes == {"x": [1, 6, 4], "y": [1, 6, 4], "h": [3, 1, 8]}
    with pytest.raises(ModelError, match=r"input 'x' dim 1 \(S\) is dynamic") as raised:
        normalise(model, {}, "m.onnx")  # S named nowhere: still the error naming the flag
    assert str(raised.value).startswith("m.onnx: ")  # and the model it is in

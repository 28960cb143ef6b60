"""Shape inference runs on a probe without the weights (external_data.shape_probe), and inspect runs it once per
model for the MACs and the lints: on a 194 MB LightGBM tree ensemble (weights in node attributes) inspect serialized
and parsed the whole proto three times, 12.7 s and 4.1 GB (helper-67)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper, numpy_helper
from qnn_models import qtool

from qtool.graph import convert, external_data
from qtool.graph import model as gm


def _mlp(rows: int = 512) -> onnx.ModelProto:
    """x[1,rows] @ W[rows,256] (stubbed) -> Reshape by Concat(Shape(y)[0:1], [16, 16]) -> z, declared [1,256] while
    the graph computes [1,16,16]: found only by data propagation through the small constant."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 15]>
        mlp (float[1,{rows}] x) => (float[1,256] z) {{
            y = MatMul (x, W)
            b = Shape <start = 0, end = 1> (y)
            shape = Concat <axis = 0> (b, tail)
            z = Reshape (y, shape)
        }}
        """
    )
    weight = np.random.default_rng(0).normal(0, 0.1, (rows, 256)).astype(np.float32)
    model.graph.initializer.extend([numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.array([16, 16]), "tail")])
    return model


def _trees(nodes: int = 100_000) -> onnx.ModelProto:
    """A TreeEnsembleClassifier whose node lists hold 4.4 MB (a LightGBM export holds its model so)."""
    ids = list(range(nodes))
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml",
        nodes_treeids=[0] * nodes, nodes_nodeids=ids, nodes_featureids=[0] * nodes, nodes_modes=["LEAF"] * nodes,
        nodes_values=[0.5] * nodes, nodes_truenodeids=ids, nodes_falsenodeids=ids,
        class_treeids=[0] * nodes, class_nodeids=ids, class_ids=[i % 3 for i in ids], class_weights=[1.0] * nodes,
        classlabels_int64s=[0, 1, 2],
    )  # fmt: skip
    graph = helper.make_graph(
        [tree, helper.make_node("Relu", ["probabilities"], ["p"])], "trees",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [2]), helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def _branches() -> onnx.ModelProto:
    """An If whose branches compute through intermediates from a large constant of their own and the outer W."""
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.normal(size=(128, 128)).astype(np.float32), "K")

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Constant", [], ["k"], value=big), helper.make_node("MatMul", ["x", "k"], [f"{name}_m"]),
             helper.make_node(op, [f"{name}_m"], [f"{name}_a"]), helper.make_node("MatMul", [f"{name}_a", "W"], [f"{name}_y"])],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)],
        )  # fmt: skip

    cond = helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "Relu"), else_branch=branch("else", "Tanh"))
    graph = helper.make_graph(
        [cond], "branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.normal(size=(128, 8)).astype(np.float32), "W")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _types(graph: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    """Every value's type in `graph` and its subgraphs, by (graph, name)."""
    found = {(graph.name, v.name): v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found.update(_types(sub))
    return found


@pytest.mark.parametrize("make", [_mlp, _trees, _branches])
def test_inference_on_the_probe_finds_what_it_finds_on_the_model(make) -> None:
    model = make()
    whole = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    probe = external_data.shape_probe(model)
    assert probe.ByteSize() < 16 << 10 < 64 << 10 < model.ByteSize()  # no weights
    found = external_data.infer_shapes(model, strict_mode=False, data_prop=True)
    assert _types(found.graph) == _types(whole.graph)  # the If's branches' intermediates too
    assert len(_types(found.graph)) > len(_types(model.graph))
    assert found.graph.initializer == model.graph.initializer  # the weights are the model's own, whole
    assert [_tensors(n) for n in found.graph.node] == [_tensors(n) for n in model.graph.node]


def _tensors(node: onnx.NodeProto) -> list:
    """The tensors and lists a node's attributes hold, its subgraphs' too."""
    found = []
    for attr in node.attribute:
        found += [attr.t.SerializeToString(), list(attr.floats), list(attr.ints), list(attr.strings)]
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            found += [t.SerializeToString() for t in sub.initializer] + [_tensors(n) for n in sub.node]
    return found


def test_the_probe_keeps_the_small_integer_tensors_data_propagation_reads() -> None:
    model = _mlp()
    model.graph.initializer.append(numpy_helper.from_array(np.arange(4096), "indices"))  # 32 KB, 1-D int64
    kept = {t.name: t for t in external_data.shape_probe(model).graph.initializer}
    assert kept["indices"].raw_data and kept["tail"].raw_data
    assert not kept["W"].raw_data and list(kept["W"].dims) == [512, 256]
    assert convert.wrong_declarations(model) == {"z": ([1, 256], [1, 16, 16])}


def _count_inferences(monkeypatch) -> list[int]:
    """Each onnx shape inference's model size, in bytes."""
    sizes, infer = [], onnx.shape_inference.infer_shapes

    def counted(model, *args, **kwargs):
        sizes.append(model.ByteSize() if isinstance(model, onnx.ModelProto) else len(model))
        return infer(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted)
    return sizes


def test_inspect_infers_a_float_model_once_for_macs_and_lints(tmp_path: Path, monkeypatch) -> None:
    onnx.save(_mlp(rows=2048), tmp_path / "m.onnx")  # 2 MB of weights
    sizes = _count_inferences(monkeypatch)
    code, out, _ = qtool("inspect", tmp_path / "m.onnx")
    assert code == 0 and "declared-shape" in out
    assert len(sizes) == 2  # the declared shapes' check (outputs cleared, data propagation) and the one the rest reads
    assert max(sizes) < 16 << 10


def test_inspect_of_a_tree_ensemble_infers_without_its_lists(tmp_path: Path, monkeypatch) -> None:
    onnx.save(_trees(), tmp_path / "t.onnx")
    sizes = _count_inferences(monkeypatch)
    code, out, _ = qtool("inspect", tmp_path / "t.onnx")
    assert code == 0 and "TreeEnsembleClassifier" in out
    assert sizes and max(sizes) < 16 << 10


def test_convert_refuses_a_map_before_checking_the_whole_model(tmp_path: Path, monkeypatch) -> None:
    model = _trees(1000)
    maps = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    model.graph.node.append(helper.make_node("ZipMap", ["p"], ["zipped"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]))
    model.graph.output.append(helper.make_value_info("zipped", maps))
    onnx.save(model, tmp_path / "t.onnx")

    def check(*_args, **_kwargs):
        raise AssertionError("onnx.checker ran (a copy of the model) on a model convert refuses")

    monkeypatch.setattr(gm, "check", check)
    code, _, err = qtool("convert", "-i", tmp_path / "t.onnx", "-o", tmp_path / "c.onnx")
    assert code == 3 and "is a map" in err


def test_sessions_do_not_spin_between_runs() -> None:
    """Each run's values are folded in numpy before the next: onnxruntime's spinning pool took the cores that work
    needed (inspect --reference on orinet, 2 cores: 36.8 -> 20.7 s)."""
    from qtool import runtime

    sess = runtime.session(_mlp(), optimized=True)
    assert sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"

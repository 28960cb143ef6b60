"""Round 22 (helper h-hostile22): round 21's leftovers (a 0.6.1 file of 10^6 entries, a list of 10^6 lines, cle on
very many Conv pairs, the joined-list hint with spaced paths, BatchNormalization epsilon's dtype, the short-score
warning behind a Cast, unknown fields of nodes and tensors, ai.onnx.ml outputs' dims), then odd inputs to every
command, probed on an installed wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from onnx import TensorProto, helper, numpy_helper

from qtool import encoding as enc
from qtool.io import encodings as encodings_io


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a 0.6.1 file of very many entries ----------------------------------------------------------------------------


def _legacy_document(count: int) -> tuple[dict, dict]:
    """`count` tensors of every kind a 0.6.1 section holds (asymmetric, symmetric on tf's grid or its own, stated
    scale and offset, per-channel weights, float, precision only) and each one's expected encoding."""
    rng = np.random.default_rng(0)
    acts, params, expected = {}, {}, {}
    for i in range(count):
        lo, hi = sorted(rng.normal(0, 3, 2).tolist())
        name, kind = f"t{i}", i % 6
        if kind == 0:
            acts[name] = [{"bitwidth": 8, "dtype": "int", "min": lo, "max": hi}]
            expected[name] = encodings_io.min_max_encoding([lo], [hi], 8, symmetric=False)
        elif kind == 1:  # symmetric: tf's grid where its offset is the signed one's, else the symmetric one
            lo, hi = (-1.0, 127 / 128) if i % 4 == 1 else (lo, hi)
            acts[name] = [{"bitwidth": 16, "dtype": "int", "is_symmetric": "True", "min": lo, "max": hi}]
            expected[name] = encodings_io.min_max_encoding([lo], [hi], 16, symmetric=True)
        elif kind == 2:  # scale and offset that give min and max: kept to the last bit
            scale, offset = abs(hi) / 255 + 1e-3, -int(rng.integers(0, 256))
            entry = {"min": offset * scale, "max": (offset + 255) * scale, "scale": scale, "offset": offset}
            acts[name] = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", **entry}]
            expected[name] = enc.from_scale_offset([scale], [offset], 8, symmetric=False)
        elif kind == 3:  # a weight's per-channel entries: symmetric whatever they say
            los, his = rng.uniform(-2, -0.1, 3).tolist(), rng.uniform(0.1, 2, 3).tolist()
            params[name] = [{"bitwidth": 8, "is_symmetric": "False", "min": a, "max": b} for a, b in zip(los, his, strict=True)]
            expected[name] = encodings_io.min_max_encoding(los, his, 8, symmetric=True)
        elif kind == 4:
            acts[name] = [{"bitwidth": 16, "dtype": "float"}]
            expected[name] = enc.float_encoding(16)
        else:
            acts[name] = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "True"}]
            expected[name] = enc.Encoding(bitwidth=8, is_symmetric=True)
    return {"version": "0.6.1", "activation_encodings": acts, "param_encodings": params}, expected


def test_a_large_legacy_file_makes_its_grids_in_a_few_numpy_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.6.1 file of 10^6 entries took minutes to read: each tensor's grid was made on its own, a dozen numpy calls
    on one value. Now the grids of one bitwidth and symmetry are made together: tf runs a bounded number of times
    however many tensors there are, and every encoding is the one the tensor's own call gives, to the bit."""
    data, expected = _legacy_document(600)
    calls = []
    tf = enc.tf
    monkeypatch.setattr(enc, "tf", lambda *a, **k: calls.append(1) or tf(*a, **k))
    found = encodings_io.parse_encodings(data, "o.json")
    assert len(calls) <= 4, len(calls)
    assert found.all() == expected
    assert [n for n in found.activations] == sorted(found.activations)


# --- cle over very many Conv pairs ---------------------------------------------------------------------------------


def _conv_chain(pairs: int, channels: int = 4) -> onnx.ModelProto:
    """x -> (Conv -> Relu) x pairs -> Conv -> y, 1x1 Convs whose output channels' ranges differ 10x."""
    rng = np.random.default_rng(0)
    nodes, weights, before = [], [], "x"
    for i in range(pairs + 1):
        w = rng.normal(0, 1, (channels, channels, 1, 1)) * rng.uniform(0.3, 3, (channels, 1, 1, 1)) / 2
        weights += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(np.full(channels, 0.1, np.float32), f"b{i}")]  # fmt: skip
        nodes.append(helper.make_node("Conv", [before, f"w{i}", f"b{i}"], [f"c{i}" if i < pairs else "y"], name=f"conv{i}"))
        if i < pairs:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
            before = f"r{i}"
    shape = [1, channels, 2, 2]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], weights)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_cle_over_many_pairs_finds_each_weight_without_a_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """cle's sweeps read and wrote each pair's weights through AlgorithmContext.array / set_array, which scanned every
    initializer (and every declared tensor) on each call: 300 pairs took 15 s, 1200 pairs minutes. Now a weight is
    found by its position, indexed once and again only when the graph changed: 120 pairs are indexed a few times,
    and the equalized model computes what the float one did."""
    from qtool.quant.algorithms import AlgorithmContext, cle

    model = _conv_chain(120)
    x = np.random.default_rng(1).normal(size=(1, 4, 2, 2)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    expected = run(model)
    indexed = []
    index = AlgorithmContext._index
    monkeypatch.setattr(AlgorithmContext, "_index", lambda self: indexed.append(1) or index(self))
    ctx = AlgorithmContext(model, samples=lambda: iter(()), quantize=lambda m, e: (m, None), config={"keep": "always"})
    assert "equalized 120 pairs" in cle.run(ctx)[0]
    assert len(indexed) <= 3, len(indexed)
    np.testing.assert_allclose(run(model), expected, rtol=1e-4, atol=1e-5)
    del model.graph.initializer[0]  # a graph changed under the index: the name is looked up again
    assert ctx.array("b0").tolist() == numpy_helper.to_array(model.graph.initializer[0]).tolist()


# --- inspect over a long list says how far it is ---------------------------------------------------------------


def test_inspect_counts_its_passes_over_the_samples(ws: Workspace) -> None:
    """'qtool inspect -l' of a list of 10^6 lines ran each sample through the model for an hour and said nothing
    (quantize's calibration counts its samples on a terminal). Now each pass over the list is counted: the lints'
    and, with --reference, the float outputs', the comparison's and the per-layer ranking's."""
    from qtool import api
    from qtool.config import InspectOptions

    assert ws.quantize("-o", ws.out).exit_code == 0
    counted: dict[str, list[int]] = {}

    def progress(total: int, label: str):
        counted[label] = [total, 0]
        return lambda n: counted[label].__setitem__(1, counted[label][1] + n)

    api.inspect_model(InspectOptions(model=ws.model, input_list=ws.listing), progress=progress)
    assert counted == {"lints: sample": [4, 4]}
    api.inspect_model(InspectOptions(model=ws.out, reference=ws.model, input_list=ws.listing), progress=progress)
    assert all(counted[f"{label}: sample"] == [4, 4] for label in ("--reference", "outputs", "layers")), counted


# --- the joined-list hint where a folder holds a space, or entries follow a tab ------------------------------------


def _lists(ws: Workspace, second: str, text: str) -> str:
    for folder, names in (("a", ["000"]), (second, ["001", "002"])):
        (ws.root / folder).mkdir()
        for n in names:
            (ws.root / folder / f"x{n}.raw").write_bytes((ws.root / "raw" / f"{n}_x.raw").read_bytes())
    (ws.root / "a" / "l.txt").write_text("x000.raw\n")
    (ws.root / second / "l.txt").write_text(text)
    return f"{ws.root}/a/l.txt,{ws.root}/{second}/l.txt"


def test_the_joined_list_hint_writes_entries_after_a_tab(ws: Workspace) -> None:
    """The hint's sed put b's folder before a bare entry at a line's start or after a space: an entry after a tab
    (a list qtool reads, as qairt's) became '../b/<tab>x001.raw', two entries, and the joined list was refused."""
    import subprocess

    joined = _lists(ws, "b", "\tx001.raw\nx:=x002.raw\t\n")
    line = assert_refused(ws, ws.snapshot(), ws.quantize("-o", ws.out, "--eval_list", joined), 4, "joined by commas")
    command = line.split("join them into one (", 1)[1].rsplit(") and give that", 1)[0]
    subprocess.run(["sh", "-c", command], check=True)
    assert (ws.root / "a" / "joined.txt").read_text().split() == ["x000.raw", "../b/x001.raw", "x:=../b/x002.raw"]
    assert ws.quantize("-o", ws.out, "--eval_list", ws.root / "a" / "joined.txt").exit_code == 0


def test_the_joined_list_hint_names_a_folder_no_entry_can_name(ws: Workspace) -> None:
    """A list in 'b dir' naming its files against its folder: the hint wrote them as '../b dir/x001.raw', which a
    list reads as two entries. No joined list elsewhere can name them: the hint says so and gives no command."""
    joined = _lists(ws, "b dir", "x001.raw\nx002.raw\n")
    line = assert_refused(ws, ws.snapshot(), ws.quantize("-o", ws.out, "--eval_list", joined), 4, "joined by commas")
    assert "sed" not in line and f"relative to '{ws.root}/b dir', whose space no list entry can hold" in line, line


# --- the short-score warning behind a float16 Cast -----------------------------------------------------------------


def test_a_short_score_behind_a_float16_cast_is_warned_of(tmp_path: Path) -> None:
    """A detector whose Sigmoid score leaves through Cast(to float16) (a float16 export's output): the output itself
    is not quantized, the Sigmoid's output is, and its grid ended at 0.15 on negatives alone without a word (3e698d3
    looked only at the output's own encoding). Now the warning names it, and the override names the tensor that is
    quantized, 'p'."""
    import json

    from conftest import run_cli, write_feeds

    inits = [numpy_helper.from_array(np.full((1, 8), 1 / 8, np.float32), "w"),
             numpy_helper.from_array(np.array([-3.0], np.float32), "b")]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logit"], transB=1), helper.make_node("Sigmoid", ["logit"], ["p"]),
             helper.make_node("Cast", ["p"], ["y"], to=TensorProto.FLOAT16)]  # fmt: skip
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    listing = write_feeds(tmp_path, [{"x": rng.uniform(-4, 4, (1, 8)).astype(np.float32)} for _ in range(16)])
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", listing, "-o", tmp_path / "q.onnx"])
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if "output 'y' is a Sigmoid's score" in line]
    room = json.loads("{" + warning.split("activation_encodings: ")[1] + "}")
    assert room["p"] == [{"bitwidth": 16, "min": 0, "max": 1}] and "logit" in room, room


# --- an old-opset BatchNormalization's epsilon takes its operands' type -------------------------------------------


def test_a_double_per_value_batchnorm_whose_variance_is_an_input_converts(tmp_path: Path) -> None:
    """Opset 7's spatial=0 BatchNormalization is written out as (x - mean) / sqrt(var + epsilon) * scale + B, its
    epsilon a Constant of var's type, which was looked up among the initializers only: a double model whose var is a
    graph input got a float epsilon, and convert stopped ('shape inference failed: ... Add ... B has inconsistent
    type tensor(float)', exit 3). Now the type is the graph's statement of var (an input here), and the converted
    model computes what onnxruntime computes of the original."""
    from conftest import run_cli

    rng = np.random.default_rng(0)
    double = TensorProto.DOUBLE
    shape = [3, 4, 4]
    inits = [numpy_helper.from_array(rng.normal(0, 1, shape), n) for n in ("bias", "mean")]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], spatial=0, epsilon=1e-3)
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("x", double, [1, *shape]),
                              *(helper.make_tensor_value_info(n, double, shape) for n in ("scale", "var"))],
                              [helper.make_tensor_value_info("y", double, [1, *shape])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=3), tmp_path / "bn.onnx")
    result = run_cli(["convert", "-i", tmp_path / "bn.onnx", "-o", tmp_path / "c.onnx"])
    assert result.exit_code == 0, result.output
    feed = {"x": rng.normal(0, 1, (1, *shape)), "scale": rng.normal(0, 1, shape), "var": rng.uniform(0.5, 2, shape)}
    ran = [ort.InferenceSession(tmp_path / f, providers=["CPUExecutionProvider"]).run(None, feed)[0] for f in ("bn.onnx", "c.onnx")]
    np.testing.assert_allclose(ran[1], ran[0], rtol=1e-5, atol=1e-6)


# --- unknown fields of nodes, weights and tensor declarations -----------------------------------------------------


def test_unknown_fields_of_nodes_weights_and_declarations_are_named(ws: Workspace) -> None:
    """49a835d named a newer ONNX's fields on the model and graph that convert drops; the same on a node, an
    initializer or a tensor's declaration (a subgraph's too: a newer exporter's per-node fields) were dropped without
    a word, exit 0. Now the one warning names them, by kind; the model converts as before."""
    from qtool.graph.protobuf_wire import encode

    model = onnx.load(str(ws.model))
    future = encode(99 << 3 | 2) + encode(6) + b"future"
    for message in (model.graph.node[0], model.graph.initializer[0], model.graph.output[0]):
        message.ParseFromString(message.SerializeToString() + future)
    (ws.root / "new.onnx").write_bytes(model.SerializeToString())
    result = ws.run("convert", "-i", ws.root / "new.onnx", "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.output
    assert "convert does not carry the nodes' unknown field 99, the weights' unknown field 99 and the tensor " \
        "declarations' unknown field 99 into its output" in result.stderr, result.stderr


# --- ai.onnx.ml models ---------------------------------------------------------------------------------------------


def _tree_classifier(zipmap: bool) -> onnx.ModelProto:
    """x [N, 3] -> MatMul -> TreeEnsembleClassifier -> label [N], probs [N, 2] (-> a ZipMap no output names)."""
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["h"], ["label", "probs"], domain="ai.onnx.ml", classlabels_int64s=[0, 1],
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0], nodes_values=[0.0, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        class_treeids=[0, 0], class_nodeids=[1, 2], class_ids=[0, 1], class_weights=[1.0, 1.0])  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), tree]
    nodes += [helper.make_node("ZipMap", ["probs"], ["zipped"], domain="ai.onnx.ml", classlabels_int64s=[0, 1])] * zipmap
    graph = helper.make_graph(nodes, "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                               helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")])  # fmt: skip
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_a_tree_ensembles_outputs_take_the_batch_the_inputs_were_given(ws: Workspace) -> None:
    """A TreeEnsembleClassifier's outputs, declared label [N] and probs [N, 2] beside x [N, 3]: convert fixed x to
    [1, 3] and left the outputs at N (shape inference knows no ai.onnx.ml op's output), a model whose declaration
    says another batch than its input. Now a dim name fixed at the inputs is that size at the outputs too."""
    onnx.save(_tree_classifier(zipmap=False), ws.root / "ml.onnx")
    result = ws.run("convert", "-i", ws.root / "ml.onnx", "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.output
    outputs = onnx.load(str(ws.root / "c.onnx")).graph.output
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in outputs] == [[1], [1, 2]]


# --- float16 data in a .raw file of float32's size -----------------------------------------------------------------


def test_float16_data_of_float32s_size_is_warned_of(tmp_path: Path) -> None:
    """A .raw file of 2048 float16 values for an input of 1024 float32 ones has the right size, and was read as
    float32 without a word, exit 0: each value two float16 halves, N(0, 1) data read as values of 2^-7..1. Now it is
    warned of, naming the file; real float32 data of the same size (N(0, 1), pixels / 255, float16-exact values) is
    not."""
    from conftest import run_cli

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    kinds = {"half": lambda: rng.normal(0, 1, 2048).astype(np.float16), "normal": lambda: rng.normal(0, 1, 1024),
             "pixels": lambda: rng.integers(0, 256, 1024) / 255,
             "exact": lambda: rng.normal(0, 1, 1024).astype(np.float16)}  # fmt: skip
    for kind, make in kinds.items():
        data = make()
        (tmp_path / f"{kind}.raw").write_bytes(data.tobytes() if kind == "half" else data.astype(np.float32).tobytes())
        (tmp_path / f"{kind}.txt").write_text(f"{tmp_path / kind}.raw\n" * 2)
        result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", tmp_path / f"{kind}.txt", "-o", tmp_path / "q.onnx"])
        assert result.exit_code == 0, result.output
        warned = f"{kind}.raw: each float32 value's two halves read as float16 values of like size" in result.stderr
        assert warned == (kind == "half"), (kind, result.stderr)

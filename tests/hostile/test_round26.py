"""Round 26 (helper h-hostile36): last round's leftovers (a weight in a sparse file larger than the machine; inspect
-l's probed session on a long chain), then careless input to every command."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace, qtool_process
from onnx import TensorProto, helper


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a weight larger than the machine --------------------------------------------------------------------------------


def _sparse_weight_model(folder: Path, n: int) -> Path:
    """x [1, n] -> MatMul(W [n, n]) -> y, W's float32 bytes in w.bin, a sparse file of that size (a few KB on disk)."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n, n], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(n * n * 4))):
        weight.external_data.add(key=key, value=value)
    value = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, n]) for v in ("x", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g", value[:1], value[1:], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "m.onnx")
    try:
        with open(folder / "w.bin", "wb") as f:
            f.truncate(n * n * 4)
    except OSError as e:  # a file system without sparse files this large
        pytest.skip(f"no sparse file of {n * n * 4} bytes here: {e}")
    return folder / "m.onnx"


@pytest.mark.parametrize("command", [
    ("convert", "-i", "m.onnx", "-o", "c.onnx"),
    ("inspect", "m.onnx"),
    ("quantize", "-i", "m.onnx", "-o", "q.onnx", "--enable_float_fallback"),
    ("export", "-i", "m.onnx", "-o", "ex", "--format", "fp16"),
])  # fmt: skip
def test_a_weight_larger_than_the_machine_is_refused_unread(tmp_path: Path, command: tuple) -> None:
    """A 1 TiB weight in a sparse file (`truncate -s 1T`, a few KB on disk): convert and quantize scanned it for NaN,
    inspect linted it, a page at a time, for well over 10 minutes with 18 GB resident (zero pages of the file's
    holes); a Constant's tensor that large would have been read into memory. No step can compute with a tensor the
    machine cannot hold, so it is refused as the model is loaded, in one line naming it and its file."""
    _sparse_weight_model(tmp_path, 1 << 19)
    try:
        result = qtool_process(*command, timeout=90, cwd=tmp_path)
        listed = sorted(p.name for p in tmp_path.iterdir())
    finally:  # pytest keeps its last runs' folders: no 1 TiB file left for a backup or `du --apparent-size` to meet
        (tmp_path / "w.bin").unlink()
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("qtool: error: m.onnx: tensor 'W' takes 1024 GiB (w.bin), more than this "
                                    "machine's "), result.stderr  # fmt: skip
    assert "no step can hold it" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert listed == ["m.onnx", "w.bin"]


# --- a QDQ model's zero point of another type than its integers ------------------------------------------------------


def _blocked_qdq_model(folder: Path, zero_point_type: type) -> Path:
    """x [1, 64] -> MatMul(DequantizeLinear(W int8 [64, 32], scale [4, 32], zero point [4, 32], block_size 16)) -> y."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-8, 8, (64, 32)).astype(np.int8), "Wq"),
             numpy_helper.from_array(np.full((4, 32), 0.05, np.float32), "Ws"),
             numpy_helper.from_array(np.zeros((4, 32), zero_point_type), "Wz")]  # fmt: skip
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["W"], name="dq", axis=0, block_size=16),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, folder / "q.onnx")
    return folder / "q.onnx"


@pytest.mark.parametrize("command", [("export", "--format", "matmulnbits"), ("export", "--format", "fp16"),
                                     ("export", "--format", "qoperator"), ("inspect",)])  # fmt: skip
def test_a_zero_point_of_another_type_than_its_integers_is_refused(ws: Workspace, command: tuple) -> None:
    """A DequantizeLinear's int8 weight with an int32 zero point: onnxruntime refuses the model ('Type parameter
    (T1) of Optype (DequantizeLinear) bound to different types'), but export wrote MatMulNBits, fp16 and QOperator
    models of it, exit 0, and inspect listed its grid: the zero point's values were read whatever their type (a
    300 would have been a grid no int8 holds). Now the model is refused, naming the node and both types."""
    import numpy as np

    path = _blocked_qdq_model(ws.root, np.int32)
    before = ws.snapshot()
    args = (command[0], path, *command[1:]) if command[0] == "inspect" else (*command[:1], "-i", path, "-o",
                                                                              ws.root / "ex", *command[1:])  # fmt: skip
    assert_refused(ws, before, ws.run(*args), 3, "DequantizeLinear 'dq': zero point 'Wz' is int32, its integers int8")
    path = _blocked_qdq_model(ws.root, np.int8)
    assert ws.run(*args).exit_code == 0


# --- a stats file's bin counts past what int64 sums hold --------------------------------------------------------------


def test_a_stats_files_bin_counts_are_bounded(ws: Workspace) -> None:
    """A --load_stats histogram whose 2048 bins each count 2^62 values (each under int64's reach, their sum not):
    the cumulative counts wrapped negative, and percentile calibration read input 'x' as [-0.9955, 0] where its
    values span [-1, 1], exit 0 without a word. Now a state whose counts sum to 2^53 or more is refused, as its
    sample count is."""
    import base64
    import json

    import numpy as np

    stats = ws.root / "s.json"
    assert ws.quantize("-o", ws.out, "--save_stats", stats, "--act_quantizer_calibration", "percentile").exit_code == 0
    doc = json.loads(stats.read_text())
    doc["tensors"]["x"]["counts"] = base64.b64encode(np.full(2048, 2**62, "<i8").tobytes()).decode()
    stats.write_text(json.dumps(doc))
    ws.out.unlink()
    ws.out.with_suffix(".encodings.json").unlink()
    before = ws.snapshot()
    result = ws.run("quantize", "-i", ws.model, "--load_stats", stats, "-o", ws.out, "--act_quantizer_calibration",
                    "percentile")  # fmt: skip
    assert_refused(ws, before, result, 4, "s.json: tensor 'x': bin counts must sum under 2^53")


# --- an opset no onnx defines -------------------------------------------------------------------------------------


def test_an_opset_past_the_newest_is_refused_as_the_models(ws: Workspace) -> None:
    """A model stamped opset 10000 (a typo for 10, or a hand-edited file): onnx.checker lets it through, and convert
    and quantize said 'm.onnx as converted: onnxruntime cannot load it: ... Opset 10000 is under development', as if
    their conversion had broken it, while inspect found nothing ('lint findings: none'). Now all three name the
    opset as the model's, and the newest onnx defines."""
    model = onnx.load(ws.model)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 10000))
    path = ws.root / "m.onnx"
    onnx.save(model, path)
    before = ws.snapshot()
    said = f"m.onnx: ONNX opset 10000 is past the newest defined ({onnx.defs.onnx_opset_version()}, onnx "
    assert_refused(ws, before, ws.run("convert", "-i", path, "-o", ws.root / "c.onnx"), 3, said)
    assert_refused(ws, before, ws.run("quantize", "-i", path, "--input_list", ws.listing, "-o", ws.out), 3, said)
    result = ws.run("inspect", path)
    assert result.exit_code == 0 and "invalid-model" in result.output, result.output
    assert "ONNX opset 10000 is past the newest defined" in result.output, result.output


# --- an If whose branches give another number of outputs ----------------------------------------------------------


def _saved(ws: Workspace, graph: onnx.GraphProto) -> tuple[Path, dict]:
    """The graph as an opset-17 model in ws's m.onnx, and ws's files before any command runs."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, ws.root / "m.onnx")
    return ws.root / "m.onnx", ws.snapshot()



def test_an_if_whose_branches_give_other_output_counts_is_refused(ws: Workspace) -> None:
    """An If with one output whose then_branch gives two (Relu and Neg of h) and else_branch one: onnx.checker lets
    it through, onnxruntime refuses it ('then_branch and else_branch produce different number of outputs'), and
    convert and quantize stopped on 'qtool: internal error' (constant folding took the two-output branch for the
    one-output If: onnx-ir's 'The number of values and replacements must match'); inspect found nothing. Now the
    model is refused in one line naming the If and each branch's count, and inspect says so."""
    import numpy as np
    from onnx import numpy_helper

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8]) for n in ("x", "y", "a", "b", "e")]
    then = helper.make_graph([helper.make_node("Relu", ["h"], ["a"]), helper.make_node("Neg", ["h"], ["b"])], "then",
                             [], value[2:4])  # fmt: skip
    other = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], value[4:])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Greater", ["s", "z"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="choose", then_branch=then, else_branch=other)]  # fmt: skip
    inits = [numpy_helper.from_array(np.eye(8, dtype=np.float32), "W"),
             numpy_helper.from_array(np.array(1.0, np.float32), "s"), numpy_helper.from_array(np.array(0.0, np.float32), "z")]  # fmt: skip
    path, before = _saved(ws, helper.make_graph(nodes, "g", value[:1], value[1:2], inits))
    said = "m.onnx: If 'choose' has 1 output(s), its branches give else_branch 1, then_branch 2: ONNX takes them equal"
    assert_refused(ws, before, ws.run("convert", "-i", path, "-o", ws.root / "c.onnx"), 3, said)
    assert_refused(ws, before, ws.run("quantize", "-i", path, "--input_list", ws.listing, "-o", ws.out), 3, said)
    result = ws.run("inspect", path)
    assert result.exit_code == 0 and "invalid-model" in result.output and "If 'choose'" in result.output, result.output


@pytest.mark.parametrize("body_inputs", [2, 4])
def test_a_loop_whose_body_takes_another_input_count_is_refused(ws: Workspace, body_inputs: int) -> None:
    """A Loop with inputs (M, cond, v) whose body takes 2 or 4 inputs (where it must take the iteration, cond and v):
    onnx.checker lets it through, and convert and quantize said 'm.onnx as converted: onnxruntime cannot load it:
    ... Size mismatch validating subgraph inputs', as if their conversion had broken it; inspect found nothing."""
    import numpy as np
    from onnx import numpy_helper

    def vi(name: str, kind: int = TensorProto.FLOAT, dims: list | None = None) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, kind, [1, 8] if dims is None else dims)

    takes = [vi("i", TensorProto.INT64, []), vi("ci", TensorProto.BOOL, []), vi("v"), vi("v2")]
    body = helper.make_graph([helper.make_node("Identity", ["ci"], ["co"]), helper.make_node("MatMul", ["v", "W"], ["vo"])],
                             "body", takes[1:3] if body_inputs == 2 else takes, [vi("co", TensorProto.BOOL, []), vi("vo")])  # fmt: skip
    inits = [numpy_helper.from_array(np.array(3, np.int64), "M"), numpy_helper.from_array(np.array(True), "c"),
             numpy_helper.from_array(np.eye(8, dtype=np.float32), "W")]  # fmt: skip
    graph = helper.make_graph([helper.make_node("Loop", ["M", "c", "x"], ["y"], name="steps", body=body)], "g",
                              [vi("x")], [vi("y")], inits)  # fmt: skip
    path, before = _saved(ws, graph)
    said = f"m.onnx: Loop 'steps' has 3 inputs (M, cond and the loop-carried), its body takes {body_inputs}"
    assert_refused(ws, before, ws.run("convert", "-i", path, "-o", ws.root / "c.onnx"), 3, said)
    result = ws.run("inspect", path)
    assert result.exit_code == 0 and "invalid-model" in result.output and "Loop 'steps'" in result.output, result.output


def test_a_scan_whose_body_takes_another_input_count_is_refused(ws: Workspace) -> None:
    """A Scan of a state and one scanned input whose body takes three inputs: convert said 'as converted: onnxruntime
    cannot load it: ... Size mismatch validating subgraph inputs', and inspect found nothing, as for a Loop."""
    import numpy as np
    from onnx import numpy_helper

    def vi(name: str, dims: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    body = helper.make_graph([helper.make_node("Add", ["s", "xi"], ["s2"]), helper.make_node("Identity", ["s2"], ["yi"])],
                             "body", [vi("s", [8]), vi("xi", [8]), vi("extra", [8])], [vi("s2", [8]), vi("yi", [8])])  # fmt: skip
    node = helper.make_node("Scan", ["s0", "x"], ["sf", "y"], name="sweep", body=body, num_scan_inputs=1)
    graph = helper.make_graph([node], "g", [vi("x", [3, 8])], [vi("y", [3, 8])],
                              [numpy_helper.from_array(np.zeros(8, np.float32), "s0")])  # fmt: skip
    path, before = _saved(ws, graph)
    said = "m.onnx: Scan 'sweep' has 2 state and scanned inputs, its body takes 3: ONNX takes them equal"
    assert_refused(ws, before, ws.run("convert", "-i", path, "-o", ws.root / "c.onnx"), 3, said)
    result = ws.run("inspect", path)
    assert result.exit_code == 0 and "invalid-model" in result.output and "Scan 'sweep'" in result.output, result.output


# --- a model onnxruntime refuses as given is not said to be broken by convert ----------------------------------------


@pytest.mark.parametrize("kind, said", [
    ("concat", "axis must be in [-rank, rank-1]"),
    ("broadcast", "Incompatible dimensions"),
])  # fmt: skip
def test_a_model_onnxruntime_refuses_as_given_is_blamed_not_its_conversion(ws: Workspace, kind: str, said: str) -> None:
    """A Concat of axis 5 on [1, 8] tensors, or an Add of [1, 8] and [3]: onnx.checker lets both through and
    onnxruntime refuses both, but convert and quantize said 'm.onnx as converted: onnxruntime cannot load it', as if
    the conversion had broken a model that loads. Now, where onnxruntime refuses the model as given too, the error
    is the model's."""
    import numpy as np
    from onnx import numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    if kind == "concat":
        nodes, inits, out = [helper.make_node("Concat", ["x", "x"], ["y"], axis=5)], [], [1, 16]
    else:
        nodes, inits, out = [helper.make_node("Add", ["x", "b"], ["y"])], [numpy_helper.from_array(np.ones(3, np.float32), "b")], [1, 8]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    path, before = _saved(ws, graph)
    for args in (("convert", "-i", path, "-o", ws.root / "c.onnx"), ("quantize", "-i", path, "-o", ws.out, "-f")):
        line = assert_refused(ws, before, ws.run(*args), 3, "m.onnx: onnxruntime cannot load it: ", said)
        assert "as converted" not in line, line


# --- a config's switch given a value no boolean reads ------------------------------------------------------------


def test_a_config_switch_of_no_boolean_value_names_the_file_and_line(ws: Workspace) -> None:
    """'use_per_channel_quantization: yes please' in a --config file: click's own refusal ('Invalid value for
    '--use_per_channel_quantization': 'yes please' is not a valid boolean') named no file, where every other
    wrong value in a config names its file and line. Now it does."""
    config = ws.root / "c.yaml"
    config.write_text("act_bitwidth: 8\nuse_per_channel_quantization: yes please\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2,
                   "c.yaml:2: use_per_channel_quantization: 'yes please' is not a valid boolean")  # fmt: skip

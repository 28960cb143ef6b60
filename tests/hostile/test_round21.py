"""Round 21 (helper h-hostile21): round 20's leftovers (an edited 0.6.1 scale, the nesting error's remedy, the
comma-joined list hint across folders, old-opset nodes the version converter asserts on, inspect on a vast nest of
Ifs, fields a newer exporter writes), then input lists, output paths and names, probed on an installed wheel."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace
from test_round20 import _nested_ifs


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- a 0.6.1 entry whose scale was edited without its min/max ---------------------------------------------------


def _legacy_override(ws: Workspace, entry: dict) -> Path:
    path = ws.root / "o.json"
    path.write_text(json.dumps({"version": "0.6.1", "activation_encodings": {"r": [entry]}, "param_encodings": {}}))
    return path


def test_an_edited_scale_that_min_max_overrule_is_named(ws: Workspace) -> None:
    """A user widened 'r' by editing its scale 0.01 -> 0.05 and left min/max [0, 2.55]: qtool (as qairt) takes
    min/max, and the edit was dropped without a word. Now a warning names the tensor, the grid the scale gives and
    the min/max that would give it; an entry AIMET wrote (or one in the QNN guide's positive-offset sign) is quiet."""
    edited = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": 0.0, "max": 2.55, "scale": 0.05, "offset": 0}
    result = ws.quantize("-o", ws.out, "-q", _legacy_override(ws, edited))
    assert result.exit_code == 0, result.output
    assert "'r': scale 0.05 and offset 0 give the grid [0, 12.75], not its min/max's [0, 2.55]" in result.stderr
    assert "set min 0 and max 12.75" in result.stderr
    for offset in (-200, 200):
        aimet = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "min": -1.803922, "max": 0.496078,
                 "scale": 0.009019608, "offset": offset}  # fmt: skip
        result = ws.quantize("-o", ws.out, "-q", _legacy_override(ws, aimet))
        assert result.exit_code == 0 and "'r': scale" not in result.stderr, result.stderr


# --- the nesting error names a remedy -----------------------------------------------------------------------------


def test_a_model_nested_too_deep_says_what_to_do(ws: Workspace) -> None:
    """'too deeply nested: ... 40 levels deep, where protobuf's parser stops at 100 message levels' named no way
    out; onnxruntime's parser refuses the file too, so the model has to be exported with fewer levels: say so."""
    ws.model.write_bytes(_nested_ifs(40))
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("inspect", ws.model), 3, "40 levels deep", "onnxruntime's parser stops there too",
                   "export it with fewer levels")  # fmt: skip


# --- the joined-list hint across folders --------------------------------------------------------------------------


def test_the_joined_list_hint_keeps_another_folders_entries(ws: Workspace) -> None:
    """'-l a/l.txt,b/l.txt', each list's entries written against its own folder: the hint 'cat a/l.txt b/l.txt >
    a/joined.txt' gave a list whose b entries resolve against a/ (not found). Now the hint writes b's relative
    entries against a/ (bare and name:=path), and the list it makes quantizes on all three samples."""
    import shlex
    import subprocess

    for folder, names in (("a", ["000"]), ("b", ["001", "002"])):
        (ws.root / folder).mkdir()
        for n in names:
            (ws.root / folder / f"x{n}.raw").write_bytes((ws.root / "raw" / f"{n}_x.raw").read_bytes())
    (ws.root / "a" / "l.txt").write_text("x000.raw\n")
    (ws.root / "b" / "l.txt").write_text("x001.raw\nx:=x002.raw\n")
    joined = f"{ws.root}/a/l.txt,{ws.root}/b/l.txt"
    before = ws.snapshot()
    line = assert_refused(ws, before, ws.quantize("-o", ws.out, "--eval_list", joined), 4, "2 files joined by commas")
    command = line.split("join them into one (", 1)[1].rsplit(") and give that", 1)[0]
    assert command.endswith(f"> {shlex.quote(str(ws.root / 'a' / 'joined.txt'))}"), command
    subprocess.run(["sh", "-c", command], check=True)
    assert (ws.root / "a" / "joined.txt").read_text().split() == ["x000.raw", "../b/x001.raw", "x:=../b/x002.raw"]
    result = ws.run("quantize", "-i", ws.model, "-l", ws.root / "a" / "joined.txt", "-o", ws.out)
    assert result.exit_code == 0 and "samples                3" in result.stdout, result.output


# --- old-opset nodes onnx's version converter asserts on ----------------------------------------------------------


def _old_model(tmp_path: Path, name: str, nodes: list, inputs: list, outputs: list, opset: int,
               inits: tuple = ()) -> Path:  # fmt: skip
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)
                     .SerializeToString())  # fmt: skip
    return path


def test_a_cast_of_opset_5_naming_its_type_converts(tmp_path: Path) -> None:
    """Cast up to opset 5 names its type ('to': "INT32"), and onnx's converter has no adapter for it: 'cannot
    upgrade opset 5 to 13: ... No Adapter From Version $5 for Cast', exit 3. Now it comes out as Cast(to=6),
    truncating as before; a name no type has is refused naming the node."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    cast = helper.make_node("Cast", ["r"], ["y"], name="c")
    cast.attribute.append(helper.make_attribute("to", "INT32"))
    ins, outs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])]
    model = _old_model(tmp_path, "cast5", [helper.make_node("Relu", ["x"], ["r"]), cast], ins, outs, 5)
    ws = Workspace(tmp_path)
    result = ws.run("convert", "-i", model, "-o", tmp_path / "c.onnx")
    assert result.exit_code == 0, result.output
    x = np.array([[-1.7, 2.6, 3.2, 0.4]], np.float32)
    assert ort.InferenceSession(str(tmp_path / "c.onnx")).run(None, {"x": x})[0].tolist() == [[0, 2, 3, 0]]
    cast.attribute[0].s = b"INTEGER"
    model = _old_model(tmp_path, "cast5", [helper.make_node("Relu", ["x"], ["r"]), cast], ins, outs, 5)
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", model, "-o", tmp_path / "d.onnx"), 3, "Cast node 'c'",
                   "'to' names no ONNX type ('INTEGER')")  # fmt: skip


def test_a_per_value_batchnorm_of_opset_7_converts(tmp_path: Path) -> None:
    """BatchNormalization 7 with spatial=0 (statistics per value, [C, H, W]; caffe2-era exports) was refused with the
    converter's assertion 'Attribute spatial must have value 1', exit 3, of a model onnxruntime runs. Now it is
    written out as (x - mean) / sqrt(var + eps) * scale + B, which equals onnxruntime's run of the original; in
    training mode (its mean and variance outputs named) it is refused naming the node."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    params = [numpy_helper.from_array((rng.random((3, 4, 4)) + 0.5).astype(np.float32), k) for k in ("s", "b", "m", "v")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", spatial=0, epsilon=1e-3)
    model = _old_model(tmp_path, "bn7", [bn], ins, out, 7, tuple(params))
    ws = Workspace(tmp_path)
    result = ws.run("convert", "-i", model, "-o", tmp_path / "c.onnx")
    assert result.exit_code == 0, result.output
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "c.onnx")).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 1e-5 and np.abs(want - x).max() > 0.1
    bn.output.extend(["mean", "var", "saved_mean", "saved_var"])
    model = _old_model(tmp_path, "bn7", [bn], ins, out, 7, tuple(params))
    before = ws.snapshot()
    assert_refused(ws, before, ws.run("convert", "-i", model, "-o", tmp_path / "d.onnx"), 3,
                   "BatchNormalization node 'bn': spatial=0 in training mode")  # fmt: skip


# --- a model of very many subgraphs -------------------------------------------------------------------------------


def _many_ifs(path: Path, count: int) -> None:
    """`count` If nodes side by side, each choosing between two Identity branches, summed: onnx's shape inference
    copies every outer tensor's type into each branch's, so its time grows with count squared."""
    from onnx import TensorProto, helper

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", ["x"], [tag])], tag, [],
                                 [helper.make_tensor_value_info(tag, TensorProto.FLOAT, [1])])  # fmt: skip

    ifs = [helper.make_node("If", ["c"], [f"y{i}"], then_branch=branch(f"t{i}"), else_branch=branch(f"e{i}"))
           for i in range(count)]  # fmt: skip
    graph = helper.make_graph([helper.make_node("Relu", ["x0"], ["x"]), *ifs,
                               helper.make_node("Sum", [f"y{i}" for i in range(count)], ["y"])], "g",
                              [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1]),
                               helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())


def test_a_model_of_too_many_subgraphs_is_refused_at_once(ws: Workspace) -> None:
    """'qtool inspect' of a 116 MB model of 10^6 If nodes (a tree 18 deep) ran past 10 minutes: onnx's shape
    inference reads each branch with every tensor around it (16000 branches beside 16000 tensors: 75 s a pass), and
    qtool's walks take about 0.7 ms a branch. Now the work is counted first and such a model refused in seconds
    (6.3 s, the parse), naming the count and the way out; the bound is QTOOL_MAX_SUBGRAPH_STEPS's, lowered here to
    keep the model small. Under the default bound the same model reads."""
    _many_ifs(ws.model, 200)
    before = ws.snapshot()
    result = ws.run("inspect", ws.model, env={"QTOOL_MAX_SUBGRAPH_STEPS": "100000"})
    assert_refused(ws, before, result, 3, "at least 400 subgraphs (If branches, Loop bodies), more than qtool reads",
                   "QTOOL_MAX_SUBGRAPH_STEPS raises the bound", "export it with fewer subgraphs (If, Loop, Scan nodes)")  # fmt: skip
    assert ws.run("inspect", ws.model).exit_code == 0


# --- fields convert does not carry --------------------------------------------------------------------------------


def test_fields_convert_does_not_carry_are_named(ws: Workspace) -> None:
    """A model carrying a field a newer ONNX defines (number 99 on the model and its graph) and onnx 1.18's
    multi-device configuration lost them on convert and quantize without a word (onnx-ir reads neither; write_inline
    keeps unknown fields since 686f143, but the passes had dropped them already). Now one warning names them; a
    model without them converts quietly as before, and the graph's own metadata stays."""
    from qtool.graph.protobuf_wire import encode

    model = onnx.load(str(ws.model))
    model.configuration.add(name="two", num_devices=2)
    model.graph.node[0].device_configurations.add(configuration_id="two")
    model.graph.metadata_props.add(key="k", value="v")
    future = encode(99 << 3 | 2) + encode(6) + b"future"
    graph = model.graph.SerializeToString() + future
    model.ParseFromString(model.SerializeToString() + future)
    model.graph.ParseFromString(graph)
    (ws.root / "new.onnx").write_bytes(model.SerializeToString())
    result = ws.run("convert", "-i", ws.root / "new.onnx", "-o", ws.root / "c.onnx")
    assert result.exit_code == 0, result.output
    assert "convert does not carry the model's unknown field 99, the graph's unknown field 99 and its multi-device " \
        "configuration (configuration, device_configurations) into its output" in result.stderr, result.stderr
    assert [p.key for p in onnx.load(str(ws.root / "c.onnx")).graph.metadata_props] == ["k"]
    result = ws.run("convert", "-i", ws.model, "-o", ws.root / "d.onnx")
    assert result.exit_code == 0 and "does not carry" not in result.stderr, result.stderr


# --- a config's algorithm_config key ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "said"), [
    ("[1, 2]", "algorithm_config must be a mapping of algorithm sections, not [1, 2]"),
    ("zzz", "algorithm_config must be a mapping of algorithm sections, not zzz"),
    ("{clee: {}}", "unknown algorithm section 'clee' in algorithm_config"),
    ("{cle: [1]}", "'cle' must be a mapping of cle's settings, not [1]"),
])  # fmt: skip
def test_a_config_algorithm_config_of_the_wrong_type_is_refused(ws: Workspace, value: str, said: str) -> None:
    """'algorithm_config:' in a --config (the hidden option the algorithm sections travel in, which a config may
    name) given a list, a number or a string was 'qtool: internal error' (AttributeError: 'list' object has no
    attribute 'items'), exit 1, and a mapping naming no algorithm ('clee') was ignored. Now each is refused."""
    config = ws.root / "c.yaml"
    config.write_text(f"algorithm_config: {value}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, said)


# --- a Concat of thousands of inputs ------------------------------------------------------------------------------


def test_each_input_slot_of_a_wide_concat_is_found_once(tmp_path: Path) -> None:
    """A Concat of 10^4 graph inputs (one line of the list naming them all) took 245 s to quantize: the plan looked
    for each input among the Concat's 10^4 slots (quant/plan._only_control), 10^8 comparisons a pass. GraphFacts.uses
    finds every reader's slots in one pass (133 s, the rest onnxruntime's session setup); a tensor read in two slots
    of one node has both, and the model quantizes."""
    import numpy as np
    from onnx import TensorProto, helper

    from qtool.quant.graph_facts import GraphFacts

    count = 300
    inputs = [helper.make_tensor_value_info(f"i{k}", TensorProto.FLOAT, [1, 4]) for k in range(count)]
    nodes = [helper.make_node("Concat", [f"i{k}" for k in range(count)] + ["i0"], ["c"], axis=0),
             helper.make_node("Relu", ["c"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [count + 1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    uses = GraphFacts.of(model).uses
    assert [slot for _, slot in uses["i0"]] == [0, count] and [slot for _, slot in uses["i7"]] == [7]
    onnx.save(model, str(tmp_path / "m.onnx"))
    rng = np.random.default_rng(0)
    with (tmp_path / "l.txt").open("w") as listing:
        for s in range(2):
            rng.standard_normal((1, 4)).astype(np.float32).tofile(tmp_path / f"a{s}.raw")
            listing.write(" ".join(f"i{k}:=a{s}.raw" for k in range(count)) + "\n")
    result = Workspace(tmp_path).run("quantize", "-i", tmp_path / "m.onnx", "-l", tmp_path / "l.txt", "-o", tmp_path / "q.onnx")
    assert result.exit_code == 0, result.output


# --- an input whose name holds a space --------------------------------------------------------------------------


def test_a_list_naming_an_input_whose_name_holds_a_space_says_so(tmp_path: Path) -> None:
    """A model input named 'in put:0' cannot be named in a list, which separates entries at spaces (as qairt's):
    'in put:0:=a.raw' was refused as 'mixes <name>:=<path> entries with bare paths; use one style per line', as if
    the user had mixed them. Now the error adds that the name may hold a space and to give the files bare, which
    quantizes; a line that does mix a file and a named entry gets no such hint."""
    import numpy as np
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["in put:0"], ["y"])], "g",
                              [helper.make_tensor_value_info("in put:0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    np.arange(4, dtype=np.float32).reshape(1, 4).tofile(tmp_path / "a.raw")
    (tmp_path / "named.txt").write_text("in put:0:=a.raw\n")
    (tmp_path / "mixed.txt").write_text("a.raw x:=a.raw\n")
    (tmp_path / "bare.txt").write_text("a.raw\n")
    ws = Workspace(tmp_path)
    before = ws.snapshot()
    run = lambda listing: ws.run("quantize", "-i", tmp_path / "m.onnx", "-l", tmp_path / listing, "-o", tmp_path / "q.onnx")  # noqa: E731
    assert_refused(ws, before, run("named.txt"), 4, "mixes <name>:=<path> entries with bare paths",
                   "if 'in put:0' is one input's name, it holds a space", "give the line's files as bare paths")  # fmt: skip
    assert "holds a space" not in assert_refused(ws, before, run("mixed.txt"), 4, "mixes <name>:=<path> entries")
    assert run("bare.txt").exit_code == 0


# --- an algorithm section's count past what islice takes ----------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "key"), [("bc", "calibration_frames"), ("mean_correction", "calibration_frames"),
                                                ("actsearch", "num_batches")])  # fmt: skip
def test_an_algorithm_count_past_int32_is_refused(ws: Workspace, algorithm: str, key: str) -> None:
    """'bc: {calibration_frames: 9999999999999999999999}' in a --config passed the section's check (a positive
    integer) and failed in the algorithm as 'qtool: internal error' (ValueError: Stop argument for islice() must be
    None or an integer: 0 <= x <= sys.maxsize), exit 1, after calibrating; the flags' counts stop at 2^31 - 1
    (cli/options.MAX_COUNT). Now the section's counts do too, refused before any work; 2^31 - 1 itself passes the
    check (the fuzz of every section key with 12 wrong values found these three)."""
    config = ws.root / "c.yaml"
    config.write_text(f"{algorithm}:\n  {key}: 9999999999999999999999\n")
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--config", config, "--apply_algorithms", algorithm)
    assert_refused(ws, before, result, 2, f"{key} in the {algorithm} section of --config must be a positive integer, "
                   "at most 2147483647, not 9999999999999999999999")  # fmt: skip
    from qtool.quant.algorithms import _registry, check_config

    assert check_config(algorithm, {key: 2**31 - 1}, _registry()[algorithm].SETTINGS) == {key: 2**31 - 1}


# --- adaround's settings of the wrong kind ----------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "said"), [
    ("default_param_bw: 3", "adaround: default_param_bw must be one of 4, 7, 8, 16 (as --weights_bitwidth), not 3"),
    ("default_param_bw: 99", "default_param_bw must be one of 4, 7, 8, 16"),
    ("ignore_quant_ops_list: 5", "adaround: ignore_quant_ops_list must be a list of op types or node names, not 5"),
    ("ignore_quant_ops_list: Conv", "ignore_quant_ops_list must be a list of op types or node names, not Conv"),
    ("ignore_quant_ops_list: [1, 2]", "ignore_quant_ops_list must be a list of op types or node names, not [1, 2]"),
])  # fmt: skip
def test_adaround_settings_of_the_wrong_kind_are_refused_first(ws: Workspace, setting: str, said: str) -> None:
    """'adaround: {default_param_bw: 3}' (or 99) passed the section's check and, after calibration, failed in the
    QDQ writer ('qtool: internal error', KeyError: (3, False)); 'ignore_quant_ops_list: 5' was an internal error
    (TypeError: 'int' object is not iterable), and 'ignore_quant_ops_list: Conv' skipped ops named 'C', 'o' and 'n'
    (every Conv rounded, exit 0). Now each is refused with the config's other checks, before any work, whether
    adaround runs or not; a list of op types still runs."""
    config = ws.root / "c.yaml"
    config.write_text(f"adaround:\n  {setting}\n")
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config, "--apply_algorithms", "adaround"), 2, said)
    assert_refused(ws, before, ws.quantize("-o", ws.out, "--config", config), 2, said)

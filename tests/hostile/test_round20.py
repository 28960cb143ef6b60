"""Round 20 (helper h-hostile20): round 19's leftovers (an --input_dim a hard-coded Reshape cannot take, deeply
nested subgraphs, comma-joined list files, Resize's tf_half_pixel_for_nn), then export, inspect's reports, --config
files, signals and a full disk, probed on an installed wheel."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- convert --input_dim on a dynamic dim the graph bakes in ------------------------------------------------------


def _baked_reshape(ws: Workspace) -> None:
    """A model declaring x [N, 3, H, W] whose Reshape's shape constant is the export's 1x48 (a 4x4 image), as
    torch.onnx writes a view(1, -1) traced at one size."""
    ws.model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[N,3,H,W] x) => (float[N,48] y) {
            r = Relu (x)
            s = Constant <value = int64[2] {1, 48}> ()
            y = Reshape (r, s)
        }""").SerializeToString())


def test_an_input_dim_a_baked_reshape_cannot_take_is_refused(ws: Workspace) -> None:
    """'convert --input_dim x 1,3,8,8' on dims the model leaves dynamic ran no check (the run on zeros was for a
    dim the model fixes), and wrote a model whose Reshape fails on every sample, exit 0; quantize then failed. Now
    convert runs it once and refuses naming the option, the input's dim and the node; the export's own size passes."""
    _baked_reshape(ws)
    out = ws.root / "c.onnx"
    before = ws.snapshot()
    result = ws.run("convert", "-i", ws.model, "-o", out, "--input_dim", "x", "1,3,8,8")
    assert_refused(ws, before, result, 3, "Reshape node", "--input_dim x sets dim 2 (H) to 8",
                   "give the size it was exported for")  # fmt: skip
    assert ws.run("convert", "-i", ws.model, "-o", out, "--input_dim", "x", "1,3,4,4").exit_code == 0


def test_quantize_names_the_input_dim_a_baked_reshape_cannot_take(ws: Workspace) -> None:
    """quantize given the float model and --input_dim converts it as convert does, but ran no check: the first
    sample failed ('onnxruntime cannot run it (on the first sample, input_list.txt:1): ... Reshape ...'), naming the
    list's line and not the option. Now the same refusal as convert's, naming --input_dim, before any calibration."""
    _baked_reshape(ws)
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--input_dim", "x", "1,3,8,8")
    assert_refused(ws, before, result, 3, "Reshape node", "--input_dim x sets dim 2 (H) to 8")


def test_an_input_dim_where_only_zeros_fail_the_model_passes(tmp_path: Path) -> None:
    """A detector with dynamic H and W whose TopK fails on zeros (no detection) but not on data is not refused:
    only a failure random values share is the dims'."""
    (tmp_path / "det.onnx").write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[1,3,H,W] x) => (float[2,1] top) {
            r = Relu (x)
            f = Flatten <axis = 0> (r)
            nz = NonZero (f)
            nzf = Cast <to = 1> (nz)
            k = Constant <value = int64[1] {1}> ()
            top, idx = TopK <axis = 1> (nzf, k)
        }""").SerializeToString())
    ws = Workspace(tmp_path)
    result = ws.run("convert", "-i", tmp_path / "det.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "1,3,16,16")
    assert result.exit_code == 0, result.output


def test_an_input_dim_where_an_integer_input_of_0_fails_passes(tmp_path: Path) -> None:
    """An integer input a divisor (10 / k) fails on zeros at any size, and random floats left it 0: 'convert
    --input_dim x 2,3 --input_dim k 2' was refused as a size the model cannot run at (review of eee8292)."""
    (tmp_path / "div.onnx").write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[N,3] x, int64[N] k) => (float[N,3] z, int64[N] y) {
            z = Relu (x)
            ten = Constant <value = int64[1] {10}> ()
            y = Div (ten, k)
        }""").SerializeToString())
    ws = Workspace(tmp_path)
    args = ["-i", tmp_path / "div.onnx", "-o", tmp_path / "c.onnx", "--input_dim", "x", "2,3", "--input_dim", "k", "2"]
    result = ws.run("convert", *args)
    assert result.exit_code == 0, result.output


# --- a model nested past protobuf's depth limit -------------------------------------------------------------------


def _nested_ifs(levels: int) -> bytes:
    """A model whose If's then_branch holds an If, `levels` deep, written field by field (protobuf's Python
    message cannot hold one past its depth limit, so none is built whole); a short else_branch at every level."""
    from onnx import TensorProto, helper

    from qtool.graph.protobuf_wire import key

    def graph(body: bytes, name: str, out: str) -> bytes:
        shell = helper.make_graph([], name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1])])
        return body + shell.SerializeToString()

    identity = helper.make_node("Identity", ["x"], ["y0"]).SerializeToString()
    inner = graph(key(1, len(identity)) + identity, "g0", "y0")
    for d in range(1, levels + 1):
        other = helper.make_graph([helper.make_node("Identity", ["x"], [f"e{d}"])], f"e{d}", [],
                                  [helper.make_tensor_value_info(f"e{d}", TensorProto.FLOAT, [1])])  # fmt: skip
        node = helper.make_node("If", ["c"], [f"y{d}"], else_branch=other).SerializeToString()
        attr = key(1, 11) + b"then_branch" + key(6, len(inner)) + inner + b"\xa0\x01\x05"  # type (20): GRAPH (5)
        node += key(5, len(attr)) + attr
        inner = graph(key(1, len(node)) + node, f"g{d}", f"y{d}")
    top = helper.make_graph([], "main", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                         helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [])  # fmt: skip
    inner += top.SerializeToString()  # the outer graph's inputs merge into it
    return helper.make_model(onnx.GraphProto(), opset_imports=[helper.make_opsetid("", 13)]).SerializeToString() + \
        key(7, len(inner)) + inner  # fmt: skip


def test_a_model_nested_past_protobufs_limit_says_so(ws: Workspace) -> None:
    """Past 31 nested subgraphs protobuf's parser stops ('Exceeded upb_DecodeOptions_MaxDepth'), and every command
    said 'not an ONNX model (DecodeError: ...)' of a model onnx wrote; now it says how deep the subgraphs go and
    the parser's limit. A model nested 30 deep reads."""
    ws.model.write_bytes(_nested_ifs(40))
    before = ws.snapshot()
    result = ws.run("inspect", ws.model)
    assert_refused(ws, before, result, 3, "too deeply nested: subgraphs (If branches, Loop bodies) 40 levels deep",
                   "protobuf's parser stops at 100 message levels")  # fmt: skip
    ws.model.write_bytes(_nested_ifs(30))
    assert len(onnx.load(str(ws.model)).graph.node) == 1


# --- list files joined by commas ----------------------------------------------------------------------------------


def test_list_files_joined_by_commas_are_named(ws: Workspace) -> None:
    """'-l a.txt,b.txt' (as some users join qairt's list files) was 'a.txt,b.txt: input_list not found', though
    both files exist; now the error says a list is one file and how to join them. A name holding a comma that is
    one file, or a part that does not exist, gets no such hint."""
    other = ws.root / "b.txt"
    other.write_bytes(ws.listing.read_bytes())
    joined = f"{ws.listing},{other}"
    before = ws.snapshot()
    result = ws.quantize("-o", ws.out, "--eval_list", joined)
    assert_refused(ws, before, result, 4, f"{joined}: eval_list not found", "eval_list takes one file",
                   f"2 files joined by commas: join them into one (cat {ws.listing} {other} > {ws.root}/joined.txt)")  # fmt: skip
    result = ws.run("quantize", "-i", ws.model, "-l", f"{ws.listing},missing.txt", "-o", ws.out)
    assert_refused(ws, before, result, 4, "input_list not found")
    assert "commas" not in result.stderr


# --- Resize 11's tf_half_pixel_for_nn, upgraded --------------------------------------------------------------------


def _resize11(nearest_mode: str | None, scales: list[float] | None, sizes: list[int] | None = None,
              mode: str = "nearest") -> onnx.ModelProto:  # fmt: skip
    """x [1, 3, 7, 9] -> Resize 11 (tf_half_pixel_for_nn), by scales or by sizes, as tf2onnx writes TF's
    resize_nearest_neighbor(half_pixel_centers=True)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([], np.float32), "roi"),
             numpy_helper.from_array(np.array(scales or [], np.float32), "scales")]  # fmt: skip
    inputs = ["x", "roi", "scales"]
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        inputs.append("sizes")
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_half_pixel_for_nn"}
    if nearest_mode is not None:
        attrs["nearest_mode"] = nearest_mode
    graph = helper.make_graph([helper.make_node("Resize", inputs, ["y"], **attrs)], "r",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


@pytest.mark.parametrize(
    ("nearest_mode", "scales", "sizes", "rewritten"),
    [(None, [1, 1, 2, 2], None, True), ("round_prefer_floor", [1, 1, 1.5, 0.75], None, True),
     ("floor", [1, 1, 3, 1.5], None, True), ("floor", [1, 1, 0.6, 2.5], None, True),
     ("floor", None, [1, 3, 12, 5], True), ("round_prefer_floor", None, [1, 3, 4, 20], True),
     ("ceil", [1, 1, 1.5, 0.75], None, False), ("round_prefer_ceil", [1, 1, 2.5, 1.3], None, False)],
)  # fmt: skip
def test_resize11_tf_half_pixel_for_nn_is_written_as_opset_13_means_it(
    tmp_path: Path, nearest_mode: str | None, scales: list | None, sizes: list | None, rewritten: bool
) -> None:
    """convert's upgrade to opset 13 kept Resize 11's coordinate_transformation_mode tf_half_pixel_for_nn, which 13
    dropped from the spec (onnxruntime still runs it; other runtimes need not). It is half_pixel's coordinate + 0.5,
    so a nearest Resize of the default or floor nearest_mode becomes half_pixel with ceil or round_prefer_ceil:
    the same pixels in onnxruntime, exactly. The two modes no opset-13 mode can say are kept, and a warning says so."""
    import numpy as np
    import onnxruntime as ort

    source, out = tmp_path / "old.onnx", tmp_path / "new.onnx"
    source.write_bytes(_resize11(nearest_mode, scales, sizes).SerializeToString())
    result = Workspace(tmp_path).run("convert", "-i", source, "-o", out)
    assert result.exit_code == 0, result.stderr
    converted = onnx.load(out)
    assert converted.opset_import[0].version >= 13
    modes = {a.name: a.s.decode() for n in converted.graph.node for a in n.attribute if a.type == onnx.AttributeProto.STRING}
    assert (modes["coordinate_transformation_mode"] == "half_pixel") == rewritten, modes
    assert ("keeps coordinate_transformation_mode tf_half_pixel_for_nn" in result.stderr) != rewritten
    x = {"x": np.random.default_rng(0).normal(size=(1, 3, 7, 9)).astype(np.float32)}
    want, got = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, x)[0] for p in (source, out))
    np.testing.assert_array_equal(got, want)


def test_the_joined_list_hint_empties_no_file(ws: Workspace) -> None:
    """The hint's 'cat a.txt joined.txt > joined.txt', where joined.txt is one of the lists (a hint followed
    before), would empty it; and a name with a space was two words to the shell (review of e6ee59a)."""
    first, spaced = ws.root / "joined.txt", ws.root / "my list.txt"
    first.write_bytes(ws.listing.read_bytes())
    spaced.write_bytes(ws.listing.read_bytes())
    result = ws.run("quantize", "-i", ws.model, "-l", f"{first},{spaced}", "-o", ws.out)
    assert result.exit_code == 4, result.output
    assert f"(cat {first} '{spaced}' > {ws.root}/joined1.txt)" in " ".join(result.stderr.split()), result.stderr


# --- encodings made for another model's inputs ---------------------------------------------------------------------


def test_an_activation_override_far_wider_than_its_data_is_warned_of(ws: Workspace) -> None:
    """An encodings file made where the input was fed [0, 255], given where it is fed [0, 1] (here: x's range 100x
    its values'), quantized x on 1 bit of its 8 with exit 0 and no warning (output 11.3 dB, over the 10 dB quality
    warning). Now a warning names the override, its span against the calibrated one, and the bits it leaves unused.
    The file quantize wrote, given back, warns of nothing."""
    import json

    first = ws.quantize("-o", ws.out)
    assert first.exit_code == 0, first.stderr
    written = ws.out.with_suffix(".encodings.json")
    again = ws.quantize("-o", ws.root / "again" / "q.onnx", "-q", written)
    assert again.exit_code == 0 and "go unused" not in again.stderr, again.stderr
    doc = json.loads(written.read_text())
    doc["activation_encodings"]["x"][0].update(min=-100.0, max=100.0, scale=200 / 255, offset=-128)
    wide = ws.root / "wide.json"
    wide.write_text(json.dumps(doc))
    result = ws.quantize("-o", ws.root / "wide" / "q.onnx", "-q", wide)
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "go unused" in line]
    assert len(warned) == 1 and "override for 'x' spans [-100.392, 99.6078]" in warned[0], result.stderr
    assert "of its 8 bits go unused" in warned[0]


# --- export of a model onnxruntime quantized ------------------------------------------------------------------------


def test_encodings_exported_from_an_onnxruntime_model_name_the_float_models_weights(tmp_path: Path) -> None:
    """onnxruntime's quantize_static stores a weight W as 'W_quantized', dequantized into 'W_DequantizeLinear_Output';
    export (and convert's import) named the float weight after that output, so the encodings file export wrote named
    'W_DequantizeLinear_Output', which the float model has not, and 'quantize -i float.onnx -q that file' was refused
    ("names tensor 'FW_DequantizeLinear_Output', which the graph does not have"). Now the weight is W again: the file
    quantizes the float model, on onnxruntime's weight grids."""
    import json

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.normal(0, 0.1, (5, 256)).astype(np.float32), "FW")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "FW"], ["y"], transB=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], weights)  # fmt: skip
    ws = make_workspace(tmp_path)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), ws.model)
    feeds = iter([{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quantized = tmp_path / "ort.onnx"
    quantize_static(str(ws.model), str(quantized), Reader(), quant_format=QuantFormat.QDQ)
    assert ws.run("export", "-i", quantized, "-o", tmp_path / "ex", "--format", "encodings").exit_code == 0
    exported = tmp_path / "ex" / "ort.encodings.json"
    params = json.loads(exported.read_text())["param_encodings"]
    assert {"W", "FW"} <= set(params), sorted(params)
    result = ws.quantize("-o", ws.out, "-q", exported)
    assert result.exit_code == 0, result.stderr
    written = json.loads(ws.out.with_suffix(".encodings.json").read_text())["param_encodings"]
    assert written["W"][0]["scale"] == pytest.approx(params["W"][0]["scale"], rel=1e-6)


# --- opset 6's broadcast along an axis, upgraded -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "b_shape", "as_input"),
    [("Add", [3], False), ("Mul", [3, 4], False), ("Sub", [3], True)],
    ids=["add-per-channel", "mul-2d-failed-assertion", "sub-computed-b"],
)
def test_an_opset6_broadcast_along_an_axis_keeps_its_meaning(tmp_path: Path, op: str, b_shape: list, as_input: bool) -> None:
    """Opset 6's Add(x [1, 3, 4, 4], b [3], broadcast=1, axis=1) adds b per channel (caffe2-era exports: the ONNX
    zoo's opset 3-6 models). onnx's version converter reshaped b to [3, 1, 1, 1], so the converted model added along
    a new axis 0 and returned y [3, 3, 4, 4], exit 0; a b [3, 4] at axis 1 failed its assertion ('Dimension 1 of input
    2 does not match dimension 1 of input 1'). b is now unsqueezed to end where x ends and the axis dropped before
    the upgrade: the same values as numpy computes with b aligned at axis 1 (onnxruntime runs no opset-6 Add)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    b = np.arange(1, 1 + int(np.prod(b_shape)), dtype=np.float32).reshape(b_shape)
    nodes = [helper.make_node(op, ["x", "b"], ["y"], broadcast=1, axis=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
              helper.make_tensor_value_info("b" if not as_input else "b_in", TensorProto.FLOAT, b_shape)]  # fmt: skip
    if as_input:  # b computed from an input: the converter sees no initializer to reshape
        nodes.insert(0, helper.make_node("Relu", ["b_in"], ["b"]))
    graph = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [] if as_input else [numpy_helper.from_array(b, "b")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3  # which lists an initializer among the inputs, as b is
    source, out = tmp_path / "old.onnx", tmp_path / "new.onnx"
    onnx.save(model, source)
    result = Workspace(tmp_path).run("convert", "-i", source, "-o", out)
    assert result.exit_code == 0, result.stderr
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    feeds = {"x": x, **({"b_in": b} if as_input else {})}
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    aligned = b.reshape(1, *b_shape, *[1] * (3 - len(b_shape)))
    want = {"Add": x + aligned, "Mul": x * aligned, "Sub": x - aligned}[op]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)

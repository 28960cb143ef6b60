"""Round 19 (helper h-hostile19): probed on an installed wheel: quantized models other tools wrote, inspected
against the float model they came from; --reference pairs that do not match; convert's options on odd graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_env import Workspace, assert_refused, make_workspace, qtool_process


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


def _ort_quantized(ws: Workspace, how: str) -> Path:
    """The workspace's model (batch N, as exporters write it) quantized by onnxruntime, batch N kept."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    out = ws.root / "ort" / f"{how}.onnx"
    out.parent.mkdir()
    if how == "dynamic":
        quantize_dynamic(str(ws.model), str(out))
        return out
    feeds = iter([{"x": np.random.default_rng(i).normal(size=(1, 3, 8, 8)).astype(np.float32)} for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    form = QuantFormat.QDQ if how == "qdq" else QuantFormat.QOperator
    quantize_static(str(ws.model), str(out), Reader(), quant_format=form)
    return out


# --- inspect --reference on a pair as shipped ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["qdq", "qoperator", "dynamic"])
def test_a_pair_onnxruntime_quantized_is_compared_at_batch_one(ws: Workspace, how: str) -> None:
    """onnxruntime's quantize_static (QDQ or QOperator) or quantize_dynamic keeps the float model's batch N, and
    'qtool inspect ort.onnx --reference model.onnx -l list.txt' on the pair as shipped was refused as "input 'x' has
    dynamic dim 0 (N) (run `qtool convert --input_dim x ...` to fix it)", naming neither file, whichever the user
    converted next. The float model's inputs are read as convert fixes them, a dynamic batch 1, as quantize reads a
    float model as shipped; the comparison is the one against the float model convert wrote."""
    quantized = _ort_quantized(ws, how)
    result = ws.run("inspect", quantized, "--reference", ws.model, "-l", ws.listing, "--json")
    assert result.exit_code == 0, result.stderr
    shipped = json.loads(result.stdout)
    converted = ws.root / "conv" / "model.onnx"
    assert ws.run("convert", "-i", ws.model, "-o", converted).exit_code == 0
    result = ws.run("inspect", quantized, "--reference", converted, "-l", ws.listing, "--json")
    assert result.exit_code == 0, result.stderr
    key = "outputs (float vs quantized)"
    assert shipped["compared samples"] == 4
    assert shipped[key] == json.loads(result.stdout)[key]


def test_a_reference_with_a_dynamic_dim_past_the_batch_is_named(ws: Workspace) -> None:
    """A dim convert cannot fix alone is refused naming the reference, and says to compare with convert's model."""
    ws.model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 13]>
        g (float[N,3,H,8] x) => (float[N,3,H,8] y) { y = Relu (x) }""").SerializeToString())
    quantized = ws.root / "relu.onnx"
    quantized.write_bytes(ws.model.read_bytes())
    before = ws.snapshot()
    result = ws.run("inspect", quantized, "--reference", ws.model, "-l", ws.listing)
    assert_refused(ws, before, result, 3, f"{ws.model}: input 'x' dim 2 (H) is dynamic",
                   "compare with the float model `qtool convert` writes from it: set it with --input_dim x 1,3,N,8")  # fmt: skip


# --- inspect --reference naming another model with the same names -------------------------------------------------


def _other_head(classes: int, argmax: bool = False) -> onnx.ModelProto:
    """A float model taking x [1, 3, 8, 8] and giving y, as the workspace's does: another head of the same names."""
    rng = np.random.default_rng(1)
    head = "s = Gemm <transB = 1> (f, W, B)\n y = ArgMax <axis = 1, keepdims = 0> (s)" if argmax else "y = Gemm <transB = 1> (f, W, B)"
    out = "int64[1] y" if argmax else f"float[1,{classes}] y"
    model = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 13]>
        g (float[1,3,8,8] x) => ({out}) {{ f = Flatten (x)
        {head} }}""")  # fmt: skip
    model.graph.initializer.extend([onnx.numpy_helper.from_array(rng.normal(size=(classes, 192)).astype(np.float32), "W"),
                                    onnx.numpy_helper.from_array(np.zeros(classes, np.float32), "B")])  # fmt: skip
    return model


@pytest.mark.parametrize(
    ("classes", "argmax", "wanted"),
    [(10, False, "declares output 'y' [1,10], MODEL [1,5], the sizes each gave on every sample: not MODEL's float model"),
     (5, True, "declares output 'y' int64[1], MODEL float[1,5]: not MODEL's float model")],
    ids=["ten-classes", "argmax"],
)  # fmt: skip
def test_a_reference_whose_output_is_another_models_is_refused(ws: Workspace, classes: int, argmax: bool, wanted: str) -> None:
    """A float model of the same input and output names whose y is [1, 10] (another head: MODEL's is [1, 5]) was
    compared zero-padded, 'y  -0.028  0.008856  179.1  0', exit 0, as if the quantization had failed; one whose y is
    an int64 ArgMax was compared cast ('max_abs_error 185.1'). Both are refused as not MODEL's float model (exit 2),
    a size once the two have run (a float model may declare a stale one, which convert corrects): see the next."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    other = ws.root / "other.onnx"
    onnx.save(_other_head(classes, argmax), other)
    before = ws.snapshot()
    result = ws.run("inspect", ws.out, "--reference", other, "-l", ws.listing)
    assert_refused(ws, before, result, 2, f"{other}: {wanted}")


def test_a_reference_declaring_a_stale_output_size_is_compared(ws: Workspace) -> None:
    """An output declared [1, 7] where the model gives [N, 5] (dims edited by hand, outputs left): convert writes
    [1, 5], and the pair runs alike, so it is compared as the converted model would be."""
    assert ws.quantize("-o", ws.out).exit_code == 0
    model = onnx.load(ws.model)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = 1, 7
    stale = ws.root / "stale.onnx"
    onnx.save(model, stale)
    result = ws.run("inspect", ws.out, "--reference", stale, "-l", ws.listing, "--json")
    assert result.exit_code == 0, result.stderr
    fresh = ws.run("inspect", ws.out, "--reference", ws.model, "-l", ws.listing, "--json")
    key = "outputs (float vs quantized)"
    assert json.loads(result.stdout)[key] == json.loads(fresh.stdout)[key]


# --- old opsets upgraded: what onnx's version converter changes the meaning of -------------------------------------


def _old_opset_model(op: str, opset: int, **attrs: object) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits = ["x"], []
    if "scales" in attrs and opset >= 9:
        inits.append(numpy_helper.from_array(np.array(attrs.pop("scales"), np.float32), "scales"))
        inputs.append("scales")
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = {7: 3, 9: 4, 10: 5}.get(opset, 6)
    return model


@pytest.mark.parametrize(
    ("op", "opset", "attrs"),
    [pytest.param("Resize", 10, {"mode": "linear", "scales": [1, 1, 1.5, 1.5]}, id="resize10-linear"),
     pytest.param("Resize", 10, {"mode": "linear", "scales": [1, 1, 0.5, 0.5]}, id="resize10-linear-shrink"),
     pytest.param("Resize", 10, {"mode": "nearest", "scales": [1, 1, 0.75, 0.75]}, id="resize10-nearest-shrink"),
     # onnxruntime rounds each axis its own way (above where it shrinks): 3.7 off with one nearest_mode for both
     pytest.param("Resize", 10, {"mode": "nearest", "scales": [1, 1, 0.75, 1.5]}, id="resize10-nearest-mixed"),
     pytest.param("Resize", 10, {"mode": "nearest", "scales": [1, 1, 2.5, 0.6]}, id="resize10-nearest-mixed-2"),
     pytest.param("Upsample", 9, {"mode": "linear", "scales": [1, 1, 2.5, 2.5]}, id="upsample9-linear"),
     pytest.param("Upsample", 7, {"mode": "linear", "scales": [1.0, 1.0, 2.0, 2.0]}, id="upsample7-linear"),
     pytest.param("Hardmax", 11, {"axis": 1}, id="hardmax11"),
     pytest.param("Hardmax", 9, {}, id="hardmax9-default-axis")],
)  # fmt: skip
def test_an_old_opsets_resize_and_hardmax_keep_their_meaning(tmp_path: Path, op: str, opset: int, attrs: dict) -> None:
    """convert upgrades to opset 13 with onnx's version converter, which leaves Resize 10's (and Upsample's) coordinates
    to Resize 11's default, half_pixel, where 10 meant 'asymmetric' (x / scale), and calls Hardmax 12 and 13
    compatible, where 12 took the maximum over the input flattened at `axis`: exit 0, and the converted model was
    another function (a bilinear x1.5 upsampling 0.91 off on N(0, 1) values, a nearest x0.75 one 3.7, Hardmax's
    ones elsewhere: 1.0); quantize compares against the converted model, so no figure showed it. Now the same outputs
    as onnxruntime gives on the model as written (graph/old_opset_meaning)."""
    import onnxruntime as ort

    source, out = tmp_path / "old.onnx", tmp_path / "new.onnx"
    source.write_bytes(_old_opset_model(op, opset, **attrs).SerializeToString())
    result = Workspace(tmp_path).run("convert", "-i", source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert onnx.load(out).opset_import[0].version >= 13
    x = {"x": np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)}
    want, got = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, x)[0] for p in (source, out))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6)


def _computed_scales_resize(size: list[float] | None) -> onnx.ModelProto:
    """Resize 10 (nearest) of x [N, 3, 8, 8] by scales the graph computes: size / Shape(x), as tf2onnx writes a resize
    to a size; or, `size` None, [1, 1] joined with an input f, known only from the data."""
    from onnx import TensorProto, helper, numpy_helper

    n = helper.make_node
    if size is None:
        nodes, inputs = [n("Concat", ["ones", "f"], ["s"], axis=0)], [("f", [2])]
        inits = [numpy_helper.from_array(np.ones(2, np.float32), "ones")]
    else:
        nodes, inputs = [n("Shape", ["x"], ["shape"]), n("Cast", ["shape"], ["dims"], to=1), n("Div", ["size", "dims"], ["s"])], []
        inits = [numpy_helper.from_array(np.array(size, np.float32), "size")]
    graph = helper.make_graph([*nodes, n("Resize", ["x", "s"], ["y"], mode="nearest")], "computed",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
                               for name, dims in [("x", ["N", 3, 8, 8]), *inputs]],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 5
    return model


@pytest.mark.parametrize("size", [[1, 3, 6, 6], [1, 3, 6, 12], [1, 3, 20, 5], [1, 3, 12, 12], None],
                         ids=["shrink", "mixed", "mixed-2", "grow", "from-data"])  # fmt: skip
def test_an_old_resize_of_computed_scales_rounds_each_axis_as_onnxruntime_does(tmp_path: Path, size: list | None) -> None:
    """Resize 10's nearest pixel is below x / scale where that axis' scale grows, above where it shrinks; scales the
    graph computes (from a Shape) were taken to grow: a resize of 8x8 to 6x6 came out 3.67 from onnxruntime on the
    model as written, exit 0. Where convert folds them, one Resize is left as with constant scales; from the data,
    Min(s, 1) and Max(s, 1) give the two halves theirs, and quantize leaves them float (no grid rounds a scale)."""
    import onnxruntime as ort

    source, out = tmp_path / "old.onnx", tmp_path / "new.onnx"
    source.write_bytes(_computed_scales_resize(size).SerializeToString())
    assert Workspace(tmp_path).run("convert", "-i", source, "-o", out).exit_code == 0
    resizes = [node for node in onnx.load(out).graph.node if node.op_type == "Resize"]
    assert len(resizes) == (2 if size is None or size == [1, 3, 6, 12] or size == [1, 3, 20, 5] else 1)
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    for f in ([0.75, 0.75], [0.75, 1.5], [2.5, 0.6], [1.5, 1.5]) if size is None else ([],):
        feed = {"x": x, **({"f": np.array(f, np.float32)} if f else {})}
        want, got = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, feed)[0] for p in (source, out))
        np.testing.assert_array_equal(got, want)
    if size is None:
        lines = []
        for i in range(4):
            np.save(tmp_path / f"x{i}.npy", x + i), np.save(tmp_path / f"f{i}.npy", np.array([0.75, 0.75], np.float32))
            lines.append(f"x:={tmp_path / f'x{i}.npy'} f:={tmp_path / f'f{i}.npy'}")
        (tmp_path / "l.txt").write_text("\n".join(lines) + "\n")
        assert Workspace(tmp_path).run("quantize", "-i", out, "-l", tmp_path / "l.txt", "-o", tmp_path / "q.onnx").exit_code == 0
        quantized = {node.input[0] for node in onnx.load(tmp_path / "q.onnx").graph.node if node.op_type == "QuantizeLinear"}
        assert not quantized & {"s", *(r.input[2] for r in resizes)}


# --- inspect --reference listing its outputs in another order -----------------------------------------------------


def _two_outputs(order: tuple[str, ...]) -> onnx.ModelProto:
    """y = Relu(c), c = Conv(x): both outputs, listed in `order`."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 8, 8]) for name in order]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, [weight])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("quantized", [("y", "c"), ("y",)], ids=["both", "one"])
def test_a_reference_listing_its_outputs_in_another_order_is_compared_by_name(ws: Workspace, quantized: tuple) -> None:
    """The float model with outputs [c, y], MODEL quantized from it as [y, c]: inspect kept the float outputs in the
    reference's order and compared them in MODEL's, y with c: 'y 2.944 dB, c -0.123', exit 0, and a far-from-float
    finding blaming the quantization; with MODEL giving y alone it was 'qtool: internal error' (zip of 2 and 1). The
    float outputs are now taken by MODEL's names: the figures of the pair in one order."""
    onnx.save(_two_outputs(quantized), ws.model)
    assert ws.quantize("-o", ws.out).exit_code == 0
    swapped, same = ws.root / "swapped.onnx", ws.root / "same.onnx"
    onnx.save(_two_outputs(("c", "y")), swapped)
    onnx.save(_two_outputs(quantized), same)
    key = "outputs (float vs quantized)"
    figures = []
    for reference in (swapped, same):
        result = ws.run("inspect", ws.out, "--reference", reference, "-l", ws.listing, "--json")
        assert result.exit_code == 0, result.stderr
        figures.append(json.loads(result.stdout)[key])
    assert figures[0] == figures[1]
    assert all(row["sqnr_db"] > 30 for row in figures[0])


# --- one file spelled two ways in input lists ----------------------------------------------------------------------


def test_an_eval_list_naming_the_calibration_files_otherwise_is_not_held_out(ws: Workspace, monkeypatch) -> None:
    """--input_list with absolute paths, --eval_list naming the same files relative to the current folder
    ('raw/000.raw'): the overlap was found by the paths as resolved, so no warning, and the report's figures passed as
    held out. Files are now told apart by device and inode: 'eval.txt: 2 of the 2 samples it is judged on are
    --input_list's too'."""
    monkeypatch.chdir(ws.root)
    files = [Path(line) for line in ws.listing.read_text().split()]
    eval_list = ws.root / "eval.txt"
    eval_list.write_text("".join(f"{p.relative_to(ws.root)}\n" for p in files[:2]))
    result = ws.quantize("-o", ws.out, "--eval_list", eval_list)
    assert result.exit_code == 0, result.stderr
    assert f"{eval_list}: 2 of the 2 samples it is judged on are --input_list's too" in result.stderr


def test_a_list_naming_one_file_by_a_link_and_by_its_path_repeats_it(ws: Workspace) -> None:
    """The same four files by their paths and through a symlinked folder: counted as eight distinct samples, so auto's
    held-out half held files its calibration half read and no repeat was warned of; now 'names the files line 1
    named (4 line(s) repeat an earlier one)'."""
    files = [Path(line) for line in ws.listing.read_text().split()]
    (ws.root / "link").symlink_to(ws.root / "raw")
    doubled = ws.root / "doubled.txt"
    doubled.write_text("".join(f"{p}\n" for p in files) + "".join(f"{ws.root / 'link' / p.name}\n" for p in files))
    result = ws.run("quantize", "-i", ws.model, "-l", doubled, "-o", ws.out)
    assert result.exit_code == 0, result.stderr
    assert f"{doubled}:5: names the files line 1 named (4 line(s) repeat an earlier one)" in result.stderr


def test_a_list_saved_as_utf16_says_so(ws: Workspace) -> None:
    """A list saved by Notepad as 'Unicode', or by Windows PowerShell 5's '>' (UTF-16 with a byte-order mark), was
    refused as 'input_list is not UTF-8 text (byte 0)', which names no cause a user can see in an editor."""
    ws.listing.write_bytes(ws.listing.read_text().replace("\n", "\r\n").encode("utf-16"))
    before = ws.snapshot()
    assert_refused(ws, before, ws.quantize("-o", ws.out), 4, f"{ws.listing}: input_list is not UTF-8 text (byte 0) "
                   "(it is UTF-16 (its byte-order mark): save it as UTF-8)")  # fmt: skip


@pytest.mark.parametrize("how", ["qdq", "qoperator", "dynamic"])
def test_a_model_onnxruntime_quantized_is_inspected_with_a_list_at_batch_one(ws: Workspace, how: str) -> None:
    """'qtool inspect ort.onnx -l list.txt' on onnxruntime's quantized model of batch N was refused, 'input 'x' has
    dynamic dim 0 (N) (run `qtool convert --input_dim x ...` to fix it)', and convert would have turned it back into
    float; its data lints now run at batch 1, as convert reads a dynamic batch."""
    result = ws.run("inspect", _ort_quantized(ws, how), "-l", ws.listing, "--json")
    assert result.exit_code == 0, result.stderr
    assert "dynamic-shape" in result.stdout


def test_a_kernels_own_onnxruntime_warning_stays_off_stderr(tmp_path: Path) -> None:
    """A Resize of opset 11 with tf2onnx's 'tf_half_pixel_for_nn', upgraded to 13 (which onnxruntime still runs),
    printed onnxruntime's '[W:onnxruntime:Default, upsamplebase.h:252 UpsampleBase] `tf_half_pixel_for_nn` is
    deprecated since opset 13' in colour over convert's report: the sessions' log level did not reach the default
    logger a kernel writes to (runtime.session)."""
    from onnx import TensorProto, helper, numpy_helper

    scales = [numpy_helper.from_array(np.array([], np.float32), "roi"),
              numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], np.float32), "scales")]  # fmt: skip
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", nearest_mode="floor",
                            coordinate_transformation_mode="tf_half_pixel_for_nn")  # fmt: skip
    graph = helper.make_graph([node], "tf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], scales)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, tmp_path / "tf.onnx")
    result = qtool_process("convert", "-i", tmp_path / "tf.onnx", "-o", tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_an_evaluation_sample_holding_inf_is_named(ws: Workspace) -> None:
    """An --eval_list sample holding inf (calibration's were finite): the float model's output is inf, the quantized
    model's grid clips it, and the report read 'y  -inf  nan  inf' under a quality warning that suggested per-channel
    grids, naming no sample (NaN is refused as it is read; inf is a mask's value). The sample is now named."""
    files = [Path(line) for line in ws.listing.read_text().split()]
    loud = np.fromfile(files[0], np.float32)
    loud[7] = np.inf
    (ws.root / "loud.raw").write_bytes(loud.tobytes())
    eval_list = ws.root / "eval.txt"
    eval_list.write_text(f"{files[1]}\n{ws.root / 'loud.raw'}\n")
    result = ws.quantize("-o", ws.out, "--eval_list", eval_list)
    assert result.exit_code == 0, result.stderr
    assert f"{eval_list}:2: input 'x' holds inf, which makes the figures below not finite" in result.stderr

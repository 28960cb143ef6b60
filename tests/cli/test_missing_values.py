"""NaN is a missing value where every reader of an input says so: scikit-learn's and LightGBM's exported pipelines
(an Imputer before the network, tree ensembles) take rows with gaps, and quantize refused each such file as broken
data ('contains NaN values'), so a model fed as it is fed in use could not be quantized (atspm-detector's
LightGBM decoders: 20 of 136 rows). An input a float op reads keeps the refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli, write_feeds
from onnx import TensorProto, helper, numpy_helper


def pipeline(imputed: bool) -> onnx.ModelProto:
    """x [1, 6] -> (Imputer: NaN -> the column means) -> MatMul -> Relu -> MatMul -> y [1, 2]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (6, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 1, (16, 2)).astype(np.float32), "w2")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["f", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]  # fmt: skip
    if imputed:
        nodes.insert(0, helper.make_node("Imputer", ["x"], ["f"], domain="ai.onnx.ml", imputed_value_floats=[0.5] * 6,
                                         replaced_value_float=float("nan")))  # fmt: skip
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["f"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def rows(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.uniform(0, 1, (1, 6)).astype(np.float32)
        x[rng.uniform(size=x.shape) < 0.25] = np.nan
        out.append({"x": x})
    return out


def test_rows_with_gaps_quantize_where_an_imputer_reads_them(tmp_path: Path) -> None:
    model = pipeline(imputed=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    calib = write_feeds(tmp_path, rows(1, 16))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", calib, "-o", tmp_path / "q.onnx",
                      "--act_quantizer_calibration", "min-max", "--apply_algorithms", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    run = lambda m, x: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    held_out = [f["x"] for f in rows(2, 8)]
    ref = np.concatenate([run(model, x) for x in held_out])
    got = np.concatenate([run(quantized, x) for x in held_out])
    assert np.isfinite(got).all() and 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()) > 25


def test_a_gap_in_an_input_a_float_op_reads_is_refused(tmp_path: Path) -> None:
    onnx.save(pipeline(imputed=False), str(tmp_path / "m.onnx"))
    calib = write_feeds(tmp_path, rows(1, 16))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", calib, "-o", tmp_path / "q.onnx"])
    assert result.exit_code != 0 and "contains NaN values" in result.output
    assert not (tmp_path / "q.onnx").exists()


def test_a_gap_an_imputer_does_not_replace_is_refused(tmp_path: Path) -> None:
    """An Imputer replacing -1 (scikit-learn's SimpleImputer(missing_values=-1)) passes NaN on to the MatMul: the
    file is refused by name, as with no Imputer (3cca0bb let it through to 'tensor 'r' has NaN values')."""
    model = pipeline(imputed=True)
    next(a for a in model.graph.node[0].attribute if a.name == "replaced_value_float").f = -1.0
    onnx.save(model, str(tmp_path / "m.onnx"))
    calib = write_feeds(tmp_path, rows(1, 16))
    result = run_cli(["quantize", "-i", tmp_path / "m.onnx", "-l", calib, "-o", tmp_path / "q.onnx"])
    assert result.exit_code != 0 and "x0.raw contains NaN values" in result.output, result.output
    assert not (tmp_path / "q.onnx").exists()

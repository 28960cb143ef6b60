"""A LayerNorm written op by op keeps its statistics float (quant/normalization.py): quantized, the variance
E[x²] − E[x]² and its inverse square root took Google's Magika (jax2tf) to −2.6 dB; and a tensor raised to
float around them needs no convert back to 8 bits in front of the reduction that reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli
from norm_models import flax_layernorm_nodes
from onnx import TensorProto, helper, numpy_helper

from qtool.inspect.compare import compare_outputs


def _model(tmp_path: Path) -> tuple[Path, Path]:
    nodes, arrays = flax_layernorm_nodes()
    nodes.append(helper.make_node("MatMul", ["y", "w"], ["out"]))
    arrays["w"] = np.random.default_rng(1).normal(0, 0.3, (16, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, "flax_ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 64, 8])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = tmp_path / "ln.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(2)
    lines = []
    for i in range(8):  # columns of different spread and offset
        x = rng.normal(0, 1, (1, 64, 16)) * np.linspace(0.5, 2, 16) + rng.normal(0, 0.5, (1, 1, 16))
        (tmp_path / f"{i}.raw").write_bytes(x.astype(np.float32).tobytes())
        lines.append(str(tmp_path / f"{i}.raw"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return path, tmp_path / "list.txt"


def _sqnr(reference: Path, quantized: Path, listing: Path) -> float:
    feeds = [{"x": np.fromfile(p, np.float32).reshape(1, 64, 16)} for p in listing.read_text().split()]
    return compare_outputs(onnx.load(str(reference)), onnx.load(str(quantized)), feeds)["out"].sqnr_db


def test_the_statistics_stay_float_and_the_layer_quantizes(tmp_path: Path) -> None:
    model, listing = _model(tmp_path)
    out = tmp_path / "q.onnx"
    result = run_cli(["quantize", "-i", model, "--input_list", listing, "-o", out, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["float statistics"].startswith("14 ")  # the report says how many
    acts = json.loads(out.with_suffix(".encodings.json").read_text())["activation_encodings"]
    assert not {"var", "rstd", "mean", "gain", "sq"} & set(acts)  # x², which ex2 alone reads, too
    params = json.loads(out.with_suffix(".encodings.json").read_text())["param_encodings"]
    assert "eps" not in params  # added to a float variance: no 8-bit grid to meet
    assert _sqnr(model, out, listing) > 25


def test_every_activation_float_gives_the_float_model_back(tmp_path: Path) -> None:
    """The mixed search's last resort: on 5d62ff0 ReduceSum's input got a convert to 8 bits (its statistic
    output had no encoding, so ReduceSum counted as an integer op) and this stayed at ~7 dB on Magika."""
    model, listing = _model(tmp_path)
    names = [o for n in onnx.load(str(model)).graph.node for o in n.output] + ["x"]
    floats = {"version": "0.6.1", "activation_encodings": {t: [{"bitwidth": 32, "dtype": "float"}] for t in names},
              "param_encodings": {"w": [{"bitwidth": 32, "dtype": "float"}]}}  # fmt: skip
    overrides = tmp_path / "floats.json"
    overrides.write_text(json.dumps(floats))
    out = tmp_path / "q.onnx"
    args = ["quantize", "-i", model, "--input_list", listing, "-o", out, "--quantization_overrides", overrides]
    assert run_cli(args).exit_code == 0
    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    feed = {"x": np.fromfile(listing.read_text().split()[0], np.float32).reshape(1, 64, 16)}
    want, got = (ort.InferenceSession(str(p)).run(None, feed)[0] for p in (model, out))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_layer_report_sends_a_float_statistics_error_upstream(tmp_path: Path) -> None:
    """A float statistic adds no rounding of its own, only its inputs' error magnified: its fix is theirs
    (on cf5fa53 the report said "keep this Reciprocal in float" of a Reciprocal that was float)."""
    from qtool.inspect import layers

    model, listing = _model(tmp_path)
    out = tmp_path / "q.onnx"
    assert run_cli(["quantize", "-i", model, "--input_list", listing, "-o", out]).exit_code == 0
    feeds = [{"x": np.fromfile(p, np.float32).reshape(1, 64, 16)} for p in listing.read_text().split()]
    reference, quantized = onnx.load(str(model)), onnx.load(str(out))
    rows = {r.tensor: r for r in layers.rank(layers.stream(reference, quantized, iter(feeds)), reference, quantized)}
    assert rows["rstd"].local_db is None
    assert rows["rstd"].fix.startswith("float already") and "--act_16bit_tensors" in rows["rstd"].fix
    assert "rstd" not in rows["rstd"].fix.split("--act_16bit_tensors")[-1]

"""Shared test helpers: tiny models written in ONNX text, sample writers, and a CLI runner.

Test modules import the plain helpers (`from conftest import ...`); pytest puts this folder on
sys.path (rootdir-relative "prepend" import mode). Every factory returns a fresh ModelProto
whose weights come from a fixed seed, so runs are deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings
from onnx import TensorProto, helper, numpy_helper

from qtool.cli import main

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

# Bounded, derandomized hypothesis runs keep the whole suite fast and reproducible.
settings.register_profile(
    "qtool",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("qtool")


def _with_initializers(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    for name, value in arrays.items():
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_bn_model(*, bn_is_output: bool = False) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> BatchNormalization -> Relu -> Flatten -> Gemm -> y[N,5], dynamic batch N.

    With `bn_is_output` the graph is Conv -> BatchNormalization and the BN output `y` is the graph
    output, so folding must keep that tensor name on the fused Conv.
    """
    rng = np.random.default_rng(0)
    arrays = {
        "W": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "B": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, (4,)).astype(np.float32),
        "beta": rng.normal(0, 0.2, (4,)).astype(np.float32),
        "mean": rng.normal(0, 0.2, (4,)).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, (4,)).astype(np.float32),
    }
    if bn_is_output:
        text = """
        <ir_version: 8, opset_import: ["" : 13]>
        conv_bn_out (float[N,3,8,8] x) => (float[N,4,8,8] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
            y = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)
        }
        """
    else:
        arrays["FW"] = rng.normal(0, 0.1, (5, 256)).astype(np.float32)
        arrays["FB"] = rng.normal(0, 0.1, (5,)).astype(np.float32)
        text = """
        <ir_version: 8, opset_import: ["" : 13]>
        conv_bn (float[N,3,8,8] x) => (float[N,5] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, W, B)
            b = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)
            r = Relu (b)
            f = Flatten (r)
            y = Gemm <transB = 1> (f, FW, FB)
        }
        """
    return _with_initializers(onnx.parser.parse_model(text), arrays)


def two_input_model() -> onnx.ModelProto:
    """x float[1,4] and ids int64[1,3] (token ids < 10) -> Gather/ReduceMean/Add/MatMul -> y float[1,2]."""
    rng = np.random.default_rng(1)
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    two_inputs (float[1,4] x, int64[1,3] ids) => (float[1,2] y) {
        e = Gather <axis = 0> (E, ids)
        m = ReduceMean <axes = [1], keepdims = 0> (e)
        s = Add (x, m)
        y = MatMul (s, W)
    }
    """
    arrays = {
        "E": rng.normal(0, 1, (10, 4)).astype(np.float32),
        "W": rng.normal(0, 0.5, (4, 2)).astype(np.float32),
    }
    return _with_initializers(onnx.parser.parse_model(text), arrays)


def constant_weights_model() -> onnx.ModelProto:
    """Opset 11, weights held in Constant nodes (as many real exports do): x[1,3,4,4] -> Conv -> Relu."""
    text = """
    <ir_version: 6, opset_import: ["" : 11]>
    consts (float[1,3,4,4] x) => (float[1,2,4,4] y) {
        W = Constant <value = float[2,3,1,1] {0.5, -0.25, 1.0, 0.75, 0.1, -1.0}> ()
        B = Constant <value = float[2] {0.1, -0.2}> ()
        c = Conv (x, W, B)
        y = Relu (c)
    }
    """
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def dropout_model() -> onnx.ModelProto:
    """x[1,4] -> Identity -> Relu -> Dropout (inference) -> Identity -> Sigmoid -> y."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    dropouts (float[1,4] x) => (float[1,4] y) {
        a = Identity (x)
        r = Relu (a)
        d = Dropout (r)
        i = Identity (d)
        y = Sigmoid (i)
    }
    """
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def dynamic_dim_model() -> onnx.ModelProto:
    """x[N,K] with a dynamic non-batch dim K that only --input_dim can fix."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    dynamic (float[N,K] x) => (float[N,K] y) {
        y = Relu (x)
    }
    """
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def log_spectrum_model(width: int) -> onnx.ModelProto:
    """basic-pitch's normalised log power spectrum: Log(x * x + 1e-10), then (l - min) / (max - min). Its epsilon is
    what float16 (0) and an 8-bit grid (0) lose, and Log(0) - min(...) is NaN."""
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    spectrum (float[1,{width}] x) => (float[1,{width}] y) {{
        p = Mul (x, x)
        q = Add (p, eps)
        l = Log (q)
        lo = ReduceMin <keepdims = 1> (l)
        hi = ReduceMax <keepdims = 1> (l)
        s = Sub (l, lo)
        r = Sub (hi, lo)
        y = Div (s, r)
    }}
    """)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1e-10, np.float32), "eps"))
    return model


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def input_shapes(model: onnx.ModelProto) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, shape) of each data input; dynamic dims are taken as 1."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor_type = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim)
        out.append((value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)), shape))
    return out


def write_feeds(root: Path, feeds: list[dict[str, np.ndarray]], list_name: str = "list.txt") -> Path:
    """Each feed's arrays as raw files under `root` (the bytes of their own dtype) and an input_list of
    `name:=path` lines, one a feed; returns the list's path."""
    lines = []
    for i, feed in enumerate(feeds):
        for name, value in feed.items():
            (root / f"{name}{i}.raw").write_bytes(value.tobytes())
        lines.append(" ".join(f"{name}:={root / f'{name}{i}.raw'}" for name in feed))
    (root / list_name).write_text("\n".join(lines) + "\n")
    return root / list_name


def write_samples(
    tmp_path: Path,
    model: onnx.ModelProto,
    n: int,
    *,
    named: bool | None = None,
    seed: int = 0,
    int_high: int = 10,
    list_name: str = "input_list.txt",
) -> Path:
    """Write `n` samples as float32 .raw files (integer inputs get whole-number values in
    [0, int_high)) under tmp_path/raw/, and an input_list with absolute paths.

    Lines are `name:=path` pairs when `named` (default: when the model has several inputs).
    Returns the input_list path.
    """
    specs = input_shapes(model)
    named = len(specs) > 1 if named is None else named
    rng = np.random.default_rng(seed)
    folder = tmp_path / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        tokens = []
        for name, dtype, shape in specs:
            if dtype.kind in "iub":
                values = rng.integers(0, int_high, size=shape).astype(np.float32)
            else:
                values = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
            path = folder / f"{i:03d}_{name}.raw"
            path.write_bytes(values.astype("<f4").tobytes())
            tokens.append(f"{name}:={path}" if named else str(path))
        lines.append(" ".join(tokens))
    list_path = tmp_path / list_name
    list_path.write_text("\n".join(lines) + "\n")
    return list_path


def run_cli(args: Sequence[object]) -> Result:
    """Invoke `qtool` in-process; exceptions propagate (catch_exceptions=False)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def quantize_model(tmp_path: Path, model: onnx.ModelProto, *flags: str, name: str = "q") -> Path:
    """`model` saved under tmp_path, quantized on 16 write_samples with `flags` (exit 0 asserted): the written model."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / f"{name}.onnx"
    result = run_cli(["quantize", "-i", path, "--input_list", write_samples(tmp_path, model, 16), "-o", out, *flags])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def conv_bn() -> onnx.ModelProto:
    return conv_bn_model()


@functools.cache
def integer_kernels_saturate() -> bool:
    """Whether onnxruntime's u8 x s8 integer kernels saturate on this CPU: x86 without VNNI (AVX2, AVX-512F)
    sums pairs of products in int16 (vpmaddubsw), so 255 x -128 twice reads as -32768. Integer-kernel
    results (QOperator models, --target ort-cpu as deployed) then differ from the QDQ arithmetic far past one
    step, which is the CPU, not qtool (runtime.integer_kernels)."""
    k = 64
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "saturation",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 16])],
        [numpy_helper.from_array(np.full((k, 16), -128, np.int8), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(session.run(None, {"a": np.full((1, k), 255, np.uint8)})[0][0, 0]) != 255 * -128 * k


SATURATING_CPU = "onnxruntime's u8 x s8 integer kernels saturate on this CPU (x86 without VNNI): conftest.py"

"""Small generated models for the inspect tests: each plants one pattern a lint must find, and
`clean()` plants none. All shapes are fixed and all weights come from fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper


def _model(text: str, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in arrays.items():
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(0, 0.3, (8, 4, 3, 3)),
        "B1": rng.normal(0, 0.1, (8,)),
        "W2": rng.normal(0, 0.2, (8, 8, 3, 3)),
        "B2": rng.normal(0, 0.1, (8,)),
        "W3": rng.normal(0, 0.3, (6, 8, 1, 1)),
        "B3": rng.normal(0, 0.1, (6,)),
        "FW": rng.normal(0, 0.3, (6, 3)),
        "FB": rng.normal(0, 0.1, (3,)),
    }


CNN = """
<ir_version: 8, opset_import: ["" : 13]>
cnn (float[1,4,8,8] x) => (float[1,3] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, W2, B2)
    r2 = Relu (c2)
    c3 = Conv (r2, W3, B3)
    r3 = Relu (c3)
    g = GlobalAveragePool (r3)
    f = Flatten (g)
    y = Gemm (f, FW, FB)
}
"""


def clean() -> onnx.ModelProto:
    """x[1,4,8,8] -> 3 x (Conv + Relu) -> GlobalAveragePool -> Flatten -> Gemm -> y[1,3]: no lint fires."""
    return _model(CNN, _conv_weights())


def outlier_channel(scale: float = 50.0) -> onnx.ModelProto:
    """`clean()` with output channel 0 of c2's weight W2 scaled by `scale`: per-tensor fails."""
    arrays = _conv_weights()
    arrays["W2"][0] *= scale
    return _model(CNN, arrays)


def depthwise(with_bn: bool) -> onnx.ModelProto:
    """Conv + BN + Relu, then a depthwise Conv (group 8) with or without its own BN."""
    rng = np.random.default_rng(2)
    arrays = {"W1": rng.normal(0, 0.3, (8, 4, 3, 3)), "DW": rng.normal(0, 0.3, (8, 1, 3, 3))}
    for p in ("a", "d"):
        arrays |= {f"{p}_g": rng.uniform(0.5, 1.5, 8), f"{p}_b": rng.normal(0, 0.1, 8)}
        arrays |= {f"{p}_m": rng.normal(0, 0.1, 8), f"{p}_v": rng.uniform(0.5, 1.5, 8)}
    tail = "d = BatchNormalization (dc, d_g, d_b, d_m, d_v)\n y = Relu (d)" if with_bn else "y = Relu (dc)"
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    dw (float[1,4,8,8] x) => (float[1,8,8,8] y) {{
        c = Conv <pads = [1, 1, 1, 1]> (x, W1)
        a = BatchNormalization (c, a_g, a_b, a_m, a_v)
        r = Relu (a)
        dc = Conv <group = 8, pads = [1, 1, 1, 1]> (r, DW)
        {tail}
    }}
    """
    return _model(text, arrays)


def relu6() -> onnx.ModelProto:
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    relu6 (float[1,4,8,8] x) => (float[1,8,8,8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W1)
        y = Clip (c, lo, hi)
    }
    """
    arrays = {"W1": _conv_weights()["W1"], "lo": np.array(0.0), "hi": np.array(6.0)}
    return _model(text, arrays)


def masked_softmax(op: str = "Add") -> onnx.ModelProto:
    """x[1,4,8] -> MatMul -> Add (or Where) of a -1e9 mask -> Softmax -> y."""
    mask = np.where(np.triu(np.ones((8, 8)), 1) > 0, -1e9, 0.0)[None]
    if op == "Add":
        body, arrays = "m = Add (s, mask)", {"mask": mask}
        header = ""
    else:
        body, arrays = "m = Where (keep, s, neg)", {"neg": np.array(-np.inf)}
        header = ", bool[1,8,8] keep"
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    masked (float[1,8,4] x{header}) => (float[1,8,8] y) {{
        t = Transpose <perm = [0, 2, 1]> (x)
        s = MatMul (x, t)
        {body}
        y = Softmax (m)
    }}
    """
    model = onnx.parser.parse_model(text)
    for name, value in arrays.items():
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def with_op(op: str) -> onnx.ModelProto:
    """x[1,4,8,8] -> Conv -> `op` -> y: for the unsupported-op lint."""
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    one_op (float[1,4,8,8] x) => (float[1,8,8,8] y) {{
        c = Conv <pads = [1, 1, 1, 1]> (x, W1)
        y = {op} (c)
    }}
    """
    return _model(text, {"W1": _conv_weights()["W1"]})


def write_raw_list(tmp_path: Path, arrays: list[np.ndarray], name: str = "list.txt") -> Path:
    """One raw float32 file per array and an input_list naming them (single-input models)."""
    folder = tmp_path / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, array in enumerate(arrays):
        path = folder / f"{name}_{i:03d}.raw"
        path.write_bytes(np.ascontiguousarray(array, dtype="<f4").tobytes())
        lines.append(str(path))
    list_path = tmp_path / name
    list_path.write_text("\n".join(lines) + "\n")
    return list_path


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path

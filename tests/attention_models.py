"""Small attention blocks with the masks real exporters write, and scores with a realistic spread.

    x[1,S,D], attention_mask int64[1,S] -> Q, K, V projections -> scores = Q·Kᵀ·(1/√d) (+ mask) ->
    Softmax -> ·V -> output projection -> y[1,S,D]

Token scales spread from 0.3 to 3, so the scores run from far below a row's maximum to well above
zero and row maxima differ by 40 or more (the case a global "max − 20" clamp ruins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

S, D, HEADS = 16, 32, 2
FINFO_MIN = float(np.finfo(np.float32).min)
MASKS = ("where", "mul_finfo", "mul_1e4", "mul_1e9", "where_inf", "bool_on_scores", "causal_triu", "none")


def _weights(rng: np.random.Generator, score_scale: float = 1.0) -> dict[str, np.ndarray]:
    w = {n: rng.normal(0, 1.6 / np.sqrt(D), (D, D)).astype(np.float32) for n in ("Wq", "Wk", "Wv", "Wo")}
    w["Wq"] *= np.float32(score_scale)
    w["scale"] = np.array(1 / np.sqrt(D // HEADS), np.float32)
    w["heads_shape"] = np.array([1, S, HEADS, D // HEADS], np.int64)
    w["merge_shape"] = np.array([1, S, D], np.int64)
    w["one"] = np.array(1.0, np.float32)
    w["zero"] = np.array(0.0, np.float32)
    w["big_neg"] = np.array(FINFO_MIN, np.float32)
    w["m1e4"] = np.array(-1e4, np.float32)
    w["m1e9"] = np.array(-1e9, np.float32)
    w["neg_inf"] = np.array(-np.inf, np.float32)
    w["axes_12"] = np.array([1, 2], np.int64)
    w["causal"] = np.triu(np.full((S, S), FINFO_MIN, np.float32), k=1)
    return w


VOCAB = 64


def attention_model(mask: str = "where", seed: int = 0, score_scale: float = 1.0, token_ids: bool = False) -> onnx.ModelProto:
    """`score_scale` < 1 shrinks the scores (a randomly initialised model's span well under 20); `token_ids`: the
    input is int64 ids [1, S] looked up in a table [VOCAB, D] (rows scaled 0.3-3), as a text encoder's is."""
    rng = np.random.default_rng(seed)
    w = _weights(rng, score_scale)
    n = helper.make_node
    nodes = []
    if token_ids:
        w["table"] = (rng.normal(0, 1, (VOCAB, D)) * rng.uniform(0.3, 3.0, (VOCAB, 1))).astype(np.float32)
        nodes.append(n("Gather", ["table", "ids"], ["x"]))
    nodes += [
        n("MatMul", ["x", "Wq"], ["q2"]),
        n("MatMul", ["x", "Wk"], ["k2"]),
        n("MatMul", ["x", "Wv"], ["v2"]),
        n("Reshape", ["q2", "heads_shape"], ["q3"]),
        n("Transpose", ["q3"], ["q"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k2", "heads_shape"], ["k3"]),
        n("Transpose", ["k3"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v2", "heads_shape"], ["v3"]),
        n("Transpose", ["v3"], ["v"], perm=[0, 2, 1, 3]),
        n("MatMul", ["q", "kt"], ["qk"]),
        n("Mul", ["qk", "scale"], ["scores"]),
        # the mask as [1, 1, 1, S], broadcast over heads and query rows
        n("Unsqueeze", ["attention_mask", "axes_12"], ["mask4"]),
    ]
    probs_input = "masked"
    if mask in ("where", "where_inf"):
        fill = "big_neg" if mask == "where" else "neg_inf"
        nodes += [
            n("Cast", ["mask4"], ["mask_bool"], to=TensorProto.BOOL),
            n("Where", ["mask_bool", "zero", fill], ["additive"]),
            n("Add", ["scores", "additive"], ["masked"]),
        ]
    elif mask.startswith("mul_"):
        fill = {"mul_finfo": "big_neg", "mul_1e4": "m1e4", "mul_1e9": "m1e9"}[mask]
        nodes += [
            n("Cast", ["mask4"], ["mask_f"], to=TensorProto.FLOAT),
            n("Sub", ["one", "mask_f"], ["inverted"]),
            n("Mul", ["inverted", fill], ["additive"]),
            n("Add", ["scores", "additive"], ["masked"]),
        ]
    elif mask == "bool_on_scores":
        nodes += [
            n("Cast", ["mask4"], ["mask_bool"], to=TensorProto.BOOL),
            n("Where", ["mask_bool", "scores", "neg_inf"], ["masked"]),
        ]
    elif mask == "causal_triu":
        nodes += [n("Add", ["scores", "causal"], ["masked"])]
    else:
        probs_input = "scores"
    nodes += [
        n("Softmax", [probs_input], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["ctx4"]),
        n("Transpose", ["ctx4"], ["ctx3"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx3", "merge_shape"], ["ctx"]),
        n("MatMul", ["ctx", "Wo"], ["y"]),
    ]
    used = {i for node in nodes for i in node.input}
    graph = helper.make_graph(
        nodes,
        f"attention_{mask}",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, S])
            if token_ids
            else helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, D]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, S]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, S, D])],
        [numpy_helper.from_array(v, k) for k, v in w.items() if k in used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_attention_samples(
    folder: Path, n: int, seed: int, name: str = "list.txt", token_ids: bool = False, padded: bool = True
) -> Path:
    """`n` samples: x with token scales 0.3-3 (or token ids), and a mask with 2-8 padded positions at the end
    (all ones unless `padded`)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        scales = rng.uniform(0.3, 3.0, (1, S, 1))
        x = (rng.normal(0, 1, (1, S, D)) * scales).astype(np.float32)
        if token_ids:
            x = rng.integers(0, VOCAB, (1, S)).astype(np.float32)
        mask = np.ones((1, S), np.float32)
        if padded:
            mask[0, S - int(rng.integers(2, 9)) :] = 0
        xp, mp = folder / f"{name}.{i}.x.raw", folder / f"{name}.{i}.m.raw"
        xp.write_bytes(x.tobytes())
        mp.write_bytes(mask.tobytes())
        lines.append(f"{'ids' if token_ids else 'x'}:={xp} attention_mask:={mp}")
    listing = folder / name
    listing.write_text("\n".join(lines) + "\n")
    return listing


def outlier_block_model(seed: int = 0, d: int = 64, ff: int = 128) -> onnx.ModelProto:
    """x[1,S,d] -> LayerNorm (a few γ channels 40-80x the rest, as trained transformers have) ->
    MatMul+bias -> Gelu (Erf form) -> MatMul -> + residual -> LayerNorm -> MatMul -> y[1,S,d]."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, d).astype(np.float32)
    gamma[[3, 17, 40]] *= np.array([40.0, 60.0, 80.0], np.float32)
    w = {
        "g1": gamma,
        "b1": rng.normal(0, 0.1, d).astype(np.float32),
        "w_up": rng.normal(0, 1 / np.sqrt(d), (d, ff)).astype(np.float32),
        "b_up": rng.normal(0, 0.1, ff).astype(np.float32),
        "w_down": rng.normal(0, 1 / np.sqrt(ff), (ff, d)).astype(np.float32),
        "g2": rng.uniform(0.5, 1.5, d).astype(np.float32),
        "b2": rng.normal(0, 0.1, d).astype(np.float32),
        "w_out": rng.normal(0, 1 / np.sqrt(d), (d, d)).astype(np.float32),
        "rsqrt2": np.array(1 / np.sqrt(2), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "g1", "b1"], ["ln1"], axis=-1),
        n("MatMul", ["ln1", "w_up"], ["up_mm"]),
        n("Add", ["up_mm", "b_up"], ["up"]),
        n("Mul", ["up", "rsqrt2"], ["up_s"]),
        n("Erf", ["up_s"], ["erf"]),
        n("Add", ["erf", "one"], ["erf1"]),
        n("Mul", ["up", "erf1"], ["g"]),
        n("Mul", ["g", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w_down"], ["down"]),
        n("Add", ["down", "x"], ["res"]),
        n("LayerNormalization", ["res", "g2", "b2"], ["ln2"], axis=-1),
        n("MatMul", ["ln2", "w_out"], ["y"]),
    ]
    return _block_model(nodes, "outlier_block", w, d, opset=17, ir_version=8)


def _block_model(
    nodes: list[onnx.NodeProto], name: str, weights: dict[str, np.ndarray], d: int, opset: int, ir_version: int
) -> onnx.ModelProto:
    """x[1,S,d] -> `nodes` -> y[1,S,d], nodes named `<op>_<index>`, checked."""
    for i, node in enumerate(nodes):
        node.name = f"{node.op_type}_{i}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, S, d])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def write_block(root: Path, model: onnx.ModelProto) -> tuple[Path, Path, Path]:
    """A block model saved under `root` with 24 calibration and 24 held-out samples: (model, cal, val)."""
    path = root / "m.onnx"
    onnx.save(model, str(path))
    return path, write_block_samples(root / "cal", 24, seed=0), write_block_samples(root / "val", 24, seed=1)


def write_block_samples(folder: Path, n: int, seed: int, d: int = 64, name: str = "list.txt") -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{name}.{i}.raw"
        path.write_bytes(rng.normal(0, 1, (1, S, d)).astype(np.float32).tobytes())
        paths.append(str(path))
    listing = folder / name
    listing.write_text("\n".join(paths) + "\n")
    return listing


def post_ln_model(
    seed: int = 0, d: int = 64, ff: int = 128, outlier_units: tuple[int, ...] = (), rms: bool = False
) -> onnx.ModelProto:
    """A BERT-style post-LN block whose residual stream has outlier channels, as trained encoders do:
    x[1,S,d] -> (x·Wa + ba) + x -> LayerNorm (γ, β 30-60x on three channels) -> h1;
    Gelu(h1·W1 + b1)·W2 + b2 (W2 writing 20x into the same channels) + h1 -> LayerNorm -> ·Wout -> y.
    `outlier_units`: MLP hidden units whose GELU output runs several times above the others' (as one
    unit of each all-MiniLM-L6-v2 MLP does). `rms`: each LayerNorm an RMSNorm written op by op as T5's
    exporter writes it, x · (1 / √(mean(x²) + ε)) · γ (+ β)."""
    rng = np.random.default_rng(seed)
    loud = [5, 21, 50]

    def loud_norm() -> tuple[np.ndarray, np.ndarray]:
        gamma, beta = rng.uniform(0.5, 1.5, d).astype(np.float32), rng.normal(0, 0.1, d).astype(np.float32)
        gamma[loud] *= np.array([30.0, 45.0, 60.0], np.float32)
        beta[loud] += np.array([8.0, -6.0, 10.0], np.float32)
        return gamma, beta

    g1, b1 = loud_norm()
    # the next LayerNorm undoes the outliers (its σ is theirs; a trained one scales the quiet channels back
    # up and the loud ones down), so the quiet channels' few levels on a shared grid are what reaches y
    g2 = rng.uniform(0.5, 1.5, d).astype(np.float32) * 30.0
    g2[loud] = 0.05
    w2 = rng.normal(0, 1 / np.sqrt(ff), (ff, d)).astype(np.float32)
    w2[:, loud] *= 20.0
    w = {
        "wa": rng.normal(0, 1 / np.sqrt(d), (d, d)).astype(np.float32),
        "ba": rng.normal(0, 0.1, d).astype(np.float32),
        "g1": g1,
        "b1": b1,
        "w1": rng.normal(0, 1 / np.sqrt(d) / 8, (d, ff)).astype(np.float32),
        "bias1": rng.normal(0, 0.1, ff).astype(np.float32) + np.isin(np.arange(ff), outlier_units) * np.float32(40.0),
        "w2": w2,
        "bias2": rng.normal(0, 0.1, d).astype(np.float32),
        "g2": g2,
        "b2": rng.normal(0, 0.1, d).astype(np.float32),
        "wout": rng.normal(0, 1 / np.sqrt(d), (d, d)).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wa"], ["attn_mm"]),
        n("Add", ["attn_mm", "ba"], ["attn"]),
        n("Add", ["attn", "x"], ["res1"]),
        n("LayerNormalization", ["res1", "g1", "b1"], ["h1"], axis=-1),
        n("MatMul", ["h1", "w1"], ["up_mm"]),
        n("Add", ["up_mm", "bias1"], ["up"]),
        n("Gelu", ["up"], ["gelu"]),
        n("MatMul", ["gelu", "w2"], ["down_mm"]),
        n("Add", ["down_mm", "bias2"], ["down"]),
        n("Add", ["down", "h1"], ["res2"]),
        n("LayerNormalization", ["res2", "g2", "b2"], ["h2"], axis=-1),
        n("MatMul", ["h2", "wout"], ["y"]),
    ]
    if rms:
        nodes = [m for node in nodes for m in (_rms_norm(node) if node.op_type == "LayerNormalization" else [node])]
        w["one"], w["two"], w["eps"] = np.array(1.0, np.float32), np.array(2.0, np.float32), np.array(1e-6, np.float32)
    return _block_model(nodes, "post_ln_block", w, d, opset=20, ir_version=9)  # opset 20: the standard Gelu


def _rms_norm(norm: onnx.NodeProto) -> list[onnx.NodeProto]:
    (x, gamma, beta), (y,) = norm.input, norm.output
    n, p = helper.make_node, f"{y}_rms_"
    axes = helper.make_tensor(p + "axes", onnx.TensorProto.INT64, [1], [-1])
    return [
        n("Pow", [x, "two"], [p + "square"]),
        n("Constant", [], [p + "axes"], value=axes),
        n("ReduceMean", [p + "square", p + "axes"], [p + "mean"]),
        n("Add", [p + "mean", "eps"], [p + "shifted"]),
        n("Sqrt", [p + "shifted"], [p + "rms"]),
        n("Div", ["one", p + "rms"], [p + "inverse"]),  # torch.rsqrt as T5's exporter writes it
        n("Mul", [x, p + "inverse"], [p + "normalized"]),
        n("Mul", [p + "normalized", gamma], [p + "scaled"]),
        n("Add", [p + "scaled", beta], [y]),
    ]


def mlp_model(seed: int = 0, d: int = 64, ff: int = 256, outlier_units: tuple[int, ...] = (7,)) -> onnx.ModelProto:
    """y = Gelu(x·W1 + b1)·W2 + b2, x[1,S,d], whose `outlier_units` fire ~8x above the other hidden units."""
    rng = np.random.default_rng(seed)
    bias1 = rng.normal(0, 0.1, ff).astype(np.float32)
    bias1[list(outlier_units)] += 40.0
    w = {
        "w1": rng.normal(0, 1 / np.sqrt(d), (d, ff)).astype(np.float32),
        "bias1": bias1,
        "w2": rng.normal(0, 1 / np.sqrt(ff), (ff, d)).astype(np.float32),
        "bias2": rng.normal(0, 0.1, d).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["up_mm"]),
        n("Add", ["up_mm", "bias1"], ["up"]),
        n("Gelu", ["up"], ["gelu"]),
        n("MatMul", ["gelu", "w2"], ["down_mm"]),
        n("Add", ["down_mm", "bias2"], ["y"]),
    ]
    return _block_model(nodes, "mlp", w, d, opset=20, ir_version=9)


def gated_mlp_model(seed: int = 0, d: int = 64, ff: int = 256, outlier_units: tuple[int, ...] = (7, 100)) -> onnx.ModelProto:
    """y = (gelu_new(x·Wg) * x·Wu)·Wd, x[1,S,d], T5 v1.1's gated MLP with its GELU written op by op as the torch
    exporter writes HF's NewGELUActivation: 0.5·h·(1 + tanh(√(2/π)·(h + 0.044715·h³))). `outlier_units` of x·Wu
    run ~40x above the others (flan-t5's wi_1: 315 against a median unit 7.5), so their product does too."""
    rng = np.random.default_rng(seed)
    wu = rng.normal(0, 1 / np.sqrt(d), (d, ff)).astype(np.float32)
    wu[:, list(outlier_units)] *= 40.0
    w = {
        "wg": rng.normal(0, 1 / np.sqrt(d), (d, ff)).astype(np.float32),
        "wu": wu,
        "wd": rng.normal(0, 1 / np.sqrt(ff), (ff, d)).astype(np.float32),
        "half": np.array(0.5, np.float32),
        "three": np.array(3.0, np.float32),
        "cubic": np.array(0.044715, np.float32),
        "root": np.array(np.sqrt(2 / np.pi), np.float32),
        "one": np.array(1.0, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wg"], ["gate"]),
        n("MatMul", ["x", "wu"], ["up"]),
        n("Mul", ["gate", "half"], ["g_half"]),
        n("Pow", ["gate", "three"], ["g_cube"]),
        n("Mul", ["g_cube", "cubic"], ["g_cube_scaled"]),
        n("Add", ["gate", "g_cube_scaled"], ["g_inner"]),
        n("Mul", ["g_inner", "root"], ["g_arg"]),
        n("Tanh", ["g_arg"], ["g_tanh"]),
        n("Add", ["g_tanh", "one"], ["g_one_plus"]),
        n("Mul", ["g_half", "g_one_plus"], ["gelu"]),
        n("Mul", ["gelu", "up"], ["hidden"]),
        n("MatMul", ["hidden", "wd"], ["y"]),
    ]
    return _block_model(nodes, "gated_mlp", w, d, opset=17, ir_version=8)

"""Models with custom ops (onnxruntime-extensions' `ai.onnx.contrib` string and tensor ops: tokenizers, regex
cleaning, image decoders) run in every session qtool makes once --op_package_lib (--custom_op_library) names the
library that implements them; without it the error names the op's domain and the flag. The custom ops stay float:
no Q/DQ on their string or integer tensors, none after their outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli, save_model
from onnx import TensorProto, helper, numpy_helper

CONTRIB = "ai.onnx.contrib"
WORDS = ["ab1c", "hello world", "x", "tokenizer 42", "qtool", "onnx runtime 2", "a", "bb", "ccc d", "longer sentence 9"]


@pytest.fixture
def library() -> str:
    return pytest.importorskip("onnxruntime_extensions").get_library_path()


def _contrib_model() -> onnx.ModelProto:
    """text string[3] -> StringRegexReplace (digits dropped) -> StringLength -> len int64[3] -> Gather(table[64,8])
    -> MatMul(w[8,4]) -> Relu -> r[3,4]; x float[4,4] -> Inverse (a float custom op) -> MatMul(w4[4,4]) -> y[4,4]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (64, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 4)).astype(np.float32), "w4"),
        helper.make_tensor("pattern", TensorProto.STRING, [1], [b"[0-9]"]),
        helper.make_tensor("rewrite", TensorProto.STRING, [1], [b""]),
    ]
    nodes = [
        helper.make_node("StringRegexReplace", ["text", "pattern", "rewrite"], ["clean"], domain=CONTRIB),
        helper.make_node("StringLength", ["clean"], ["len"], domain=CONTRIB),
        helper.make_node("Gather", ["table", "len"], ["emb"]),
        helper.make_node("MatMul", ["emb", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Inverse", ["x"], ["xi"], domain=CONTRIB),
        helper.make_node("MatMul", ["xi", "w4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "contrib",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [3]), helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [3, 4]), helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB, 1)])


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"text": rng.choice(WORDS, 3).astype(str), "x": (2 * np.eye(4) + rng.uniform(-0.3, 0.3, (4, 4))).astype(np.float32)}
        for _ in range(n)
    ]


def _input_list(root: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """The strings as .npy files of str (as a string input reads them), x as float32 .raw files."""
    lines = []
    for i, feed in enumerate(feeds):
        np.save(root / f"text{i}.npy", feed["text"])
        (root / f"x{i}.raw").write_bytes(feed["x"].tobytes())
        lines.append(f"text:={root / f'text{i}.npy'} x:={root / f'x{i}.raw'}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def _run(path: Path, library: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"text": feed["text"].astype(object), "x": feed["x"]})


def test_custom_op_library_in_every_command(tmp_path: Path, library: str) -> None:
    src = save_model(_contrib_model(), tmp_path / "m.onnx")
    samples = _input_list(tmp_path, _feeds(16, 1))
    conv, quant = tmp_path / "m.conv.onnx", tmp_path / "m.quant.onnx"
    result = run_cli(["convert", "-i", src, "-o", conv, "--op_package_lib", library])
    assert result.exit_code == 0, result.output
    result = run_cli(["quantize", "-i", conv, "--input_list", samples, "-o", quant, "--custom_op_library", library])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(quant))
    assert {"StringRegexReplace", "StringLength", "Inverse"} <= {n.op_type for n in model.graph.node if n.domain == CONTRIB}
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized.isdisjoint({"text", "clean", "len", "xi"}), quantized  # strings, ints, a custom op's output
    assert {"x", "emb"} <= quantized  # the float part is quantized
    for feed in _feeds(8, 2):  # held out
        for q, f in zip(_run(quant, library, feed), _run(conv, library, feed), strict=True):
            sqnr = 10 * np.log10(np.sum(f**2) / np.sum((q - f) ** 2))
            assert sqnr > 25, sqnr
    result = run_cli(["inspect", quant, "--reference", conv, "--input_list", samples, "--op_package_lib", library])
    assert result.exit_code == 0, result.output
    assert "compared samples  16" in result.output
    result = run_cli(["export", "-i", quant, "-o", tmp_path / "exp", "--format", "qoperator", "--op_package_lib", library])
    assert result.exit_code == 0, result.output
    _run(tmp_path / "exp" / "m.quant.qoperator.onnx", library, _feeds(1, 3)[0])


def test_custom_op_without_the_library_names_its_domain_and_the_flag(tmp_path: Path) -> None:
    # no onnxruntime-extensions needed: the error is the same whether or not it is installed
    src = save_model(_contrib_model(), tmp_path / "m.onnx")
    samples = _input_list(tmp_path, _feeds(2, 1))
    for args in (
        ["convert", "-i", src, "-o", tmp_path / "m.conv.onnx"],
        ["quantize", "-i", src, "--input_list", samples, "-o", tmp_path / "m.quant.onnx"],
        ["inspect", src, "--input_list", samples],
    ):
        result = run_cli(args)
        assert result.exit_code == 3, result.output
        assert "StringRegexReplace, a custom op of domain 'ai.onnx.contrib'" in result.output
        assert "--op_package_lib PATH" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "m.conv.onnx").exists() and not (tmp_path / "m.quant.onnx").exists()


def test_a_library_that_is_no_file_or_does_not_load_is_a_usage_error(tmp_path: Path) -> None:
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]),
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    src = save_model(model, tmp_path / "m.onnx")
    not_a_library = tmp_path / "ops.so"
    not_a_library.write_bytes(b"not an ELF file")
    cases = [
        (tmp_path, "--op_package_lib: is a folder, not a regular file"),
        (tmp_path / "missing.so", "--op_package_lib: No such file or directory"),
        (not_a_library, "--op_package_lib: onnxruntime cannot load it as a custom-op library"),
    ]
    for path, message in cases:
        for command in (["convert", "-i", src, "-o", tmp_path / "m.conv.onnx"], ["inspect", src],
                        ["quantize", "-i", src, "-o", tmp_path / "m.q.onnx", "--enable_float_fallback"]):  # fmt: skip
            result = run_cli([*command, "--custom_op_library", path])
            assert result.exit_code == 2, result.output
            assert f"qtool: error: {path}: {message}" in result.output
            assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.conv.onnx").exists()


def test_sequential_adaround_registers_the_library_on_its_worker_thread(tmp_path: Path, library: str) -> None:
    """4-bit weights round layer by layer (adaround's sequential mode), each layer's inputs computed on a worker
    thread: its sessions register the library too."""
    src = save_model(_contrib_model(), tmp_path / "m.onnx")
    samples = _input_list(tmp_path, _feeds(8, 1))
    result = run_cli(["quantize", "-i", src, "--input_list", samples, "-o", tmp_path / "q.onnx", "--op_package_lib",
                      library, "--weights_bitwidth", "4", "--apply_algorithms", "adaround"])  # fmt: skip
    assert result.exit_code == 0, result.output

"""Bad input through the CLI, black-style: one YAML file per case in tests/cli/cases/.

A case is {args, exit, stderr: [substrings], files: {name: text}, raw: {name: count | {count, fill}},
absent: [paths], xfail: reason}. Placeholders in args, file texts and paths: {tmp} (the case's
folder), {samples} (samples/), {out_dir} ({tmp}/out), {out} ({out_dir}/model.quant.onnx),
{out_enc} (its encodings file), and models written from conftest factories: {tiny} (Conv+BN+Relu+Gemm,
input x float32[N,3,8,8]), {two} (x float32[1,4] + ids int64[1,3]), {dynamic} (x[N,K]).

Every case: the exit code qtool/errors.py defines, exactly one stderr line starting
"qtool: error:" holding each substring, no traceback, and no output file left behind
(`absent`, default {out} and {out_enc}; and nothing at all, not even a temp file, in {out_dir}).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from conftest import SAMPLES, conv_bn_model, dynamic_dim_model, run_cli, save_model, two_input_model, write_samples
from onnx import TensorProto, helper, numpy_helper

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
MODELS = {"tiny": conv_bn_model, "two": two_input_model, "dynamic": dynamic_dim_model}


def _load(path: Path) -> dict:
    case = yaml.safe_load(path.read_text())
    unknown = set(case) - {"args", "exit", "stderr", "files", "raw", "absent", "xfail"}
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    return case


def _params() -> list:
    params = []
    for path in CASES:
        case = _load(path)
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=True)] if case.get("xfail") else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def _fill(text: str, places: dict[str, str]) -> str:
    """Replace the known {placeholders} only (file texts are often JSON, full of braces)."""
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def _setup(case: dict, tmp: Path) -> dict[str, str]:
    out_dir = tmp / "out"
    places = {
        "tmp": str(tmp),
        "samples": str(SAMPLES),
        "out_dir": str(out_dir),
        "out": str(out_dir / "model.quant.onnx"),
        "out_enc": str(out_dir / "model.quant.encodings.json"),
    }
    for key, factory in MODELS.items():
        places[key] = str(save_model(factory(), tmp / "models" / f"{key}.onnx"))
    for name, text in (case.get("files") or {}).items():
        (tmp / name).write_text(_fill(text, places))
    rng = np.random.default_rng(0)
    for name, spec in (case.get("raw") or {}).items():
        spec = spec if isinstance(spec, dict) else {"count": spec}
        values = rng.uniform(0, 1, spec["count"]).astype("<f4")
        if "fill" in spec:
            values[:] = spec["fill"]
        (tmp / name).write_bytes(values.tobytes())
    return places


def test_cases_found() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("path", _params())
def test_error_case(path: Path, tmp_path: Path) -> None:
    case = _load(path)
    places = _setup(case, tmp_path)
    result = run_cli([_fill(str(a), places) for a in case["args"]])

    assert result.exit_code == case["exit"], result.output
    assert result.exit_code in (2, 3, 4)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    (line,) = lines
    assert line.startswith("qtool: error: ")
    for needle in case["stderr"]:
        assert _fill(needle, places) in line
    assert "Traceback" not in result.output and "Traceback" not in result.stderr

    for absent in case.get("absent", ["{out}", "{out_enc}"]):
        assert not Path(_fill(absent, places)).exists(), f"{absent} was left behind"
    out_dir = Path(places["out_dir"])
    assert not out_dir.exists() or not any(out_dir.iterdir()), f"left in {out_dir}: {list(out_dir.iterdir())}"


def test_failed_run_keeps_an_existing_output(tmp_path: Path) -> None:
    """A failing quantize never replaces or truncates files already at the output path."""
    out = tmp_path / "model.quant.onnx"
    out.write_bytes(b"previous run")
    (tmp_path / "model.quant.encodings.json").write_text("{}")
    list_path = tmp_path / "list.txt"
    list_path.write_text(f"{tmp_path / 'missing.raw'}\n")
    tiny = save_model(conv_bn_model(), tmp_path / "tiny.onnx")
    result = run_cli(["quantize", "-i", tiny, "--input_list", list_path, "-o", out])
    assert result.exit_code == 4
    assert out.read_bytes() == b"previous run"
    assert (tmp_path / "model.quant.encodings.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "list.txt",
        "model.quant.encodings.json",
        "model.quant.onnx",
        "tiny.onnx",
    ]


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (RuntimeError("boom"), 1, "qtool: internal error; re-run with -v to see the traceback and report it"),
        (KeyboardInterrupt(), 130, "qtool: interrupted; no output written"),
    ],
)
def test_a_bug_or_ctrl_c_is_one_line_not_a_traceback(monkeypatch, tmp_path: Path, raised, code, message) -> None:
    from qtool import api

    def fail(options):
        raise raised

    monkeypatch.setattr(api, "convert", fail)
    args = ["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", tmp_path / "m.onnx"]
    result = run_cli(args)
    assert result.exit_code == code
    assert result.stderr.strip().splitlines() == [message]
    if code == 1:  # -v is for reporting the bug: the traceback is wanted there
        with pytest.raises(RuntimeError, match="boom"):
            run_cli([*args, "-v"])


@pytest.mark.parametrize(("dims", "why"), [("1,a,8,8", "DIMS must be integers"), ("1,0,8,8", "every dim must be in 1..2147483647"),
                                          ("1,1,8,99999999999999999999", "every dim must be in 1..2147483647")])
def test_malformed_input_dim_is_a_usage_error(tmp_path: Path, dims: str, why: str) -> None:
    out = tmp_path / "m.conv.onnx"
    result = run_cli(["convert", "-i", SAMPLES / "digits_cnn.onnx", "-o", out, "--input_dim", "image", dims])
    assert result.exit_code == 2 and why in result.stderr and "--input_dim" in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_a_model_the_checker_rejects_is_one_line_naming_the_file(tmp_path: Path) -> None:
    model = conv_bn_model()
    model.graph.node[-1].input[0] = "nowhere"  # the Gemm reads a tensor nothing writes
    source, out = save_model(model, tmp_path / "broken.onnx"), tmp_path / "out" / "m.conv.onnx"
    result = run_cli(["convert", "-i", source, "-o", out])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qtool: error: {source}: onnx.checker:") and "nowhere" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("act_bitwidth: [8, 16\n", "config.yaml:2: not valid YAML"),
        ("- act_bitwidth\n- 16\n", "config.yaml: a config file must be a mapping"),
        ("weights_bitwidth: 8\nact_bitwidth: 8\x01\n", "config.yaml:2: not valid YAML: unacceptable character #x0001"),
        ("[a, b]: 1\n", "config.yaml:1: not valid YAML"),
        (None, "config.yaml: config file not found"),
    ],
)
def test_a_broken_config_file_is_a_usage_error_naming_it(tmp_path: Path, text: str | None, why: str) -> None:
    config, out = tmp_path / "config.yaml", tmp_path / "out" / "m.quant.onnx"
    if text is not None:
        config.write_text(text)
    tiny = save_model(conv_bn_model(), tmp_path / "tiny.onnx")
    result = run_cli(["quantize", "-i", tiny, "-o", out, "--enable_float_fallback", "--config", config])
    assert result.exit_code == 2 and why in result.stderr and "--config" in result.stderr
    assert "Traceback" not in result.output and not out.parent.exists() and len(result.stderr.splitlines()) == 1


def test_a_library_warning_with_a_traceback_does_not_reach_the_user(tmp_path: Path) -> None:
    """onnx_ir logs its own failed shape inference as a warning with a traceback; at the default
    verbosity only qtool's error line is shown (-v shows the rest)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add")],
        "mistyped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.int64), "c")],  # float + int64
    )
    source = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    result = run_cli(["convert", "-i", source, "-o", tmp_path / "out" / "m.conv.onnx"])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qtool: error: {source}: shape inference failed") and "inconsistent type" in line
    assert "Traceback" in run_cli(["convert", "-i", source, "-o", tmp_path / "m.conv.onnx", "-v"]).stderr


def _no_output_model(nodes: bool = True) -> onnx.ModelProto:
    """x -> Relu with no graph output; without `nodes`, as convert's dead-code pruning leaves it."""
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")] if nodes else []
    graph = helper.make_graph(relu, "no_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_graph_without_outputs_is_refused_by_name(tmp_path: Path) -> None:
    source = save_model(_no_output_model(), tmp_path / "m.onnx")
    for args in (["convert", "-o", tmp_path / "out" / "c.onnx"], ["quantize", "-f", "-o", tmp_path / "out" / "q.onnx"]):
        result = run_cli([*args, "-i", source])
        assert result.exit_code == 3
        assert result.stderr.strip().splitlines() == [
            f"qtool: error: {source}: the graph has no outputs: nothing to compute or compare"
        ]
    assert not (tmp_path / "out").exists()


def test_onnxruntime_does_not_log_over_the_error_line(capfd) -> None:
    """onnxruntime logs a failed session set-up to stderr itself (from C++, past Python's
    logging); qtool's one error line already says it, so that log stays off unless -v."""
    from qtool import runtime
    from qtool.errors import ModelError

    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        runtime.session(_no_output_model(nodes=False), where="model")
    assert capfd.readouterr().err == ""


def test_a_zipmap_output_is_refused_by_name(tmp_path: Path) -> None:
    """skl2onnx's default classifier output is a sequence of maps: one line naming it, not 'internal error'."""
    map_type = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probs"]),
         helper.make_node("ZipMap", ["probs"], ["output_probability"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])],
        "zipmap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_value_info("output_probability", helper.make_sequence_type_proto(map_type))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    source = save_model(model, tmp_path / "m.onnx")
    for args in (["convert", "-i", source, "-o", tmp_path / "c.onnx"],
                 ["quantize", "-i", source, "-o", tmp_path / "q.onnx", "--act_bitwidth", "32"]):  # fmt: skip
        result = run_cli(args)
        assert result.exit_code == 3 and "'output_probability' is a map" in result.stderr, result.output
        assert "zipmap" in result.stderr and "Traceback" not in result.output


def test_a_model_onnxruntime_cannot_run_is_blamed_not_the_first_sample(tmp_path: Path) -> None:
    """Every sample passed the input checks, so a run that fails on the first one is the model's fault: the
    line names the model (and the sample, as context), not `list.txt:1` as if its values were wrong."""
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")],  # [4] broadcasts against W = 6
        "unbroadcastable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 6])],
        [numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32), "slope")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    source, out = save_model(model, tmp_path / "m.onnx"), tmp_path / "out" / "m.quant.onnx"
    listing = write_samples(tmp_path, model, 2)
    result = run_cli(["quantize", "-i", source, "--input_list", listing, "-o", out])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qtool: error: {source}: onnxruntime cannot run it (on the first sample, {listing}:1)")
    assert "prelu" in line.lower() and not out.parent.exists()


def test_a_run_that_fails_after_earlier_samples_ran_names_the_line(tmp_path: Path) -> None:
    """The same failure on a later sample is that sample's values (an index past the table), so its line is named."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64), helper.make_node("Gather", ["t", "i"], ["y"])],
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "t")],
    )
    source = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    for k, value in enumerate([1.0, 2.0, 9.0]):
        np.array([value], np.float32).tofile(tmp_path / f"s{k}.raw")
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / f's{k}.raw'}\n" for k in range(3)))
    out = tmp_path / "out" / "m.quant.onnx"
    result = run_cli(["quantize", "-i", source, "--input_list", tmp_path / "list.txt", "-o", out])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"qtool: error: {tmp_path / 'list.txt'}:3: inference failed") and not out.parent.exists()


@pytest.mark.parametrize("flag, value", [("--evaluate_samples", "9223372036854775808"), ("--num_threads", "1000000000"),
                                         ("--calib_batch_size", "100000000000000000000")])  # fmt: skip
def test_a_count_past_what_onnxruntime_or_python_takes_is_a_usage_error(tmp_path: Path, flag: str, value: str) -> None:
    """Each was an internal error (islice past sys.maxsize, onnxruntime's TypeError) or blamed the model
    (1e9 threads: "onnxruntime cannot load it: std::bad_alloc")."""
    tiny = save_model(conv_bn_model(), tmp_path / "tiny.onnx")
    result = run_cli(["quantize", "-i", tiny, "-o", tmp_path / "q.onnx", "--enable_float_fallback", flag, value])
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.stderr and "is not in the range" in result.stderr


def test_a_binary_model_named_json_is_read_as_protobuf_and_a_json_one_as_json(tmp_path: Path) -> None:
    """onnx picks the format by extension: a binary model saved as m.json was 'not an ONNX model (UnicodeDecodeError)'."""
    model = conv_bn_model()
    binary, text = tmp_path / "binary.json", tmp_path / "text.json"
    binary.write_bytes(model.SerializeToString())
    onnx.save(model, str(text))  # onnx writes .json as JSON text
    assert text.read_bytes().lstrip().startswith(b"{")
    for source in (binary, text):
        result = run_cli(["convert", "-i", source, "-o", tmp_path / f"{source.stem}.conv.onnx"])
        assert result.exit_code == 0, result.stderr

"""Fuzzing every file parser: hostile bytes, hostile JSON/YAML and one-field mutations of valid files.

A user's file may hold anything. Whatever it holds, a parser must answer with a QtoolError (one
line on stderr and exit code 2/4), never with another exception, which the CLI reports as an
internal error with a traceback. Each section fuzzes one parser three ways: arbitrary bytes, a
grammar of the format's own pieces, and a valid document with one field replaced or deleted;
then a corpus of hand-picked hostile inputs pins what the fuzzing found.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from qtool.config import read_config
from qtool.errors import QtoolError
from qtool.io.encodings import parse_encodings, read_encodings
from qtool.io.input_list import parse_input_list, read_input_list
from qtool.io.raw import InputSpec, load_tensor
from qtool.quant.observers import make_observer
from qtool.quant.stats import FORMAT, load_stats, save_stats

T = TypeVar("T")


# --- shared helpers and strategies ---------------------------------------------------------------


@contextmanager
def scratch_file(name: str, data: bytes) -> Iterator[Path]:
    """`data` written to a fresh temporary folder (hypothesis forbids the function-scoped tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def only_qtool_errors(call: Callable[[], T]) -> T | None:
    """Run a parser: a QtoolError is a fine answer to hostile input; any other exception fails the test."""
    try:
        return call()
    except QtoolError as e:
        assert str(e)  # the one line the CLI prints must render
        return None


def dumps(value: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity spelt out, as json.loads accepts them back."""
    return json.dumps(value).encode()


# Numbers past float range, past int64 and at float's edges: each has broken a float()/int() somewhere.
EDGE_NUMBERS = [10**400, -(10**400), 2**63, -(2**63) - 1, 2**64 + 1, 1e308, -1e308, 5e-324, -0.0]
# Strings the parsers give meaning to, so mutations reach the branches behind them.
MEANINGFUL_STRINGS = [
    *("", "nan", "NaN", "inf", "-inf", "Infinity", "True", "true", "False", "0", "-1", "8", "1e999"),
    *("int", "float", "INT", "FLOAT", "int2", "int8", "uint8", "int16", "uint16", "int32", "uint4"),
    *("min-max", "sqnr", "mse", "entropy", "percentile", "PER_TENSOR", "PER_CHANNEL", "PER_BLOCK", "LPBQ"),
    *("0.6.1", "1.0.0", "2.0.0", "2", FORMAT, "AAAAAAAAAAA=", "AQ==", "\x00", ":="),
]
JSON_KEYS = [
    *("version", "activation_encodings", "param_encodings", "encodings", "param_names", "excluded_layers"),
    *("name", "bitwidth", "bw", "dtype", "is_symmetric", "is_sym", "min", "max", "scale", "offset", "enc_type"),
    *("output_dtype", "y_scale", "y_zero_point", "axis", "block_size"),
    *("compressed_bw", "per_block_int_scale", "per_channel_float_scale", "decompressed_bw"),
    *("format", "samples", "model_sha256", "input_lists", "tensors", "method", "lo", "hi", "count", "counts", "q"),
]
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # nan and +-inf included
    st.sampled_from(EDGE_NUMBERS),
    st.text(max_size=12),
    st.sampled_from(MEANINGFUL_STRINGS),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(JSON_KEYS), st.text(max_size=8)), children, max_size=4),
    ),
    max_leaves=12,
)
DELETE = object()  # a mutation that removes the key (or list item) instead of replacing it


def _paths(doc: Any) -> list[tuple[Any, ...]]:
    """Every key/index path below the root of a JSON document."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        for key, child in children:
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found


@st.composite
def mutated(draw: st.DrawFn, seed: Any, values: st.SearchStrategy[Any] = json_values) -> Any:
    """`seed` with one field (sometimes two, so a mutation can meet another) replaced or deleted."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 2))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = functools.reduce(lambda node, key: node[key], path[:-1], doc)
        value = draw(st.one_of(st.just(DELETE), values))
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


def with_field(seed: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `seed` with the field at `path` set to `value` (a hand-picked mutation)."""
    doc = copy.deepcopy(seed)
    parent = functools.reduce(lambda node, key: node[key], path[:-1], doc)
    parent[path[-1]] = value
    return doc


# --- 1. input_list -------------------------------------------------------------------------------

LIST_TOKENS = [
    *("a.raw", "/abs/in.raw", "x:=a.raw", "x:=/abs/b.raw", "y:=c.npy", ":=", "x:=", ":=a.raw", "x:=a:=b"),
    *("#", "%", "#out", "%t1 t2", "#a #b", "%", ".", "..", "/", "~", "\x00", "é", "\u2028", "\x1c"),
    *("a" * 300, "x:=" + "a" * 300),  # longer than NAME_MAX (255)
]
list_lines = st.lists(
    st.lists(st.one_of(st.sampled_from(LIST_TOKENS), st.text(max_size=6)), max_size=4).map(" ".join),
    max_size=6,
)
list_texts = st.builds(lambda lines, end: end.join(lines), list_lines, st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))


def _check_input_list(text_or_bytes: str | bytes) -> None:
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    with scratch_file("input_list.txt", data) as path:
        parsed = only_qtool_errors(lambda: read_input_list(path))
    if parsed is not None:
        assert parsed.samples  # an accepted list has at least one inference


@given(st.binary(max_size=300))
@settings(max_examples=150)
def test_input_list_arbitrary_bytes(data: bytes) -> None:
    """Binary junk is not UTF-8 text or a malformed list: a DataError either way."""
    _check_input_list(data)


@given(st.text(max_size=200))
@settings(max_examples=150)
def test_input_list_arbitrary_text(text: str) -> None:
    """parse_input_list on any text (surrogate-free, as a UTF-8 file decodes to)."""
    parsed = only_qtool_errors(lambda: parse_input_list(text, Path("/nonexistent-qtool-fuzz/input_list.txt")))
    if parsed is not None:
        assert parsed.samples


@given(list_texts)
@settings(max_examples=300)
def test_input_list_structured_lines(text: str) -> None:
    """Lines of the format's own pieces (`#`, `%`, `name:=path`, bare paths, blanks, stray `:=`)."""
    _check_input_list(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" * 256 + "\n", id="bare-path-longer-than-NAME_MAX"),
        pytest.param("x:=" + "a" * 256 + "\n", id="named-path-longer-than-NAME_MAX"),
        pytest.param("a\x00b.raw\n", id="nul-in-path"),
        pytest.param(":=\n", id="bare-separator"),
        pytest.param("#out\na.raw\n%t\n", id="directive-after-samples"),
        pytest.param("\ufeff\r\n \t\r\n", id="bom-and-blank-lines-only"),
    ],
)
def test_input_list_known_hostile(text: str) -> None:
    """Inputs the fuzzing found or that earlier broke line parsers elsewhere."""
    _check_input_list(text)


# --- 2. encodings / quantization overrides (legacy 0.6.1, 1.0.0, 2.0.0) --------------------------

LEGACY_DOC = {
    "version": "0.6.1",
    "activation_encodings": {
        "x": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "False",
                "min": -1.0,
                "max": 1.0,
                "scale": 0.00784313725490196,
                "offset": -128,
            }
        ],
        "fp": [{"bitwidth": 16, "dtype": "float"}],
        "request": [{"bitwidth": 16, "dtype": "int", "is_symmetric": "True"}],
    },
    "param_encodings": {
        "w": [
            {"bitwidth": 8, "dtype": "int", "is_symmetric": "True", "min": -0.5, "max": 0.5},
            {"bitwidth": 8, "dtype": "int", "is_symmetric": "True", "min": -0.25, "max": 0.25},
        ]
    },
}
V1_DOC = {
    "version": "1.0.0",
    "activation_encodings": [
        {
            "name": "x",
            "enc_type": "PER_TENSOR",
            "dtype": "INT",
            "bw": 8,
            "is_sym": False,
            "scale": [0.00784313725490196],
            "offset": [-128],
        },
        {"name": "fp", "enc_type": "PER_TENSOR", "dtype": "FLOAT", "bw": 16},
    ],
    "param_encodings": [
        {
            "name": "w",
            "enc_type": "PER_CHANNEL",
            "dtype": "INT",
            "bw": 8,
            "is_sym": True,
            "scale": [0.1, 0.2],
            "offset": [-128, -128],
        }
    ],
    "excluded_layers": [],
}
V2_DOC = {
    "version": "2.0.0",
    "encodings": [
        {"name": "x", "output_dtype": "uint8", "y_scale": 0.00784313725490196, "y_zero_point": 128},
        {"name": "w", "output_dtype": "int8", "y_scale": [0.1, 0.2], "axis": 0},
        {"name": "request", "output_dtype": "int16"},
    ],
    "param_names": ["w"],
}
V2_SECTIONED_DOC = {
    "version": "2.0.0",
    "activation_encodings": [{"name": "x", "output_dtype": "uint16", "y_scale": 0.5, "y_zero_point": [7]}],
    "param_encodings": [{"name": "w", "output_dtype": "int4", "y_scale": [0.1, 0.2], "axis": 1}],
}
# per-block and LPBQ entries (issue 23), nested y_scale and compressed scales included
V1_BLOCKS_DOC = {
    "version": "1.0.0",
    "activation_encodings": [],
    "param_encodings": [
        {"name": "w", "enc_type": "PER_BLOCK", "dtype": "INT", "bw": 4, "is_sym": True, "scale": [0.1, 0.2],
         "offset": [-8, -8], "block_size": 16},
        {"name": "v", "enc_type": "LPBQ", "dtype": "INT", "bw": 8, "compressed_bw": 4, "is_sym": True,
         "scale": [0.01], "offset": [-128], "block_size": 32, "per_block_int_scale": [16, 3]},
    ],
}  # fmt: skip
V2_BLOCKS_DOC = {
    "version": "2.0.0",
    "encodings": [
        {"name": "w", "output_dtype": "int4", "y_scale": [[0.1, 0.2], [0.3, 0.4]], "axis": 0, "block_size": 16},
        {"name": "v", "output_dtype": "int4", "per_block_int_scale": [[16, 3]], "per_channel_float_scale": [[0.01, 0.02]],
         "axis": 0, "block_size": 32},
    ],
}  # fmt: skip
ENCODINGS_SEEDS = {"legacy": LEGACY_DOC, "1.0.0": V1_DOC, "2.0.0": V2_DOC, "2.0.0-sectioned": V2_SECTIONED_DOC,
                   "1.0.0-blocks": V1_BLOCKS_DOC, "2.0.0-blocks": V2_BLOCKS_DOC}  # fmt: skip


def _check_encodings(data: bytes) -> None:
    with scratch_file("overrides.json", data) as path:
        only_qtool_errors(lambda: read_encodings(path))


@pytest.mark.parametrize("version", sorted(ENCODINGS_SEEDS))
def test_encodings_seed_documents_are_valid(version: str) -> None:
    """The mutation seeds must parse, or every mutation would only test the first check."""
    seed = ENCODINGS_SEEDS[version]
    with scratch_file("overrides.json", dumps(seed)) as path:
        assert len(read_encodings(path)) >= 2


@given(st.binary(max_size=300))
@settings(max_examples=150)
def test_encodings_arbitrary_bytes(data: bytes) -> None:
    """Binary junk: not UTF-8 or not JSON, a DataError either way."""
    _check_encodings(data)


@given(json_values)
@settings(max_examples=300)
def test_encodings_arbitrary_json(value: Any) -> None:
    """Any JSON value, decoded (parse_encodings) and as a file (read_encodings)."""
    only_qtool_errors(lambda: parse_encodings(value, "fuzz.json"))
    _check_encodings(dumps(value))


@given(st.sampled_from(sorted(ENCODINGS_SEEDS)).flatmap(lambda v: mutated(ENCODINGS_SEEDS[v])))
@settings(max_examples=500)
def test_encodings_one_field_mutations(doc: Any) -> None:
    """A valid document of each version with one field replaced by any JSON value, or deleted."""
    only_qtool_errors(lambda: parse_encodings(doc, "fuzz.json"))
    _check_encodings(dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000, id="100000-open-brackets"),
        pytest.param('{"a":' * 100_000, id="100000-open-objects"),
        pytest.param("[" * 65 + "]" * 65, id="65-levels-closed"),
    ],
)
def test_encodings_deep_nesting(text: str) -> None:
    """Nesting past the JSON depth bound is a DataError, not a RecursionError."""
    with scratch_file("overrides.json", text.encode()) as path, pytest.raises(QtoolError, match="nested"):
        read_encodings(path)


HUGE = "1" + "0" * 400  # an integer literal past float range (int(float) fine, float(int) overflows)
ENCODINGS_CORPUS = [
    pytest.param(
        with_field(LEGACY_DOC, ("activation_encodings", "x", 0, "bitwidth"), float("inf")), id="legacy-bw-inf"
    ),
    pytest.param(
        with_field(LEGACY_DOC, ("activation_encodings", "x", 0, "bitwidth"), float("nan")), id="legacy-bw-nan"
    ),
    pytest.param(with_field(LEGACY_DOC, ("activation_encodings", "x", 0, "min"), -(10**400)), id="legacy-min-huge-int"),
    pytest.param(with_field(LEGACY_DOC, ("activation_encodings", "x", 0, "max"), "nan"), id="legacy-max-nan-string"),
    pytest.param(with_field(LEGACY_DOC, ("activation_encodings", "x", 0, "min"), 2.0), id="legacy-min-over-max"),
    pytest.param(with_field(LEGACY_DOC, ("param_encodings", "w", 0, "min"), -1e308), id="legacy-min-1e308"),
    pytest.param(with_field(V1_DOC, ("activation_encodings", 0, "bw"), float("inf")), id="v1-bw-inf"),
    pytest.param(with_field(V1_DOC, ("activation_encodings", 0, "scale"), [10**400]), id="v1-scale-huge-int"),
    pytest.param(with_field(V1_DOC, ("activation_encodings", 0, "offset"), [-(10**400)]), id="v1-offset-huge-int"),
    pytest.param(with_field(V1_DOC, ("activation_encodings", 0, "dtype"), []), id="v1-dtype-list"),
    pytest.param(with_field(V2_DOC, ("encodings", 0, "output_dtype"), []), id="v2-output-dtype-list"),
    pytest.param(with_field(V2_DOC, ("encodings", 0, "output_dtype"), {}), id="v2-output-dtype-object"),
    pytest.param(with_field(V2_DOC, ("encodings", 0, "y_scale"), 10**400), id="v2-y-scale-huge-int"),
    pytest.param(with_field(V2_DOC, ("encodings", 0, "y_zero_point"), 10**400), id="v2-zero-point-huge-int"),
    pytest.param(with_field(V2_DOC, ("encodings", 1, "axis"), 10**400), id="v2-axis-huge-int"),
    pytest.param(with_field(V2_DOC, ("param_names",), [[]]), id="v2-param-names-nested"),
]


@pytest.mark.parametrize("doc", ENCODINGS_CORPUS)
def test_encodings_known_hostile(doc: Any) -> None:
    """One-field mutations the fuzzing found (or that sit right next to what it found)."""
    only_qtool_errors(lambda: parse_encodings(doc, "fuzz.json"))
    _check_encodings(dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1" * 4301, id="json-int-over-4300-digits"),
        pytest.param(
            '{"activation_encodings": {}, "param_encodings": {}, "n": ' + "9" * 5000 + "}", id="json-int-5000"
        ),
        pytest.param(HUGE, id="json-int-401-digits"),
        pytest.param('"\\ud800"', id="lone-surrogate-escape"),
        pytest.param("\ufeff{}", id="bom-then-empty-object"),
    ],
)
def test_encodings_known_hostile_text(text: str) -> None:
    """JSON texts that trip the decoder itself rather than the validation after it."""
    _check_encodings(text.encode())


# --- 3. config YAML ------------------------------------------------------------------------------

OPTION_NAMES = {"act_bitwidth", "weights_bitwidth", "act_16bit_tensors", "calib_batch_size"}
CONFIG_KEYS = [*sorted(OPTION_NAMES), "act_bw", "output_feature_16bit_names_list", "cle", "adaround", "act_bitwdth"]
YAML_PIECES = [
    *("act_bitwidth", "weights_bitwidth", "cle", ": ", ":", "\n", "  ", "- ", "[", "]", "{", "}", ", ", "? "),
    *("!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!str "),
    *("!!null ", "!!map ", "!!seq ", "!!python/object:os.system ", "!<tag:yaml.org,2002:int> ", "!local "),
    *("&a ", "*a", "'", '"', "# c", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "|\n", ">\n"),
    *("2001-13-45", "2024-02-30", "2001-01-01 25:00:00", "1:2:3", "190:20:30.15", "0x", "0b", "0o7", "0xZZ"),
    *("1e999", ".nan", "-.inf", "~", "yes", "8", "16", "-1", "\t", "\\x", "é", "\x85", "\ufeff"),
]
yaml_texts = st.lists(st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=4)), max_size=14).map("".join)


def _check_config(data: bytes) -> dict[str, Any] | None:
    with scratch_file("config.yaml", data) as path:
        return only_qtool_errors(lambda: read_config(path, OPTION_NAMES))


@given(st.binary(max_size=300))
@settings(max_examples=150)
def test_config_arbitrary_bytes(data: bytes) -> None:
    """Binary junk: not UTF-8, or YAML the reader refuses (control characters), a UsageError."""
    _check_config(data)


@given(yaml_texts)
@settings(max_examples=400)
def test_config_yaml_pieces(text: str) -> None:
    """Text built from YAML's own syntax: tags, anchors, flow collections, dates, sexagesimals."""
    _check_config(text.encode())


@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=4))
@settings(max_examples=200)
def test_config_dumped_mappings(mapping: dict[str, Any]) -> None:
    """yaml.safe_dump of options set to any values: only QtoolError; known options always read back."""
    result = _check_config(yaml.safe_dump(mapping).encode())
    if set(mapping) <= OPTION_NAMES:
        assert result is not None and set(result) == set(mapping)


def test_config_aliases_are_refused() -> None:
    """An option file has no use for `*alias`; refusing all of them is what stops alias bombs."""
    with scratch_file("config.yaml", b"a: &x [1]\nb: *x\n") as path, pytest.raises(QtoolError, match="alias"):
        read_config(path, OPTION_NAMES)


def test_config_alias_bomb_is_refused_quickly() -> None:
    """9 levels of 9 aliases would expand to 9^9 strings; it must fail before any expansion."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    start = time.perf_counter()
    with scratch_file("bomb.yaml", "\n".join(lines).encode()) as path, pytest.raises(QtoolError, match="alias"):
        read_config(path, OPTION_NAMES)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("act_bitwidth: 2001-13-45\n", id="implicit-date-month-13"),
        pytest.param("act_bitwidth: 2024-02-30\n", id="implicit-date-feb-30"),
        pytest.param("act_bitwidth: !!int x\n", id="tag-int-junk"),
        pytest.param("act_bitwidth: !!int ''\n", id="tag-int-empty"),
        pytest.param("act_bitwidth: !!int 0x\n", id="tag-int-bare-0x"),
        pytest.param("act_bitwidth: !!float x\n", id="tag-float-junk"),
        pytest.param("act_bitwidth: !!float ''\n", id="tag-float-empty"),
        pytest.param("act_bitwidth: !!bool x\n", id="tag-bool-junk"),
        pytest.param("act_bitwidth: !!timestamp x\n", id="tag-timestamp-junk"),
        pytest.param("act_bitwidth: " + "1" * 4301 + "\n", id="int-over-4300-digits"),
        pytest.param("act_bitwidth: !!binary '!!!'\n", id="tag-binary-junk"),
        pytest.param("act_bitwidth: !!python/object:os.system x\n", id="python-tag"),
        pytest.param("? [1]\n: 2\n", id="unhashable-key"),
        pytest.param("[" * 100_000, id="100000-open-brackets"),
    ],
)
def test_config_known_hostile(text: str) -> None:
    """YAML the fuzzing found breaking PyYAML's constructors, plus nesting and tag abuse."""
    _check_config(text.encode())


# --- 4. calibration stats files ------------------------------------------------------------------

STATS_METHODS = ["min-max", "sqnr"]


def relu_model() -> onnx.ModelProto:
    """x[1,4] -> Relu -> y: the smallest graph with a hash to match."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


MODEL = relu_model()


@functools.cache
def stats_seed(method: str) -> dict[str, Any]:
    """A stats document save_stats really writes: x and y observed twice, `unseen` never (inf/-inf)."""
    observers = {name: make_observer(method, name) for name in ("x", "y", "unseen")}
    for batch in ([[-1.0, 0.5, 2.0, 3.0]], [[-4.0, 0.0, 0.25, 1.0]]):
        x = np.array(batch, dtype=np.float32)
        observers["x"].update(x)
        observers["y"].update(np.maximum(x, 0.0))
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-") as folder:
        listing = Path(folder) / "input_list.txt"
        listing.write_text("a.raw\n")
        path = Path(folder) / "stats.json"
        save_stats(path, MODEL, observers, [listing], samples=2)
        return json.loads(path.read_text())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


STATE_FIELDS = ["lo", "hi", "count", "counts", "method", "q"]
stats_values = st.one_of(
    json_leaves,  # flat values first: "nan", inf, 10**400, negatives reach float() and the range checks
    json_values,
    st.binary(max_size=40).map(_b64),  # counts of 0-5 bins, or a length that is no multiple of 8
    st.lists(st.integers(-3, 10**6), min_size=1, max_size=5).map(lambda c: _b64(np.array(c, dtype="<i8").tobytes())),
)


@st.composite
def stats_cases(draw: st.DrawFn) -> tuple[str, Any]:
    """(method it was saved with, document): a generic one- or two-field mutation anywhere, or one
    aimed at the observer state fields, where the interesting checks are."""
    saved_with = draw(st.sampled_from(STATS_METHODS))
    seed = stats_seed(saved_with)
    if draw(st.booleans()):
        return saved_with, draw(mutated(seed, stats_values))
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 2))):
        state = doc["tensors"][draw(st.sampled_from(sorted(doc["tensors"])))]
        field = draw(st.sampled_from(STATE_FIELDS))
        if draw(st.integers(0, 4)) == 0:
            state.pop(field, None)
        else:
            state[field] = draw(stats_values)
    return saved_with, doc


def _check_stats(data: bytes, method: str, merge_with: dict[str, Any] | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-") as folder:
        paths = []
        if merge_with is not None:  # a valid shard first, as a sharded calibration merges them
            paths.append(Path(folder) / "valid.json")
            paths[-1].write_bytes(dumps(merge_with))
        paths.append(Path(folder) / "stats.json")
        paths[-1].write_bytes(data)
        only_qtool_errors(lambda: load_stats(paths, MODEL, method))


@pytest.mark.parametrize("method", STATS_METHODS)
def test_stats_seed_files_load(method: str) -> None:
    """The mutation seeds load and merge, or every mutation would only test the first check."""
    seed = stats_seed(method)
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-") as folder:
        path = Path(folder) / "stats.json"
        path.write_bytes(dumps(seed))
        observers, samples = load_stats([path, path], MODEL, method)
    assert samples == 4 and set(observers) == {"x", "y", "unseen"}


@given(st.binary(max_size=300), st.sampled_from(STATS_METHODS))
@settings(max_examples=100)
def test_stats_arbitrary_bytes(data: bytes, method: str) -> None:
    """Binary junk is not a stats file."""
    _check_stats(data, method)


@given(json_values, st.sampled_from(STATS_METHODS))
@settings(max_examples=150)
def test_stats_arbitrary_json(value: Any, method: str) -> None:
    """Any JSON value is not a stats file, unless it is one."""
    _check_stats(dumps(value), method)


@given(stats_cases(), st.sampled_from(STATS_METHODS), st.booleans())
@settings(max_examples=500)
def test_stats_one_field_mutations(case: tuple[str, Any], method: str, merge: bool) -> None:
    """A saved file with one field of a tensor's state (lo/hi/count/counts/method/q) or of the top
    level (samples/format/model_sha256/tensors/input_lists) replaced or deleted; loaded alone, or
    merged after a valid shard of the same calibration."""
    saved_with, doc = case
    _check_stats(dumps(doc), method, stats_seed(saved_with) if merge else None)


def _state(saved_with: str, tensor: str, /, **fields: Any) -> dict[str, Any]:
    """The seed saved by `saved_with` with fields of `tensor`'s state replaced."""
    doc = copy.deepcopy(stats_seed(saved_with))
    doc["tensors"][tensor].update(fields)
    return doc


STATS_CORPUS = [
    pytest.param("sqnr", _state("sqnr", "x", lo="nan"), False, id="lo-nan-string"),
    pytest.param("sqnr", _state("sqnr", "x", hi="inf"), False, id="hi-inf-string"),
    pytest.param("sqnr", _state("sqnr", "x", lo=float("nan")), False, id="lo-nan"),
    pytest.param("min-max", _state("min-max", "x", hi=float("inf")), False, id="hi-inf"),
    pytest.param("min-max", _state("min-max", "x", lo=5.0, hi=-5.0), False, id="lo-over-hi"),
    pytest.param("min-max", _state("min-max", "x", count=-1), False, id="count-negative"),
    pytest.param("min-max", _state("min-max", "x", count=2.0), False, id="count-float"),
    pytest.param("min-max", _state("min-max", "x", lo=-(10**400)), False, id="lo-huge-int"),
    pytest.param("sqnr", _state("sqnr", "x", hi=10**400), False, id="hi-huge-int-sqnr"),
    pytest.param("sqnr", _state("sqnr", "x", counts=_b64(bytes(8) * 3)), True, id="counts-3-bins-merged"),
    pytest.param("sqnr", _state("sqnr", "x", counts=_b64(bytes(7))), False, id="counts-7-bytes"),
    pytest.param("sqnr", _state("sqnr", "x", counts=_b64(b"\xff" * 8)), False, id="counts-negative"),
    pytest.param("sqnr", _state("sqnr", "x", counts="é"), False, id="counts-not-ascii"),
    pytest.param("sqnr", _state("sqnr", "x", counts=[1, 2]), False, id="counts-list"),
    pytest.param("sqnr", _state("sqnr", "x", method=[]), False, id="method-list"),
    pytest.param("sqnr", _state("min-max", "x"), False, id="min-max-state-for-sqnr"),
    pytest.param("sqnr", _state("sqnr", "unseen", lo=1.0), True, id="unseen-half-set-merged"),
    pytest.param("sqnr", _state("sqnr", "x", lo=-1e308, hi=1e308), True, id="widest-range-merged"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("samples",), -1), False, id="samples-negative"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("samples",), True), False, id="samples-bool"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("tensors",), []), False, id="tensors-list"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("tensors", "x"), "nan"), False, id="state-string"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("model_sha256",), None), False, id="hash-null"),
    pytest.param("min-max", with_field(stats_seed("min-max"), ("format",), [FORMAT]), False, id="format-list"),
]


@pytest.mark.parametrize(("method", "doc", "merge"), STATS_CORPUS)
def test_stats_known_hostile(method: str, doc: dict[str, Any], merge: bool) -> None:
    """Saved-state mutations the fuzzing found, and the named ones a hand-edited file would hold."""
    _check_stats(dumps(doc), method, stats_seed(method) if merge else None)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000, id="100000-open-brackets"),
        pytest.param('{"format": "' + FORMAT + '", "tensors": {}, "samples": ' + "1" * 4301 + "}", id="int-4301"),
    ],
)
def test_stats_known_hostile_text(text: str) -> None:
    """JSON texts that trip the decoder before any stats check runs."""
    _check_stats(text.encode(), "min-max")


# --- 5. raw and npy tensors ----------------------------------------------------------------------

SPEC = InputSpec("x", np.dtype("float32"), (1, 4))
IDS_SPEC = InputSpec("ids", np.dtype("int64"), (1, 3))
NPY_MAGIC_V1 = b"\x93NUMPY\x01\x00"


def npy_bytes(header: str, data: bytes, version: int = 1) -> bytes:
    """A .npy file around any header text, padded as numpy pads it (so data starts 16-aligned)."""
    encoded = header.encode("latin1", "backslashreplace")
    size_bytes = 2 if version == 1 else 4
    prefix = 6 + 2 + size_bytes
    encoded += b" " * (-(prefix + len(encoded) + 1) % 16) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(encoded).to_bytes(size_bytes, "little") + encoded + data


def _check_tensor(name: str, data: bytes, spec: InputSpec = SPEC, native: bool = False) -> None:
    with scratch_file(name, data) as path:
        array = only_qtool_errors(lambda: load_tensor(path, spec, "fuzz-list.txt:1", native))
    if array is not None:
        assert array.shape == spec.shape and array.dtype == spec.dtype


DESCRS: list[Any] = [
    *("<f4", ">f4", "<f8", "<f2", "<f16", "|b1", "<i8", ">i4", "|u1", "<c8", ">c16", "|O", "<U1", "|S3"),
    *("|V4", "V0", "<m8[s]", "<M8[D]", "", "xyz", "<f0", b"<f4", 1.5, None),
    [("a", "<f4")],
    [("a",)],
    [("a", "<f4"), ("a", "<f4")],
    ("<f4", (2,)),
    ("<f4",),
    (),
]
DIMS = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([100_000, 2**31, 2**62 + 1, 2**63, 2**64 + 1, 2**70, -(2**63)]),
    st.booleans(),
)
NPY_PIECES = [
    *("{", "}", "(", ")", "[", "]", ":", ",", " ", "'descr'", "'shape'", "'fortran_order'", "'<f4'", "(1, 4)"),
    *("True", "False", "1", "-4", "1+", "'''", '"', "#", "\\", "\n", "b'", "{}", "[]", "set()", "...", "None"),
]


@st.composite
def npy_headers(draw: st.DrawFn) -> tuple[str, bytes]:
    """A dictionary header with any descr, fortran_order and shape, over about the data it needs."""
    header = {
        "descr": draw(st.one_of(st.just("<f4"), st.sampled_from(DESCRS))),
        "fortran_order": draw(st.one_of(st.booleans(), json_leaves)),
        "shape": draw(
            st.one_of(st.lists(DIMS, max_size=3).map(tuple), st.lists(DIMS, max_size=3).map(tuple), json_leaves)
        ),
    }
    size = draw(st.one_of(st.just(16), st.sampled_from([0, 4, 32, 64]), st.integers(0, 80)))
    return ascii(header), draw(st.binary(min_size=size, max_size=size))


@given(st.binary(max_size=200))
@settings(max_examples=100)
def test_npy_arbitrary_bytes(data: bytes) -> None:
    """Binary junk named .npy: no magic string, a DataError."""
    _check_tensor("x.npy", data)


@given(st.binary(max_size=200), st.sampled_from([1, 2, 3]))
@settings(max_examples=150)
def test_npy_arbitrary_bytes_after_the_magic(data: bytes, version: int) -> None:
    """Junk after a valid magic string reaches numpy's header reader."""
    _check_tensor("x.npy", b"\x93NUMPY" + bytes([version, 0]) + data)


@given(st.lists(st.one_of(st.sampled_from(NPY_PIECES), st.text(max_size=3)), max_size=12).map("".join))
@settings(max_examples=300)
def test_npy_header_text(header: str) -> None:
    """Header text built from Python-literal syntax: numpy evaluates it with ast.literal_eval."""
    _check_tensor("x.npy", npy_bytes(header, bytes(16)))


@given(npy_headers(), st.sampled_from([1, 2]))
@settings(max_examples=400)
def test_npy_header_fields(header_and_data: tuple[str, bytes], version: int) -> None:
    """Well-formed headers whose descr, fortran_order and shape are anything (negative, huge, bool)."""
    header, data = header_and_data
    _check_tensor("x.npy", npy_bytes(header, data, version))


@given(st.binary(max_size=64), st.sampled_from([(SPEC, False), (SPEC, True), (IDS_SPEC, True), (IDS_SPEC, False)]))
@settings(max_examples=150)
def test_raw_arbitrary_bytes(data: bytes, spec_native: tuple[InputSpec, bool]) -> None:
    """A .raw file of any size and content: wrong size or NaN/Inf is a DataError."""
    _check_tensor("x.raw", data, *spec_native)


@given(st.binary(min_size=16, max_size=16))
@settings(max_examples=100)
def test_raw_right_size_any_content(data: bytes) -> None:
    """16 bytes are 4 float32 values: any bit pattern loads or is refused as NaN/Inf."""
    _check_tensor("x.raw", data)


def test_npy_huge_shape_is_refused_without_allocating() -> None:
    """A header claiming 10^10 floats over 16 bytes of data must fail from the header, at once."""
    data = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", bytes(16))
    with scratch_file("huge.npy", data) as path:
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(QtoolError, match="shape"):
                load_tensor(path, SPEC, "fuzz-list.txt:1")
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 1 << 20


def test_npy_complex_values_are_refused() -> None:
    """Complex numbers have no quantized form: refused by dtype, not cast (dropping the imaginary part)."""
    with tempfile.TemporaryDirectory(prefix="qtool-fuzz-") as folder:
        path = Path(folder) / "complex.npy"
        np.save(path, np.ones((1, 4), dtype=np.complex64))
        with pytest.raises(QtoolError, match="complex"):
            load_tensor(path, SPEC, "fuzz-list.txt:1")


NPY_CORPUS = [
    pytest.param("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, -2), }", id="negative-dims"),
    pytest.param("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -4), }", id="negative-dims-2"),
    pytest.param("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 4), }", id="bool-dim"),
    pytest.param(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**62 + 1}, 4), }}", id="int64-wrapping-dims"),
    pytest.param(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**64 + 1}, 4), }}", id="dim-over-int64"),
    pytest.param("{'descr': ('<f4',), 'fortran_order': False, 'shape': (1, 4), }", id="descr-1-tuple"),
    pytest.param("{'descr': (), 'fortran_order': False, 'shape': (1, 4), }", id="descr-empty-tuple"),
    pytest.param("{[]: 1}", id="unhashable-dict-key"),
    pytest.param("{1, []}", id="unhashable-set-item"),
    pytest.param("(", id="unclosed-paren"),
    pytest.param("'''", id="unclosed-triple-quote"),
    pytest.param("1+" * 4000 + "1", id="4000-nested-additions"),
    pytest.param("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 2), }", id="complex-descr"),
    pytest.param("{'descr': '|O', 'fortran_order': False, 'shape': (1, 2), }", id="object-descr"),
]


@pytest.mark.parametrize("header", NPY_CORPUS)
def test_npy_known_hostile(header: str) -> None:
    """.npy headers the fuzzing found escaping numpy's reader or qtool's checks, over 16 data bytes."""
    _check_tensor("x.npy", npy_bytes(header, bytes(16)))

"""Typed, frozen options for each stage, built from click's params (no stringly-typed bags)."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from qtool.errors import UsageError, did_you_mean
from qtool.io.files import line_of, read_limit, read_text

# qairt's hidden legacy --act_quantizer/--param_quantizer values -> (schema, calibration)
LEGACY_QUANTIZERS = {
    "tf": ("asymmetric", "min-max"),
    "enhanced": ("asymmetric", "sqnr"),
    "adjusted": ("adjusted", "min-max"),
    "symmetric": ("symmetric", "min-max"),
}
SCHEMAS = ("asymmetric", "symmetric", "unsignedsymmetric")
CALIBRATIONS = ("min-max", "sqnr", "entropy", "mse", "percentile")
# activations also take "auto": the method that scores best out of sample on the list (api/auto_calibration.py)
ACT_CALIBRATIONS = (*CALIBRATIONS, "auto")


# Keys other tools spell differently (TIDL's advanced_options), mapped to qtool's option names.
CONFIG_ALIASES = {
    "output_feature_16bit_names_list": "act_16bit_tensors",
    "params_16bit_names_list": "params_16bit_tensors",
    "act_bw": "act_bitwidth",
    "weight_bw": "weights_bitwidth",
    "bias_bw": "bias_bitwidth",
    "algorithms": "apply_algorithms",
    "input_dim": "input_dims",  # the flags' own names: `input_dim:` was an unknown key (helper-78)
    "input_value": "input_values",
    "float_bw": "float_bitwidth",
    "float_bias_bw": "float_bias_bitwidth",
}
# YAML sections that configure an algorithm rather than name an option (adaquant and mixed_precision sections
# were accepted and never read: `mixed_precision: {target_sqnr: 40}` did nothing, silently).
ALGORITHM_SECTIONS = ("actsearch", "adaround", "bc", "cle", "clipsearch", "mean_correction", "outlier_split", "smoothquant")


def configs_dir() -> Path:
    """The target presets: package data (qtool/configs/, which the checkout's configs/ links to),
    or the folder QTOOL_CONFIGS names."""
    override = os.environ.get("QTOOL_CONFIGS")
    return Path(override) if override else Path(__file__).parent / "configs"


def preset_file(target: str | None) -> Path | None:
    """The file --target reads: an input no output may replace (--save_stats onto it broke every later run)."""
    return configs_dir() / f"{target}.yaml" if target else None


def presets() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


# YAML 1.2's core schema, the only plain scalars that are not strings. PyYAML resolves YAML 1.1's: `16:00` was
# base 60 (960), `010` octal (8), `yes`/`on`/`off` booleans (`mixed_precision: off` was False), `2001-12-14` a date.
_CORE_SCALARS = (
    ("null", r"~|null|Null|NULL|", "~nN"),
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", "-+.0123456789"),
)


def _core_int(loader: Any, node: Any) -> int:
    text = loader.construct_scalar(node)
    digits = text.lstrip("+-")
    value = int(digits[2:], {"0o": 8, "0x": 16}[digits[:2]]) if digits[:2] in ("0o", "0x") else int(digits, 10)
    return -value if text.startswith("-") else value


@functools.cache
def _loader() -> type:
    """The loader of load_yaml, built on first use: PyYAML is imported only when a config file is read (a
    quantize without --config or --target reads none; its modules were ~1 MB of that run's peak RSS)."""
    import re

    import yaml

    class _CoreSafeLoader(yaml.SafeLoader):
        """yaml.SafeLoader resolving YAML 1.2 core-schema scalars only, refusing `*alias` references (nested
        aliases expand exponentially: a few hundred bytes can make gigabytes) and keys given twice; it keeps
        each top-level key's offset and plain text (`sources`), so an error can name its line and a name that
        looks like a number (`010`) can be read as written."""

        yaml_implicit_resolvers: ClassVar[dict] = {}  # PyYAML's per-class registry: ours alone, not SafeLoader's
        sources: dict[str, tuple[int, Any]]

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*{event.anchor}) are not allowed in qtool config files", event.start_mark
                )
            return super().compose_node(parent, index)

        def construct_document(self, node: Any) -> Any:
            def plain(item: Any) -> Any:
                if isinstance(item, yaml.SequenceNode):
                    return [plain(i) for i in item.value]
                return item.value if isinstance(item, yaml.ScalarNode) and item.style is None else None

            top = node.value if isinstance(node, yaml.MappingNode) else []
            self.sources = {str(k.value): (k.start_mark.index, plain(v)) for k, v in top if isinstance(k, yaml.ScalarNode)}
            return super().construct_document(node)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()  # a list made 100000 keys a quadratic hour
            unhashable: list[Any] = []  # YAML allows a list as a key; the mapping refuses it later
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    twice = key in seen
                    seen.add(key)
                except TypeError:
                    twice = key in unhashable
                    unhashable.append(key)
                if twice:  # YAML keeps the last silently: which value did the user mean?
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
            return super().construct_mapping(node, deep)

    for tag, pattern, first in _CORE_SCALARS:
        regex = re.compile(f"^(?:{pattern})$")
        _CoreSafeLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", regex, [*first, *([""] if tag == "null" else [])])
    _CoreSafeLoader.add_constructor("tag:yaml.org,2002:int", _core_int)
    return _CoreSafeLoader


def load_yaml(path: Path) -> Any:
    """A config YAML: a bounded read of a regular UTF-8 file, no aliases, bounded nesting."""
    return _load_yaml(path)[0]


def _load_yaml(path: Path) -> tuple[Any, dict[str, tuple[int, Any]]]:
    """The YAML and, for each top-level key, its line and its value's plain text (load_yaml)."""
    import yaml

    # PyYAML's pure-Python parser holds ~350 bytes per byte of a list of short names: a config is read up to
    # 1/64 of the other text inputs' cap (1 MiB; not under 64 KiB), not to 64 MiB (~20 GB parsed)
    limit = max(read_limit() >> 6, min(read_limit(), 1 << 16))
    text = read_text(path, "config file", error=UsageError, limit=limit)
    loader = None
    try:
        loader = _loader()(text)  # its reader checks the characters here: a ReaderError
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:  # PyYAML's mark.line also counts \x85, \u2028 and \u2029, which no editor breaks at
            line = f":{line_of(text, mark.index)}"
        elif isinstance(getattr(e, "position", None), int):  # a ReaderError (a control character) has an offset
            line = f":{line_of(text, e.position)}"  # type: ignore[attr-defined]
        else:
            line = ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]  # one line: a ReaderError's text has two
        if problem.startswith("but ") and getattr(e, "context", None):  # "but found another document" alone
            problem = f"{e.context}, {problem}"  # type: ignore[attr-defined]
        raise UsageError(f"not valid YAML: {problem}", where=f"{path}{line}") from e
    except RecursionError as e:
        raise UsageError("YAML nested too deep", where=str(path)) from e
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # PyYAML's constructors raise these for a bad tagged or implicit value (!!int x, !!timestamp 2001-13-45)
        raise UsageError(f"not valid YAML: a value cannot be read ({type(e).__name__}: {str(e)[:80]})",
                         where=str(path)) from e  # fmt: skip
    finally:
        if loader is not None:
            loader.dispose()
    return data, {key: (line_of(text, at), plain) for key, (at, plain) in getattr(loader, "sources", {}).items()}


class ConfigValues(dict):
    """read_config's option values, and where each was given: `where(key)` is `path:line`, `plain(key)` the
    value's unquoted YAML text (a str, a list of them, or None), so a name written `010` stays `010`."""

    def __init__(self, path: Path, sources: dict[str, tuple[int, Any]]) -> None:
        super().__init__()
        self.path, self.sources = path, sources

    def where(self, key: str) -> str:
        line = self.sources.get(key, (0, None))[0]
        return f"{self.path}:{line}" if line else str(self.path)

    def plain(self, key: str) -> Any:
        return self.sources.get(key, (0, None))[1]


def read_config(path: Path, option_names: set[str]) -> ConfigValues:
    """A preset or --config YAML as click default_map entries; algorithm sections go under
    `algorithm_config`. Unknown keys are errors that suggest the closest option."""
    data, sources = _load_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError("a config file must be a mapping of option names to values", where=str(path))
    if {"activation_encodings", "param_encodings", "encodings"} & set(map(str, data)):  # YAML reads JSON (2.0.0's too)
        raise UsageError("is an encodings (overrides) file, not a config of option values", where=str(path),
                         hint=f"give it as -q/--quantization_overrides {path}")  # fmt: skip
    result, written = ConfigValues(path, {}), ConfigValues(path, sources)  # by option name, by key as written
    sections: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for key, value in data.items():
        name = CONFIG_ALIASES.get(str(key), str(key))
        where = written.where(str(key))
        if given.setdefault(name, key) != key:  # act_bw and act_bitwidth: the last one silently won
            raise UsageError(f"{given[name]!r} and {key!r} set the same option {name}", where=where)
        if name in ALGORITHM_SECTIONS and isinstance(value, dict):
            sections[name] = value
        elif name in option_names:
            result[name] = value
            result.sources[name] = sources.get(str(key), (0, None))  # an alias's line and text under the name
        elif name in ("target", "config"):  # "unknown key 'target' (did you mean 'target_sqnr'?)"
            raise UsageError(f"{key!r} cannot be set in a config file: give --{name} on the command line"
                             + (" (the config's values override its preset's)" if name == "target" else ""), where=where)
        elif name in ALGORITHM_SECTIONS:  # `cle: []` was an "unknown key 'cle'"
            raise UsageError(f"{key!r} must be a mapping of {name}'s settings, not {str(value)[:60]}", where=where)
        else:
            raise UsageError(
                f"unknown key {key!r}", where=where, hint=did_you_mean(str(key), option_names | set(CONFIG_ALIASES))
            )
    if sections:
        result["algorithm_config"] = sections
    return result


def _fields_from(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in params.items() if k in names and v is not None}


@dataclass(frozen=True)
class ConvertOptions:
    input_network: Path
    output_path: Path | None = None
    input_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    quantization_overrides: Path | None = None
    float_bitwidth: int = 32
    export_format: str = "default"
    external_data: bool = False  # write <output> + <output>.data whatever the size
    op_package_lib: tuple[Path, ...] = ()  # custom-op libraries every session registers (runtime.custom_ops)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ConvertOptions:
        if params.get("quantization_overrides") is not None and params.get("float_bitwidth") == 16:  # carried, unread
            raise UsageError("--quantization_overrides with --float_bitwidth 16: quantize takes no float16 model, so the "
                             "overrides carried in it would never be read",
                             hint="convert at float32 with them, then quantize --float_bitwidth 16")  # fmt: skip
        return cls(**_fields_from(cls, params))


@dataclass(frozen=True)
class QuantizeOptions:
    input_network: Path
    output_path: Path | None = None
    input_list: Path | None = None
    quantization_overrides: Path | None = None
    input_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    act_bitwidth: int = 8
    act_bitwidth_given: bool = False  # --act_bitwidth written out: no rounded dip raised past it (quant/rounded_dips.py)
    weights_bitwidth: int = 8
    bias_bitwidth: int = 8
    act_quantizer_schema: str = "asymmetric"
    param_quantizer_schema: str = "asymmetric"
    act_quantizer_calibration: str | None = None  # none given: auto where it can run (api/quantize.with_calibration_method)
    param_quantizer_calibration: str = "min-max"
    percentile_calibration_value: float = 99.99
    float_bias_bitwidth: int = 32
    float_bitwidth: int = 32
    pack_4_bit_weights: bool = False
    use_per_channel_quantization: bool = False
    use_per_row_quantization: bool = False
    use_per_channel_residual: bool = False  # per-channel activation encodings on the residual stream
    no_hardswish_equalization: bool = False  # quant/algorithms/cle_hardswish.py's default pairs left as they are
    weights_block_size: int | None = None  # per-block Conv/Gemm/MatMul weights (quant/blocks.py)
    use_lpbq: bool = False  # ... compressed to LPBQ (4-bit, decompressed 8-bit)
    use_asymmetric_blocks: bool = False  # ... or each with its own zero point (onnxruntime; not AIMET/QNN)
    matmulnbits_accuracy_level: int | None = None  # --target ort-cpu's MatMulNBits (export/matmulnbits.py)
    ignore_quantization_overrides: bool = False
    enable_float_fallback: bool = False
    use_native_input_files: bool = False
    encodings_format: str = "legacy"
    num_threads: int = 0
    calib_batch_size: int = 1
    evaluate_samples: int = 64
    save_stats: Path | None = None
    load_stats: tuple[Path, ...] = ()
    act_power_of_2: bool = False
    param_power_of_2: bool = False
    act_16bit_tensors: tuple[str, ...] = ()
    params_16bit_tensors: tuple[str, ...] = ()
    op_types_to_quantize: tuple[str, ...] = ()
    apply_algorithms: tuple[str, ...] = ("auto",)  # bc where auto's held-out halves say it gains (api/default_bc.py)
    mixed_precision: str | None = None  # "off" as given, None (off) as not: a goal without it is a slip (api/quantize)
    mixed_precision_sensitivity: str = "auto"
    html: Path | None = None
    target_sqnr: float | None = None
    max_cosine_drop: float | None = None
    mixed_precision_factor: float | None = None
    eval_list: Path | None = None
    strict: bool = False
    min_sqnr: float | None = None  # exit 6 (model written) when the output SQNR is below it
    target: str | None = None  # the --target preset's name; the CLI also takes its values from configs/
    external_data: bool = False  # write <output> + <output>.data whatever the size
    config: Path | None = None  # the --config file (its values arrive as params): an input no output may replace
    op_package_lib: tuple[Path, ...] = ()  # custom-op libraries every session registers (runtime.custom_ops)
    algorithm_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any], from_files: frozenset[str] = frozenset()) -> QuantizeOptions:
        """`from_files`: the params a --target preset or --config gave, which a flag given on the command line
        overrides ('--target qnn-htp --act_quantizer enhanced' was refused: its preset names a schema)."""
        params, files = dict(params), set(from_files)
        for kind in ("act", "param"):
            legacy = params.pop(f"{kind}_quantizer", None)
            if legacy is None:
                continue
            keys = [f"{kind}_quantizer_{k}" for k in ("schema", "calibration")]
            new = [k for k in keys if params.get(k) and (k not in files or f"{kind}_quantizer" in files)]
            if new:
                raise UsageError(f"legacy --{kind}_quantizer cannot be mixed with --{new[0]}")
            params[keys[0]], params[keys[1]] = LEGACY_QUANTIZERS[legacy]
            if f"{kind}_quantizer" not in files:  # given on the command line: so are the values it sets
                files -= {*keys}
        if params.get("weights_bitwidth") == 16 and not params.get("param_quantizer_schema"):
            params["param_quantizer_schema"] = "symmetric"  # qairt: 16-bit weights default to symmetric
        if params.get("weights_bitwidth") == 4 and not params.get("param_quantizer_calibration"):
            # 15 levels cannot afford min-max's outliers: clipping by MSE triples W4 accuracy (bench).
            params["param_quantizer_calibration"] = "mse"
        percentile = params.get("percentile_calibration_value")
        for_acts = params.get("load_stats") and params.get("param_quantizer_calibration") != "percentile"  # a replay's
        if percentile is not None and for_acts and not params.get("act_quantizer_calibration"):
            params["act_quantizer_calibration"] = "percentile"  # the replay's method, not the one its files record
        uses_percentile = "percentile" in (
            params.get("act_quantizer_calibration"),
            params.get("param_quantizer_calibration"),
        )
        methods = ("act_quantizer_calibration", "param_quantizer_calibration")  # a file's percentile for a method
        overridden = "percentile_calibration_value" in files and any(params.get(k) and k not in files for k in methods)
        if percentile is not None and not uses_percentile and not overridden:  # ... the command line replaced
            raise UsageError("--percentile_calibration_value is only allowed with percentile calibration")
        if not uses_percentile:
            params.pop("percentile_calibration_value", None)
        # each was ignored, exit 0: 'exact' without --mixed_precision auto; a level without the MatMulNBits it sets
        if params.get("mixed_precision_sensitivity") is not None and params.get("mixed_precision") is None:
            raise UsageError("--mixed_precision_sensitivity applies to --mixed_precision auto's search, which is off: "
                             "the run would ignore it", hint="add --mixed_precision auto")  # fmt: skip
        if params.get("matmulnbits_accuracy_level") is not None and params.get("target") != "ort-cpu":
            raise UsageError("--matmulnbits_accuracy_level applies to the MatMulNBits --target ort-cpu writes: the run "
                             "would ignore it", hint="add --target ort-cpu, or export --format matmulnbits")  # fmt: skip
        params["mixed_precision_sensitivity"] = params.get("mixed_precision_sensitivity") or "auto"
        return cls(**_fields_from(cls, params))


@dataclass(frozen=True)
class InspectOptions:
    model: Path
    reference: Path | None = None
    input_list: Path | None = None
    labels: Path | None = None
    use_native_input_files: bool = False
    num_threads: int = 0
    target: str | None = None  # lint against this target's ops and preset (qtool/inspect/target_ops.py)
    fail_on: str | None = None  # "warning" | "error": findings at or above it exit 5
    html: Path | None = None  # one self-contained HTML report
    op_package_lib: tuple[Path, ...] = ()  # custom-op libraries every session registers (runtime.custom_ops)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> InspectOptions:
        return cls(**_fields_from(cls, params))


@dataclass(frozen=True)
class ExportOptions:
    input_network: Path
    output_path: Path
    formats: tuple[str, ...] = ("stripped", "encodings")
    encodings_format: str = "legacy"
    matmulnbits_accuracy_level: int = 0  # MatMulNBits' accuracy_level (export/matmulnbits.py)
    external_data: bool = False  # write every model as <file> + <file>.data
    op_package_lib: tuple[Path, ...] = ()  # custom-op libraries every session registers (runtime.custom_ops)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ExportOptions:
        formats = params.get("formats") or cls.formats  # a level or layout for a format not written: ignored, exit 0
        if params.get("matmulnbits_accuracy_level") and "matmulnbits" not in formats:
            raise UsageError("--matmulnbits_accuracy_level applies to --format matmulnbits, which this export does "
                             "not write", hint="add --format matmulnbits")  # fmt: skip
        if params.get("encodings_format", "legacy") != "legacy" and "encodings" not in formats:
            raise UsageError("--encodings_format applies to --format encodings, which this export does not write",
                             hint="add --format encodings")  # fmt: skip
        return cls(**_fields_from(cls, params))

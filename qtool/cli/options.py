"""Shared CLI pieces: the error-handling group, option types and callbacks, --config/--target,
the common --json/-v/--quiet options and progress output. Only parsing; no graph code."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from qtool.config import (
    ConfigValues,
    configs_dir,
    presets,
    read_config,
)
from qtool.errors import Interrupted, QtoolError, UsageError, did_you_mean
from qtool.io.files import clipped_path, quoted
from qtool.quant.algorithms import MAX_COUNT  # samples, batch sizes: as an algorithm section's counts
from qtool.report import Report, printable


class NonEmptyPath(click.Path):
    """click.Path that refuses an empty string (Path('') is the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("empty path", param, ctx)
        if value == "-":  # many tools' standard input or output: qtool wrote a file named '-' (-o -)
            self.fail("'-' is no file here: qtool reads and writes files, not standard input or output (./- is a "
                      "file named '-')", param, ctx)  # fmt: skip
        if isinstance(value, str) and "\0" in value:  # a config file's string can hold one; no file name can
            self.fail(f"{quoted(value)} has a NUL byte", param, ctx)
        # Path() drops a final '/' or '/.': `-o build/` and `-o build/.` wrote a file named `build`
        if isinstance(value, str) and self.file_okay and value.endswith(("/", "/.")):
            end = value[value.rindex("/") :]
            self.fail(f"{quoted(value)} ends with {end!r}, a folder's path; give a file's", param, ctx)
        return super().convert(value, param, ctx)


PathType = NonEmptyPath(path_type=Path)  # a folder is refused by whoever reads or writes it (exit 4 or 2)

# Bounds on numbers a flag or config passes on to onnxruntime, numpy or protobuf, which fail past them with an
# overflow of their own (an internal error): itertools.islice past sys.maxsize, onnxruntime's thread pool
# (bad_alloc at 1e9 threads, reported as the model failing to load), a dim past int64.
MAX_THREADS = 1024
MAX_DIM = 2**31 - 1
Count = click.IntRange(min=0, max=MAX_COUNT)
Threads = click.IntRange(min=0, max=MAX_THREADS)


# qairt-converter/-quantizer and QNN flags (FORMATS.md b.3) that qtool has no flag of that name for: what does
# their job here. Any other unknown flag gets click's nearest spellings, which for these were unrelated flags.
QAIRT_INSTEAD = {
    "--dump_encoding_json": "qtool quantize always writes <output>.encodings.json (--encodings_format sets its layout)",
    "--export_stripped_dlc": "qtool export --format stripped --format encodings writes the stripped model",
    "--keep_weights_quantized": "weight-only quantization (float activations) is --act_bitwidth 32",
    "--use_aimet_quantizer": "qtool runs its own algorithms: --apply_algorithms, with settings in --config sections",
    "--desired_input_shape": "qtool's is --input_dim NAME DIMS",
    "-d": "qairt's --desired_input_shape is qtool's --input_dim NAME DIMS",
    "--onnx_override_batch": "--input_dim NAME DIMS fixes an input's shape (convert sets a dynamic batch to 1)",
    "--onnx_define_symbol": "--input_dim NAME DIMS fixes an input's shape",
    "--target_backend": "--target picks a preset: qnn-htp, tidl, vitis-dpu or ort-cpu",
    "--dry_run": "qtool inspect MODEL --target NAME lists what the target cannot run quantized",
    "--onnx_summary": "qtool inspect MODEL",
    "--onnx_validate_models": "qtool inspect QDQ_MODEL --reference FLOAT_MODEL --input_list LIST compares the two",
    "--quantizer_log": "qtool inspect QDQ_MODEL --reference FLOAT_MODEL --input_list LIST gives each layer's error",
    "--axis_quant": "qtool's is --use_per_channel_quantization",
}
QAIRT_MISSING = {  # qairt flags with no qtool counterpart at all
    "--restrict_quantization_steps", "--adjust_bias_encoding", "--use_dynamic_16_bit_weights",
    "--enable_per_row_quantized_bias", "--use_native_output_files", "--preserve_io_datatype", "--use_quantize_v2",
    "--disable_relu_squashing", "--include_data_invariant_ops", "--out_tensor_name", "--source_model_input_layout",
}


def no_such_option(e: click.NoSuchOption) -> str:
    """click's message for an unknown flag, saying what qtool has for a qairt flag it lacks and which command takes
    a flag of another, and guessing among the flags --help shows (click guessed hidden ones: --algorithm_config)."""
    name, ctx = e.option_name, e.ctx
    if name in QAIRT_INSTEAD:
        return f"{e.message} {name} is a qairt flag; {QAIRT_INSTEAD[name]}."
    if name in QAIRT_MISSING:
        return f"{e.message} {name} is a qairt flag qtool has no counterpart for."
    if ctx is None:
        return e.format_message()
    commands = getattr(ctx.find_root().command, "commands", {})
    takes = [n for n, c in sorted(commands.items()) if c is not ctx.command and any(name in p.opts for p in c.params)]
    if takes:
        return f"{e.message} It is a flag of qtool {' and '.join(takes)}."
    shown = [o for p in ctx.command.params if not getattr(p, "hidden", False) for o in p.opts + p.secondary_opts]
    hint = did_you_mean(name, [o for o in shown if o.startswith("--")]) if name.startswith("--") else None
    return f"{e.message} ({hint[0].upper()}{hint[1:]})" if hint else e.message


def extra_argument(e: click.UsageError, args: list[str]) -> str | None:
    """'--apply_algorithms cle bc' or '--op_types_to_quantize Conv Gemm' (argparse's nargs='+' habit: qnn's
    --algorithms, onnxruntime's op lists) was 'Got unexpected extra argument (bc)': a repeatable flag takes one value."""
    ctx, extra = e.ctx, e.message.partition("(")[2].split(" ")[0].rstrip(")")
    repeatable = {o for p in ctx.command.params if getattr(p, "multiple", False) for o in p.opts} if ctx else set()
    for k in range(1, len(args) - 1):
        if args[k + 1] == extra and args[k - 1] in repeatable and e.message.startswith("Got unexpected extra"):
            flag = args[k - 1]
            return f"{flag} takes one value a time; repeat it for each: {flag} {args[k]} {flag} {extra}"
    switches = {o: p for p in ctx.command.params if getattr(p, "is_flag", False) for o in p.opts} if ctx else {}
    for k in range(len(args) - 1):  # '--use_per_channel_quantization true', onnxruntime's per_channel=True habit
        if args[k + 1] == extra and args[k] in switches and e.message.startswith("Got unexpected extra"):
            off = switches[args[k]].secondary_opts
            return f"{args[k]} is a switch and takes no value: give it alone (on) or {off[0] if off else 'leave it out'} (off)"
    return None


def _tell(line: str) -> None:
    """An error line on stderr; where stderr cannot take it (2>/dev/full) it is lost, not the error's exit code."""
    with contextlib.suppress(OSError):
        click.echo(line, err=True)


PARTIAL_FILES = ("quantization_overrides", "config")  # each holds a part of a run's settings


class QtoolCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_repeated_values(ctx, args)
        try:
            rest = super().parse_args(ctx, args)
        except click.BadOptionUsage as e:  # click's parser gives no ctx: no '(see --help)', nor what the values are
            e.ctx = e.ctx or ctx
            option = next((p for p in self.params if e.option_name in p.opts + p.secondary_opts), None)
            if option is not None and option.nargs > 1 and option.metavar and e.message.endswith("arguments."):
                e.message = f"{e.message[:-1]}: {e.option_name} {option.metavar}"  # '--input_dim 1,3,8,8'
            raise
        refuse_replaced_config_files(ctx)
        return rest


def refuse_replaced_config_files(ctx: click.Context) -> None:
    """A --config naming an overrides file and a -q naming another are refused, as two -q are: the command line's
    replaced the config's, whose entries were dropped without a word. The same file both ways is taken. Replacing a
    shared config's file is meant as often as adding to it, so the message gives both ways (README: CLI > config)."""
    config = ctx.meta.get("qtool.config_layers", {}).get("config", {})
    for name in (n for n in PARTIAL_FILES if n in config and ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE):
        ours, given = str(config[name]), str(ctx.params[name])
        if os.path.abspath(ours) != os.path.abspath(given):
            flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
            raise click.UsageError(f"{flag} is given twice ({printable(clipped_path(ours))} in --config {config.where(name)}, "
                                   f"then {printable(clipped_path(given))}) and takes one file: the command line's would "
                                   "replace the config's (give one: merge their entries into one file, or take "
                                   f"{name} out of the config to use the command line's alone)", ctx)  # fmt: skip


def refuse_repeated_values(ctx: click.Context, args: list[str]) -> None:
    """An overrides or config file given twice with two files is refused: click keeps the last one silently, and
    '-q acts.json -q params.json' dropped the first file's overrides, where each holds a part (as --load_stats
    shards do, which merge). The same file twice ('a.json', './a.json') is harmless, and another option given again (a script's
    '--input_list val.txt' after its base command's) is the last one, as on most command lines. The args are parsed
    once more by a copy of the command that collects every value of those options (click's public API: its parser's
    tables are private)."""
    probe = click.Command(ctx.info_name, context_settings=ctx.command.context_settings, add_help_option=False,
                          params=[_collecting(p) for p in ctx.command.params])  # fmt: skip
    try:  # resilient: no callback, default or prompt; a value click refuses is None here, reported by the real parse
        given = probe.make_context(ctx.info_name, list(args), resilient_parsing=True).params
    except click.ClickException:
        return
    for p in sorted((p for p in ctx.command.params if p.name in PARTIAL_FILES), key=lambda p: p.opts[0]):
        files = [str(v) for v in given.get(p.name) or ()]  # compared whole: two deep shards differ past any clip
        values = [printable(clipped_path(v)) for v in files]
        if len({os.path.abspath(v) for v in files}) > 1:
            times = "twice" if len(values) == 2 else f"{len(values)} times"
            raise click.UsageError(f"{p.opts[0]} is given {times} ({', then '.join(values)}) and takes one file: "
                                   "the last would replace the others (give one: merge their entries into one file)", ctx)  # fmt: skip


def _collecting(param: click.Parameter) -> click.Parameter:
    """`param` for the probe parse: without its callback (--config's reads a file); an overrides or config file
    option takes every value given, as written."""
    probe = copy.copy(param)
    probe.callback = None
    if param.name in PARTIAL_FILES:
        probe.multiple, probe.type = True, click.STRING
    return probe


class QtoolGroup(click.Group):
    """Turns QtoolError into one line on stderr and its exit code; hides tracebacks of bugs.
    click's own usage errors become the same one line (`qtool: error: ...`), not a usage screen."""

    command_class = QtoolCommand

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # a bare `qtool`: the help screen
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if isinstance(e, click.UsageError) and ctx else ""
            message = no_such_option(e) if isinstance(e, click.NoSuchOption) else e.format_message()
            if isinstance(e, click.UsageError) and (repeat := extra_argument(e, list(sys.argv[1:] if args is None else args))):
                message = f"{message}: {repeat}"
            _tell(f"qtool: error: {message}{hint}")
            sys.exit(e.exit_code)
        except click.Abort as e:  # an interrupt while the arguments are parsed
            _tell("qtool: interrupted; no output written")
            interrupt = e.__cause__ or e.__context__
            sys.exit(Interrupted.code_of(interrupt) if isinstance(interrupt, KeyboardInterrupt) else 130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except QtoolError as e:
            _tell(f"qtool: error: {printable(str(e))}")
            ctx.exit(e.exit_code)
        except KeyboardInterrupt as e:
            _tell("qtool: interrupted; no output written")
            ctx.exit(Interrupted.code_of(e))
        except Exception:
            if logging.getLogger().isEnabledFor(logging.INFO):
                raise
            logging.getLogger("qtool").debug("internal error", exc_info=True)
            _tell("qtool: internal error; re-run with -v to see the traceback and report it")
            ctx.exit(1)


class FiniteFloat(click.FloatRange):
    """click.FloatRange that refuses NaN and infinities: NaN passes every range comparison."""

    name = "finite float"

    def _describe_range(self) -> str:
        """Nothing for an unbounded one: click's text for it is `[x<=None]` in --help."""
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def input_dims(
    ctx: click.Context, param: click.Parameter, value: tuple[tuple[str, str], ...]
) -> dict[str, tuple[int, ...]]:
    dims: dict[str, tuple[int, ...]] = {}
    for name, text in value:
        words = text.replace("x", ",").split(",")
        if name in dims or not all(w.isascii() and w.isdigit() for w in words):  # int() takes ' 1', '1_0', '١'
            why = "given twice" if name in dims else "DIMS must be integers like 1,3,224,224"
            raise click.BadParameter(f"{name} {quoted(text)}: {why}")
        parsed = tuple(map(int, words))
        if any(d <= 0 or d > MAX_DIM for d in parsed):
            raise click.BadParameter(f"{name} {text[:80]!r}: every dim must be in 1..{MAX_DIM}")
        dims[name] = parsed
    return dims


def input_values(
    ctx: click.Context, param: click.Parameter, value: tuple[tuple[str, str], ...]
) -> dict[str, tuple[float, ...]]:
    values: dict[str, tuple[float, ...]] = {}
    for name, text in value:
        if name in values:
            raise click.BadParameter(f"{name} {quoted(text)}: given twice")
        try:
            parsed = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise click.BadParameter(f"{name} {text!r}: VALUES must be numbers like 16000 or 0.5,1") from None
        if not all(math.isfinite(v) for v in parsed):
            raise click.BadParameter(f"{name} {text!r}: every value must be finite")
        values[name] = parsed
    return values


# convert's and quantize's (for a raw model): the same flag
input_value_option = click.option(
    "--input_value",
    "input_values",
    nargs=2,
    multiple=True,
    callback=input_values,
    metavar="NAME VALUES",
    help="Pin an input to constant values (it leaves the graph; an If on it folds to one branch), "
    "e.g. --input_value sr 16000. Repeatable.",
)


def int_choice(*allowed: int) -> click.Choice:
    return click.Choice([str(a) for a in allowed])


def to_int(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return int(value) if value is not None else None


class Choice(click.Choice):
    """click.Choice whose error suggests the closest valid value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            if not self.choices and param is not None and param.name == "target":  # QTOOL_CONFIGS's folder
                self.fail(f"{value!r}: {configs_dir()} holds no target preset (*.yaml; QTOOL_CONFIGS)", param, ctx)
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            if "," in str(value) and getattr(param, "multiple", False):  # '--apply_algorithms adaround,cle'
                flag = param.opts[0] if param is not None else ""
                hint = f"one value a flag; repeat it for each: {' '.join(f'{flag} {v}' for v in str(value).split(','))}"
            choices = ", ".join(str(c) for c in self.choices)
            self.fail(f"{value!r} is not one of {choices}" + (f"; {hint}" if hint else ""), param, ctx)


def terminal_progress(total: int, label: str) -> Callable[[int], None]:
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        click.echo(f"\r{label} {done}/{total}", err=True, nl=done >= total)

    return step


def terminal_progress_if_tty() -> Callable[[int, str], Callable[[int], None]] | None:
    """Progress only on a terminal and not under --quiet, so logs and CI output stay clean."""
    quiet = logging.getLogger().getEffectiveLevel() >= logging.ERROR
    return terminal_progress if sys.stderr.isatty() and not quiet else None


def apply_config(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Eager: a preset (--target) and a --config file become click's default_map, so the
    precedence CLI > --config > preset > built-in default needs no further code (black's way)."""
    if value is None or ctx.resilient_parsing:
        return value
    names = {p.name for p in ctx.command.params if p.name} - {"target", "config"}
    layers = ctx.meta.setdefault("qtool.config_layers", {})
    path = configs_dir() / f"{value}.yaml" if param.name == "target" else Path(value)
    try:
        values = read_config(path, names)
        by_name = {p.name: p for p in ctx.command.params}
        for key, entry in values.items():
            if key in by_name and key != "algorithm_config":  # sections are checked by their algorithm
                values[key] = _check_config_value(by_name[key], key, entry, values)
        layers[param.name] = values
    except QtoolError as e:
        raise click.BadParameter(str(e)) from None
    ctx.default_map = {**layers.get("target", {}), **layers.get("config", {})}
    return value


def _check_config_value(param: click.Parameter, key: str, value: Any, values: ConfigValues) -> Any:
    """A YAML value must have the option's shape (click would take a list for a single value apart) and type;
    returns it as click should read it (a name written `010` as written, not YAML's number)."""
    where = values.where(key)

    def scalar(v: Any) -> bool:
        return v is None or isinstance(v, str | int | float | bool)

    def item(v: Any) -> bool:
        return scalar(v) if param.nargs == 1 else isinstance(v, list) and len(v) == param.nargs and all(map(scalar, v))

    ok = (isinstance(value, list) and all(map(item, value))) if param.multiple else item(value)
    if ok and isinstance(param.type, click.types.BoolParamType) and not isinstance(value, bool | str | None):
        raise UsageError(f"{key} must be true or false, not {str(value)[:60]}", where=where)  # click: internal error
    if not ok:
        shape = "a list of values" if param.multiple else "one value"
        raise UsageError(f"{key} must be {shape}, not {type(value).__name__} {str(value)[:60]}", where=where)
    kinds = getattr(param.type, "types", [param.type] * param.nargs)  # a tuple type, or one type for each
    if isinstance(param.type, click.Path) and key not in ("output_path", "save_stats", "html"):
        _beside_config(key, value if isinstance(value, list) else [value], values)

    def entry(v: Any, text: Any) -> Any:
        if param.nargs == 1:
            return _config_scalar(kinds[0], key, v, text, where)
        texts = text if isinstance(text, list) and len(text) == len(v) else [None] * len(v)
        return [_config_scalar(k, key, x, t, where) for k, x, t in zip(kinds, v, texts, strict=True)]

    if not param.multiple:
        return entry(value, values.plain(key))
    texts = values.plain(key) if isinstance(values.plain(key), list) and len(values.plain(key)) == len(value) else None
    return [entry(v, t) for v, t in zip(value, texts or [None] * len(value), strict=True)]


def _beside_config(key: str, paths: list[Any], values: ConfigValues) -> None:
    """A config's paths resolve against the current folder, as on the command line (README): one naming nothing
    here but a file beside the YAML was '../list.txt: input_list not found', naming neither the config nor why.
    Kept for `check_config_paths`: the command line may replace it."""
    for path in (p for p in paths if isinstance(p, str) and p and not os.path.isabs(p) and not os.path.lexists(p)):
        if os.path.lexists(there := values.path.parent / path):
            click.get_current_context().meta.setdefault("qtool.beside_config", {})[key] = UsageError(
                f"{key} {path}: not found in the current folder, against which a config's paths resolve, as on the "
                "command line (not the YAML's folder)", where=values.where(key),
                hint=f"give {there}, the file beside the YAML")  # fmt: skip


def check_config_paths(ctx: click.Context, from_files: frozenset[str]) -> None:
    """Refuse a path `_beside_config` kept, where the command line did not replace it."""
    for key, error in ctx.meta.get("qtool.beside_config", {}).items():
        if key in from_files:
            raise error


def _config_scalar(kind: click.ParamType, key: str, v: Any, text: Any, where: str) -> Any:
    """One config scalar for a parameter of type `kind`, refused (naming the key and line) where click would
    misread it: 3.5 or true as an integer, true as a name or choice; a number written for a name or a choice is
    its text (`010`, `1e3`)."""
    if isinstance(kind, click.types.IntParamType) and isinstance(v, bool | float):  # click's int(): 3.5 -> 3
        raise UsageError(f"{key} must be an integer, not {text or str(v).lower()}", where=where)
    if isinstance(kind, click.types.FloatParamType) and isinstance(v, bool):
        raise UsageError(f"{key} must be a number, not {str(v).lower()}", where=where)
    if isinstance(kind, click.types.StringParamType | click.Choice | click.Path) and isinstance(v, bool):
        raise UsageError(f"{key}: {text or str(v).lower()} is a YAML boolean; quote it if it is a name", where=where)
    if isinstance(kind, click.types.StringParamType | click.Choice | click.Path) and isinstance(v, int | float):
        v = text if isinstance(text, str) else v
    if v is not None and isinstance(kind, click.Choice | click.types.IntParamType | click.types.FloatParamType
                                    | click.types.BoolParamType):  # 'yes please' for a switch: click named no file
        try:
            kind.convert(v, None, None)
        except click.BadParameter as e:
            raise UsageError(f"{key}: {e.message}", where=where) from None
    return v


def config_options(func: Callable) -> Callable:
    func = click.option(
        "--config",
        "-c",
        type=PathType,
        is_eager=True,
        callback=apply_config,
        help="YAML of option values (and algorithm sections); overrides --target.",
    )(func)
    return click.option(
        "--target",
        type=Choice(presets()),
        is_eager=True,
        callback=apply_config,
        help="A target's preset of option values (qtool's own, or the folder QTOOL_CONFIGS names); --config and the "
        "command line override it.",
    )(func)


def external_data_option(func: Callable) -> Callable:
    return click.option(
        "--external_data",
        is_flag=True,
        help="Write each model as <output> plus <output>.data (weights), whatever its size; models over "
        "1.8 GB always are.",
    )(func)


def op_package_lib_option(func: Callable) -> Callable:
    return click.option(
        "--op_package_lib",
        "--custom_op_library",
        "op_package_lib",
        type=PathType,
        multiple=True,
        metavar="PATH",
        help="Custom-op shared library (onnxruntime-extensions' tokenizers...) every onnxruntime session registers "
        "(SessionOptions.register_custom_ops_library). Repeatable.",
    )(func)


def emit(report: Report, as_json: bool) -> None:
    """The report on stdout, once every output file is in place."""
    try:
        click.echo(report.render(as_json))
    except BrokenPipeError:  # `| head`: the reader has quit; end as SIGPIPE would, without the interpreter's noise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except OSError as e:  # > /dev/full: an internal error
        raise UsageError(f"cannot write the report: {e.strerror or e}", where="stdout") from e


class _Printable(logging.Formatter):
    """A log line with the control characters of the names in it escaped (a traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def common(func: Callable) -> Callable:
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text report.")
    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("--quiet", is_flag=True, help="Only errors on stderr.")
    @functools.wraps(func)
    def wrapper(*args: Any, verbose: int, quiet: bool, **kw: Any) -> Any:
        level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
        logging.basicConfig(level=level, format="qtool: %(levelname)s: %(message)s", force=True)
        # algorithms rebuild the plan per layer, mixed precision per trial: its notes and warnings are news once
        # (czann's search at -v logged each float Conv at each of its trials, 5000 lines)
        said: set[str] = set()
        handler = logging.getLogger().handlers[0]
        handler.setFormatter(_Printable("qtool: %(levelname)s: %(message)s"))
        handler.addFilter(lambda r: r.levelno < logging.INFO or ((m := r.getMessage()) not in said and not said.add(m)))
        if not verbose:  # a library's own warnings (onnx_ir logs its failed shape inference with a traceback)
            handler.addFilter(lambda r: r.name.startswith("qtool") or r.levelno >= logging.ERROR)
        return func(*args, **kw)

    return wrapper

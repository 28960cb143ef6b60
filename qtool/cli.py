"""The command line: click options -> Options -> one api call -> report. No graph code here.

Flag names mirror qairt-converter / qairt-quantizer (FORMATS.md b.3); the older QNN spellings
from the seed are accepted as aliases.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qtool import api
from qtool.config import (
    CALIBRATIONS,
    LEGACY_QUANTIZERS,
    SCHEMAS,
    ConvertOptions,
    ExportOptions,
    InspectOptions,
    QuantizeOptions,
    configs_dir,
    presets,
    read_config,
)
from qtool.errors import QtoolError, did_you_mean
from qtool.export import FORMAT_NAMES
from qtool.inspect.target_ops import TARGETS
from qtool.io.encodings import FORMATS
from qtool.quant.algorithms import ALGORITHM_NAMES
from qtool.report import Report

PathType = click.Path(path_type=Path, dir_okay=False)


class _Cli(click.Group):
    """Turns QtoolError into one line on stderr and its exit code; hides tracebacks of bugs."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except QtoolError as e:
            click.echo(f"qtool: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("qtool: interrupted; no output written", err=True)
            ctx.exit(130)
        except Exception:
            if logging.getLogger().isEnabledFor(logging.INFO):
                raise
            logging.getLogger("qtool").debug("internal error", exc_info=True)
            click.echo("qtool: internal error; re-run with -v to see the traceback and report it", err=True)
            ctx.exit(1)


def _input_dims(
    ctx: click.Context, param: click.Parameter, value: tuple[tuple[str, str], ...]
) -> dict[str, tuple[int, ...]]:
    dims: dict[str, tuple[int, ...]] = {}
    for name, text in value:
        try:
            parsed = tuple(int(d) for d in text.replace("x", ",").split(","))
        except ValueError:
            raise click.BadParameter(f"{name} {text!r}: DIMS must be integers like 1,3,224,224") from None
        if any(d <= 0 for d in parsed):
            raise click.BadParameter(f"{name} {text!r}: every dim must be positive")
        dims[name] = parsed
    return dims


def _int_choice(*allowed: int) -> click.Choice:
    return click.Choice([str(a) for a in allowed])


def _to_int(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return int(value) if value is not None else None


class _Choice(click.Choice):
    """click.Choice whose error suggests the closest valid value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            choices = ", ".join(str(c) for c in self.choices)
            self.fail(f"{value!r} is not one of {choices}" + (f"; {hint}" if hint else ""), param, ctx)


def _terminal_progress(total: int, label: str) -> Callable[[int], None]:
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        click.echo(f"\r{label} {done}/{total}", err=True, nl=done >= total)

    return step


def _progress() -> Callable[[int, str], Callable[[int], None]] | None:
    """Progress only on a terminal and not under --quiet, so logs and CI output stay clean."""
    quiet = logging.getLogger().getEffectiveLevel() >= logging.ERROR
    return _terminal_progress if sys.stderr.isatty() and not quiet else None


def _apply_config(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Eager: a preset (--target) and a --config file become click's default_map, so the
    precedence CLI > --config > preset > built-in default needs no further code (black's way)."""
    if value is None or ctx.resilient_parsing:
        return value
    names = {p.name for p in ctx.command.params if p.name} - {"target", "config"}
    layers = ctx.meta.setdefault("qtool.config_layers", {})
    path = configs_dir() / f"{value}.yaml" if param.name == "target" else Path(value)
    try:
        layers[param.name] = read_config(path, names)
    except QtoolError as e:
        raise click.BadParameter(str(e)) from None
    ctx.default_map = {**layers.get("target", {}), **layers.get("config", {})}
    return value


def config_options(func: Callable) -> Callable:
    func = click.option(
        "--config",
        "-c",
        type=click.Path(path_type=Path, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_apply_config,
        help="YAML of option values (and algorithm sections); overrides --target.",
    )(func)
    return click.option(
        "--target",
        type=_Choice(presets()),
        is_eager=True,
        expose_value=False,
        callback=_apply_config,
        help="Target preset from configs/: " + ", ".join(presets()) + ".",
    )(func)


def _emit(report: Report, as_json: bool) -> None:
    click.echo(report.render(as_json))


def common(func: Callable) -> Callable:
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text report.")
    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("--quiet", is_flag=True, help="Only errors on stderr.")
    @functools.wraps(func)
    def wrapper(*args: Any, verbose: int, quiet: bool, **kw: Any) -> Any:
        level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
        logging.basicConfig(level=level, format="qtool: %(levelname)s: %(message)s", force=True)
        return func(*args, **kw)

    return wrapper


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="qtool")
def main() -> None:
    """qtool: convert and post-training-quantize ONNX models for 8/16-bit accelerators.

    convert -> quantize -> inspect / export, each reading and writing files.
    """


@main.command()
@click.option("--input_network", "-i", type=PathType, required=True, help="Float ONNX model.")
@click.option("--output_path", "-o", type=PathType, help="Converted model (default <input>.conv.onnx).")
@click.option(
    "--input_dim",
    "--source_model_input_shape",
    "-s",
    "input_dims",
    nargs=2,
    multiple=True,
    callback=_input_dims,
    metavar="NAME DIMS",
    help="Fix an input's shape, e.g. --input_dim image 1,3,224,224. Repeatable.",
)
@click.option(
    "--quantization_overrides",
    "-q",
    type=PathType,
    help="AIMET encodings JSON; validated against the graph and carried inside the model.",
)
@click.option(
    "--float_bitwidth",
    "--float_bw",
    type=_int_choice(16, 32),
    default="32",
    callback=_to_int,
    show_default=True,
    help="16 writes the whole model in float16 (inputs/outputs stay float32).",
)
@click.option(
    "--export_format",
    type=_Choice(["default", "strip", "DLC_DEFAULT", "DLC_STRIP_QUANT"]),
    default="default",
    callback=lambda ctx, p, v: "strip" if v in ("strip", "DLC_STRIP_QUANT") else "default",
    help="strip: drop the encodings of a pre-quantized QDQ input (qairt's DLC_STRIP_QUANT).",
)
@common
def convert(as_json: bool, **kw: Any) -> None:
    """Validate and normalise a float model: opset >= 13, batch 1, BatchNorm folded, constants folded."""
    _emit(api.convert(ConvertOptions.from_params(kw)), as_json)


@main.command()
@click.option(
    "--input_network", "--input_dlc", "-i", type=PathType, required=True, help="Converted (or raw float) ONNX model."
)
@click.option("--input_list", "-l", type=PathType, help="Calibration samples: one line of raw files per inference.")
@click.option(
    "--output_path",
    "--output_dlc",
    "-o",
    type=PathType,
    help="QDQ model (default <input>.quant.onnx); encodings go to <output>.encodings.json.",
)
@click.option(
    "--quantization_overrides", type=PathType, help="AIMET encodings JSON; overrides the model's carried overrides."
)
@click.option(
    "--input_dim",
    "input_dims",
    nargs=2,
    multiple=True,
    callback=_input_dims,
    metavar="NAME DIMS",
    help="Fix an input's shape when quantizing a raw (unconverted) model.",
)
@click.option(
    "--act_bitwidth",
    "--act_bw",
    type=_int_choice(8, 16),
    default="8",
    callback=_to_int,
    show_default=True,
    help="Activation bitwidth.",
)
@click.option(
    "--weights_bitwidth",
    "--weight_bw",
    type=_int_choice(4, 8, 16),
    default="8",
    callback=_to_int,
    show_default=True,
    help="Weight bitwidth (16 makes the default param schema symmetric).",
)
@click.option(
    "--bias_bitwidth",
    "--bias_bw",
    type=_int_choice(8, 32),
    default="8",
    callback=_to_int,
    show_default=True,
    help="Bias bitwidth; 32 uses scale = input scale x weight scale.",
)
@click.option("--act_quantizer_schema", type=_Choice(SCHEMAS), help="Activation range schema [default: asymmetric].")
@click.option("--param_quantizer_schema", type=_Choice(SCHEMAS), help="Weight range schema [default: asymmetric].")
@click.option(
    "--act_quantizer_calibration", type=_Choice(CALIBRATIONS), help="Activation range method [default: min-max]."
)
@click.option(
    "--param_quantizer_calibration", type=_Choice(CALIBRATIONS), help="Weight range method [default: min-max]."
)
@click.option(
    "--act_quantizer",
    type=click.Choice(sorted(LEGACY_QUANTIZERS)),
    help="Legacy QNN activation quantizer (tf, enhanced...).",
)
@click.option(
    "--param_quantizer", type=click.Choice(sorted(LEGACY_QUANTIZERS)), help="Legacy QNN weight quantizer (adjusted...)."
)
@click.option(
    "--percentile_calibration_value",
    type=click.FloatRange(90, 100),
    help="Percentile for percentile calibration [99.99].",
)
@click.option(
    "--float_bias_bitwidth",
    "--float_bias_bw",
    type=_int_choice(16, 32),
    callback=_to_int,
    help="Bitwidth of a bias forced float by a float override on its op [32].",
)
@click.option("--pack_4_bit_weights", is_flag=True, help="Store 4-bit weights as packed INT4/UINT4 (two per byte).")
@click.option(
    "--use_per_channel_quantization", is_flag=True, help="Per-output-channel symmetric weights for Conv/ConvTranspose."
)
@click.option("--use_per_row_quantization", is_flag=True, help="Per-row symmetric weights for Gemm/MatMul.")
@click.option(
    "--ignore_quantization_overrides",
    "--ignore_encodings",
    is_flag=True,
    help="Ignore carried and given overrides; calibrate everything.",
)
@click.option(
    "--enable_float_fallback",
    "--float_fallback",
    "-f",
    is_flag=True,
    help="No calibration: tensors without an override encoding stay float.",
)
@click.option("--use_native_input_files", is_flag=True, help="Raw files hold the inputs' own dtype, not float32.")
@click.option(
    "--encodings_format",
    type=click.Choice(FORMATS),
    default="legacy",
    show_default=True,
    help="Layout of the encodings JSON written.",
)
@click.option("--num_threads", type=click.IntRange(min=0), default=0, help="onnxruntime threads (0: all cores).")
@click.option(
    "--float_bitwidth",
    "--float_bw",
    type=_int_choice(16, 32),
    default="32",
    callback=_to_int,
    show_default=True,
    help="16 keeps tensors without an integer encoding in float16.",
)
@click.option(
    "--calib_batch_size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Samples per inference during calibration, where the model allows a batch.",
)
@click.option("--save_stats", type=PathType, help="Save the calibration statistics (observers) to this file.")
@click.option(
    "--load_stats",
    type=PathType,
    multiple=True,
    help="Merge saved statistics instead of running calibration. Repeatable (sharded calibration).",
)
@click.option("--act_power_of_2/--no_act_power_of_2", default=False, help="Power-of-2 activation scales (TIDL, Vitis).")
@click.option(
    "--param_power_of_2/--no_param_power_of_2", default=False, help="Power-of-2 weight scales (Vitis fix_point)."
)
@click.option(
    "--act_16bit_tensors",
    multiple=True,
    metavar="NAME",
    help="Activations kept 16-bit (TIDL output_feature_16bit_names_list). Repeatable.",
)
@click.option(
    "--params_16bit_tensors",
    multiple=True,
    metavar="NAME",
    help="Layers (by output tensor) whose weights are 16-bit (TIDL params_16bit_names_list). Repeatable.",
)
@click.option(
    "--apply_algorithms",
    "--algorithms",
    multiple=True,
    type=_Choice(ALGORITHM_NAMES),
    help="Accuracy algorithms: cle, adaround, bc (run in that order). Repeatable.",
)
@click.option(
    "--mixed_precision",
    type=_Choice(["off", "auto"]),
    default="off",
    show_default=True,
    help="auto: raise the most sensitive layers to 16 bits under a target or budget.",
)
@click.option("--target_sqnr", type=float, metavar="DB", help="Mixed precision: reach this output SQNR (dB).")
@click.option(
    "--max_cosine_drop", type=click.FloatRange(0, 1), help="Mixed precision: keep 1 - output cosine at most this."
)
@click.option(
    "--mixed_precision_factor",
    type=click.FloatRange(min=1.0),
    help="Mixed precision: cost budget, estimated latency of the mixed model / all-8-bit (TIDL's meaning).",
)
@click.option(
    "--eval_list", type=PathType, help="Samples that measure accuracy for mixed precision (default: --input_list)."
)
@click.option("--strict", is_flag=True, help="Exit non-zero when the mixed-precision target cannot be met.")
@click.option(
    "--evaluate_samples",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    help="Calibration samples on which the report measures float-vs-quantized drift (0: none).",
)
@click.option(
    "--html", type=PathType, help="Also write the report as one self-contained HTML page (with the Pareto chart)."
)
@click.option("--algorithm_config", type=click.UNPROCESSED, hidden=True, default=None)
@config_options
@common
def quantize(as_json: bool, **kw: Any) -> None:
    """Calibrate on --input_list and write a QDQ model plus <output>.encodings.json."""
    _emit(api.quantize(QuantizeOptions.from_params(kw), progress=_progress()), as_json)


@main.command()
@click.argument("model", type=PathType)
@click.option("--target", type=_Choice(TARGETS), help="Lint against this target's ops and preset.")
@click.option("--reference", type=PathType, help="Float model to compare against, layer by layer (needs --input_list).")
@click.option("--input_list", "-l", type=PathType, help="Samples: data lints, and the comparison with --reference.")
@click.option("--labels", type=PathType, help="One integer label per input_list line: adds float/quantized accuracy.")
@click.option(
    "--fail-on",
    "--fail_on",
    "fail_on",
    type=_Choice(("warning", "error")),
    help="Exit 5 when a lint finding is at or above this severity (after printing the report).",
)
@click.option("--html", type=PathType, help="Also write the report as one self-contained HTML file.")
@click.option("--use_native_input_files", is_flag=True, help="Raw files hold the inputs' own dtype.")
@click.option("--num_threads", type=click.IntRange(min=0), default=0, help="onnxruntime threads (0: all cores).")
@common
def inspect(as_json: bool, **kw: Any) -> None:
    """Facts and quantization lints for MODEL; with --reference, its drift from the float model per output and layer."""
    options = InspectOptions.from_params(kw)
    report = api.inspect_model(options)
    _emit(report, as_json)
    report.check(options.fail_on)


@main.command()
@click.option("--input_network", "-i", type=PathType, required=True, help="Quantized QDQ model.")
@click.option(
    "--output_path", "-o", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output folder."
)
@click.option(
    "--format",
    "formats",
    type=_Choice(FORMAT_NAMES),
    multiple=True,
    default=("stripped", "encodings"),
    show_default=True,
    help="Repeatable. qdq; qoperator (onnxruntime integer ops); encodings; stripped (float model); "
    "ranges (stats for quantize --load_stats); fp16; fixpoint (Vitis fix_point per tensor).",
)
@click.option(
    "--encodings_format",
    type=click.Choice(FORMATS),
    default="legacy",
    show_default=True,
    help="Layout of the encodings JSON.",
)
@common
def export(as_json: bool, **kw: Any) -> None:
    """Write a QDQ model's deployable artefacts (QOperator model, encodings, ranges, fp16, fixpoint...)."""
    _emit(api.export(ExportOptions.from_params(kw)), as_json)

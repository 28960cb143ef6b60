"""The command line: click options -> Options -> one api call -> report. No graph code here.

Flag names mirror qairt-converter / qairt-quantizer (FORMATS.md b.3); the older QNN spellings
from the seed are accepted as aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from qtool import api
from qtool.cli.options import (
    Choice,
    NonEmptyPath,
    PathType,
    QtoolGroup,
    Threads,
    check_config_paths,
    common,
    config_options,
    emit,
    external_data_option,
    input_dims,
    input_value_option,
    int_choice,
    op_package_lib_option,
    terminal_progress_if_tty,
    to_int,
)
from qtool.cli.quantize_options import quantize_options
from qtool.config import (
    ConvertOptions,
    ExportOptions,
    InspectOptions,
    QuantizeOptions,
)
from qtool.export import FORMAT_NAMES
from qtool.inspect.target_ops import TARGETS
from qtool.io.encodings import FORMATS


@click.group(cls=QtoolGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="qtool")
def main() -> None:
    """qtool: convert and post-training-quantize ONNX models for 8/16-bit accelerators.

    convert -> quantize -> inspect / export, each reading and writing files.
    """


@main.command(short_help="Check and normalise a float model (opset, shapes, folds).")  # whole in 80 columns
@click.option("--input_network", "-i", type=PathType, required=True, help="Float ONNX model.")
@click.option("--output_path", "-o", type=PathType, help="Converted model (default <input>.conv.onnx).")
@click.option(
    "--input_dim",
    "--source_model_input_shape",
    "-s",
    "input_dims",
    nargs=2,
    multiple=True,
    callback=input_dims,
    metavar="NAME DIMS",
    help="Fix an input's shape, e.g. --input_dim image 1,3,224,224. Repeatable.",
)
@input_value_option
@click.option(
    "--quantization_overrides",
    "-q",
    type=PathType,
    help="AIMET encodings JSON; validated against the graph and carried inside the model.",
)
@click.option(
    "--float_bitwidth",
    "--float_bw",
    type=int_choice(16, 32),
    default="32",
    callback=to_int,
    show_default=True,
    help="16 writes the whole model in float16 (inputs/outputs stay float32).",
)
@click.option(
    "--export_format",
    type=Choice(["default", "strip", "DLC_DEFAULT", "DLC_STRIP_QUANT"]),
    default="default",
    callback=lambda ctx, p, v: "strip" if v in ("strip", "DLC_STRIP_QUANT") else "default",
    help="strip: drop the encodings of a pre-quantized QDQ input (qairt's DLC_STRIP_QUANT); default: import them.",
    show_default=True,
)
@external_data_option
@op_package_lib_option
@common
def convert(as_json: bool, **kw: Any) -> None:
    """Validate and normalise a float model: opset >= 13, batch 1, BatchNorm folded, constants folded."""
    emit(api.convert(ConvertOptions.from_params(kw)), as_json)


@main.command(short_help="Calibrate on --input_list; write a QDQ model and encodings.")
@quantize_options
@external_data_option
@op_package_lib_option
@config_options
@common
def quantize(as_json: bool, **kw: Any) -> None:
    """Calibrate on --input_list and write a QDQ model plus <output>.encodings.json."""
    ctx = click.get_current_context()  # the values a --target preset or --config gave, which the command line's override
    from_files = frozenset(k for k in kw if ctx.get_parameter_source(k) is click.core.ParameterSource.DEFAULT_MAP)
    check_config_paths(ctx, from_files)
    kw["act_bitwidth_given"] = ctx.get_parameter_source("act_bitwidth") is not click.core.ParameterSource.DEFAULT
    emit(api.quantize(QuantizeOptions.from_params(kw, from_files), progress=terminal_progress_if_tty()), as_json)


@main.command(short_help="Facts and lints of a model; with --reference, its drift.")
@click.argument("model", type=PathType, required=False)
@click.option("--input_network", "-i", type=PathType, help="The model, as MODEL (the flag convert and quantize take).")
@click.option("--target", type=Choice(TARGETS), help="Lint against this target's ops and preset.")
@click.option("--reference", type=PathType, help="Float model to compare against, layer by layer (needs --input_list).")
@click.option("--input_list", "-l", type=PathType, help="Samples: data lints, and the comparison with --reference.")
@click.option("--labels", type=PathType, help="One integer label per input_list line: adds float/quantized accuracy.")
@click.option(
    "--fail-on",
    "--fail_on",
    "fail_on",
    type=Choice(("warning", "error")),
    help="Exit 5 when a lint finding is at or above this severity (after printing the report).",
)
@click.option("--html", type=PathType, help="Also write the report as one self-contained HTML file.")
@click.option("--use_native_input_files", is_flag=True, help="Raw files hold the inputs' own dtype.")
@click.option("--num_threads", type=Threads, default=0, show_default=True, help="onnxruntime threads (0: all cores).")
@op_package_lib_option
@common
def inspect(as_json: bool, **kw: Any) -> None:
    """Facts and quantization lints for MODEL; with --reference, its drift from the float model per output and layer."""
    given = kw.pop("input_network")
    if (kw["model"] is None) == (given is None):
        raise click.UsageError("give the model once: as MODEL or as -i/--input_network")
    kw["model"] = kw["model"] or given
    options = InspectOptions.from_params(kw)
    report = api.inspect_model(options, progress=terminal_progress_if_tty())
    emit(report, as_json)
    report.check(options.fail_on)


@main.command(short_help="Write a QDQ model's deployable files (QOperator, encodings...).")
@click.option("--input_network", "-i", type=PathType, required=True, help="Quantized QDQ model.")
@click.option(
    "--output_path", "-o", type=NonEmptyPath(path_type=Path, file_okay=False), required=True, help="Output folder."
)
@click.option(
    "--format",
    "formats",
    type=Choice(FORMAT_NAMES),
    multiple=True,
    default=("stripped", "encodings"),
    show_default=True,
    help="Repeatable. qdq; qoperator (onnxruntime integer ops); encodings; stripped (the float graph without "
    "Q/DQ, its weights on their grid points: for re-quantizing with the encodings, not the original float model); "
    "ranges (stats for quantize --load_stats); fp16 (stripped, in float16); fixpoint (Vitis fix_point per tensor); "
    "matmulnbits (4-bit block MatMuls as onnxruntime MatMulNBits).",
)
@click.option(
    "--matmulnbits_accuracy_level",
    type=click.Choice(["0", "1", "2", "3", "4"]),
    default="0",
    callback=lambda ctx, param, value: int(value),
    show_default=True,
    help="matmulnbits: 0 computes in float as the QDQ model does; 4 quantizes A to int8 per block (faster).",
)
@click.option(
    "--encodings_format",
    type=click.Choice(FORMATS),
    default="legacy",
    show_default=True,
    help="Layout of the encodings JSON.",
)
@external_data_option
@op_package_lib_option
@common
def export(as_json: bool, **kw: Any) -> None:
    """Write a QDQ model's deployable artefacts (QOperator model, encodings, ranges, fp16, fixpoint...)."""
    emit(api.export(ExportOptions.from_params(kw)), as_json)

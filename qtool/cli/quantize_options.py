"""The option stack of `qtool quantize` (qairt-quantizer's flags, with the QNN seed's aliases)."""

from __future__ import annotations

from collections.abc import Callable

import click

from qtool.cli.options import (
    MAX_COUNT,
    Choice,
    Count,
    FiniteFloat,
    PathType,
    Threads,
    input_dims,
    input_value_option,
    int_choice,
    to_int,
)
from qtool.config import ACT_CALIBRATIONS, CALIBRATIONS, LEGACY_QUANTIZERS, SCHEMAS
from qtool.encoding import WEIGHT_BITWIDTHS
from qtool.errors import did_you_mean
from qtool.io.encodings import FORMATS
from qtool.io.files import quoted
from qtool.quant.algorithms import ALGORITHM_NAMES


def _bitwidth(flag: str, alias: str, choices: tuple[int, ...], help: str) -> Callable:
    return click.option(
        flag, alias, type=int_choice(*choices), default="8", callback=to_int, show_default=True, help=help
    )


def _op_types(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Each an ONNX op type: `conv` or a typo quantized nothing, and the warning then blamed the model."""
    import onnx.defs

    # asked by name: every schema's Python object (4 MB the heap kept, in a ~95 MB run) only to name the op meant
    domains = ("", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training")
    unknown = [name for name in value if not any(onnx.defs.has(name, domain) for domain in domains)]
    known = {schema.name for schema in onnx.defs.get_all_schemas_with_history()} if unknown else set()
    for name in unknown:
        if name not in known:
            hint = did_you_mean(name, known) if "," not in name else ("one a flag; repeat it for each: " +
                                                                    " ".join(f"--op_types_to_quantize {n}" for n in name.split(",")))  # fmt: skip
            raise click.BadParameter(f"{quoted(name)} is not an ONNX op type" + (f"; {hint}" if hint else ""))
    return value


def quantize_options(func: Callable) -> Callable:
    """Every quantize option, innermost first as click applies them."""
    decorators = [
        click.option(
            "--input_network",
            "--input_dlc",
            "-i",
            type=PathType,
            required=True,
            help="Converted (or raw float) ONNX model.",
        ),
        click.option(
            "--input_list", "-l", type=PathType, help="Calibration samples: one line of raw files per inference."
        ),
        click.option(
            "--output_path",
            "--output_dlc",
            "-o",
            type=PathType,
            help="QDQ model (default <input>.quant.onnx); encodings go to <output>.encodings.json.",
        ),
        click.option(
            "--quantization_overrides",
            "-q",  # as convert takes it: the README's `--enable_float_fallback -q enc.json` was 'No such option'
            type=PathType,
            help="AIMET encodings JSON; overrides the model's carried overrides.",
        ),
        click.option(
            "--input_dim",
            "--source_model_input_shape",
            "-s",  # convert's aliases: `-s` here was called 'a flag of qtool convert'
            "input_dims",
            nargs=2,
            multiple=True,
            callback=input_dims,
            metavar="NAME DIMS",
            help="Fix an input's shape when quantizing a raw (unconverted) model.",
        ),
        input_value_option,
        _bitwidth("--act_bitwidth", "--act_bw", (8, 16, 32), "Activation bitwidth (32: float, weight-only)."),
        _bitwidth(
            "--weights_bitwidth",
            "--weight_bw",
            WEIGHT_BITWIDTHS,
            "Weight bitwidth (16 makes the default param schema symmetric; 7: onnxruntime's reduce_range, int8 "
            "weights in [-64, 63], which x86 CPUs without VNNI multiply without saturating).",
        ),
        _bitwidth(
            "--bias_bitwidth", "--bias_bw", (8, 32), "Bias bitwidth; 32 uses scale = input scale x weight scale."
        ),
        click.option(
            "--act_quantizer_schema", type=Choice(SCHEMAS), help="Activation range schema [default: asymmetric]."
        ),
        click.option(
            "--param_quantizer_schema", type=Choice(SCHEMAS), help="Weight range schema [default: asymmetric; symmetric at 16 bits]."
        ),
        click.option(
            "--act_quantizer_calibration",
            type=Choice(ACT_CALIBRATIONS),
            help="Activation range method [default: auto with an --input_list of 4+ samples, else min-max; min-max "
            "too under --mixed_precision auto or --save_stats, past 2 GiB, and --load_stats reads the saved one]. auto: "
            "min-max (qairt's default) unless sqnr or mse gives a better output SQNR on held-out halves of "
            "--input_list (each trial runs the --apply_algorithms given).",
        ),
        click.option(
            "--param_quantizer_calibration", type=Choice(CALIBRATIONS), help="Weight range method [default: min-max; mse at 4 bits]."
        ),
        click.option(
            "--act_quantizer",
            type=click.Choice(sorted(LEGACY_QUANTIZERS)),
            help="Legacy QNN activation quantizer (tf, enhanced...).",
        ),
        click.option(
            "--param_quantizer",
            type=click.Choice(sorted(LEGACY_QUANTIZERS)),
            help="Legacy QNN weight quantizer (adjusted...).",
        ),
        click.option(
            "--percentile_calibration_value",
            type=FiniteFloat(90, 100),
            metavar="P",
            help="Percentile for percentile calibration [default: 99.99].",
        ),
        click.option(
            "--float_bias_bitwidth",
            "--float_bias_bw",
            type=int_choice(16, 32),
            callback=to_int,
            help="Bitwidth of a bias forced float by a float override on its op [default: 32].",
        ),
        click.option(
            "--pack_4_bit_weights", is_flag=True, help="Store 4-bit weights as packed INT4/UINT4 (two per byte)."
        ),
        click.option(
            "--use_per_channel_quantization",
            is_flag=True,
            help="Per-output-channel symmetric weights for Conv/ConvTranspose.",
        ),
        click.option("--use_per_row_quantization", is_flag=True, help="Per-row symmetric weights for Gemm/MatMul."),
        click.option(
            "--no_hardswish_equalization",
            is_flag=True,
            help="Leave every Conv -> HardSwish -> depthwise Conv as it is (see README: HardSwish equalization).",
        ),
        click.option(
            "--use_per_channel_residual",
            is_flag=True,
            help="One activation scale per hidden channel on a transformer's residual stream (LayerNorm inputs).",
        ),
        click.option(
            "--weights_block_size",
            type=click.IntRange(min=1),
            metavar="B",
            help="One symmetric scale per output channel per B inputs (16..256, a power of 2) for Conv/Gemm/MatMul.",
        ),
        click.option(
            "--use_lpbq",
            is_flag=True,
            help="LPBQ: block scales as a per-channel scale times 4-bit integers (needs --weights_block_size, 4-bit).",
        ),
        click.option(
            "--use_asymmetric_blocks",
            is_flag=True,
            help="A zero point per block too (onnxruntime's MatMulNBits takes it; AIMET/QNN blocks are symmetric).",
        ),
        click.option(
            "--matmulnbits_accuracy_level",
            type=int_choice(0, 1, 2, 3, 4),
            callback=to_int,
            help="--target ort-cpu's MatMulNBits: 0 computes in float, 4 quantizes A to int8 per block [preset: 4].",
        ),
        click.option(
            "--ignore_quantization_overrides",
            "--ignore_encodings",
            is_flag=True,
            help="Ignore carried and given overrides; calibrate everything.",
        ),
        click.option(
            "--enable_float_fallback",
            "--float_fallback",
            "-f",
            is_flag=True,
            help="No calibration: tensors without an override encoding stay float.",
        ),
        click.option(
            "--use_native_input_files", is_flag=True, help="Raw files hold the inputs' own dtype, not float32."
        ),
        click.option(
            "--encodings_format",
            type=click.Choice(FORMATS),
            default="legacy",
            show_default=True,
            help="Layout of the encodings JSON written.",
        ),
        click.option(
            "--num_threads", type=Threads, default=0, show_default=True, help="onnxruntime threads (0: all cores)."
        ),
        click.option(
            "--float_bitwidth",
            "--float_bw",
            type=int_choice(16, 32),
            default="32",
            callback=to_int,
            show_default=True,
            help="16 keeps tensors without an integer encoding in float16.",
        ),
        click.option(
            "--calib_batch_size",
            type=click.IntRange(min=1, max=MAX_COUNT),
            default=1,
            show_default=True,
            help="Samples per inference during calibration, where the model allows a batch.",
        ),
        click.option("--save_stats", type=PathType, help="Save the calibration statistics (observers) to this file."),
        click.option(
            "--load_stats",
            type=PathType,
            multiple=True,
            help="Merge saved statistics instead of running calibration. Repeatable (sharded calibration).",
        ),
        click.option(
            "--act_power_of_2/--no_act_power_of_2", default=False, help="Power-of-2 activation scales (TIDL, Vitis)."
        ),
        click.option(
            "--param_power_of_2/--no_param_power_of_2",
            default=False,
            help="Power-of-2 weight scales (Vitis fix_point).",
        ),
        click.option(
            "--act_16bit_tensors",
            multiple=True,
            metavar="NAME",
            help="Activations kept 16-bit (TIDL output_feature_16bit_names_list). Repeatable.",
        ),
        click.option(
            "--params_16bit_tensors",
            multiple=True,
            metavar="NAME",
            help="Layers (by output tensor) whose weights are 16-bit (TIDL params_16bit_names_list). Repeatable.",
        ),
        click.option(
            "--apply_algorithms",
            "--algorithms",
            multiple=True,
            type=Choice((*ALGORITHM_NAMES, "auto", "none")),
            default=("auto",),
            help=f"Accuracy algorithms: {', '.join(ALGORITHM_NAMES)} (run in that order). Repeatable. Default auto: bc "
            "where auto calibration's held-out halves say it gains; none: no algorithm.",
        ),
        click.option(
            "--op_types_to_quantize",
            multiple=True,
            metavar="OP",
            callback=_op_types,
            help="Quantize only these op types (their inputs and outputs); the rest run in float. Repeatable.",
        ),
        click.option(
            "--mixed_precision",
            type=Choice(["off", "auto"]),
            help="auto: raise the most sensitive layers to 16 bits under a target or budget [default: off].",
        ),
        click.option(
            "--mixed_precision_sensitivity",
            type=Choice(["auto", "exact", "proxy"]),
            help="exact: one evaluation per layer at 16 bits; proxy: each layer's added noise from one pass (fast, "
            "but blind to error that only shows downstream); auto: exact unless its estimate (from the model's size, "
            "not timed) passes 10 minutes or a MAC layer's shape is unknown [default: auto].",
        ),
        click.option("--target_sqnr", type=FiniteFloat(), metavar="DB", help="Mixed precision: reach this output SQNR (dB)."),
        click.option(
            "--max_cosine_drop",
            type=FiniteFloat(0, 1),
            metavar="X",
            help="Mixed precision: keep 1 - output cosine at most X.",
        ),
        click.option(
            "--mixed_precision_factor",
            type=FiniteFloat(min=1.0),
            metavar="F",
            help="Mixed precision: cost budget F, estimated latency of the mixed model / all-8-bit (TIDL's meaning).",
        ),
        click.option(
            "--eval_list",
            type=PathType,
            help="Held-out samples for the report's float-vs-quantized figures and mixed precision's accuracy"
            " (default: --input_list).",
        ),
        click.option("--strict", is_flag=True, help="Exit non-zero when the mixed-precision target cannot be met."),
        click.option(
            "--min_sqnr",
            type=FiniteFloat(),
            metavar="DB",
            help="Exit 6 (the model is still written) when the output SQNR on the evaluated samples is below DB.",
        ),
        click.option(
            "--evaluate_samples",
            type=Count,
            default=64,
            show_default=True,
            help="Samples (of --eval_list, else --input_list) on which the report measures drift (0: none).",
        ),
        click.option(
            "--html",
            type=PathType,
            help="Also write the report as one self-contained HTML page (with the Pareto chart).",
        ),
        click.option("--algorithm_config", type=click.UNPROCESSED, hidden=True, default=None),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func

"""Accuracy algorithms over the converted float graph, numpy only (no training framework).

ALGORITHMS maps the `--apply_algorithms` name to a module-level `run(ctx) -> list[str]` (what it
changed, for the report) and its STAGE: "float" algorithms (cle) change the float weights
before calibration; "quantized" ones (adaround, bc) run after the plan exists, change weights or
biases, and may freeze encodings in `ctx.overrides` so that re-planning keeps them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from qtool.errors import UsageError, did_you_mean
from qtool.graph import external_data, lazy_weights
from qtool.io.encodings import Encodings

if TYPE_CHECKING:
    from qtool.quant.plan import PlanOptions

logger = logging.getLogger(__name__)


@dataclass
class AlgorithmContext:
    model: onnx.ModelProto  # float model; algorithms change its initializers in place
    samples: Callable[[], Iterator[tuple[str, dict[str, np.ndarray]]]]  # a fresh pass over calibration data
    quantize: Callable[[onnx.ModelProto, Encodings], tuple[onnx.ModelProto, Any]]  # -> (QDQ model, its plan)
    config: dict[str, Any] = field(default_factory=dict)  # this algorithm's YAML section
    overrides: Encodings = field(default_factory=Encodings)
    threads: int = 0
    # weight an algorithm put on its grid and froze in `overrides` -> the float values it replaced
    frozen: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # float model[, activation range method] -> output SQNR (dB) out of sample, quantized as the user asked:
    # does a float-stage change pay? which range method does?
    trial: Callable[..., float] | None = None
    # the calibration's observers by tensor; the plan reads them when ctx.quantize runs (actsearch swaps some)
    observers: dict[str, Any] = field(default_factory=dict)
    # the options the plan is built with: an algorithm that ranks changes by the error of the real grids reads them
    plan_options: PlanOptions | None = None
    # QDQ model, n -> its output SQNR (dB) against the float model on n calibration samples spread over them (0: all)
    score: Callable[[onnx.ModelProto, int], float] | None = None
    # tensors a kept float-stage rewrite left holding other values than the float model as given (channels
    # rescaled, hidden units moved out): `inspect --reference` would read the difference as quantization error
    rewritten: set[str] = field(default_factory=set)
    _positions: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def array(self, name: str) -> np.ndarray:
        found = self._initializer(name)
        if found is None:
            raise KeyError(f"no initializer {name!r}")
        return external_data.array(found)

    def set_array(self, name: str, value: np.ndarray) -> None:
        init = self._initializer(name)
        if init is None:
            self.model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
            return
        resized = tuple(init.dims) != value.shape
        value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        if external_data.is_lazy(init) and value.nbytes >= external_data.LAZY_BYTES:
            # a weight read lazily stays so: a large model's changed weights in memory were its size again
            init.CopyFrom(lazy_weights.spilled(value, name, lazy_weights.scratch_file("changed-weights.data")))
        else:
            init.CopyFrom(numpy_helper.from_array(value, name))
        # a converted model may declare its weights' shapes too; one left at the old shape (outlier_split
        # narrows W1 and W2) stopped the upgrade to opset 21 that 16-bit Q/DQ needs
        for declared in (v for v in [*self.model.graph.value_info, *self.model.graph.input] if v.name == name) if resized else ():
            declared.type.tensor_type.shape.CopyFrom(onnx.helper.make_tensor_type_proto(1, value.shape).tensor_type.shape)

    def _initializer(self, name: str) -> onnx.TensorProto | None:
        """The initializer `name`, found by its position, checked on each use and looked up again when stale (the
        graph changed): a scan of every initializer on each read and write made cle's sweeps over 300 Conv pairs
        take 15 s (quadratic in the pairs), and every algorithm that writes a weight a layer likewise."""
        inits = self.model.graph.initializer
        at = self._positions.get(name, -1)
        if not 0 <= at < len(inits) or inits[at].name != name:
            self._positions = self._index()
            at = self._positions.get(name, -1)
        return inits[at] if at >= 0 else None

    def _index(self) -> dict[str, int]:
        return {init.name: i for i, init in reversed(list(enumerate(self.model.graph.initializer)))}  # a name's first

    def declare(self, name: str, like: str, last_dim: int | None = None) -> None:
        """Give `name`, a tensor an algorithm added or narrowed, the type and shape of `like` (with `last_dim`
        as its last dimension): planning quantizes only tensors it knows to be float, so an undeclared one
        would silently stay float in the written model."""
        graph = self.model.graph
        source = next((v for v in [*graph.value_info, *graph.input, *graph.output] if v.name == like), None)
        value = onnx.ValueInfoProto()
        if source is not None:
            value.CopyFrom(source)
        else:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        value.name = name
        dims = value.type.tensor_type.shape.dim
        if last_dim is not None and len(dims):
            dims[-1].Clear()
            dims[-1].dim_value = last_dim
        if name in {v.name for v in [*graph.input, *graph.output]}:
            return
        kept = [v for v in graph.value_info if v.name != name]
        del graph.value_info[:]
        graph.value_info.extend([*kept, value])


def kept_if_better(
    ctx: AlgorithmContext, name: str, before: onnx.ModelProto, note: str, keep: str, rewritten: Iterable[str] = ()
) -> list[str]:
    """A float-stage change (ctx.model, was `before`) stays unless `keep` is "auto" and a trial quantization
    scores it below `before` (then ctx.model is `before` again); the report line either way. A change that
    stays adds the tensors it `rewritten` to ctx.rewritten."""
    if keep == "always" or ctx.trial is None:
        ctx.rewritten.update(rewritten)
        return [note]
    plain, changed = ctx.trial(before), ctx.trial(ctx.model)
    if changed >= plain:
        ctx.rewritten.update(rewritten)
        return [f"{note}; output SQNR {plain:.1f} -> {changed:.1f} dB"]
    ctx.model.CopyFrom(before)
    logger.warning("%s: not applied: it lowers the output SQNR from %.1f to %.1f dB", name, plain, changed)
    return [f"{name}: not applied (output SQNR {changed:.1f} dB with it, {plain:.1f} dB without)"]


def _registry() -> dict[str, ModuleType]:
    from qtool.quant.algorithms import (
        actsearch,
        adaround,
        bias_correction,
        cle,
        clipsearch,
        mean_correction,
        outlier_split,
        smoothquant,
    )

    return {"outlier_split": outlier_split, "smoothquant": smoothquant, "cle": cle, "clipsearch": clipsearch,
            "adaround": adaround, "actsearch": actsearch, "mean_correction": mean_correction,
            "bc": bias_correction}  # fmt: skip


# mean_correction before bc: bc then measures what the analytic shift leaves
ALGORITHM_NAMES = ("outlier_split", "smoothquant", "cle", "clipsearch", "adaround", "actsearch", "mean_correction", "bc")


def resolve(names: tuple[str, ...]) -> list[tuple[str, ModuleType]]:
    """The named algorithms in the order they must run (ALGORITHM_NAMES)."""
    registry = _registry()
    for name in names:
        if name not in registry:
            raise UsageError(f"unknown algorithm {name!r}", hint=did_you_mean(name, registry))
    return [(name, registry[name]) for name in ALGORITHM_NAMES if name in names]


def check_sections(sections: Any, where: str = "--config") -> None:
    """Every algorithm section of --config, whether its algorithm runs or not: a typo in one not asked for would
    otherwise wait, silent, for the run that asks for it. A config's `algorithm_config:` key (the hidden option
    the sections travel in) is checked as they are: a list there was an internal error, and `{clee: ...}` ignored."""
    registry = _registry()
    if not isinstance(sections, dict):
        raise UsageError(f"algorithm_config must be a mapping of algorithm sections, not {str(sections)[:60]}",
                         where=where, hint="write each section at the config's top level: cle: {...}")  # fmt: skip
    for name, section in sections.items():
        if name not in registry:
            raise UsageError(f"unknown algorithm section {str(name)[:60]!r} in algorithm_config", where=where,
                             hint=did_you_mean(str(name), registry))  # fmt: skip
        if not isinstance(section, dict):
            raise UsageError(f"{name!r} must be a mapping of {name}'s settings, not {str(section)[:60]}", where=where)
        check_config(name, section, registry[name].SETTINGS, where)
        if hasattr(registry[name], "check_settings"):  # an algorithm's own checks of its values' meaning
            registry[name].check_settings(section, where)


FLAGS = {"high_bias_absorption"}  # YAML 1.2 (qtool/config.py) reads `off` as a string, which is true
# ... so a flag's words (and adaround's tri-state sequential's) are read as click reads a top-level flag's
WORDY = {*FLAGS, "sequential"}
FLAG_WORDS = {**dict.fromkeys(("true", "yes", "on", "y", "t", "1"), True), **dict.fromkeys(("false", "no", "off", "n", "f", "0"), False)}
MAX_COUNT = 2**31 - 1  # the flags' counts too (cli/options): itertools.islice of samples fails past sys.maxsize
COUNTS = {"num_batches", "default_param_bw", "calibration_frames", "calibration_iterations", "sweeps", "trial_samples", "max_trials"}


def check_config(name: str, config: dict[str, Any], known: set[str], where: str = "--config") -> dict[str, Any]:
    """`where`: the config file the section came from, which every error names."""
    for key, value in config.items():
        if key not in known:
            raise UsageError(f"unknown key {key!r} in the {name} section of --config", where=where,
                             hint=did_you_mean(key, known))  # fmt: skip
        if key == "keep" and value not in ("auto", "always"):  # every algorithm that is kept only if it gains
            raise UsageError(f"{name}: keep must be auto or always, not {value!r}", where=where)
        if key in COUNTS and (type(value) is not int or not 1 <= value <= MAX_COUNT):  # `abc`, `1.5`, `true`, 0, 1e22
            most = f", at most {MAX_COUNT}" if type(value) is int and value > 0 else ""
            raise UsageError(f"{key} in the {name} section of --config must be a positive integer{most}, not {value!r}",
                             where=where)  # fmt: skip
        if key in WORDY and isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
            config[key] = value = FLAG_WORDS[value.strip().lower()]
        if key in FLAGS and not isinstance(value, bool):
            raise UsageError(f"{key} in the {name} section of --config must be true or false, not {value!r}", where=where)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{key} in the {name} section of --config must be a finite number, not {value!r}", where=where)
    return config

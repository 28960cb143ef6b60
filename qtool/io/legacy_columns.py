"""A 0.6.1 section's entries checked as columns: the shape AIMET writes for nearly every tensor (bitwidth, dtype,
is_symmetric, min, max, scale, offset, each a value of its type) checked a key at a time over all entries in numpy,
not an entry at a time in Python (a dozen calls each: a file of 10^6 entries took 33 s of CPU). A tensor any of
whose entries takes another shape, or fails a check, is left to encodings._legacy_tensor, which reads it or says
what is wrong with it, as before."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qtool import encoding as enc
from qtool.io.encodings_v2 import finite_number

KEYS = frozenset(("bitwidth", "dtype", "is_symmetric", "min", "max", "scale", "offset"))
_SYMMETRY = {"True": 1, "true": 1, "False": 0, "false": 0}
_ODD = {"": None}  # stands for an entry that is not a JSON object: no key of KEYS
FLOAT, RANGED, PRECISION = 0, 1, 2  # a float encoding; min and max (scale and offset too, maybe); a bitwidth alone


@dataclass
class Columns:
    """A section's tensors in sorted name order, their entries one after another (tensor t's at ends[t]:ends[t + 1]).
    Per tensor: `plain` (its entries all of the common shape, and alike in kind, bitwidth and symmetry, as a
    tensor's must be), then its entries' `kind`, `bitwidth` and `symmetric`. Per entry: its numbers, NaN where
    absent; `has_offset`."""

    names: list[str]
    counts: np.ndarray
    plain: np.ndarray
    kind: np.ndarray
    bitwidth: np.ndarray
    symmetric: np.ndarray
    min: np.ndarray
    max: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    has_offset: np.ndarray


def finite_numbers(values: list | np.ndarray) -> np.ndarray:
    """Each value as a float, NaN where it is absent (None) or no finite number (finite_number's); in one numpy call
    where all are floats, ints and Nones, as in nearly every file (an array load_json made is all finite floats)."""
    if isinstance(values, np.ndarray):
        return values
    if set(map(type, values)) <= {float, int, type(None)}:
        try:
            with np.errstate(all="ignore"):
                found = np.array(values, np.float64)
            found[~np.isfinite(found)] = np.nan
            return found
        except OverflowError:  # an int past float's
            pass
    return np.array([finite_number(v) for v in values], np.float64)


def columns(body: dict, weight: bool) -> Columns:
    names = sorted(body)
    lists = [body[n] for n in names]
    counts = np.array([len(v) if type(v) is list else 0 for v in lists], np.int64)
    flat = [e if type(e) is dict else _ODD for v in lists if type(v) is list for e in v]
    keys = np.array([e.keys() <= KEYS for e in flat], bool)
    bits = np.array([b if type(b) is int and 0 < b <= 64 else 0 for b in [e.get("bitwidth") for e in flat]], np.int64)
    dtype = [e.get("dtype", "int") for e in flat]
    is_float, is_int = (np.array([d == name for d in dtype], bool) for name in ("float", "int"))
    symmetry = [e.get("is_symmetric", False) for e in flat]
    sym = np.array([_SYMMETRY.get(s, -1) if type(s) is str else int(s) if type(s) is bool else -1 for s in symmetry], np.int8)
    has, value = {}, {}
    for key in ("min", "max", "scale", "offset"):
        has[key] = np.array([key in e for e in flat], bool)
        value[key] = finite_numbers([e.get(key) for e in flat])
    lo, hi, scale, offset = value["min"], value["max"], value["scale"], value["offset"]
    numbers = np.logical_and.reduce([~has[k] | np.isfinite(value[k]) for k in has]) if flat else np.ones(0, bool)
    no_numbers = ~(has["min"] | has["max"] | has["scale"] | has["offset"])
    int_bits = np.isin(bits, enc.INT_BITWIDTHS + (enc.NARROW_WEIGHT_BITWIDTH,) * weight)
    with np.errstate(all="ignore"):
        ranged = (has["min"] & has["max"] & (lo <= hi) & np.isfinite(hi - lo) & (~has["scale"] | (scale > 0))
                  & (~has["offset"] | (offset == np.floor(offset))))  # fmt: skip
    ranged &= is_int & int_bits
    precision = is_int & int_bits & no_numbers
    floating = is_float & np.isin(bits, enc.FLOAT_BITWIDTHS) & no_numbers
    entry_ok = keys & (sym >= 0) & numbers & (ranged | precision | floating)
    kind = np.where(floating, FLOAT, np.where(ranged, RANGED, PRECISION)).astype(np.int8)
    n = len(names)
    plain, t_kind, t_bits, t_sym = np.zeros(n, bool), np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.int8)
    some = np.flatnonzero(counts > 0)
    if len(some):
        starts = (np.cumsum(counts) - counts)[some]
        alike = [np.minimum.reduceat(c, starts) == np.maximum.reduceat(c, starts) for c in (kind, bits, sym)]
        t_kind[some], t_bits[some], t_sym[some] = kind[starts], bits[starts], sym[starts]
        ok = np.logical_and.reduceat(entry_ok, starts) & np.logical_and.reduce(alike)
        plain[some] = ok & ((kind[starts] == RANGED) | (counts[some] == 1))  # per channel: min and max needed
    return Columns(names, counts, plain, t_kind, t_bits, t_sym.astype(bool), lo, hi, scale, offset, has["offset"])

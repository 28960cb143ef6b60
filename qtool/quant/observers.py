"""Streaming range observers: each folds a batch in and drops it, keeping fixed-size state.

`MinMax` keeps two numbers; `Histogram` keeps 2048 bins over the range seen so far, re-binned
when the range grows. Observers never compute scale or offset (`encoding.py` does, called from
`range_search.py`); they report a range for a bitwidth and schema. `a.merge(b)` equals having
observed both streams (exactly for MinMax, within one bin for Histogram), so calibration can
be sharded and its state saved.
"""

from __future__ import annotations

import base64
import copy
import math
from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np

from qtool.errors import DataError
from qtool.quant import range_search


class Observer(Protocol):
    name: str
    count: int

    def update(self, x: np.ndarray) -> None: ...
    def observe(self, lo: float, hi: float, sample: np.ndarray | None) -> None: ...
    def merge(self, other: Observer) -> None: ...
    def range(self, bitwidth: int = 8, schema: str = "asymmetric") -> tuple[float, float]: ...


def _extrema(name: str, x: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(
            "NaN or Inf in a calibration output", where=f"tensor {name!r}", hint="check the model and its inputs"
        )
    return lo, hi


# A histogram needs a distribution, not every value: a large tensor contributes an evenly strided
# sample of about this many values per batch (the range itself stays exact, from every value).
SAMPLE_CAP = 1 << 12
# Over a whole calibration run a tensor's histogram gets about this many values: more samples mean
# fewer values from each (never under SAMPLE_FLOOR), so the histogram work stays flat in N.
SAMPLE_BUDGET, SAMPLE_FLOOR = 1 << 18, 1 << 8


def sample_cap(expected_samples: int | None) -> int:
    """Values per tensor per batch for a run of `expected_samples` samples (None: unknown)."""
    if not expected_samples:
        return SAMPLE_CAP
    return int(np.clip(SAMPLE_BUDGET // expected_samples, SAMPLE_FLOOR, SAMPLE_CAP))


def _subsample(x: np.ndarray, cap: int = SAMPLE_CAP) -> np.ndarray:
    flat = x.reshape(-1)
    step = flat.size // cap
    if step <= 1:
        return flat
    return flat[:: step | 1]  # an odd stride does not lock onto even channel/row periods


class MinMax:
    """True range of everything seen (the seed's "tf": "finds the smallest and largest values")."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0
        self.unbounded = False  # saw ±inf or ±1e30-class values: a mask, not data; the tensor stays float
        self.marks: list[float] = []  # largest magnitude seen by each quarter of the samples (calibrate's `mark`)

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        lo, hi = _extrema(self.name, x)
        self.observe(lo, hi, None)

    def observe(self, lo: float, hi: float, sample: np.ndarray | None) -> None:
        """Fold in one batch given its exact extremes (and, for histograms, a sample of its values)."""
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += 1

    def mark(self) -> None:
        """Note the largest magnitude seen so far (a quarter of the samples more than at the last mark)."""
        if self.count:
            self.marks.append(max(abs(self.lo), abs(self.hi)))

    def merge(self, other: Observer) -> None:
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)  # type: ignore[attr-defined]
        self.count += other.count
        self.unbounded = self.unbounded or getattr(other, "unbounded", False)

    def range(self, bitwidth: int = 8, schema: str = "asymmetric") -> tuple[float, float]:
        return (self.lo, self.hi) if self.count else (0.0, 0.0)

    @property
    def stays_float(self) -> bool:
        """Its tensor must not be quantized: it held a mask's ±inf or ±1e30 values."""
        return self.unbounded

    def state(self) -> dict:
        state = {"method": "min-max", "lo": self.lo, "hi": self.hi, "count": self.count}
        return {**state, "unbounded": True} if self.unbounded else state


class SoftmaxInput(MinMax):
    """The input of a Softmax, observed per row (the Softmax axis), padded and masked positions left out.

    Each batch reports its maximum, its minimum, the minimum of its real values (a value counts when
    it is finite, above −1e30, within MASK_GAP of its row's maximum, and its row's maximum is within
    MASK_GAP of the batch's: an additive mask of −1e4, −1e9, finfo.min or −inf puts masked positions,
    and fully masked rows, far below), and the smallest real row maximum. The range clamps the real
    minimum at that smallest row maximum − SOFTMAX_SPAN: below it, every row's Softmax is unchanged
    to e^−20 (< 2.1e-9) per element, so the clamp cannot clip a value that matters, whatever each
    row's maximum is. A Softmax input that held masked positions (`masked`) is not quantized at all:
    a masked position must stay far below its row's maximum, and a grid that reaches that far
    wastes its levels when the real scores span little (group_range.py).
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.row_max_min = np.inf
        self.masked = False

    def observe_rows(self, hi: float, lo: float, row_max_min: float, raw_min: float = np.inf) -> None:
        self.masked = self.masked or raw_min < lo  # a value left out: a masked position or row
        if not (math.isfinite(hi) and math.isfinite(lo) and math.isfinite(row_max_min)):
            return  # a sample whose every row is masked says nothing about the real scores
        self.observe(lo, hi, None)
        self.row_max_min = min(self.row_max_min, row_max_min)

    def merge(self, other: Observer) -> None:
        super().merge(other)
        self.row_max_min = min(self.row_max_min, getattr(other, "row_max_min", getattr(other, "lo", np.inf)))
        self.masked = self.masked or getattr(other, "masked", False)

    def range(self, bitwidth: int = 8, schema: str = "asymmetric") -> tuple[float, float]:
        if not self.count:
            return 0.0, 0.0
        return max(self.lo, min(self.row_max_min, self.hi) - SOFTMAX_SPAN), self.hi

    @property
    def stays_float(self) -> bool:
        """A masked Softmax input reads float, so its masked positions stay where the mask put them."""
        return self.unbounded or self.masked

    def state(self) -> dict:
        return {**super().state(), "method": "softmax-input", "row_max_min": self.row_max_min, "masked": self.masked}


SOFTMAX_SPAN = 20.0
SENTINEL = 1e30  # values this large are markers (finfo.min masks), not data: calibration keeps their tensor float
MASK_GAP = 1000.0  # a real score this far below its row's maximum weighs e^-1000: nothing


BINS = 2048
# a histogram filling a quarter of its bins or fewer keeps (bin, count) pairs: 12 bytes an occupied bin, not 8 each bin
SPARSE_SHARE = 4


class Histogram(MinMax):
    """`bins` counts over [lo, hi]; the range is selected at the end by `select`."""

    def __init__(self, name: str = "", *, bins: int = BINS, select: str = "sqnr", q: float = 99.99) -> None:
        super().__init__(name)
        self.bins, self.select, self.q = bins, select, q
        self._dense: np.ndarray | None = None
        self.counts = np.zeros(bins, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        """The bin counts, dense. A tensor of few values (a [1, 4] output seen 4 times) fills a few of the bins: those
        are kept as (bin, count) pairs, so memory follows what a tensor holds (20000 such tensors held 16 KB each)."""
        if self._dense is not None:
            return self._dense
        dense = np.zeros(self.bins, dtype=np.int64)
        dense[self._occupied] = self._held
        return dense

    @counts.setter
    def counts(self, value: np.ndarray) -> None:
        if value is self._dense:  # added to in place: a dense histogram stays dense
            return
        occupied = np.flatnonzero(value)
        if SPARSE_SHARE * occupied.size <= self.bins:
            self._dense, self._occupied, self._held = None, occupied.astype(np.int32), value[occupied]
        else:
            self._dense = value

    def _edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def _index(self, x: np.ndarray) -> np.ndarray:
        width = (self.hi - self.lo) or 1.0
        idx = ((x - self.lo) * (self.bins / width)).astype(np.int64)
        return np.clip(idx, 0, self.bins - 1)

    def _rebin(self, lo: float, hi: float) -> None:
        if self.count:
            centers = (self._edges()[:-1] + self._edges()[1:]) / 2
            self.lo, self.hi = lo, hi
            self.counts = np.bincount(self._index(centers), weights=self.counts, minlength=self.bins).astype(np.int64)
        self.lo, self.hi = lo, hi

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        lo, hi = _extrema(self.name, x)
        self.observe(lo, hi, _subsample(x))

    def observe(self, lo: float, hi: float, sample: np.ndarray | None) -> None:
        self.widen(lo, hi)
        if sample is not None and sample.size:
            self.counts += np.bincount(self._index(sample.reshape(-1)), minlength=self.bins)
        self.count += 1

    def widen(self, lo: float, hi: float) -> None:
        """Take a batch's extremes: the first sets the range, a wider one re-bins the counts."""
        if not self.count:
            self.lo, self.hi = lo, hi
        elif lo < self.lo or hi > self.hi:
            self._rebin(min(lo, self.lo), max(hi, self.hi))

    def merge(self, other: Observer) -> None:
        if not other.count:
            return
        other = copy.deepcopy(other)
        if not self.count:
            self.__dict__.update(other.__dict__)
            return
        lo, hi = min(self.lo, other.lo), max(self.hi, other.hi)  # type: ignore[attr-defined]
        self._rebin(lo, hi)
        other._rebin(lo, hi)  # type: ignore[attr-defined]
        self.counts += other.counts  # type: ignore[attr-defined]
        self.count += other.count

    def range(self, bitwidth: int = 8, schema: str = "asymmetric") -> tuple[float, float]:
        if not self.count or self.hi <= self.lo:
            return super().range()
        edges = self._edges()
        if self.select == "percentile":
            return range_search.percentile(edges, self.counts, self.q)
        if self.select == "entropy":
            return self._entropy_range(bitwidth, schema)
        centers = (edges[:-1] + edges[1:]) / 2
        return range_search.search(centers, self.counts, bitwidth, schema, self.select)

    def state(self) -> dict:
        return {
            **super().state(),
            "method": self.select,
            "q": self.q,
            "counts": base64.b64encode(self.counts.astype("<i8").tobytes()).decode("ascii"),
        }

    def _entropy_range(self, bitwidth: int, schema: str) -> tuple[float, float]:
        if self.counts.sum() < 8 * self.bins:
            # KL over a sparse histogram (a squeeze-excite vector seen a few times) picks noise:
            # too few values to clip with confidence, so keep the whole range.
            return self.lo, self.hi
        edges = self._edges()
        centers = (edges[:-1] + edges[1:]) / 2
        top = max(abs(self.lo), abs(self.hi))
        abs_edges = np.linspace(0.0, top, self.bins + 1)
        idx = np.clip((np.abs(centers) * (self.bins / top)).astype(np.int64), 0, self.bins - 1)
        abs_counts = np.bincount(idx, weights=self.counts, minlength=self.bins)
        thresholds, divergences = range_search.kl_curve(abs_counts, abs_edges)
        lo, hi = np.maximum(self.lo, -thresholds), np.minimum(self.hi, thresholds)
        noise = range_search.expected_noise(centers, self.counts, lo, hi, bitwidth, schema, gamma=1.0)
        admissible = noise <= noise[-1] * (1 + 1e-9)  # the last candidate is the whole range
        best = int(np.argmin(np.where(admissible, divergences, np.inf)))
        return float(lo[best]), float(hi[best])


BINNED_AT_ONCE = 1 << 16  # values: the vectorised binning holds five arrays of them (2 MB at this size)


def observe_histograms(
    observers: list[Histogram], lows: np.ndarray, highs: np.ndarray, samples: list[np.ndarray], cap: int = SAMPLE_CAP
) -> None:
    """`Histogram.observe` for many tensors of one batch in a few vectorised bincounts: a model with
    hundreds of small tensors (squeeze-excite vectors) would otherwise pay Python's per-call cost. A run's
    samples are binned in slices of tensors of about BINNED_AT_ONCE values: all at once, ddddocr's detector
    held 25 MB of index arrays for each of its runs (a small model's whole calibration costs less)."""
    bounds = _bounds(observers)
    wider = np.flatnonzero((lows < bounds[:, 0]) | (highs > bounds[:, 1]))
    for k in wider:  # ranges grow early in a run; after that this loop is empty
        observers[k].widen(float(lows[k]), float(highs[k]))
        bounds[k] = observers[k].lo, observers[k].hi
    # a tensor of unknown size arrives whole; a batch of N samples (whose shapes are all unknown) gets N samples' cap:
    # --calib_batch_size 64 took SAMPLE_CAP values of the whole batch, 64x fewer, and moved percentile's ranges
    samples = [_subsample(s, max(cap, SAMPLE_CAP)) for s in samples]
    ends = np.cumsum([s.size for s in samples])
    start = 0
    while start < len(samples):
        end = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + BINNED_AT_ONCE, "right")))
        end = min(end, start + max(1, BINNED_AT_ONCE // observers[0].bins))  # dense counts: 20000 [1, 4]s, 268 MB
        _bin(observers[start:end], bounds[start:end], samples[start:end])
        start = end


def _bin(observers: list[Histogram], bounds: np.ndarray, samples: list[np.ndarray]) -> None:
    bins = observers[0].bins
    sizes = [s.size for s in samples]
    width = bounds[:, 1] - bounds[:, 0]
    origin = bounds[:, 0].astype(np.float32)
    per_unit = np.minimum(bins / np.where(width > 0, width, 1.0), np.finfo(np.float32).max).astype(np.float32)
    # float32 is exact enough for a bin index (< 2048) and halves the memory traffic
    position = np.concatenate([s.reshape(-1) for s in samples]).astype(np.float32, copy=False)
    # a near-empty range (width ~1e-38) or a value near float32's limit overflows to inf: the clip
    # below puts it in the last bin, where it belongs
    with np.errstate(over="ignore", invalid="ignore"):
        position -= np.repeat(origin, sizes)
        position *= np.repeat(per_unit, sizes)
    np.clip(np.nan_to_num(position, copy=False), 0, bins - 1, out=position)
    index = position.astype(np.int32)
    index += np.repeat(np.arange(len(sizes), dtype=np.int32) * bins, sizes)  # each tensor's own bins
    counts = np.bincount(index, minlength=len(observers) * bins).reshape(len(observers), bins)
    for observer, row in zip(observers, counts, strict=True):
        observer.counts += row
        observer.count += 1


def _bounds(observers: list[Histogram]) -> np.ndarray:
    """(lo, hi) per observer; an observer that has seen nothing yet takes any range."""
    return np.array([(o.lo, o.hi) if o.count else (np.inf, -np.inf) for o in observers])


OBSERVERS: dict[str, Callable[..., Observer]] = {
    "min-max": MinMax,
    "sqnr": partial(Histogram, select="sqnr"),
    "mse": partial(Histogram, select="mse"),
    "percentile": partial(Histogram, select="percentile"),
    "entropy": partial(Histogram, select="entropy"),
}


def observed_extremes(observers: dict[str, Observer], names) -> dict[str, tuple[float, float]]:
    """The least and greatest value each of `names` took in calibration, where its observer saw any."""
    found = {n: observers[n] for n in names if n in observers}
    return {n: (float(o.lo), float(o.hi)) for n, o in found.items() if isinstance(o, MinMax) and o.count}


GROWTH_PER_QUARTER = 1.1  # a range this much wider after each further quarter of the samples ...
GROWTH_TOTAL = 1.5  # ... and this much wider at the end than after the first quarter: it has not settled


def growing_ranges(observers: dict[str, Observer]) -> dict[str, tuple[float, float]]:
    """Tensors whose largest magnitude grew by GROWTH_PER_QUARTER or more over each further quarter of the
    calibration samples and by GROWTH_TOTAL overall: a state that accumulates along a stream (an LSTM cell
    that integrates, as DTLN's does: 125 -> 7150 over 64 frames in order, 9056 on held-out frames). Held-out
    inputs go past such a range; a range that merely met one outlier grows in one quarter, not in each.
    Name -> (largest magnitude after the first quarter, at the end)."""
    found = {}
    for name, o in observers.items():
        marks = [*getattr(o, "marks", []), max(abs(o.lo), abs(o.hi))] if getattr(o, "count", 0) else []
        if len(marks) < 4 or marks[0] <= 0:
            continue
        steady = all(b >= GROWTH_PER_QUARTER * a for a, b in zip(marks[-4:-1], marks[-3:], strict=True))
        if steady and marks[-1] >= GROWTH_TOTAL * marks[-4]:
            found[name] = (marks[-4], marks[-1])
    return found


def accumulating_ranges(observers: dict[str, Observer], states: list[str]) -> dict[str, tuple[float, float]]:
    """growing_ranges, where the stream's state grew too: a state that accumulates along the list is fed back in,
    so an input that carries it (`states`) grows with it. Where none does, the samples' own inputs grew, by chance
    or by the list's order (GTCRN's frames, each with the caches the float model reached there, calibrated in the
    order of their utterances: its spectra louder down the list). No observed state input: the growth alone."""
    grown = growing_ranges(observers)
    seen = [s for s in states if s in observers]
    return grown if not seen or any(s in grown for s in seen) else {}


def read_as(observer: Observer, method: str, percentile: float = 99.99) -> Observer:
    """A histogram's observations read by another `method`: any histogram method, or min-max from its true
    extremes, the ranges a pass with that method's own observer gives. Any other observer is returned as it is."""
    if not isinstance(observer, Histogram):
        return observer
    if method == "min-max":
        plain = MinMax(observer.name)
        plain.lo, plain.hi, plain.count, plain.unbounded = observer.lo, observer.hi, observer.count, observer.unbounded
        plain.marks = list(observer.marks)
        return plain
    view = copy.copy(observer)
    view.select, view.q, view.counts, view.marks = method, percentile, observer.counts.copy(), list(observer.marks)
    return view


def make_observer(method: str, name: str, percentile: float = 99.99) -> Observer:
    if method == "min-max":
        return MinMax(name)
    return OBSERVERS[method](name, q=percentile)


def observe_values(
    method: str, values: np.ndarray, bitwidth: int, schema: str, percentile: float = 99.99
) -> tuple[float, float]:
    """Range of a known tensor (a weight) by a calibration method, as if observed once."""
    observer = make_observer(method, "weight", percentile)
    observer.update(values)
    return observer.range(bitwidth, schema)


def finite_float(value: object) -> float | None:
    """A saved number as a finite float; None for anything else. Only a JSON number counts: float() would also
    take the string "1" (or "inf"), which no stats file qtool writes holds."""
    number = _json_number(value)
    return number if number is not None and math.isfinite(number) else None


def _json_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer past float's range
        return None


COUNT_LIMIT = 2**53  # samples a stats file counts: no calibration sees more, and past it a JSON number reads inexactly


def count_problem(count: object) -> str | None:
    """What is wrong with a saved count, or None: a non-negative integer under COUNT_LIMIT, a long one not echoed."""
    if type(count) is int and 0 <= count < COUNT_LIMIT:
        return None
    shown = f"a {len(str(abs(count)))}-digit number" if type(count) is int and abs(count) >= COUNT_LIMIT else repr(count)
    return f"a non-negative integer under 2^53, not {shown[:80]}"


def _checked_range(state: dict) -> tuple[float, float, int]:
    """lo, hi and count of a saved state: finite with lo <= hi once anything was seen, (inf, -inf) before."""
    try:
        lo, hi, count = _json_number(state["lo"]), _json_number(state["hi"]), state["count"]
    except (KeyError, TypeError) as e:
        raise ValueError("'lo' and 'hi' must be numbers") from e
    if lo is None or hi is None:
        raise ValueError("'lo' and 'hi' must be numbers")
    if (problem := count_problem(count)) is not None:
        raise ValueError(f"'count' must be {problem}")
    if count == 0 and (lo, hi) == (np.inf, -np.inf):
        return lo, hi, count
    if count == 0:  # merged, min-max took its range into another shard's, and alone it read as 'no calibration data'
        raise ValueError(f"'count' is 0, yet it holds the range [{lo}, {hi}]: a state that saw nothing holds none")
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    if lo > hi:
        raise ValueError(f"range [{lo}, {hi}] has lo > hi")
    if max(-lo, hi) > float(np.finfo(np.float32).max):  # its scale was inf in the model written, silently
        raise ValueError(f"range [{lo}, {hi}] is past float32's, which no calibrated tensor holds")
    if max(-lo, hi) >= SENTINEL:  # a grid of step 1e36 was written, exit 0
        raise ValueError(f"range [{lo}, {hi}] reaches {SENTINEL:g}: calibration reads such values as a mask's and "
                         "keeps the tensor float ('unbounded'), saving no range")  # fmt: skip
    return lo, hi, count


def from_state(name: str, state: dict, method: str, percentile: float = 99.99) -> Observer:
    """Rebuild an observer saved by `state()`, selecting its range by `method` from now on.

    A histogram serves every histogram method and min-max; min/max state serves only min-max.
    """
    if isinstance(state, dict) and state.get("method") == "softmax-input":
        lo, hi, count = _checked_range(state)
        softmax = SoftmaxInput(name)
        softmax.lo, softmax.hi, softmax.count = lo, hi, count
        row_max_min = finite_float(state.get("row_max_min"))
        if row_max_min is None and count:
            raise ValueError("'row_max_min' must be a finite number")
        softmax.row_max_min = row_max_min if row_max_min is not None else np.inf
        softmax.masked = state.get("masked") is True
        return softmax
    if not isinstance(state, dict) or state.get("method") not in OBSERVERS:
        raise ValueError("not an observer state (needs 'method', 'lo', 'hi' and 'count')")
    if state["method"] == "min-max" and method != "min-max":
        raise ValueError(f"holds min/max only; {method} calibration needs a histogram")
    lo, hi, count = _checked_range(state)
    observer: MinMax
    if method == "min-max":
        observer = MinMax(name)
    else:
        try:
            raw = base64.b64decode(state["counts"], validate=True)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("'counts' must be base64 text of int64 bin counts") from e
        if len(raw) != 8 * BINS:  # every histogram qtool saves has BINS bins, and merging needs equal ones
            raise ValueError(f"'counts' must hold {BINS} int64 bin counts")
        counts = np.frombuffer(raw, dtype="<i8").astype(np.int64)
        if (counts < 0).any() or (not count and counts.any()):
            raise ValueError("bin counts must be non-negative, and 0 where 'count' is")
        if counts.sum(dtype=np.float64) >= COUNT_LIMIT:  # int64 sums wrapped: percentile read a range of garbage
            raise ValueError("bin counts must sum under 2^53: no calibration sees more values")
        observer = Histogram(name, bins=len(counts), select=method, q=percentile)
        observer.counts = counts
    observer.lo, observer.hi, observer.count = lo, hi, count
    observer.unbounded = state.get("unbounded") is True
    return observer

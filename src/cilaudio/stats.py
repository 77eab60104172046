"""Means over seeds with 95 % intervals, and paired comparisons over seeds.

The interval of the mean of n values x_1..x_n (one per seed) is Student's t interval::

    mean ± t_{0.975, n-1} * s / sqrt(n)        s = sample standard deviation (ddof = 1)

With one value there is no interval (NaN bounds): one seed measures no spread.

A paired comparison of A and B takes the seeds that both have a finite value for, the
per-seed differences d_s = A_s - B_s, and the interval above of the mean of d. The difference
"holds" when that interval excludes 0, which is the same as a two-sided paired t-test
(``scipy.stats.ttest_rel``) giving p < 0.05. Two methods of one norm with the same seed share
the phase-0 model and the data order, so pairing removes that shared part of the spread; two
norms with the same seed share the seed (data order, initialisation stream) but not the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

CONFIDENCE = 0.95

INTERVAL_NOTE = (
    "95 % interval of the mean over seeds: mean ± t(0.975, n-1) · s / √n, Student's t with n-1 degrees "
    "of freedom, s the sample standard deviation over the n seeds (ddof = 1); one seed gives no interval.")
PAIRED_NOTE = (
    "A difference between two methods or norms is the mean over the seeds both have of the per-seed "
    "difference, with the 95 % t-interval of that mean; it holds when the interval excludes 0 (a paired "
    "t-test at the 5 % level); otherwise it is not distinguishable at this number of seeds.")


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """t_{(1 + confidence) / 2, n - 1}: the two-sided quantile for the mean of n values (NaN for n < 2)."""
    if n < 2:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1))


@dataclass(frozen=True)
class Interval:
    """Mean over n finite values, sample std (ddof = 1) and the t interval [low, high]."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @property
    def half(self) -> float:
        """Half-width t_{0.975, n-1} * s / sqrt(n) (NaN without an interval)."""
        return (self.high - self.low) / 2 if self.n >= 2 else math.nan


def interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of the finite ``values`` with its t interval (NaN and inf are left out)."""
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(np.mean(x))
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    s = float(np.std(x, ddof=1))
    half = t_quantile(n, confidence) * s / math.sqrt(n)
    return Interval(mean, s, mean - half, mean + half, n)


def _as_dict(values: Mapping[Any, float] | Any) -> dict:
    return dict(values.items()) if hasattr(values, "items") else dict(values)


@dataclass(frozen=True)
class Paired:
    """The paired difference A - B over the seeds both have."""

    diff: Interval
    seeds: tuple

    @property
    def n(self) -> int:
        return self.diff.n

    @property
    def holds(self) -> bool:
        """True when the interval of the mean difference excludes 0 (needs 2 seeds or more)."""
        d = self.diff
        return d.n >= 2 and math.isfinite(d.low) and math.isfinite(d.high) and (d.low > 0 or d.high < 0)

    @property
    def sign(self) -> int:
        """+1: A is larger and it holds; -1: A is smaller and it holds; 0: not distinguishable."""
        return 0 if not self.holds else (1 if self.diff.mean > 0 else -1)


def paired(a: Mapping[Any, float], b: Mapping[Any, float], confidence: float = CONFIDENCE) -> Paired:
    """Paired difference of ``a`` and ``b`` (``{seed: value}`` or a Series indexed by seed)."""
    a, b = _as_dict(a), _as_dict(b)
    seeds = tuple(sorted(s for s in a if s in b and np.isfinite(a[s]) and np.isfinite(b[s])))
    return Paired(interval([a[s] - b[s] for s in seeds], confidence), seeds)


# ----------------------------------------------------------------------------- text


def _num(x: float, digits: int, signed: bool) -> str:
    v = round(float(x), digits) + 0.0  # never "-0.000"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_interval(iv: Interval, digits: int = 3, *, signed: bool = False, scale: float = 1.0,
                 unit: str = "", one_seed: str = "") -> str:
    """``"0.612 [0.580, 0.644]"``; the mean alone (then ``one_seed``) with one value; ``"n/a"`` with none.

    ``scale`` and ``unit`` turn shares into percentages (``scale=100, unit=" %"``)."""
    if iv.n == 0 or not math.isfinite(iv.mean):
        return "n/a"
    m = _num(scale * iv.mean, digits, signed) + unit
    if iv.n == 1 or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return m + one_seed
    lo, hi = _num(scale * iv.low, digits, signed) + unit, _num(scale * iv.high, digits, signed) + unit
    return f"{m} [{lo}, {hi}]"


def fmt_pm(iv: Interval, digits: int = 3) -> str:
    """``"0.612 ± 0.032"`` with the t half-width; the mean alone with one value; ``"n/a"`` with none."""
    if iv.n == 0 or not math.isfinite(iv.mean):
        return "n/a"
    if iv.n == 1 or not math.isfinite(iv.half):
        return _num(iv.mean, digits, False)
    return f"{_num(iv.mean, digits, False)} ± {_num(iv.half, digits, False)}"


def seeds_word(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def verdict(p: Paired) -> str:
    """``"holds over 3 seeds"``, ``"not distinguishable with 3 seeds"``,
    ``"not distinguishable (one seed)"`` or ``"no seed in common"``."""
    if p.n == 0:
        return "not distinguishable (no seed in common)"
    if p.n == 1:
        return "not distinguishable (one seed)"
    return f"holds over {p.n} seeds" if p.holds else f"not distinguishable with {p.n} seeds"


def describe(p: Paired, *, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``"+0.080 [-0.020, +0.180], not distinguishable with 3 seeds"``."""
    return f"{fmt_interval(p.diff, digits, signed=True, scale=scale, unit=unit)}, {verdict(p)}"

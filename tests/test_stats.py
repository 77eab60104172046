"""Tests of cilaudio.stats: intervals against closed forms worked out by hand and a printed
t table, paired comparisons against scipy.stats.ttest_rel."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy.stats import ttest_rel

from cilaudio.stats import (
    describe,
    fmt_interval,
    fmt_pm,
    interval,
    paired,
    t_quantile,
    verdict,
)

# two-sided 95 % quantiles t_{0.975, df} of Student's t, from a printed table
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 29: 2.045}
# With 2 degrees of freedom the t CDF has a closed form, F(t) = 1/2 + t / (2 sqrt(t^2 + 2)):
# F(t) = 0.975 gives t / sqrt(t^2 + 2) = 0.95, so t^2 = 2 * 0.95^2 / (1 - 0.95^2).
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # 4.30265272975...
# With 1 degree of freedom (Cauchy) F(t) = 1/2 + atan(t) / pi, so t = tan(0.475 pi).
T1 = math.tan(0.475 * math.pi)  # 12.7062047361...


@pytest.mark.parametrize("df, expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(df + 1) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_matches_closed_forms():
    assert t_quantile(3) == pytest.approx(T2, rel=1e-12)
    assert t_quantile(2) == pytest.approx(T1, rel=1e-12)
    assert math.isnan(t_quantile(1))


def test_interval_of_1_2_3_by_hand():
    # mean 2, s = sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1, half-width t_{0.975,2} * 1 / sqrt(3)
    iv = interval([1.0, 2.0, 3.0])
    half = T2 / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(2.0) and iv.std == pytest.approx(1.0)
    assert iv.low == pytest.approx(2.0 - half, rel=1e-12) and iv.high == pytest.approx(2.0 + half, rel=1e-12)
    assert iv.half == pytest.approx(half, rel=1e-12)
    assert half == pytest.approx(2.4842, abs=1e-4)


def test_interval_of_two_values_by_hand():
    # 0.20 and 0.21: s = 0.01 / sqrt(2), half = 12.706 * s / sqrt(2) = 12.706 * 0.005
    iv = interval([0.20, 0.21])
    assert iv.mean == pytest.approx(0.205) and iv.std == pytest.approx(statistics.stdev([0.20, 0.21]))
    assert iv.half == pytest.approx(T1 * 0.005, rel=1e-9)


def test_one_value_has_no_interval():
    iv = interval([0.612])
    assert iv.n == 1 and iv.mean == 0.612
    assert math.isnan(iv.low) and math.isnan(iv.high) and math.isnan(iv.std) and math.isnan(iv.half)
    assert fmt_interval(iv) == "0.612" and fmt_pm(iv) == "0.612"
    assert fmt_interval(iv, one_seed=" (one seed, no interval)") == "0.612 (one seed, no interval)"
    p = paired({0: 0.7}, {0: 0.5})
    assert p.n == 1 and not p.holds and p.sign == 0
    assert verdict(p) == "not distinguishable (one seed)"
    assert describe(p) == "+0.200, not distinguishable (one seed)"


def test_nan_and_inf_are_left_out_and_empty_is_nan():
    iv = interval([1.0, math.nan, 3.0, math.inf])
    assert iv.n == 2 and iv.mean == pytest.approx(2.0)
    empty = interval([])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert fmt_interval(empty) == "n/a" and fmt_pm(empty) == "n/a"
    assert verdict(paired({0: 1.0}, {1: 1.0})) == "not distinguishable (no seed in common)"


def test_formats():
    iv = interval([1.0, 2.0, 3.0])
    h = T2 / math.sqrt(3)
    assert fmt_interval(iv) == f"2.000 [{2 - h:.3f}, {2 + h:.3f}]" == "2.000 [-0.484, 4.484]"
    assert fmt_pm(iv) == "2.000 ± 2.484"
    assert fmt_interval(iv, signed=True) == "+2.000 [-0.484, +4.484]"
    assert fmt_interval(interval([0.1, 0.2, 0.3]), 1, scale=100, unit=" %") == "20.0 % [-4.8 %, 44.8 %]"
    assert fmt_interval(interval([-0.0001]), signed=True) == "+0.000"  # never "-0.000"


def test_paired_pairs_by_seed_by_hand():
    # seed 3 only in b, seed 4 NaN in a: pairs are seeds 0, 1, 2 whatever the mapping's order
    a = {2: 4.0, 0: 1.0, 1: 2.0, 4: math.nan}
    b = {3: 9.0, 1: 1.0, 0: 0.5, 2: 2.5, 4: 1.0}
    p = paired(a, b)
    assert p.seeds == (0, 1, 2)
    # differences 0.5, 1.0, 1.5: mean 1, s 0.5, half 4.3027 * 0.5 / sqrt(3) = 1.242 > 1: includes 0
    assert p.diff.mean == pytest.approx(1.0) and p.diff.half == pytest.approx(T2 * 0.5 / math.sqrt(3))
    assert not p.holds and p.sign == 0 and verdict(p) == "not distinguishable with 3 seeds"
    # differences 0.9, 1.0, 1.1: s 0.1, half 0.248: the interval excludes 0
    q = paired({0: 1.9, 1: 2.0, 2: 2.1}, {0: 1.0, 1: 1.0, 2: 1.0})
    assert q.holds and q.sign == 1 and verdict(q) == "holds over 3 seeds"
    assert paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.9, 1: 2.0, 2: 2.1}).sign == -1


def test_pairing_removes_the_shared_seed_effect():
    """A constant lead over a large seed-to-seed spread holds when paired, but the same values
    with the seeds shuffled do not: the code must pair by seed, not by position or overall."""
    base = {0: 0.2, 1: 0.5, 2: 0.8}
    a = {s: v + 0.05 + 0.005 * s for s, v in base.items()}
    assert paired(a, base).holds
    shuffled = {0: base[2], 1: base[0], 2: base[1]}
    assert not paired(a, shuffled).holds


def test_holds_agrees_with_ttest_rel():
    rng = np.random.default_rng(12345)
    checked = agree_holds = 0
    for trial in range(600):
        n = int(rng.integers(2, 11))
        effect = rng.choice([0.0, 0.02, 0.05, 0.1])
        a = rng.normal(0.5, 0.05, n)
        b = a - effect + rng.normal(0, 0.04, n)
        p_value = ttest_rel(a, b).pvalue
        if abs(p_value - 0.05) < 1e-6:
            continue  # on the edge: rounding decides
        p = paired(dict(enumerate(a)), dict(enumerate(b)))
        assert p.holds == (p_value < 0.05), (n, a, b, p_value, p.diff)
        assert p.diff.mean == pytest.approx(float(np.mean(a - b)))
        checked += 1
        agree_holds += p.holds
    assert checked > 590 and 50 < agree_holds < checked - 50  # both outcomes were exercised

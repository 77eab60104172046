"""Tests of exemplar selection: objective by hand, annealing against brute force and random."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cilaudio.exemplar_selection import (
    anneal_exemplars,
    balance_objective,
    balance_targets,
    label_histogram,
    select_annealing,
    select_exemplars,
    select_random,
    selection_report,
)

# ---------------------------------------------------------------------------------------------
# Independent reference: water-filling by bisection on the level, objective by explicit loops.
# ---------------------------------------------------------------------------------------------


def ref_targets(available, label_total):
    a = [float(x) for x in available]
    if label_total >= sum(a):
        return a
    lo, hi = 0.0, max(a)
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(min(x, mid) for x in a) < label_total:
            lo = mid
        else:
            hi = mid
    return [min(x, hi) for x in a]


def ref_objective(labels, subset, zero_penalty=None):
    """J of the clips `subset` of pool `labels`, with L = |subset| * mean labels per pool clip."""
    labels = np.asarray(labels)
    n, n_classes = labels.shape
    available = [int(sum(labels[i][k] for i in range(n))) for k in range(n_classes)]
    counts = [int(sum(labels[i][k] for i in subset)) for k in range(n_classes)]
    label_total = len(subset) * sum(available) / n
    targets = ref_targets(available, label_total)
    if zero_penalty is None:
        zero_penalty = 1 + sum(x * x for x in available)
    value = 0.0
    for k in range(n_classes):
        if available[k] > 0:
            value += (counts[k] - targets[k]) ** 2
            if counts[k] == 0:
                value += zero_penalty
    return value


def skewed_labels(n_clips=5000, n_classes=50, seed=0):
    """Zipf-like class frequencies (exponent 1.2), 1-3 labels per clip (probabilities .6/.3/.1)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_classes + 1) ** 1.2
    weights /= weights.sum()
    y = np.zeros((n_clips, n_classes), dtype=np.int64)
    for i in range(n_clips):
        m = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
        y[i, rng.choice(n_classes, size=m, replace=False, p=weights)] = 1
    return y


# ---------------------------------------------------------------------------------------------
# Objective by hand
# ---------------------------------------------------------------------------------------------


def test_targets_by_hand():
    # a = [10, 3, 0, 5], L = 12: class 1 saturates at 3, the other two share 9 -> 4.5 each.
    np.testing.assert_allclose(balance_targets(np.array([10, 3, 0, 5]), 12), [4.5, 3, 0, 4.5])
    # L >= sum a: every class gets all its clips.
    np.testing.assert_allclose(balance_targets(np.array([2, 1]), 7), [2, 1])
    # Even split when no class saturates.
    np.testing.assert_allclose(balance_targets(np.array([4, 4, 4]), 6), [2, 2, 2])


def test_objective_by_hand():
    # a = [3, 2, 1], counts [2, 1, 0], L = 3 -> t = [1, 1, 1]; D = 1 + 0 + 1 = 2;
    # one available class uncovered, P = 1 + 9 + 4 + 1 = 15 -> J = 17.
    assert balance_objective(np.array([2, 1, 0]), np.array([3, 2, 1])) == pytest.approx(17.0)
    assert balance_objective(np.array([2, 1, 0]), np.array([3, 2, 1]), zero_penalty=0.0) == pytest.approx(2.0)
    # a = [4, 4, 1], L = 6 -> class 2 saturates at 1, tau = 2.5; counts [3, 2, 1]: D = .25 + .25.
    assert balance_objective(np.array([3, 2, 1]), np.array([4, 4, 1]), label_total=6) == pytest.approx(0.5)
    # counts [3, 3, 0], L = 6: D = .25 + .25 + 1 = 1.5, P = 1 + 16 + 16 + 1 = 34 -> 35.5.
    assert balance_objective(np.array([3, 3, 0]), np.array([4, 4, 1]), label_total=6) == pytest.approx(35.5)
    assert balance_objective(np.array([3, 3, 0]), np.array([4, 4, 1]), label_total=6,
                             zero_penalty=10.0) == pytest.approx(11.5)
    # A class without pool clips is ignored (neither deviation nor penalty).
    assert balance_objective(np.array([1, 0]), np.array([2, 0])) == pytest.approx(0.0)


def test_objective_rejects_impossible_counts():
    with pytest.raises(ValueError):
        balance_objective(np.array([3, 0]), np.array([2, 1]))
    with pytest.raises(ValueError):
        balance_objective(np.array([1, 0, 0]), np.array([2, 1]))


def test_label_histogram_counts_every_label_of_a_clip():
    y = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(label_histogram(y, [0, 1]), [1, 2, 1])
    np.testing.assert_array_equal(label_histogram(y, [2, 3]), [1, 0, 1])


# ---------------------------------------------------------------------------------------------
# Annealing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["cover", "random"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_annealing_finds_brute_force_optimum(seed, init):
    rng = np.random.default_rng(100 + seed)
    y = np.zeros((12, 5), dtype=np.int64)
    probs = np.array([0.6, 0.4, 0.2, 0.1, 0.05])
    for i in range(12):
        y[i] = rng.random(5) < probs
        if y[i].sum() == 0:
            y[i, rng.integers(5)] = 1
    budget = 4
    best = min(ref_objective(y, s) for s in itertools.combinations(range(12), budget))
    res = anneal_exemplars(y, budget, seed=seed, steps=5000, init=init)
    assert ref_objective(y, res.indices.tolist()) == pytest.approx(best, abs=1e-9)
    assert res.objective == pytest.approx(best, abs=1e-9)


def test_coverage_penalty_changes_the_optimum():
    # Clip 0 is the only clip of class 2 (and carries classes 0 and 1 too); clips 1-4 are {0},
    # clips 5-8 are {1}. Budget 2: L = 2 * 11 / 9, t = L / 3 = 0.8148 each.
    # {0}, {1}: D = 2 * (1 - t)^2 + t^2 = 0.7325 but class 2 uncovered;
    # clip 0 + {0}: D = (2 - t)^2 + 2 * (1 - t)^2 = 1.4733, all covered.
    y = np.array([[1, 1, 1]] + [[1, 0, 0]] * 4 + [[0, 1, 0]] * 4)
    t = 2 * 11 / 9 / 3
    assert ref_objective(y, [1, 5], zero_penalty=0) == pytest.approx(2 * (1 - t) ** 2 + t ** 2)
    with_cover = select_annealing(y, 2, seed=0, steps=2000)
    assert 0 in with_cover and label_histogram(y, with_cover).min() >= 1
    assert ref_objective(y, with_cover.tolist()) == pytest.approx((2 - t) ** 2 + 2 * (1 - t) ** 2)
    no_penalty = select_annealing(y, 2, seed=0, steps=2000, zero_penalty=0.0)
    assert 0 not in no_penalty
    np.testing.assert_array_equal(label_histogram(y, no_penalty), [1, 1, 0])


@pytest.mark.parametrize("init", ["cover", "random"])
def test_incremental_counts_equal_recomputation(init):
    y = skewed_labels(n_clips=800, n_classes=20, seed=4)
    res = anneal_exemplars(y, 60, seed=7, steps=5000, init=init)
    np.testing.assert_array_equal(res.counts, y[res.indices].sum(axis=0))
    expected = ref_objective(y, res.indices.tolist())
    assert res.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert res.tracked_objective == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert res.tracked_objective <= res.initial_objective + 1e-9
    assert res.accepted > 0 and res.steps == 5000


def test_annealing_balances_a_skewed_pool_better_than_random():
    y = skewed_labels()  # 5000 clips x 50 classes, Zipf-like
    budget = 500
    rand = select_random(y, budget, seed=1)
    res = anneal_exemplars(y, budget, seed=1, steps=20_000)
    ann = res.indices

    # Bounded: exactly the requested number of proposals, not cut by a clock.
    assert res.steps == 20_000 and not res.stopped_by_time
    assert res.seconds < 10.0  # loose; about 0.05 s on one core

    j_rand, j_ann = ref_objective(y, rand.tolist()), ref_objective(y, ann.tolist())
    c_rand, c_ann = y[rand].sum(axis=0), y[ann].sum(axis=0)
    assert j_ann < j_rand
    assert c_ann.std() < c_rand.std()
    assert (c_ann > 0).sum() >= (c_rand > 0).sum()
    assert (c_ann > 0).all()
    # Substantially, not marginally, more even.
    assert j_ann < 0.01 * j_rand and c_ann.std() < 0.1 * c_rand.std()

    report_r, report_a = selection_report(y, rand), selection_report(y, ann)
    assert report_a.objective == pytest.approx(j_ann) and report_r.objective == pytest.approx(j_rand)
    assert report_a.count_std == pytest.approx(c_ann.std())


def test_time_limit_stops_early_and_stays_consistent():
    y = skewed_labels(n_clips=2000, n_classes=30, seed=5)
    res = anneal_exemplars(y, 200, seed=3, steps=50_000_000, time_limit_s=0.2)
    assert res.stopped_by_time and res.steps < 50_000_000
    np.testing.assert_array_equal(res.counts, y[res.indices].sum(axis=0))


def test_determinism_and_shape():
    y = skewed_labels(n_clips=1000, n_classes=25, seed=6)
    a = select_annealing(y, 120, seed=11, steps=3000)
    b = select_annealing(y, 120, seed=11, steps=3000)
    np.testing.assert_array_equal(a, b)
    for idx in (a, select_random(y, 120, seed=11)):
        assert idx.shape == (120,) and idx.dtype == np.int64
        assert np.unique(idx).size == 120
        assert (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < 1000
    np.testing.assert_array_equal(select_random(y, 120, seed=11), select_random(y, 120, seed=11))
    np.testing.assert_array_equal(select_exemplars(y, 120, method="annealing", seed=11, steps=3000), a)


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_edge_cases():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    for select in (select_random, select_annealing):
        for bad in (0, -3):
            with pytest.raises(ValueError):
                select(y, bad, seed=0)
        with pytest.raises(ValueError):
            select(y, 1.5, seed=0)
        np.testing.assert_array_equal(select(y, 3, seed=0), [0, 1, 2])
        np.testing.assert_array_equal(select(y, 10, seed=0), [0, 1, 2])
        with pytest.raises(ValueError):
            select(np.array([[1, 2], [0, 1]]), 1, seed=0)
        with pytest.raises(ValueError):
            select(np.array([1, 0, 1]), 1, seed=0)
    with pytest.raises(ValueError):
        select_exemplars(y, 1, method="greedy", seed=0)
    with pytest.raises(ValueError):
        select_annealing(y, 1, seed=0, steps=0)
    # Booleans are valid labels.
    assert select_annealing(y.astype(bool), 2, seed=0, steps=100).shape == (2,)


def test_selection_report():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    rep = selection_report(y, [0, 1])  # counts [2, 1, 0]
    assert rep.zero_classes == 1 and rep.count_min == 0 and rep.count_max == 2
    assert rep.count_mean == pytest.approx(1.0)
    assert rep.count_std == pytest.approx(math.sqrt(2 / 3))
    assert rep.label_total == 3 and rep.n_selected == 2 and rep.n_classes_available == 3
    assert rep.objective == pytest.approx(ref_objective(y, [0, 1]))
    assert rep.deviation == pytest.approx(ref_objective(y, [0, 1], zero_penalty=0))
    assert set(rep.to_dict()) >= {"objective", "count_min", "count_max", "count_std", "zero_classes"}
    with pytest.raises(ValueError):
        selection_report(y, [0, 0])

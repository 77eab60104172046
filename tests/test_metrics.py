"""Tests for cilaudio.metrics: every expected number is hand-computed or brute-forced here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cilaudio.metrics import (
    average_precision_per_class,
    compute_metrics,
    f1_micro_macro,
    lwlrap,
    lwlrap_thresholded_reference,
    map_thresholded_reference,
    mean_average_precision,
)


def _brute_lwlrap(y: np.ndarray, ranking_key) -> float:
    """Mean over all (clip, positive label) pairs of precision at that label's rank.

    ``ranking_key(clip_index, class_index)`` gives a sort key; smaller ranks first.
    """
    precisions = []
    n_clips, n_classes = y.shape
    for i in range(n_clips):
        order = sorted(range(n_classes), key=lambda c: ranking_key(i, c))
        rank = {c: r + 1 for r, c in enumerate(order)}  # 1-based
        positives = [c for c in range(n_classes) if y[i, c] == 1]
        for c in positives:
            above = sum(1 for d in positives if rank[d] <= rank[c])
            precisions.append(above / rank[c])
    return float(np.mean(precisions)) if precisions else float("nan")


def _random_case(seed: int, n_clips: int = 40, n_classes: int = 12):
    rng = np.random.default_rng(seed)
    y = (rng.random((n_clips, n_classes)) < 0.25).astype(int)
    y[:5] = 0  # clips without any label
    y[5, :] = 1  # a clip with every label
    scores = rng.random((n_clips, n_classes))  # continuous: no ties
    return y, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lwlrap_matches_brute_force(seed):
    y, s = _random_case(seed)
    assert len(np.unique(s)) == s.size
    expected = _brute_lwlrap(y, lambda i, c: -s[i, c])
    assert lwlrap(y, s) == pytest.approx(expected, abs=1e-12)


def test_lwlrap_hand_computed():
    y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    s = np.array([[0.9, 0.8, 0.3, 0.1], [0.5, 0.2, 0.7, 0.1], [0.9, 0.9, 0.9, 0.9]])
    # clip 0: ranking c0, c1, c2, c3; c0 at rank 1 -> 1/1, c2 at rank 3 -> 2/3
    # clip 1: ranking c2, c0, c1, c3; c1 at rank 3 -> 1/3
    # clip 2: no label, excluded (scikit-learn alone would count it as 1.0)
    assert lwlrap(y, s) == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)


def test_lwlrap_no_labels_is_nan():
    assert math.isnan(lwlrap(np.zeros((3, 4), dtype=int), np.random.default_rng(0).random((3, 4))))


def test_map_hand_computed():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.8, 0.5], [0.8, 0.2, 0.4], [0.3, 0.7, 0.3], [0.1, 0.1, 0.2]])
    # class 0 sorted: 0.9(+) 0.8(-) 0.3(+) 0.1(-): AP = (1/1 + 2/3) / 2 = 5/6
    # class 1 sorted: 0.8(-) 0.7(-) 0.2(+) 0.1(-): AP = 1/3
    # class 2: no positive clip -> NaN, ignored
    ap = average_precision_per_class(y, s)
    assert ap[0] == pytest.approx(5 / 6)
    assert ap[1] == pytest.approx(1 / 3)
    assert math.isnan(ap[2])
    assert mean_average_precision(y, s) == pytest.approx((5 / 6 + 1 / 3) / 2)


def test_map_ignores_all_negative_class():
    y, s = _random_case(3)
    y = y[:, 1:].copy()
    s = s[:, 1:].copy()
    y = np.concatenate([y, np.zeros((len(y), 1), dtype=int)], axis=1)  # an all-negative class
    s_extra = np.concatenate([s, np.random.default_rng(9).random((len(s), 1))], axis=1)
    y_without = y[:, :-1]
    assert mean_average_precision(y, s_extra) == pytest.approx(mean_average_precision(y_without, s))
    assert np.isnan(average_precision_per_class(y, s_extra)[-1])
    assert math.isnan(mean_average_precision(np.zeros((4, 2), dtype=int), np.ones((4, 2))))


def test_f1_hand_counted():
    y = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]])
    s = np.array([[0.6, 0.4, 0.2, 0.1], [0.7, 0.5, 0.9, 0.1], [0.5, 0.1, 0.0, 0.1]])
    # predictions (>= 0.5): [[1,0,0,0],[1,1,1,0],[1,0,0,0]]
    # class 0: TP 2, FP 1, FN 0 -> 4/5 ; class 1: TP 1 -> 1 ; class 2: TP 1, FN 1 -> 2/3
    # class 3: no positives and no predictions -> 0 (zero_division=0)
    # micro: TP 4, FP 1, FN 1 -> 8/10
    micro, macro = f1_micro_macro(y, s)
    assert micro == pytest.approx(0.8)
    assert macro == pytest.approx((4 / 5 + 1 + 2 / 3 + 0) / 4)
    # a higher threshold keeps only the 0.7 and 0.9 predictions
    micro_hi, _ = f1_micro_macro(y, s, threshold=0.65)
    # predictions (>= 0.65): [[0,0,0,0],[1,0,1,0],[0,0,0,0]] -> TP 1, FP 1, FN 4 -> 2/(2+1+4)
    assert micro_hi == pytest.approx(2 / 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lwlrap_thresholded_matches_brute_force(seed):
    y, s = _random_case(seed)
    pred = (s >= 0.5).astype(int)
    expected = _brute_lwlrap(y, lambda i, c: (-pred[i, c], c))
    assert lwlrap_thresholded_reference(y, s) == pytest.approx(expected, abs=1e-12)
    # a different threshold changes the predictions and the brute force alike
    pred3 = (s >= 0.3).astype(int)
    expected3 = _brute_lwlrap(y, lambda i, c: (-pred3[i, c], c))
    assert lwlrap_thresholded_reference(y, s, threshold=0.3) == pytest.approx(expected3, abs=1e-12)


def test_lwlrap_thresholded_hand_computed():
    # predictions [1,0,1,1] -> order c0, c2, c3, c1; c2 at rank 2 -> 1/2, c1 at rank 4 -> 2/4
    y = np.array([[0, 1, 1, 0]])
    s = np.array([[0.9, 0.2, 0.6, 0.7]])
    assert lwlrap_thresholded_reference(y, s) == pytest.approx(0.5)
    # ties broken by class index: all predictions 0, so the lower class index ranks first
    assert lwlrap_thresholded_reference(np.array([[1, 0]]), np.array([[0.1, 0.2]])) == pytest.approx(1.0)
    assert lwlrap_thresholded_reference(np.array([[0, 1]]), np.array([[0.2, 0.1]])) == pytest.approx(0.5)
    # while the standard lwlrap on the scores ranks the positive second in the first case
    assert lwlrap(np.array([[1, 0]]), np.array([[0.1, 0.2]])) == pytest.approx(0.5)


def test_map_thresholded_hand_computed():
    # class 0: labels [1,0,1,0], predictions [1,1,0,0]
    # at prediction 1: precision 1/2, recall 1/2; at 0: precision 2/4, recall 1
    # AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2 ; class 1: labels [0,0,0,1], predictions [0,0,0,1] -> 1
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    s = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3], [0.2, 0.8]])
    assert map_thresholded_reference(y, s) == pytest.approx((0.5 + 1.0) / 2)
    # the standard mAP on scores: class 0 sorted 0.9(+) 0.6(-) 0.4(+) 0.2(-) -> (1 + 2/3)/2
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)


def test_compute_metrics_keys_and_values():
    y, s = _random_case(4)
    m = compute_metrics(y, s, threshold=0.4)
    assert set(m) == {"f1_micro", "f1_macro", "map", "lwlrap", "map_thresholded_ref", "lwlrap_thresholded_ref"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["lwlrap"] == pytest.approx(_brute_lwlrap(y, lambda i, c: -s[i, c]))
    pred = (s >= 0.4).astype(int)
    assert m["lwlrap_thresholded_ref"] == pytest.approx(_brute_lwlrap(y, lambda i, c: (-pred[i, c], c)))
    tp = int((pred & y).sum())
    fp = int((pred & (1 - y)).sum())
    fn = int(((1 - pred) & y).sum())
    assert m["f1_micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


@pytest.mark.parametrize(
    ("y_shape", "s_shape"),
    [((4, 3), (4, 2)), ((4, 3), (3, 3)), ((4,), (4,)), ((2, 3, 4), (2, 3, 4))],
)
def test_shape_errors(y_shape, s_shape):
    y = np.zeros(y_shape, dtype=int)
    s = np.zeros(s_shape)
    with pytest.raises(ValueError, match="shape|2-D"):
        compute_metrics(y, s)
    with pytest.raises(ValueError):
        lwlrap(y, s)

"""Tests for cilaudio.metrics: every expected number is hand-computed or brute-forced here."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score

from cilaudio.metrics import (
    average_precision_per_class,
    classes_without_negatives,
    classes_without_positives,
    compute_metrics,
    d_prime,
    d_prime_from_auc,
    f1_micro_macro,
    lwlrap,
    lwlrap_thresholded_reference,
    map_thresholded_reference,
    mean_average_precision,
    mean_roc_auc,
    roc_auc_per_class,
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


def _reference_sample_precisions(scores_row: np.ndarray, truth_row: np.ndarray):
    """Transcription of the DCASE 2019 task 2 per-sample lwlrap step, as the reference runs it."""
    num_classes = scores_row.shape[0]
    pos_class_indices = np.flatnonzero(truth_row > 0)
    if not len(pos_class_indices):
        return pos_class_indices, np.zeros(0)
    retrieved_classes = np.argsort(scores_row)[::-1]  # default (unstable) argsort, reversed
    class_rankings = np.zeros(num_classes, dtype=int)
    class_rankings[retrieved_classes] = range(num_classes)
    retrieved_class_true = np.zeros(num_classes, dtype=bool)
    retrieved_class_true[class_rankings[pos_class_indices]] = True
    retrieved_cumulative_hits = np.cumsum(retrieved_class_true)
    precision_at_hits = (retrieved_cumulative_hits[class_rankings[pos_class_indices]]
                         / (1 + class_rankings[pos_class_indices].astype(float)))
    return pos_class_indices, precision_at_hits


def _reference_lwlrap(truth: np.ndarray, y_predicted: np.ndarray) -> float:
    """Transcription of the reference's per-class lwlrap on ``Y_predicted`` (one matrix, summed)."""
    num_samples, num_classes = y_predicted.shape
    precisions = np.zeros((num_samples, num_classes))
    for i in range(num_samples):
        pos, prec = _reference_sample_precisions(y_predicted[i, :], truth[i, :])
        precisions[i, pos] = prec
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / float(np.sum(labels_per_class))
    per_class_lwlrap = np.sum(precisions, axis=0) / np.maximum(1, labels_per_class)
    return float(np.sum(per_class_lwlrap * weight_per_class))


def _reference_map(y: np.ndarray, y_predicted: np.ndarray) -> float:
    """The reference's "mAP": mean over every column of scikit-learn's AP of the 0/1 predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.mean(average_precision_score(y, y_predicted, average=None)))


def _tied_case(seed: int, n_clips: int = 60, n_classes: int = 40):
    """Random 0/1 labels and scores from a few values around 0.5 (exactly 0.5 included): many ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n_clips, n_classes)) < 0.3).astype(int)
    y[:4] = 0  # clips without any label
    y[:, rng.choice(n_classes, size=3, replace=False)] = 0  # classes without a positive clip
    scores = rng.choice([0.1, 0.3, 0.49, 0.5, 0.51, 0.7, 0.9], size=(n_clips, n_classes))
    return y, scores


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
    # predictions (> 0.5, the two 0.5 scores are negative): [[1,0,0,0],[1,0,1,0],[0,0,0,0]]
    # class 0: TP 1, FP 1, FN 1 -> 2/4 ; class 1: TP 0, FN 1 -> 0 ; class 2: TP 1, FN 1 -> 2/3
    # class 3: no positive clip -> left out of the macro mean
    # micro: TP 2, FP 1, FN 3 -> 4/8
    micro, macro = f1_micro_macro(y, s)
    assert micro == pytest.approx(0.5)
    assert macro == pytest.approx((1 / 2 + 0 + 2 / 3) / 3)
    # predictions (> 0.65): [[0,0,0,0],[1,0,1,0],[0,0,0,0]] -> TP 1, FP 1, FN 4 -> 2/(2+1+4)
    micro_hi, _ = f1_micro_macro(y, s, threshold=0.65)
    assert micro_hi == pytest.approx(2 / 7)
    # predictions (> 0.7): only the 0.9 -> TP 1, FP 0, FN 4 -> 2/(2+0+4) (">=" would keep the 0.7)
    micro_07, _ = f1_micro_macro(y, s, threshold=0.7)
    assert micro_07 == pytest.approx(1 / 3)


def test_f1_score_at_threshold_is_a_negative_prediction():
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.5, 0.0], [0.0, 0.5000001]])
    # predictions [[0,0],[0,1]]: class 0 TP 0 FN 1 -> 0 ; class 1 TP 1 -> 1 ; micro TP 1 FN 1 -> 2/3
    micro, macro = f1_micro_macro(y, s)
    assert micro == pytest.approx(2 / 3)
    assert macro == pytest.approx(0.5)


def test_macro_f1_leaves_out_classes_without_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.1], [0.3, 0.6, 0.2], [0.8, 0.1, 0.3]])
    # predictions: class 0 [1,0,0,1] vs labels [1,0,1,0]: TP 1, FP 1, FN 1 -> 1/2
    #              class 1 [0,1,1,0] vs labels [0,1,1,0]: TP 2 -> 1
    #              class 2 [1,0,0,0], no positive clip: left out of the macro mean
    # micro over every column: TP 3, FP 2 (one of them on class 2), FN 1 -> 6/9
    micro, macro = f1_micro_macro(y, s)
    assert macro == pytest.approx((1 / 2 + 1) / 2)
    assert micro == pytest.approx(6 / 9)
    assert classes_without_positives(y) == 1
    m = compute_metrics(y, s)
    assert m["classes_without_positives"] == 1
    assert m["f1_macro"] == pytest.approx(3 / 4)
    # mAP leaves the same class out: class 0 sorted 0.9(+) 0.8(-) 0.3(+) 0.2(-) -> (1 + 2/3)/2, class 1 -> 1
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert math.isnan(f1_micro_macro(np.zeros((2, 3), dtype=int), np.full((2, 3), 0.9))[1])


def test_f1_of_a_one_class_subset():
    # one column: TP 1 (0.9), FP 1 (0.7), FN 0 -> 2/3, micro and macro alike
    y = np.array([[1], [0], [0], [0]])
    s = np.array([[0.9], [0.1], [0.2], [0.7]])
    micro, macro = f1_micro_macro(y, s)
    assert micro == pytest.approx(2 / 3)
    assert macro == pytest.approx(2 / 3)


def test_classes_without_positives_counts_columns():
    y = np.array([[0, 1, 0, 0, 1], [0, 0, 0, 0, 1]])
    assert classes_without_positives(y) == 3
    assert classes_without_positives(np.zeros((0, 4), dtype=int)) == 4
    with pytest.raises(ValueError, match="2-D"):
        classes_without_positives(np.zeros(3))


@pytest.mark.parametrize("seed", range(6))
def test_lwlrap_thresholded_equals_reference_transcription(seed):
    y, s = _tied_case(seed, n_classes=20 + 8 * seed)  # 20..60 classes: numpy's quicksort, not only insertion
    assert (s == 0.5).any()
    expected = _reference_lwlrap(y, s > 0.5)
    assert lwlrap_thresholded_reference(y, s) == expected
    # another threshold moves the predictions of the reference and of the variant alike
    assert lwlrap_thresholded_reference(y, s, threshold=0.3) == _reference_lwlrap(y, s > 0.3)


def _lwlrap_of_ranking(y, order_of_clip):
    """Label-weighted lwlrap from an explicit ranking per clip (``order_of_clip(i)``: classes
    first to last): each positive's precision = positives ranked at or above it / its rank; each
    class's mean over its positives, weighted by its share of all positives (= the mean over all
    positive (clip, class) pairs)."""
    precisions = []
    for i in range(len(y)):
        order = order_of_clip(i)
        positives = [c for c in range(y.shape[1]) if y[i, c]]
        for c in positives:
            rank = order.index(c) + 1
            precisions.append(sum(1 for d in positives if order.index(d) + 1 <= rank) / rank)
    return float(np.mean(precisions))


@pytest.mark.parametrize("seed", range(4))
def test_lwlrap_thresholded_ties_by_the_hand_rule(seed):
    """Up to 16 classes the reference's ranking of the 0/1 predictions is: predicted classes
    first, each group from the HIGHEST class index down (numpy's argsort keeps ties in index
    order for short rows, and the reference reverses it). The expected value is built from that
    rule alone, not from numpy's argsort."""
    y, s = _tied_case(seed, n_clips=30, n_classes=16)
    pred = s > 0.5
    expected = _lwlrap_of_ranking(y, lambda i: sorted(range(16), key=lambda c: (not pred[i, c], -c)))
    assert lwlrap_thresholded_reference(y, s) == pytest.approx(expected, abs=1e-12)


def test_lwlrap_thresholded_ties_worked_by_hand():
    """Two clips of 5 classes, ties everywhere. Ranking rule: predicted classes (score > 0.5)
    first, then the others; within each group the higher class index first.

    clip 0: labels {c0, c3}, scores [0.9, 0.2, 0.7, 0.4, 0.1] -> predicted {c0, c2}
        ranking c2, c0, c4, c3, c1: c0 at rank 2 -> 1/2; c3 at rank 4 -> 2/4
    clip 1: labels {c1, c4}, scores [0.3, 0.8, 0.6, 0.9, 0.2] -> predicted {c1, c2, c3}
        ranking c3, c2, c1, c4, c0: c1 at rank 3 -> 1/3; c4 at rank 4 -> 2/4
    four positives, one each of c0, c1, c4 and c3: lwlrap = (1/2 + 1/2 + 1/3 + 1/2) / 4 = 11/24
    """
    y = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    s = np.array([[0.9, 0.2, 0.7, 0.4, 0.1], [0.3, 0.8, 0.6, 0.9, 0.2]])
    assert lwlrap_thresholded_reference(y, s) == pytest.approx(11 / 24)
    # a class with two positives weighs twice: add clip 2 labelled {c0}, predicted nothing
    # (ranking c4, c3, c2, c1, c0: c0 at rank 5 -> 1/5)
    y3 = np.vstack([y, [1, 0, 0, 0, 0]])
    s3 = np.vstack([s, [0.1, 0.1, 0.1, 0.1, 0.1]])
    assert lwlrap_thresholded_reference(y3, s3) == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 1 / 2 + 1 / 5) / 5)


@pytest.mark.parametrize("n_classes", [3, 12, 17, 33])
def test_lwlrap_thresholded_equals_reference_transcription_few_ties(n_classes):
    y, s = _random_case(n_classes, n_clips=30, n_classes=n_classes)
    assert lwlrap_thresholded_reference(y, s) == _reference_lwlrap(y, s > 0.5)


def test_lwlrap_thresholded_hand_computed():
    # predictions [1,0,1,1]: numpy sorts [T,F,T,T] to c1, c0, c2, c3, reversed c3, c2, c0, c1
    # c2 at rank 2 -> 1/2, c1 at rank 4 -> 2/4; per class 1/2 and 1/2, weights 1/2 each
    y = np.array([[0, 1, 1, 0]])
    s = np.array([[0.9, 0.2, 0.6, 0.7]])
    assert lwlrap_thresholded_reference(y, s) == pytest.approx(0.5)
    # ties among the predictions: the higher class index ranks first (short rows)
    assert lwlrap_thresholded_reference(np.array([[1, 0]]), np.array([[0.1, 0.2]])) == pytest.approx(0.5)
    assert lwlrap_thresholded_reference(np.array([[0, 1]]), np.array([[0.2, 0.1]])) == pytest.approx(1.0)
    # predictions [1,0,0]: order c0, c2, c1; c0 -> 1/1, c1 at rank 3 -> 2/3; per class 1 and 2/3, weights 1/2
    assert lwlrap_thresholded_reference(np.array([[1, 1, 0]]), np.array([[0.9, 0.1, 0.2]])) == pytest.approx(5 / 6)
    # the standard lwlrap on the scores ranks the positive second in the first tied case too
    assert lwlrap(np.array([[1, 0]]), np.array([[0.1, 0.2]])) == pytest.approx(0.5)
    # per-class weighting over two clips: clip 0 predictions [1,0,0] -> c0 1/1, c1 at rank 3 -> 2/3;
    # clip 1 predictions [0,0,0] -> order c2, c1, c0 -> c0 at rank 3 -> 1/3
    # c0: (1 + 1/3)/2 with weight 2/3, c1: 2/3 with weight 1/3 -> 4/9 + 2/9
    y2 = np.array([[1, 1, 0], [1, 0, 0]])
    s2 = np.array([[0.9, 0.1, 0.2], [0.1, 0.1, 0.1]])
    assert lwlrap_thresholded_reference(y2, s2) == pytest.approx(2 / 3)
    # no label at all: NaN (the reference divides 0 by 0)
    assert math.isnan(lwlrap_thresholded_reference(np.zeros((3, 4), dtype=int), np.full((3, 4), 0.7)))


def test_lwlrap_thresholded_score_at_threshold_is_negative():
    # 0.5 is not above 0.5: every prediction is 0, order c2, c1, c0 -> c0 at rank 3 -> 1/3
    assert lwlrap_thresholded_reference(np.array([[1, 0, 0]]), np.array([[0.5, 0.0, 0.0]])) == pytest.approx(1 / 3)
    # just above: c0 predicted, first -> 1
    assert lwlrap_thresholded_reference(np.array([[1, 0, 0]]), np.array([[0.5001, 0.0, 0.0]])) == pytest.approx(1.0)


def test_map_thresholded_hand_computed():
    # class 0: labels [1,0,1,0], predictions [1,1,0,0]
    # at prediction 1: precision 1/2, recall 1/2; at 0: precision 2/4, recall 1
    # AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2 ; class 1: labels [0,0,0,1], predictions [0,0,0,1] -> 1
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    s = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3], [0.2, 0.8]])
    assert map_thresholded_reference(y, s) == pytest.approx((0.5 + 1.0) / 2)
    # the standard mAP on scores: class 0 sorted 0.9(+) 0.6(-) 0.4(+) 0.2(-) -> (1 + 2/3)/2
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)


def test_map_thresholded_strict_threshold_and_class_without_positive():
    # class 0: labels [1,0,1,0], scores [0.5,0.9,0.6,0.1] -> predictions [0,1,1,0] (0.5 is negative)
    # at prediction 1: precision 1/2, recall 1/2; at 0: precision 2/4, recall 1 -> AP 1/2
    # class 1: no positive clip: scikit-learn (>= 1.1) gives AP 0.0, and the reference's mean keeps it
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.5, 0.9], [0.9, 0.1], [0.6, 0.1], [0.1, 0.1]])
    assert map_thresholded_reference(y, s) == pytest.approx((0.5 + 0.0) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scikit-learn warning is silenced inside
        map_thresholded_reference(y, s)


@pytest.mark.parametrize("seed", range(4))
def test_map_thresholded_equals_reference_expression(seed):
    y, s = _tied_case(seed, n_classes=20 + 12 * seed)
    assert map_thresholded_reference(y, s) == _reference_map(y, s > 0.5)
    assert map_thresholded_reference(y, s, threshold=0.3) == _reference_map(y, s > 0.3)


def _brute_auc(labels: np.ndarray, col: np.ndarray) -> float:
    """ROC AUC as the share of (positive, negative) pairs ordered correctly, a tie counting 1/2."""
    pos = [v for v, lab in zip(col, labels) if lab == 1]
    neg = [v for v, lab in zip(col, labels) if lab == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _phi(x: float) -> float:
    """The standard normal distribution function, from math.erf (independent of scipy)."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# 5 clips x 4 classes; class 2 has no negative clip, class 3 no positive clip
AUC_Y = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]])
AUC_S = np.array([[0.9, 0.3, 0.5, 0.1], [0.8, 0.6, 0.5, 0.2], [0.4, 0.2, 0.5, 0.3],
                  [0.4, 0.7, 0.5, 0.4], [0.1, 0.5, 0.5, 0.5]])


def test_auc_hand_counted():
    # class 0: positives 0.9, 0.4; negatives 0.8, 0.4, 0.1 -> 6 pairs:
    #   0.9 beats all three (3); 0.4 loses to 0.8 (0), ties 0.4 (1/2), beats 0.1 (1) -> 4.5 / 6 = 3/4
    # class 1: positives 0.6, 0.2, 0.7; negatives 0.3, 0.5 -> 6 pairs:
    #   0.6 beats both (2); 0.2 beats none (0); 0.7 beats both (2) -> 4 / 6 = 2/3
    # class 2: every clip positive (no negative) -> left out; class 3: no positive -> left out
    auc = roc_auc_per_class(AUC_Y, AUC_S)
    assert auc[0] == pytest.approx(3 / 4) and auc[1] == pytest.approx(2 / 3)
    assert math.isnan(auc[2]) and math.isnan(auc[3])
    assert mean_roc_auc(AUC_Y, AUC_S) == pytest.approx((3 / 4 + 2 / 3) / 2)  # 17/24
    assert classes_without_negatives(AUC_Y) == 1 and classes_without_positives(AUC_Y) == 1
    m = compute_metrics(AUC_Y, AUC_S)
    assert m["auc"] == pytest.approx(17 / 24)
    assert m["classes_without_negatives"] == 1 and m["classes_without_positives"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_brute_force_pair_count_with_ties(seed):
    y, s = _tied_case(seed, n_clips=30, n_classes=15)
    y = np.concatenate([y, np.ones((len(y), 1), dtype=int)], axis=1)  # a 16th class without a negative clip
    s = np.concatenate([s, s[:, :1]], axis=1)
    assert (s[:, None, :] == s[None, :, :]).sum() > s.size  # ties between clips
    kept = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    assert len(kept) == y.shape[1] - 4  # the last class and the three classes without positives are left out
    expected = [_brute_auc(y[:, c], s[:, c]) for c in kept]
    got = roc_auc_per_class(y, s)
    np.testing.assert_allclose(got[kept], expected, rtol=0, atol=1e-12)
    assert np.isnan(np.delete(got, kept)).all()
    assert mean_roc_auc(y, s) == pytest.approx(np.mean(expected), abs=1e-12)
    assert classes_without_negatives(y) == 1 and classes_without_positives(y) == 3


def test_auc_without_an_eligible_class_is_nan():
    y = np.array([[1, 0], [1, 0]])  # class 0 has no negative, class 1 no positive
    assert math.isnan(mean_roc_auc(y, np.random.default_rng(0).random((2, 2))))
    assert math.isnan(d_prime(y, np.random.default_rng(0).random((2, 2))))
    assert classes_without_negatives(np.zeros((0, 3), dtype=int)) == 3  # no clip: no negative either


def test_d_prime_of_hand_values():
    assert d_prime_from_auc(0.5) == pytest.approx(0.0, abs=1e-15)
    # AUC = Phi(d' / sqrt(2)) for two unit-variance normals d' apart: d' = 1 <-> Phi(1/sqrt(2))
    assert d_prime_from_auc(_phi(1 / math.sqrt(2))) == pytest.approx(1.0, abs=1e-12)
    assert d_prime_from_auc(_phi(2.5 / math.sqrt(2))) == pytest.approx(2.5, abs=1e-12)
    assert d_prime_from_auc(1 - _phi(1 / math.sqrt(2))) == pytest.approx(-1.0, abs=1e-12)
    assert d_prime_from_auc(0.9) == pytest.approx(math.sqrt(2) * norm.ppf(0.9), abs=1e-15)
    # perfect (or perfectly inverted) separation: d' would be infinite -> NaN, as is a NaN AUC
    assert math.isnan(d_prime_from_auc(1.0)) and math.isnan(d_prime_from_auc(0.0))
    assert math.isnan(d_prime_from_auc(float("nan")))


def test_d_prime_is_that_of_the_mean_auc():
    # the AudioSet convention: d' of the mean AUC (17/24), not the mean of the per-class d'
    of_mean = math.sqrt(2) * norm.ppf(17 / 24)
    mean_of = math.sqrt(2) * (norm.ppf(3 / 4) + norm.ppf(2 / 3)) / 2
    assert abs(of_mean - mean_of) > 1e-3  # the two conventions differ on this case
    assert d_prime(AUC_Y, AUC_S) == pytest.approx(of_mean, abs=1e-12)
    assert compute_metrics(AUC_Y, AUC_S)["dprime"] == pytest.approx(of_mean, abs=1e-12)


def test_compute_metrics_keys_and_values():
    y, s = _random_case(4)
    y[:, 3] = 0  # a class without any positive clip
    y[:, 7] = 1  # a class without any negative clip
    m = compute_metrics(y, s, threshold=0.4)
    assert set(m) == {"f1_micro", "f1_macro", "map", "lwlrap", "map_thresholded_ref", "lwlrap_thresholded_ref",
                      "classes_without_positives", "auc", "dprime", "classes_without_negatives"}
    counts = ("classes_without_positives", "classes_without_negatives")
    assert m["classes_without_positives"] == 1 and isinstance(m["classes_without_positives"], int)
    assert m["classes_without_negatives"] == 1 and isinstance(m["classes_without_negatives"], int)
    assert all(isinstance(v, float) for k, v in m.items() if k not in counts)
    # AUC over the 10 classes with a positive and a negative (3 and 7 left out), d' of their mean
    kept = [c for c in range(y.shape[1]) if c not in (3, 7)]
    auc = np.mean([_brute_auc(y[:, c], s[:, c]) for c in kept])
    assert m["auc"] == pytest.approx(auc, abs=1e-12)
    assert m["dprime"] == pytest.approx(math.sqrt(2) * norm.ppf(auc), abs=1e-9)
    assert m["lwlrap"] == pytest.approx(_brute_lwlrap(y, lambda i, c: -s[i, c]))
    assert m["lwlrap_thresholded_ref"] == _reference_lwlrap(y, s > 0.4)
    assert m["map_thresholded_ref"] == _reference_map(y, s > 0.4)
    pred = (s > 0.4).astype(int)
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

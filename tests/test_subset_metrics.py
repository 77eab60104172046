"""Tests of the per-subset metrics of one phase (cilaudio.evaluate.subset_metrics), counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cilaudio.evaluate import _clean, subset_metrics

# 4 excerpts x 5 classes; phase 0 holds classes 0-2, phase 1 classes 3-4; excerpts 0-1 are base clips
Y = np.array([
    [1, 0, 0, 0, 0],
    [0, 0, 0, 1, 0],
    [0, 1, 0, 0, 0],
    [0, 0, 0, 0, 1],
])
S = np.array([
    [0.9, 0.8, 0.2, 0.1, 0.1],
    [0.2, 0.1, 0.6, 0.7, 0.1],
    [0.1, 0.9, 0.1, 0.1, 0.1],
    [0.1, 0.1, 0.1, 0.1, 0.5],
])
IN_BASE = np.array([True, True, False, False])
GROUPS = [3, 2]


def test_classes_without_positives_per_subset():
    subsets = subset_metrics(Y, S, in_base=IN_BASE, group_sizes=GROUPS)
    assert set(subsets) == {"all", "base", "group0", "group1"}
    # all: class 2 has no positive; base (excerpts 0-1, classes 0-2): classes 1 and 2;
    # group0 (classes 0-2, every excerpt): class 2; group1 (classes 3-4): none
    counts = {k: v["classes_without_positives"] for k, v in subsets.items()}
    assert counts == {"all": 1, "base": 2, "group0": 1, "group1": 0}
    # the JSON keeps the count a whole number
    written = json.loads(json.dumps(_clean(subsets["base"])))["classes_without_positives"]
    assert written == 2 and isinstance(written, int)


def test_macro_f1_per_subset_leaves_out_classes_without_positives():
    subsets = subset_metrics(Y, S, in_base=IN_BASE, group_sizes=GROUPS)
    # base: predictions (> 0.5) [[1,1,0],[0,0,1]] vs labels [[1,0,0],[0,0,0]]
    # class 0: TP 1 -> 1 ; classes 1, 2: only false positives, no positive clip -> left out
    # micro: TP 1, FP 2, FN 0 -> 2/4
    assert subsets["base"]["f1_macro"] == pytest.approx(1.0)
    assert subsets["base"]["f1_micro"] == pytest.approx(0.5)
    # all: class 0 -> 1 ; class 1 TP 1 FP 1 -> 2/3 ; class 2 left out ; class 3 -> 1 ;
    # class 4: its 0.5 is not above 0.5 -> TP 0 FN 1 -> 0 ; micro TP 3, FP 2, FN 1 -> 6/9
    assert subsets["all"]["f1_macro"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert subsets["all"]["f1_micro"] == pytest.approx(6 / 9)
    assert subsets["group1"]["f1_macro"] == pytest.approx((1 + 0) / 2)


def test_subset_metrics_refuses_mismatched_groups_and_base_mask():
    with pytest.raises(ValueError, match="group sizes"):
        subset_metrics(Y, S, in_base=IN_BASE, group_sizes=[3, 1])
    with pytest.raises(ValueError, match="in_base"):
        subset_metrics(Y, S, in_base=IN_BASE[:3], group_sizes=GROUPS)


def test_auc_and_classes_without_negatives_per_subset():
    import math

    from scipy.stats import norm

    # 4 excerpts x 3 classes; phase 0 holds classes 0-1, phase 1 class 2; excerpts 0-1 are base clips
    y = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    s = np.array([[0.8, 0.3, 0.4], [0.6, 0.3, 0.7], [0.7, 0.5, 0.2], [0.2, 0.3, 0.2]])
    subsets = subset_metrics(y, s, in_base=IN_BASE, group_sizes=[2, 1])
    # base (excerpts 0-1, classes 0-1): class 0 is positive on both excerpts (no negative) -> left out;
    # class 1: positive 0.3 against negative 0.3, a tie -> 1/2; so AUC 1/2 and d' = 0
    assert subsets["base"]["auc"] == pytest.approx(0.5)
    assert subsets["base"]["dprime"] == pytest.approx(0.0, abs=1e-12)
    # all: class 0 positives 0.8, 0.6 vs negatives 0.7, 0.2: 1 + 1 + 0 + 1 -> 3/4
    #      class 1 positives 0.3, 0.5 vs negatives 0.3, 0.3: 1/2 + 1/2 + 1 + 1 -> 3/4
    #      class 2 positives 0.7, 0.2 vs negatives 0.4, 0.2: 1 + 1 + 0 + 1/2 -> 5/8
    assert subsets["all"]["auc"] == pytest.approx((3 / 4 + 3 / 4 + 5 / 8) / 3)
    assert subsets["all"]["dprime"] == pytest.approx(math.sqrt(2) * norm.ppf(17 / 24))
    assert subsets["group0"]["auc"] == pytest.approx(3 / 4)
    assert subsets["group1"]["auc"] == pytest.approx(5 / 8)
    counts = {k: v["classes_without_negatives"] for k, v in subsets.items()}
    assert counts == {"all": 0, "base": 1, "group0": 0, "group1": 0}
    written = json.loads(json.dumps(_clean(subsets["base"])))["classes_without_negatives"]
    assert written == 1 and isinstance(written, int)


def test_dprime_of_a_perfectly_separated_subset_is_written_as_null():
    # every subset of Y/S separates its classes perfectly (AUC 1): d' would be infinite
    subsets = subset_metrics(Y, S, in_base=IN_BASE, group_sizes=GROUPS)
    assert subsets["all"]["auc"] == pytest.approx(1.0)
    written = json.loads(json.dumps(_clean(subsets["all"])))
    assert written["auc"] == 1.0 and written["dprime"] is None

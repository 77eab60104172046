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

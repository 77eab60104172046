"""Class-balanced replay (OCDM-style greedy removal): hand cases, a plain-Python transcription
of the greedy rule, and the selector's place in the registries."""

import math

import numpy as np
import pytest

from cilaudio import exemplar_selection, methods
from cilaudio.methods.balanced_replay import select_balanced


def test_hand_case_keeps_the_rare_class():
    # 3 clips of class 0 and 1 of class 1, budget 2: removing the class-1 clip leaves class 1
    # empty, so two class-0 clips go and the memory is one of each
    y = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    for seed in range(5):
        idx = select_balanced(y, 2, seed=seed)
        assert len(idx) == 2 and 3 in idx and y[idx].sum(axis=0).tolist() == [1, 1]


def test_hand_case_multi_label_clip():
    # clip 0 holds classes 0 and 1; clips 1-3 class 0 only; clip 4 class 2. Budget 2, target
    # uniform over 3 classes: {0, 4} gives counts (1, 1, 1), the only perfectly balanced pair
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    assert select_balanced(y, 2, seed=0).tolist() == [0, 4]


def _transcription(y, budget, seed):
    """The greedy rule written with loops and math.log, from the module's docstring."""
    n, c = len(y), len(y[0])
    order = list(np.random.default_rng(seed).permutation(n))
    kept = list(range(n))
    counts = [sum(row[k] for row in y) for k in range(c)]
    avail = [k for k in range(c) if counts[k] > 0]
    target = 1.0 / len(avail)
    while len(kept) > budget:
        best, best_key = None, None
        for i in kept:
            after = [counts[k] - y[i][k] for k in range(c)]
            total = sum(a + 1e-12 for a in after)
            kl = sum(target * math.log(target / ((after[k] + 1e-12) / total)) for k in avail)
            key = (round(kl, 12), order.index(i))
            if best_key is None or key < best_key:
                best, best_key = i, key
        kept.remove(best)
        counts = [counts[k] - y[best][k] for k in range(c)]
    return sorted(kept)


@pytest.mark.parametrize("seed", range(6))
def test_equals_a_transcription_of_the_greedy_rule(seed):
    rng = np.random.default_rng(100 + seed)
    y = (rng.random((int(rng.integers(8, 30)), int(rng.integers(2, 7)))) < rng.uniform(0.1, 0.5)).astype(int)
    y[rng.integers(len(y)), :] = 0  # a clip with no old label
    budget = int(rng.integers(1, len(y)))
    assert select_balanced(y, budget, seed=seed).tolist() == _transcription(y.tolist(), budget, seed)


def test_more_balanced_than_random_choices():
    rng = np.random.default_rng(0)
    p = np.linspace(0.02, 0.4, 12)  # imbalanced classes
    y = (rng.random((300, 12)) < p).astype(int)

    def imbalance(idx):
        c = y[idx].sum(axis=0)
        return c.std() / c.mean()

    balanced = imbalance(select_balanced(y, 40, seed=0))
    randoms = [imbalance(exemplar_selection.select_random(y, 40, seed=s)) for s in range(20)]
    assert balanced < min(randoms)


def test_registered_as_a_replay_selector_and_in_the_method_schema():
    assert exemplar_selection.SELECTORS["balanced"] is select_balanced
    assert "balanced" in methods.method_schema()["properties"]["replay"]["enum"]
    assert methods.complete({"replay": "balanced", "memory_clips": 10})["replay"] == "balanced"
    with pytest.raises(ValueError, match="budget"):
        select_balanced(np.eye(3, dtype=int), 0, seed=0)

"""Class-balanced multi-label replay, OCDM's rule (Liang & Li, 2022, "Optimizing class
distribution in memory for multi-label online continual learning"): an exemplar selector,
``replay: balanced``, beside simulated annealing. OCDM's greedy removal is applied once per
phase, at the phase boundary, to all the candidates (the memory of phase k-1 and phase k-1's
list), where OCDM updates the memory online, batch by batch. It is NOT PRS (Kim et al., ECCV
2020, partitioning reservoir sampling), which decides clip by clip as the stream arrives with
per-class reservoir quotas; nothing of PRS is built here.

Greedy removal: start from every candidate and, while more than ``budget`` clips remain,
remove the clip whose removal brings the memory's label distribution closest to the target
distribution, uniform over the old classes that have any candidate. Closeness is
``KL(target || q)`` with ``q_k = (c_k + eps) / sum_j (c_j + eps)``, ``c_k`` the memory's
number of clips labelled k (``eps = 1e-12`` keeps the removal of a class's last clip finite and
very costly). Each step costs O(clips x classes). Ties (clips with equal scores, rounded to 12
decimals so that the choice does not hang on the last bit) go to the clip that comes first in a
random order drawn from ``seed``.
"""

from __future__ import annotations

import numpy as np

from ..exemplar_selection import check_budget, register_selector, validate_labels

EPS = 1e-12


def kl_to_target(counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``KL(target || q)`` for each row of ``counts`` ``(m, n_classes)``; classes with target 0
    do not count. Returns ``(m,)``."""
    q = (counts + EPS) / (counts + EPS).sum(axis=1, keepdims=True)  # (m, n_classes)
    on = target > 0
    return (target[on] * np.log(target[on] / q[:, on])).sum(axis=1)


@register_selector("balanced")
def select_balanced(labels: np.ndarray, budget: int, *, seed: int) -> np.ndarray:
    """Sorted int64 indices of ``budget`` clips chosen by greedy class-balanced removal."""
    y = validate_labels(labels).astype(np.float64)  # (n_clips, n_classes)
    n = len(y)
    budget = check_budget(budget)
    if budget >= n:
        return np.arange(n, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n)] = np.arange(n)  # tie-break order
    counts = y.sum(axis=0)  # (n_classes,)
    available = counts > 0
    target = available / max(1, available.sum())
    kept = np.ones(n, dtype=bool)
    for _ in range(n - budget):
        cand = np.flatnonzero(kept)  # (m,)
        score = np.round(kl_to_target(counts[None, :] - y[cand], target), 12)  # (m,)
        best = np.flatnonzero(score == score.min())
        drop = cand[best[np.argmin(rank[cand[best]])]]
        kept[drop] = False
        counts -= y[drop]
    return np.flatnonzero(kept).astype(np.int64)

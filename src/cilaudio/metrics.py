"""Multi-label evaluation metrics: F1, mAP, lwlrap, and the reference code's defective variants.

All functions take ``y_true``, an ``(n_clips, n_classes)`` array of 0/1 labels, and ``scores``,
an ``(n_clips, n_classes)`` float array of sigmoid probabilities.

The correct metrics use the continuous scores. The reference implementation computed "mAP" and
lwlrap on thresholded 0/1 predictions (lwlrap then breaks ties by class index); those variants
are offered as :func:`map_thresholded_reference` and :func:`lwlrap_thresholded_reference` so that
published numbers can be compared, and must not be reported as mAP / lwlrap.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, label_ranking_average_precision_score

__all__ = [
    "average_precision_per_class",
    "mean_average_precision",
    "lwlrap",
    "f1_micro_macro",
    "map_thresholded_reference",
    "lwlrap_thresholded_reference",
    "compute_metrics",
]


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs: both 2-D with the same shape; labels become int 0/1."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.ndim != 2:
        raise ValueError(
            f"y_true and scores must be 2-D (n_clips, n_classes); got shapes {y.shape} and {s.shape}"
        )
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores must have the same shape; got {y.shape} and {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    return y.astype(np.int64), s


def average_precision_per_class(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each class (column); NaN for a class without any positive clip.

    Returns an array of shape ``(n_classes,)``.
    """
    y, s = _check(y_true, scores)
    ap = np.full(y.shape[1], np.nan, dtype=np.float64)
    for c in range(y.shape[1]):
        if y[:, c].any():
            ap[c] = average_precision_score(y[:, c], s[:, c])
    return ap


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean of the per-class average precisions over classes with a positive clip (NaN if none)."""
    ap = average_precision_per_class(y_true, scores)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else float("nan")


def lwlrap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Label-weighted label-ranking average precision (DCASE 2019 task 2).

    The mean, over every (clip, positive label) pair, of the precision at that label's rank
    within the clip. Equals scikit-learn's LRAP with each clip weighted by its number of
    positive labels. Clips without any positive label are excluded (scikit-learn would score
    them 1.0). NaN if no clip has a label. Ties in ``scores`` are treated pessimistically by
    scikit-learn (a tied label counts as ranked above).
    """
    y, s = _check(y_true, scores)
    n_pos = y.sum(axis=1)  # (n_clips,)
    keep = n_pos > 0
    if not keep.any():
        return float("nan")
    return float(label_ranking_average_precision_score(y[keep], s[keep], sample_weight=n_pos[keep]))


def f1_micro_macro(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """Micro and macro F1 of the predictions ``scores >= threshold`` (zero_division=0)."""
    y, s = _check(y_true, scores)
    pred = (s >= threshold).astype(np.int64)
    micro = f1_score(y, pred, average="micro", zero_division=0)
    macro = f1_score(y, pred, average="macro", zero_division=0)
    return float(micro), float(macro)


def map_thresholded_reference(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """DEFECTIVE reference variant: "mAP" computed on 0/1 predictions ``scores >= threshold``.

    Kept only to compare with published numbers; not the standard mAP.
    """
    y, s = _check(y_true, scores)
    return mean_average_precision(y, (s >= threshold).astype(np.float64))


def lwlrap_thresholded_reference(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """DEFECTIVE reference variant: lwlrap on 0/1 predictions, ties broken by class index.

    Kept only to compare with published numbers; not the standard lwlrap.

    Per clip (DCASE 2019 per-sample formulation): the classes are ordered by a stable argsort
    of ``-pred`` with ``pred = scores >= threshold``, so all predicted-positive classes come
    first and, among equal predictions, the lower class index ranks higher. For each positive
    label at 1-based position ``r`` in that order, precision = (number of positive labels at
    positions <= r) / r. The result is the mean over every (clip, positive label) pair; clips
    without a positive label are excluded; NaN if no clip has a label.
    """
    y, s = _check(y_true, scores)
    pred = (s >= threshold).astype(np.float64)  # (n_clips, n_classes)
    total = 0.0
    n_pairs = 0
    for truth, p in zip(y, pred):
        if not truth.any():
            continue
        order = np.argsort(-p, kind="stable")  # class indices, best first
        hits = truth[order].astype(bool)  # (n_classes,) positive at each position
        positions = np.flatnonzero(hits) + 1  # 1-based positions of the positive labels
        cum_hits = np.cumsum(hits)[hits]  # positives at or above each positive label
        total += float(np.sum(cum_hits / positions))
        n_pairs += int(hits.sum())
    return total / n_pairs if n_pairs else float("nan")


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All metrics in one dict.

    Keys: ``f1_micro``, ``f1_macro``, ``map``, ``lwlrap`` (standard, on scores) and
    ``map_thresholded_ref``, ``lwlrap_thresholded_ref`` (the reference's defective variants).
    """
    y, s = _check(y_true, scores)
    f1_micro, f1_macro = f1_micro_macro(y, s, threshold=threshold)
    return {
        "f1_micro": f1_micro,
        "f1_macro": f1_macro,
        "map": mean_average_precision(y, s),
        "lwlrap": lwlrap(y, s),
        "map_thresholded_ref": map_thresholded_reference(y, s, threshold=threshold),
        "lwlrap_thresholded_ref": lwlrap_thresholded_reference(y, s, threshold=threshold),
    }

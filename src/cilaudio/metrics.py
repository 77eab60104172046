"""Multi-label evaluation metrics: F1, mAP, lwlrap, ROC AUC, d-prime, and the reference code's
defective variants, with :data:`REGISTRY`, the one list of them that everything else reads.

All functions take ``y_true``, an ``(n_clips, n_classes)`` array of 0/1 labels, and ``scores``,
an ``(n_clips, n_classes)`` float array of sigmoid probabilities. A class is predicted for a clip
when its score is strictly above the threshold (``scores > threshold``, as the reference's
``sigmoid(out) > 0.5``): a score exactly at the threshold is a negative prediction.

The correct metrics use the continuous scores (F1 uses the predictions). Classes without any
positive clip in the evaluated subset are treated one way by every standard metric: they are
left out of mAP, macro F1 and ROC AUC (their AP, recall, F1 and AUC are undefined); lwlrap
averages over positive labels only, so it never averages over them (they still rank as
negatives); micro F1 stays the standard pooled count over every column, so predictions on such
classes still count as false positives. :func:`classes_without_positives` gives how many classes
were left out. ROC AUC (and so d-prime) also needs a negative clip: classes without any negative
clip (every clip positive) are left out of it too, and :func:`classes_without_negatives` counts
them. (The reference's macro F1, scikit-learn's, counts classes without positives as 0, so
published macro F1 values differ from ``f1_macro`` wherever a subset has such a class.)

The reference implementation (mulimani/CIL-ML-Audio, ``evaluate_bin``) computed "mAP" and
lwlrap on thresholded 0/1 predictions; those variants are offered as
:func:`map_thresholded_reference` and :func:`lwlrap_thresholded_reference` so that published
numbers can be compared, and must not be reported as mAP / lwlrap. They reproduce the
reference's computation exactly, including its handling of classes without positives, except
for its alias defect that zeroes the first test clip's labels, which is not reproduced.

**The registry.** :data:`REGISTRY` holds one :class:`Metric` per key of :func:`compute_metrics`:
its name (the JSON key and the ``metric`` column of ``metrics.tsv``), its function, its label,
and flags: ``forgetting`` (the tables add ``forgetting_<name>`` rows for it), ``count`` (a whole
number, not a score: checked as a count, no forgetting, no report section), ``thresholded`` (its
function takes ``threshold=``) and ``reference`` (a reference-code variant, reported apart from
the standard metrics). The tables (:mod:`cilaudio.tables`), the report (:mod:`cilaudio.reporting.norm_report`) and
the figures (:mod:`cilaudio.reporting.plots`) read it when they run, so a new metric is one entry here
(docs/adding-a-metric.md). scikit-learn and SciPy are imported by the functions that use them,
so that reading the registry stays cheap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "average_precision_per_class",
    "mean_average_precision",
    "lwlrap",
    "f1_micro_macro",
    "f1_micro",
    "f1_macro",
    "roc_auc_per_class",
    "mean_roc_auc",
    "d_prime_from_auc",
    "d_prime",
    "classes_without_positives",
    "classes_without_negatives",
    "map_thresholded_reference",
    "lwlrap_thresholded_reference",
    "Metric",
    "REGISTRY",
    "registry",
    "metric_names",
    "metric_label",
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
    from sklearn.metrics import average_precision_score

    y, s = _check(y_true, scores)
    ap = np.full(y.shape[1], np.nan, dtype=np.float64)
    defined = y.any(axis=0)
    if defined.any():  # one call over the defined columns: scikit-learn scores each column alone
        ap[defined] = average_precision_score(y[:, defined], s[:, defined], average=None)
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
    from sklearn.metrics import label_ranking_average_precision_score

    y, s = _check(y_true, scores)
    n_pos = y.sum(axis=1)  # (n_clips,)
    keep = n_pos > 0
    if not keep.any():
        return float("nan")
    return float(label_ranking_average_precision_score(y[keep], s[keep], sample_weight=n_pos[keep]))


def classes_without_positives(y_true: np.ndarray) -> int:
    """How many classes (columns) of ``y_true`` have no positive clip.

    These are the classes that mAP, macro F1 and ROC AUC leave out.
    """
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise ValueError(f"y_true must be 2-D (n_clips, n_classes); got shape {y.shape}")
    return int(np.sum(~(y != 0).any(axis=0)))


def classes_without_negatives(y_true: np.ndarray) -> int:
    """How many classes (columns) of ``y_true`` have no negative clip (every clip positive).

    ROC AUC (and so d-prime) leaves these out, as well as those of
    :func:`classes_without_positives`; a class of a subset without any clip is counted by both.
    """
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise ValueError(f"y_true must be 2-D (n_clips, n_classes); got shape {y.shape}")
    return int(np.sum(~(y == 0).any(axis=0)))


def _predict(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean predictions ``scores > threshold`` (strict, as the reference's ``sigmoid > 0.5``)."""
    return scores > threshold


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN), element-wise; 0 where the denominator is 0."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def f1_micro_macro(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """Micro and macro F1 of the predictions ``scores > threshold`` (strictly above).

    Micro F1 is the standard pooled F1 over every column: predictions on a class without any
    positive clip count as false positives; 0 when there is no positive and no prediction.
    Macro F1 is the mean of the per-class F1 over the classes with at least one positive clip
    (the others, counted by :func:`classes_without_positives`, are left out, as in mAP); NaN
    if no class has a positive clip. Counted directly, so that a one-column subset is scored as
    one class (scikit-learn would treat it as a binary problem over labels 0 and 1).
    """
    y, s = _check(y_true, scores)
    pred = _predict(s, threshold)
    truth = y.astype(bool)
    tp = np.sum(pred & truth, axis=0)
    fp = np.sum(pred & ~truth, axis=0)
    fn = np.sum(~pred & truth, axis=0)
    micro = float(_f1(tp.sum(), fp.sum(), fn.sum()))
    has_pos = truth.any(axis=0)
    macro = float(_f1(tp, fp, fn)[has_pos].mean()) if has_pos.any() else float("nan")
    return micro, macro


def f1_micro(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Micro F1 of ``scores > threshold`` (see :func:`f1_micro_macro`)."""
    return f1_micro_macro(y_true, scores, threshold=threshold)[0]


def f1_macro(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Macro F1 of ``scores > threshold`` over the classes with a positive clip (see :func:`f1_micro_macro`)."""
    return f1_micro_macro(y_true, scores, threshold=threshold)[1]


def roc_auc_per_class(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each class (column), scikit-learn's ``roc_auc_score``.

    The share of (positive clip, negative clip) pairs whose positive scores higher, a tie counting
    1/2. NaN for a class without any positive clip or without any negative clip (its AUC is
    undefined; counted by :func:`classes_without_positives` and :func:`classes_without_negatives`).
    Returns an array of shape ``(n_classes,)``.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _check(y_true, scores)
    auc = np.full(y.shape[1], np.nan, dtype=np.float64)
    defined = y.any(axis=0) & ~y.all(axis=0)
    if defined.any():  # one call over the defined columns: scikit-learn scores each column alone
        auc[defined] = roc_auc_score(y[:, defined], s[:, defined], average=None)
    return auc


def mean_roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro ROC AUC: the mean of :func:`roc_auc_per_class` over the classes with both a positive
    and a negative clip (the others are left out, as mAP leaves out classes without positives);
    NaN if no class has both."""
    auc = roc_auc_per_class(y_true, scores)
    auc = auc[~np.isnan(auc)]
    return float(auc.mean()) if auc.size else float("nan")


def d_prime_from_auc(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(auc), Phi^-1 the standard normal quantile (``scipy.stats.norm.ppf``).

    The separation, in standard deviations, of two unit-variance normal score distributions with
    this AUC. NaN for a NaN AUC and for an AUC of exactly 0 or 1, where d' would be infinite
    (perfect separation; PANNs' code returns inf there): the metrics JSON then holds null, as
    for any undefined metric, instead of a non-standard ``Infinity``.
    """
    from scipy.stats import norm

    if not math.isfinite(auc) or auc <= 0 or auc >= 1:
        return float("nan")
    return float(math.sqrt(2) * norm.ppf(auc))


def d_prime(y_true: np.ndarray, scores: np.ndarray) -> float:
    """d-prime of the MEAN ROC AUC: ``d_prime_from_auc(mean_roc_auc(y_true, scores))``.

    The AudioSet convention (Hershey et al. 2017, Gemmeke et al. 2017; PANNs, Kong et al. 2020):
    d' of the macro-averaged AUC, NOT the mean of per-class d' values (which differs, since
    Phi^-1 is not linear). So the classes left out of :func:`mean_roc_auc` are left out here too;
    NaN where it is NaN, 0 or 1 (see :func:`d_prime_from_auc`).
    """
    return d_prime_from_auc(mean_roc_auc(y_true, scores))


def map_thresholded_reference(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """DEFECTIVE reference variant: "mAP" computed on 0/1 predictions ``scores > threshold``.

    Kept only to compare with published numbers; not the standard mAP. Exactly the reference's
    ``np.mean(average_precision_score(Y_ref, Y_predicted, average=None))`` with the boolean
    predictions ``Y_predicted = scores > threshold``: the mean runs over EVERY column, whatever
    scikit-learn gives a class without any positive clip: since scikit-learn 1.1 (this project
    requires >= 1.3) that is 0.0, with a "No positive class found in y_true" warning, silenced
    here, so such a class pulls the mean down; before 1.1 it was NaN, making the mean NaN.
    This differs on purpose from :func:`mean_average_precision`, which leaves such classes out.
    The reference's alias defect that zeroes the first test clip's labels before its base-class
    metrics is NOT reproduced. Raises scikit-learn's ``ValueError`` on zero clips.
    """
    from sklearn.metrics import average_precision_score

    y, s = _check(y_true, scores)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No positive class found in y_true", category=UserWarning)
        ap = average_precision_score(y, _predict(s, threshold), average=None)
    return float(np.mean(ap))


def _reference_clip_precisions(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One clip of the DCASE 2019 lwlrap code (``_one_sample_positive_class_precisions``).

    ``pred``: boolean predictions of the clip, ``truth``: its 0/1 labels. The classes are
    ranked by ``np.argsort(pred)[::-1]``: numpy's default (not stable) argsort of the BOOLEAN
    row, reversed, exactly as the reference, so the order of tied classes is whatever numpy
    leaves, reversed (for up to 16 classes numpy's insertion sort keeps ties in index order,
    so the higher class index ranks first). Returns the indices of the positive classes and
    the precision at each: positives ranked at or above it / its 1-based rank.
    """
    positives = np.flatnonzero(truth > 0)
    if not len(positives):
        return positives, np.zeros(0)
    n_classes = pred.shape[0]
    retrieved = np.argsort(pred)[::-1]
    rankings = np.zeros(n_classes, dtype=int)
    rankings[retrieved] = range(n_classes)
    retrieved_true = np.zeros(n_classes, dtype=bool)
    retrieved_true[rankings[positives]] = True
    cumulative_hits = np.cumsum(retrieved_true)
    return positives, cumulative_hits[rankings[positives]] / (1 + rankings[positives].astype(float))


def lwlrap_thresholded_reference(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """DEFECTIVE reference variant: lwlrap on the boolean predictions ``scores > threshold``.

    Kept only to compare with published numbers; not the standard lwlrap. Exactly the
    reference's ``calculate_per_class_lwlrap(Y_ref, Y_predicted)`` (the DCASE 2019 task 2
    code) followed by ``np.sum(per_class_lwlrap * weight_per_class)``: per clip with a positive
    label, see :func:`_reference_clip_precisions` (ties of the 0/1 predictions are broken by
    numpy's unstable argsort, reversed); per class, the sum of its precisions over the clips
    divided by ``max(1, its number of positive labels)``; weighted by its share of all positive
    labels and summed. Classes and clips without positives contribute nothing, as in the
    reference. The reference's alias defect that zeroes the first test clip's labels before
    this computation is NOT reproduced. NaN if no clip has a label (the reference gives NaN
    with a division warning).
    """
    y, s = _check(y_true, scores)
    pred = _predict(s, threshold)  # (n_clips, n_classes) bool, like the reference's Y_predicted
    labels_per_class = np.sum(y > 0, axis=0)
    n_labels = np.sum(labels_per_class)
    if n_labels == 0:
        return float("nan")
    # the same (clip, class) matrix and the same sums as the reference, so that even the
    # floating-point rounding is the same
    precisions = np.zeros(y.shape)
    for i, (truth, p) in enumerate(zip(y, pred)):
        positives, clip_precisions = _reference_clip_precisions(p, truth)
        precisions[i, positives] = clip_precisions
    weight_per_class = labels_per_class / float(n_labels)
    per_class = np.sum(precisions, axis=0) / np.maximum(1, labels_per_class)
    return float(np.sum(per_class * weight_per_class))


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Metric:
    """One metric of :func:`compute_metrics` and how the tables, report and figures treat it.

    ``name``: the key in the metrics JSON and the ``metric`` column of ``metrics.tsv``.
    ``function``: ``function(y_true, scores) -> float`` (an ``int`` for a count); with
    ``thresholded``, ``function(y_true, scores, threshold=...)``, given the evaluation's threshold.
    ``label``: how the report and the figures name it (the report adds "(threshold t)" to a
    thresholded metric's label). ``forgetting``: :mod:`cilaudio.tables` adds the rows
    ``forgetting_<name>`` (base-class value after phase 0 minus after phase k) and the report a
    forgetting table. ``count``: a whole number >= 0, not a score (the tables refuse anything
    else; no forgetting, no report section). ``reference``: a variant of the reference code,
    reported in the report's section of the reference's variants, never as a standard metric.
    ``headline``: the report gives it a summary table and findings of its own, and the norms'
    comparison a column (the papers report F1 beside mAP).
    """

    name: str
    function: Callable[..., float | int]
    label: str
    forgetting: bool = False
    count: bool = False
    thresholded: bool = False
    reference: bool = False
    headline: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("forgetting_"):
            raise ValueError(f"metric name {self.name!r}: must be non-empty and not start with 'forgetting_' "
                             "(the tables name the forgetting rows so)")
        if self.count and self.forgetting:
            raise ValueError(f"metric {self.name!r}: a count is not a score and gets no forgetting rows")

    def __call__(self, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float | int:
        if self.thresholded:
            return self.function(y_true, scores, threshold=threshold)
        return self.function(y_true, scores)


def _classes_without_positives(y_true: np.ndarray, scores: np.ndarray) -> int:
    return classes_without_positives(y_true)


def _classes_without_negatives(y_true: np.ndarray, scores: np.ndarray) -> int:
    return classes_without_negatives(y_true)


#: Every metric, in the order of the report's sections. A new metric is one entry here.
REGISTRY: tuple[Metric, ...] = (
    Metric("map", mean_average_precision, "mAP", forgetting=True, headline=True),
    Metric("f1_micro", f1_micro, "F1 micro", forgetting=True, thresholded=True, headline=True),
    Metric("f1_macro", f1_macro, "F1 macro", forgetting=True, thresholded=True, headline=True),
    Metric("lwlrap", lwlrap, "lwlrap", forgetting=True),
    Metric("auc", mean_roc_auc, "ROC AUC", forgetting=True),
    Metric("dprime", d_prime, "d-prime", forgetting=True),
    Metric("map_thresholded_ref", map_thresholded_reference, "reference code's thresholded \"mAP\"",
           thresholded=True, reference=True),
    Metric("lwlrap_thresholded_ref", lwlrap_thresholded_reference, "reference code's thresholded lwlrap",
           thresholded=True, reference=True),
    Metric("classes_without_positives", _classes_without_positives, "classes without a positive clip", count=True),
    Metric("classes_without_negatives", _classes_without_negatives, "classes without a negative clip", count=True),
)


def registry() -> tuple[Metric, ...]:
    """:data:`REGISTRY` as it is now (read when called, so that a patched registry is seen), each
    name once."""
    entries = tuple(REGISTRY)
    seen: set[str] = set()
    for m in entries:
        if m.name in seen:
            raise ValueError(f"metric {m.name!r} is registered twice in cilaudio.metrics.REGISTRY")
        seen.add(m.name)
    return entries


def metric_names(*, count: bool | None = None, forgetting: bool | None = None,
                 reference: bool | None = None, headline: bool | None = None) -> tuple[str, ...]:
    """Names of the registered metrics, in registry order; a flag given as True or False keeps
    only the metrics whose flag has that value (``None``: either)."""
    want = {"count": count, "forgetting": forgetting, "reference": reference, "headline": headline}
    return tuple(m.name for m in registry()
                 if all(v is None or getattr(m, k) == v for k, v in want.items()))


def metric_label(name: str) -> str:
    """The label of a registered metric; ``forgetting_<m>`` -> "forgetting of <label of m>";
    any other name as it is."""
    if name.startswith("forgetting_"):
        return "forgetting of " + metric_label(name[len("forgetting_"):])
    return next((m.label for m in registry() if m.name == name), name)


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | int]:
    """Every metric of :data:`REGISTRY` in one dict, keyed by its name.

    Keys (of the registry as shipped): ``map``, ``f1_micro``, ``f1_macro``, ``lwlrap``,
    ``auc``, ``dprime`` (standard; F1 on ``scores > threshold``, the others on the scores),
    ``map_thresholded_ref``, ``lwlrap_thresholded_ref`` (the reference's defective variants, on
    ``scores > threshold``) and the counts (ints) ``classes_without_positives`` (classes left out
    of ``map``, ``f1_macro`` and ``auc``) and ``classes_without_negatives`` (also left out of
    ``auc``). A count is an ``int``, every other value a ``float``.
    """
    from sklearn import config_context

    y, s = _check(y_true, scores)
    out: dict[str, float | int] = {}
    # the inputs are checked above: scikit-learn's own validation of every call, repeated per
    # metric and column, took most of an evaluation job's time
    with config_context(skip_parameter_validation=True, assume_finite=True):
        for m in registry():
            v = m(y, s, threshold=threshold)
            out[m.name] = int(v) if m.count else float(v)
    return out

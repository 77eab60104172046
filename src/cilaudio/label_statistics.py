"""The real datasets' label statistics, and a model that draws label sets with them.

The papers' class counts (``label_counts/<dataset>.tsv``: occurrences of each of the 50 classes
among the papers' development and evaluation excerpts, in the papers' class order) fix each
class's share of excerpts ``f_c``; their sum is the mean number of labels per excerpt (FSD50K
1.95, AudioSet 3.35).

The model: every class is present in an excerpt independently with probability ``q_c``,
conditioned on the excerpt holding at least one class. ``q_c = f_c * Z`` with
``Z = 1 - prod(1 - q_c)`` (the probability of a non-empty draw) reproduces each ``f_c`` and the
labels per excerpt exactly (:func:`inclusion_probabilities` solves the fixed point). The real
data's co-occurrences are not published, so independence is the assumption; FSD50K's label
hierarchy (a child's parent label is always present too) is not modelled.

A clip of phase ``k`` holds at least one class of group ``k`` and none of a later group
(assignment "latest", as in the papers' lists); under the model its earlier groups' classes
stay independent with their ``q_c``, which is the rate at which old sounds fill new clips.
:func:`draw_label_sets` draws clips of one phase from exactly that conditional distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np

__all__ = ["STATISTICS", "REAL_EXCERPTS", "load_counts", "class_frequencies", "inclusion_probabilities",
           "draw_label_sets", "PhaseModel", "phase_shares", "clips_per_phase", "STAT_NAMES", "describe", "describe_real"]

#: Datasets whose statistics the generator can reproduce (files in ``label_counts/``).
STATISTICS = ("fsd50k", "audioset")
#: Excerpts behind the counts (method.md: FSD50K 1-s excerpts, AudioSet 10-s clips).
REAL_EXCERPTS = {"fsd50k": {"dev": 284_447, "eval": 97_798}, "audioset": {"dev": 95_645, "eval": 15_289}}
_SPLITS = ("dev", "eval")


def load_counts(name: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names in the papers' order and their counts per split (``{"dev": (50,), "eval": (50,)}``)."""
    if name not in STATISTICS:
        raise ValueError(f"unknown label statistics {name!r}: choose one of {', '.join(STATISTICS)}")
    text = resources.files("cilaudio").joinpath("label_counts", f"{name}.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    if header != ["class", "dev", "eval"]:
        raise ValueError(f"label_counts/{name}.tsv: expected the header class, dev, eval; got {header}")
    names = [r[0] for r in body]
    counts = {s: np.array([int(r[1 + i]) for r in body], dtype=np.float64) for i, s in enumerate(_SPLITS)}
    return names, counts


def class_frequencies(name: str, split: str, n_classes: int) -> np.ndarray:
    """Each class's share of excerpts, shape (n_classes,), in the papers' class order.

    For the papers' 50 classes these are the real shares. For another number of classes (the
    tests' tiny runs) each class takes the real share at its relative position in the order
    (log-linear interpolation), so the head and the tail keep their shape, rescaled to the real
    labels per excerpt, or less where a class would then be in more than 90 % of the excerpts.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    _, counts = load_counts(name)
    f = counts[split] / REAL_EXCERPTS[name][split]  # (50,)
    if n_classes == f.size:
        return f
    pos = (np.arange(n_classes) + 0.5) / n_classes * f.size - 0.5
    g = np.exp(np.interp(pos, np.arange(f.size), np.log(f)))
    labels = min(f.sum(), 0.9 * g.sum() / g.max())
    return g * (labels / g.sum())


def inclusion_probabilities(freq: np.ndarray, *, tol: float = 1e-13) -> tuple[np.ndarray, float]:
    """``(q, Z)`` with ``q = freq * Z`` and ``Z = 1 - prod(1 - q)``: independent inclusion
    probabilities whose draws, conditioned on being non-empty, have the class shares ``freq``."""
    freq = np.asarray(freq, dtype=np.float64)
    if freq.sum() <= 1.0:
        # every excerpt holds a class, so the shares must add up to more than one label per excerpt
        raise ValueError(f"class shares add up to {freq.sum():.3f} labels per excerpt; the model needs more than 1")
    z = 1.0
    for _ in range(10_000):
        q = freq * z
        if q.max() >= 1.0:
            raise ValueError(f"class shares too large for the independence model (max {freq.max():.3f})")
        z_new = 1.0 - np.prod(1.0 - q)
        if abs(z_new - z) < tol:
            return freq * z_new, float(z_new)
        z = z_new
    raise RuntimeError("the inclusion probabilities did not converge")  # pragma: no cover


@dataclass(frozen=True)
class PhaseModel:
    """Inclusion probabilities ``q`` (n_classes,) and the group (phase) of each class."""

    q: np.ndarray
    group_sizes: tuple[int, ...]

    @classmethod
    def from_statistics(cls, name: str, split: str, group_sizes: Sequence[int]) -> "PhaseModel":
        sizes = tuple(int(s) for s in group_sizes)
        q, _ = inclusion_probabilities(class_frequencies(name, split, sum(sizes)))
        return cls(q=q, group_sizes=sizes)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.group_sizes)])

    def empty(self) -> np.ndarray:
        """Probability that a draw holds no class of each group, shape (K+1,)."""
        off = self.offsets
        return np.array([np.prod(1 - self.q[off[g]:off[g + 1]]) for g in range(len(self.group_sizes))])


def phase_shares(model: PhaseModel) -> np.ndarray:
    """Share of excerpts that belong to each phase under the model (latest group present), shape (K+1,)."""
    empty = model.empty()
    p = np.array([(1 - empty[k]) * np.prod(empty[k + 1:]) for k in range(len(empty))])
    return p / p.sum()


def clips_per_phase(total: int, shares: np.ndarray) -> list[int]:
    """``total`` clips split by ``shares`` (largest remainder), at least one clip per phase."""
    if total < len(shares):
        raise ValueError(f"{total} clips cannot give each of {len(shares)} phases a clip")
    raw = np.asarray(shares) * total
    n = np.maximum(np.floor(raw).astype(int), 1)
    for i in np.argsort(-(raw - np.floor(raw)), kind="stable"):
        if n.sum() >= total:
            break
        n[i] += 1
    while n.sum() > total:  # the minimum of one clip overshot: take from the largest phase
        n[np.argmax(n)] -= 1
    return [int(x) for x in n]


def draw_label_sets(model: PhaseModel, phase: int, n: int, rng: np.random.Generator, *,
                    max_events: int) -> list[tuple[int, ...]]:
    """``n`` label sets (sorted class indices) of clips of ``phase``.

    Classes of earlier groups are drawn independently with their ``q``; group ``phase`` is drawn
    the same way conditioned on holding at least one class; later groups are empty. Sets with
    more than ``max_events`` classes are drawn again (one event per class).
    """
    off = model.offsets
    lo, hi = int(off[phase]), int(off[phase + 1])
    if max_events < 1:
        raise ValueError("max_events must be >= 1")
    out: list[tuple[int, ...]] = []
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        own = rng.random((m, hi - lo)) < model.q[lo:hi]  # (m, group size)
        old = rng.random((m, lo)) < model.q[:lo]  # (m, earlier classes)
        keep = own.any(axis=1) & (own.sum(axis=1) + old.sum(axis=1) <= max_events)
        for o, w in zip(old[keep], own[keep]):
            out.append(tuple(int(i) for i in np.flatnonzero(o)) + tuple(lo + int(i) for i in np.flatnonzero(w)))
            if len(out) == n:
                break
    return out


# ------------------------------------------------------------------------------ description

#: The statistics :func:`describe` and :func:`describe_real` report, in table order.
STAT_NAMES = {
    "labels_per_clip": "labels per clip (all phases)",
    "labels_per_clip_later": "labels per clip of phases 1-K (labelled + unlabelled old)",
    "imbalance": "most / least frequent class (clips)",
    "base_label_share": "share of label occurrences in the base classes",
    "top_class_share": "most frequent class's share of clips",
    "top_base_in_later": "share of phase 1-K clips holding the most frequent base class",
    "mean_base_in_later": "share of phase 1-K clips holding a base class (mean over base classes)",
    "old_sounds_in_later": "sounds of earlier phases' classes per phase 1-K clip (unlabelled there)",
}


def describe(label_sets: Sequence[Sequence[int]], group_sizes: Sequence[int]) -> dict[str, float]:
    """The statistics of :data:`STAT_NAMES` for clips given as class indices (groups consecutive)."""
    off = np.concatenate([[0], np.cumsum(group_sizes)])
    n_cls, n_base = int(off[-1]), int(group_sizes[0])
    y = np.zeros((len(label_sets), n_cls), dtype=bool)
    for i, s in enumerate(label_sets):
        y[i, list(s)] = True
    phase = np.searchsorted(off[1:], np.argmax(np.where(y, np.arange(n_cls), -1), axis=1), side="right")
    later = y[phase > 0]
    old = np.array([row[: off[p]].sum() for row, p in zip(y, phase) if p > 0])
    counts = y.sum(axis=0)
    return {
        "labels_per_clip": float(y.sum(axis=1).mean()),
        "labels_per_clip_later": float(later.sum(axis=1).mean()),
        "imbalance": float(counts.max() / max(counts.min(), 1)),
        "base_label_share": float(counts[:n_base].sum() / counts.sum()),
        "top_class_share": float(counts.max() / len(y)),
        "top_base_in_later": float(later[:, :n_base].mean(axis=0).max()),
        "mean_base_in_later": float(later[:, :n_base].mean()),
        "old_sounds_in_later": float(old.mean()),
    }


def describe_real(name: str, split: str = "dev", group_sizes: Sequence[int] = (30, 5, 5, 5, 5)) -> dict[str, float]:
    """The same statistics for the real data: the first five counted from the papers' counts, the
    last three implied by the independence model (co-occurrences are not published)."""
    _, counts = load_counts(name)
    c = counts[split]
    n_base = int(group_sizes[0])
    f = c / REAL_EXCERPTS[name][split]
    q, _ = inclusion_probabilities(f)
    model = PhaseModel(q=q, group_sizes=tuple(int(s) for s in group_sizes))
    off = model.offsets
    # P(phase k) and E[old sounds | phase k] under the model (old groups stay independent).
    p_empty = model.empty()
    p_phase = phase_shares(model)
    w = p_phase[1:] / p_phase[1:].sum()
    own = [q[off[k]:off[k + 1]].sum() / (1 - p_empty[k]) for k in range(1, len(group_sizes))]
    old = [q[: off[k]].sum() for k in range(1, len(group_sizes))]
    return {
        "labels_per_clip": float(f.sum()),
        "labels_per_clip_later": float(np.dot(w, np.add(own, old))),
        "imbalance": float(c.max() / c.min()),
        "base_label_share": float(c[:n_base].sum() / c.sum()),
        "top_class_share": float(f.max()),
        "top_base_in_later": float(q[:n_base].max()),
        "mean_base_in_later": float(q[:n_base].mean()),
        "old_sounds_in_later": float(np.dot(w, old)),
    }

"""The exemplar memory of replay methods: which old training clips a phase may train on again.

Strict class-incremental access: the memory used in phase k is chosen from the memory of
phase k-1 and phase k-1's own training list (nothing older), under a fixed clip budget. It is
stored in phase k's checkpoint and is the candidate pool, with phase k's list, of phase k+1.
Each exemplar keeps the labels it had when it was trained on (its phase's classes).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .lists import LIST_COLUMNS, label_matrix

#: Columns of a memory record: a list row plus the phases whose classes it is labelled for.
MEMORY_COLUMNS = [*LIST_COLUMNS, "phases"]


def candidates(previous_memory: Sequence[dict] | None, previous_list: pd.DataFrame,
               previous_phase: int) -> pd.DataFrame:
    """Old clips available at the start of a phase: the previous memory plus the previous
    phase's training list (``previous_phase``'s clips, labelled for that phase's classes).

    Each candidate records in ``phases`` ("|"-joined) the phases whose classes it is labelled
    for: those are its known classes when it is replayed, every other class is unknown. A clip
    in both keeps the union of its labels and of its phases.
    """
    listed = previous_list[LIST_COLUMNS].assign(phases=str(previous_phase))
    frames = [listed]
    if previous_memory:
        old = pd.DataFrame(list(previous_memory))
        if "phases" not in old.columns:
            raise ValueError(
                "the previous checkpoint's exemplar memory does not record which phases' classes each "
                "exemplar is labelled for (it was written by an older cilaudio): delete this replay "
                "method's checkpoints (results/<dataset>/<norm>/<method>/) and rerun")
        frames.insert(0, old[MEMORY_COLUMNS])
    pool = pd.concat(frames, ignore_index=True)

    def union(values) -> str:
        return "|".join(dict.fromkeys(x for v in values for x in str(v).split("|") if x))

    merged = pool.groupby("fname", sort=True).agg(
        labels=("labels", union), all_labels=("all_labels", "first"), phases=("phases", union))
    return merged.reset_index()[MEMORY_COLUMNS]


def known_phases(memory: pd.DataFrame) -> list[list[int]]:
    """The phases each exemplar is labelled for, from the ``phases`` column."""
    return [[int(p) for p in str(v).split("|") if p] for v in memory["phases"]]


def select(pool: pd.DataFrame, old_classes: Sequence[str], *, budget: int, strategy: str,
           seed: int) -> pd.DataFrame:
    """Choose ``budget`` clips of ``pool`` (all of them when the pool is smaller) with the
    exemplar selector ``strategy`` (:data:`cilaudio.exemplar_selection.SELECTORS`)."""
    from . import exemplar_selection

    if strategy not in exemplar_selection.SELECTORS:
        raise ValueError(f"unknown replay strategy {strategy!r}; allowed: {sorted(exemplar_selection.SELECTORS)}")
    if budget <= 0:
        raise ValueError(f"the memory budget must be positive, got {budget}")
    if len(pool) <= budget:
        return pool.reset_index(drop=True)
    labels = label_matrix(pool, old_classes, source="exemplar candidates")
    idx = exemplar_selection.select_exemplars(labels, budget, method=strategy, seed=seed)
    return pool.iloc[np.sort(idx)].reset_index(drop=True)


def histogram(memory: Sequence[dict], classes: Sequence[str]) -> dict[str, int]:
    """Label count per class of a memory (for the report)."""
    frame = pd.DataFrame(list(memory), columns=LIST_COLUMNS)
    counts = label_matrix(frame, classes, source="memory").sum(axis=0) if len(frame) else np.zeros(len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}

"""A phase's training set: which excerpts it trains on, and each one's targets over the classes
seen so far, with ``UNKNOWN`` where a clip is not labelled for a class.

The pieces are built by the data mechanisms of :mod:`cilaudio.methods` (``data_source`` builds the
phase's own table, ``replay`` adds the exemplars); a phase-0 job and the mechanisms that read an
earlier phase's list use :func:`training_set`, which puts them together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import exemplar_memory
from .excerpts import ExcerptIndex, ExcerptTable, FeatureDataset, dominant_clip_warnings, excerpt_index, excerpts_of
from .lists import read_list
from .phases import ClassSplit

log = logging.getLogger(__name__)

UNKNOWN = -1.0  # target entry that a clip is not labelled for in this phase (no BCE gradient)


def phase_table(*, phase: int, class_split: ClassSplit, lists: Sequence[Path], features: Path, cumulative: bool,
                bce_on: str = "all", index: ExcerptIndex | None = None) -> ExcerptTable:
    """Phase k's own training excerpts with targets over every class seen so far.

    ``cumulative`` (joint training) takes all given lists, deduplicated by clip, with the
    clips' full annotation restricted to the seen classes; otherwise the LAST list (phase k's)
    with phase k's labels. With ``bce_on="new"`` the earlier classes' entries of phase k's
    clips are marked unknown (``UNKNOWN``: independent learning). ``index``: the feature file's
    excerpt index, when the caller has read it already.
    """
    seen = class_split.seen(phase)
    n_old = len(class_split.seen(phase - 1)) if phase > 0 else 0
    index = excerpt_index(features) if index is None else index
    for message in dominant_clip_warnings({f"phase {phase}'s training list": lists[-1]}, index):
        log.warning(message)
    if cumulative:
        frame = pd.concat([read_list(p) for p in lists]).drop_duplicates("fname").reset_index(drop=True)
        table = excerpts_of(frame, seen, index, column="all_labels", source=", ".join(map(str, lists)),
                            features=str(features))
    else:
        path = lists[-1]
        table = excerpts_of(read_list(path), seen, index, column="labels", source=str(path),
                            features=str(features))
    if bce_on == "new" and n_old:
        table.targets[:, :n_old] = UNKNOWN
    return table


def with_exemplars(table: ExcerptTable, memory: pd.DataFrame, *, phase: int, class_split: ClassSplit, features: Path,
                   index: ExcerptIndex | None = None) -> ExcerptTable:
    """``table`` followed by the excerpts of the exemplar ``memory`` (:mod:`cilaudio.exemplar_memory`).

    A replayed clip keeps exactly the labels it was trained with: the classes of the phases it
    was labelled for (its ``phases`` column) are known, 1 or 0; every other class, earlier
    phases' included, is unknown (it may well hold those sounds, unlabelled).
    """
    if not len(memory):
        return table
    seen = class_split.seen(phase)
    index = excerpt_index(features) if index is None else index
    mem = excerpts_of(memory, seen, index, column="labels", source="exemplar memory", features=str(features))
    known = np.zeros((len(memory), len(seen)), dtype=bool)  # (memory clips, classes seen)
    for i, phases in enumerate(exemplar_memory.known_phases(memory)):
        for p in phases:
            if not 0 <= p < phase:
                raise ValueError(f"exemplar {memory['fname'].iloc[i]!r} is labelled for phase {p}, "
                                 f"which is not an earlier phase of phase {phase}")
            known[i, class_split.columns(p)] = True
    mem.targets[~known[mem.clip]] = UNKNOWN
    return ExcerptTable(np.concatenate([table.rows, mem.rows]),
                        np.concatenate([table.targets, mem.targets]),
                        np.concatenate([table.clip, mem.clip + len(table.clip)]))


def training_set(*, phase: int, class_split: ClassSplit, lists: Sequence[Path], features: Path, cumulative: bool,
                 in_memory: bool = False, bce_on: str = "all", memory: pd.DataFrame | None = None,
                 index: ExcerptIndex | None = None) -> FeatureDataset:
    """Phase k's training set (:func:`phase_table`, then the exemplar ``memory`` if any:
    :func:`with_exemplars`), read from ``features`` (into RAM with ``in_memory``); ``index``:
    the feature file's excerpt index, when the caller has read it already."""
    index = excerpt_index(features) if index is None else index
    table = phase_table(phase=phase, class_split=class_split, lists=lists, features=features, cumulative=cumulative,
                        bce_on=bce_on, index=index)
    if memory is not None:
        table = with_exemplars(table, memory, phase=phase, class_split=class_split, features=features, index=index)
    return FeatureDataset(features, table, in_memory=in_memory)

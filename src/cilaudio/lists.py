"""Per-phase training lists and cumulative test lists, as human-readable TSV files.

A *clip table* is what a dataset reader returns: one row per audio clip with columns
``fname`` (str), ``labels`` (tuple of class names, the dataset's full annotation) and
``class_split`` (``train``/``val`` for development clips, ``eval`` for test clips).

Lists are TSV with a header and these columns:

``fname``       the clip's file name without extension
``labels``      the classes this list labels the clip with, joined by ``|``
``all_labels``  every configured class the clip holds (ground truth), joined by ``|``

A training list of phase k labels its clips with phase k's classes only; a test list after
phase k labels them with every class seen so far.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .phases import ClassSplit

SEPARATOR = "|"
LIST_COLUMNS = ["fname", "labels", "all_labels"]

#: How a development clip that holds classes of several phases is assigned to a phase.
ASSIGNMENTS = {
    "latest": "the latest phase among its classes (it then holds unlabelled sounds of earlier phases)",
    "earliest": "the earliest phase among its classes (it then holds unlabelled sounds of later phases)",
    "exclusive": "only clips whose classes all belong to one phase are used; others are dropped",
    "every": "every phase whose classes it holds (the clip is trained on again in later phases)",
}


def join_labels(labels: Iterable[str]) -> str:
    labels = list(labels)
    for name in labels:
        if SEPARATOR in name:
            raise ValueError(f"class name {name!r} contains the list separator {SEPARATOR!r}")
    return SEPARATOR.join(labels)


def split_labels(field: str) -> list[str]:
    if not isinstance(field, str) or field == "":
        return []
    return field.split(SEPARATOR)


def _restrict(labels: Sequence[str], keep: Sequence[str]) -> list[str]:
    """The labels that are in ``keep``, in ``keep``'s order."""
    present = set(labels)
    return [c for c in keep if c in present]


def assign_phases(clip_labels: Sequence[str], class_split: ClassSplit, policy: str) -> list[int]:
    """Phases whose training list gets this clip (empty list: the clip is not used)."""
    phases = sorted({class_split.phase_of(c) for c in clip_labels})
    if not phases:
        return []
    if policy == "latest":
        return [phases[-1]]
    if policy == "earliest":
        return [phases[0]]
    if policy == "exclusive":
        return phases if len(phases) == 1 else []
    if policy == "every":
        return phases
    raise ValueError(f"unknown assignment {policy!r}; allowed: {sorted(ASSIGNMENTS)}")


def training_lists(
    clips: pd.DataFrame, class_split: ClassSplit, *, assignment: str = "latest"
) -> list[pd.DataFrame]:
    """One training list per phase, each clip labelled with that phase's classes only."""
    rows: list[list[dict]] = [[] for _ in range(class_split.n_phases)]
    for fname, labels in zip(clips["fname"], clips["labels"]):
        present = _restrict(labels, class_split.classes)
        for k in assign_phases(present, class_split, assignment):
            rows[k].append(
                {
                    "fname": fname,
                    "labels": join_labels(_restrict(present, class_split.groups[k])),
                    "all_labels": join_labels(present),
                }
            )
    lists = [pd.DataFrame(r, columns=LIST_COLUMNS) for r in rows]
    for k, frame in enumerate(lists):
        if frame.empty:
            raise ValueError(
                f"phase {k} has no training clip (classes: {', '.join(class_split.groups[k])}); "
                "check the class list, the phase sizes and the `assignment` setting"
            )
    return lists


def test_lists(clips: pd.DataFrame, class_split: ClassSplit) -> list[pd.DataFrame]:
    """Cumulative test lists: after phase k, every clip holding a class seen so far,
    labelled with all seen classes."""
    out = []
    for k in range(class_split.n_phases):
        seen = class_split.seen(k)
        rows = []
        for fname, labels in zip(clips["fname"], clips["labels"]):
            present = _restrict(labels, class_split.classes)
            labelled = _restrict(present, seen)
            if labelled:
                rows.append(
                    {"fname": fname, "labels": join_labels(labelled), "all_labels": join_labels(present)}
                )
        frame = pd.DataFrame(rows, columns=LIST_COLUMNS)
        if frame.empty:
            raise ValueError(f"no test clip holds a class seen by phase {k}")
        out.append(frame)
    return out


def write_list(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def read_list(path: str | os.PathLike) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in LIST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: list lacks column(s) {missing}; expected header {LIST_COLUMNS}")
    return frame


def label_matrix(
    frame: pd.DataFrame, classes: Sequence[str], *, column: str = "labels", source: str = "list"
) -> np.ndarray:
    """(n_clips, n_classes) float32 0/1 matrix of ``column`` over ``classes``.

    Labels outside ``classes`` are ignored for ``all_labels`` (classes not seen yet) but are an
    error for ``labels``, whose every entry must be a known class.
    """
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(frame), len(classes)), dtype=np.float32)
    for row, field in enumerate(frame[column]):
        for name in split_labels(field):
            j = index.get(name)
            if j is not None:
                y[row, j] = 1.0
            elif column == "labels":
                raise ValueError(
                    f"{source}, row {row + 2}: label {name!r} is not one of the {len(classes)} "
                    "classes this phase knows; regenerate the lists with the current config"
                )
    return y


def write_classes(class_split: ClassSplit, path: str | os.PathLike) -> None:
    rows = [
        {"index": i, "name": name, "phase": class_split.phase_of(name)} for i, name in enumerate(class_split.classes)
    ]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)


def read_classes(path: str | os.PathLike) -> ClassSplit:
    frame = pd.read_csv(path, sep="\t", dtype={"name": str}, keep_default_na=False)
    sizes = frame.groupby("phase").size().sort_index().tolist()
    return ClassSplit.from_sizes(frame.sort_values("index")["name"].tolist(), sizes)

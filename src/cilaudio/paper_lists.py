"""Import the list files written by the papers' own code into this project's list format.

A papers' list holds one clip per record::

    <audio path>_[<label vector>]            optionally followed by ".npy"

where the label vector is numpy's printed float array (``[0. 1. 0. ... 0.]``), wrapped over
several lines when long::

    /data/Audioset/train/Yb0RFKhbpFJA_30000.wav_[0. 1. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 1. 0.
     0. 0. 0. 0. 0. 0.]

Unlike the reference reader, any path prefix is accepted and the last record is kept. The
vector has ``len(class_split.groups[k])`` entries in training lists of phase k (30, then 5) and
``len(class_split.seen(k))`` in the cumulative test list after phase k (30, 35, ..., 50). Standard
file names: ``train_phase_<k>.txt`` and ``test_phase_0_1_..._<k>.txt``.

Our lists (:mod:`cilaudio.lists`) name a clip by its audio file's stem (``fname``).
``all_labels`` is the union of a clip's labels over the imported lists of the same kind
(training or test): the papers' training lists carry only their phase's classes, so a training
clip's annotation of other phases' classes is unknown.

A clip in a training list and in a test list stops the import (naming both files and lines):
it would be trained on and scored. A clip in several phases' training lists is imported, with
a warning naming the files and lines (see :func:`_warn_repeated_training`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import lists as L
from .phases import ClassSplit

__all__ = ["parse_paper_list", "to_list_frame", "import_paper_lists", "paper_list_names", "missing_paper_lists", "clip_stem"]

log = logging.getLogger(__name__)

_OPEN = "_["
_TAIL = re.compile(r"^\s*(\.npy)?\s*$")
KINDS = ("train", "test")


def clip_stem(audio_path: str) -> str:
    """``/data/x/Yab-c_30000.wav`` -> ``Yab-c_30000`` (POSIX or Windows separators)."""
    name = re.split(r"[\\/]", audio_path)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def parse_paper_list(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """Read a papers' list file: ``[(audio path, 0/1 float32 vector), ...]`` in file order.

    Raises FileNotFoundError for a missing file and ValueError naming the file and line for a
    malformed record (no ``_[``, an unterminated vector, text after ``]`` other than ``.npy``,
    an entry that is not a number, a value other than 0 or 1, or vectors of different lengths).
    """
    return [(audio, vector) for _, audio, vector in _parse_located(path)]


def _parse_located(path: str | os.PathLike) -> list[tuple[int, str, np.ndarray]]:
    """:func:`parse_paper_list`'s records with the (1-based) line each starts on."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"papers' list file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[tuple[int, str, np.ndarray]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        start = i + 1  # 1-based line of the record
        where = line.rfind(_OPEN)
        if where < 0:
            raise ValueError(
                f"{path}, line {start}: expected a record '<audio path>_[<label vector>]', got {line!r}"
            )
        audio = line[:where].strip()
        if not audio:
            raise ValueError(f"{path}, line {start}: record has no audio path before '_['")
        body = line[where + len(_OPEN) :]
        while "]" not in body:
            i += 1
            if i >= len(lines):
                raise ValueError(
                    f"{path}, line {start}: the label vector of {audio} has no closing ']' "
                    "before the end of the file"
                )
            if _OPEN in lines[i]:
                raise ValueError(
                    f"{path}, line {start}: the label vector of {audio} has no closing ']' "
                    f"before the next record on line {i + 1}"
                )
            body += " " + lines[i]
        inner, _, tail = body.partition("]")
        if not _TAIL.match(tail):
            raise ValueError(
                f"{path}, line {start}: unexpected text {tail.strip()!r} after the label vector of "
                f"{audio} (only '.npy' may follow ']')"
            )
        try:
            values = np.array([float(t) for t in inner.split()], dtype=np.float32)
        except ValueError:
            raise ValueError(
                f"{path}, line {start}: the label vector of {audio} holds a non-number: [{inner.strip()}]"
            ) from None
        if values.size == 0:
            raise ValueError(f"{path}, line {start}: empty label vector for {audio}")
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(f"{path}, line {start}: label vector of {audio} has values other than 0 and 1")
        if records and values.size != records[0][2].size:
            raise ValueError(
                f"{path}, line {start}: label vector of {audio} has {values.size} entries, the first "
                f"record's has {records[0][2].size}"
            )
        records.append((start, audio, values))
        i += 1
    if not records:
        raise ValueError(f"{path}: no record found")
    return records


def _positions(classes: Sequence[str], *, phase: int, class_split: ClassSplit, kind: str) -> list[str]:
    """Class name of each vector position: ``classes`` cut with ``class_split``'s phase sizes."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    classes = list(classes)
    if sorted(classes) != sorted(class_split.classes):
        missing = sorted(set(class_split.classes) - set(classes))
        extra = sorted(set(classes) - set(class_split.classes))
        raise ValueError(
            f"the vector class order and the class split name different classes (missing: {missing}, "
            f"extra: {extra})"
        )
    end = len(class_split.seen(phase))  # also checks the phase
    if kind == "train":
        names = classes[end - len(class_split.groups[phase]) : end]
        wanted = class_split.groups[phase]
    else:
        names = classes[:end]
        wanted = class_split.seen(phase)
    if set(names) != set(wanted):
        raise ValueError(
            f"positions of phase {phase} in the vector class order name {sorted(names)}, but the "
            f"class split gives {sorted(wanted)}"
        )
    return names


def to_list_frame(records: Sequence[tuple[str, np.ndarray]], classes: Sequence[str], *, phase: int,
                  class_split: ClassSplit, kind: str, source: str = "records",
                  all_labels: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Our list (columns fname, labels, all_labels) of one papers' list.

    ``classes`` is the order of the papers' vectors over every class (usually
    ``class_split.classes``); cut with ``class_split``'s phase sizes it gives each position's class: a
    training list of phase k covers phase k's slice, a test list after phase k the first
    ``len(class_split.seen(k))`` classes. Labels are written in ``class_split``'s order. ``all_labels``
    maps a fname to its full known annotation (default: its labels here). ``source`` names
    the file in errors. A vector of the wrong length raises ValueError naming ``source`` and
    both lengths; the same clip twice with different vectors is an error, with the same vector
    it is kept once.
    """
    names = _positions(classes, phase=phase, class_split=class_split, kind=kind)
    order = class_split.groups[phase] if kind == "train" else class_split.seen(phase)
    rows = []
    seen: dict[str, tuple[str, np.ndarray]] = {}
    for audio, vector in records:
        vector = np.asarray(vector)
        if vector.shape != (len(names),):
            raise ValueError(
                f"{source}: {kind} list of phase {phase} expects label vectors of length {len(names)}, "
                f"found length {vector.size} (clip {audio})"
            )
        fname = clip_stem(audio)
        if fname in seen:
            if not np.array_equal(seen[fname][1], vector):
                raise ValueError(
                    f"{source}: clip {fname} appears twice with different label vectors "
                    f"({seen[fname][0]} and {audio})"
                )
            log.warning("%s: clip %s appears twice; kept once", source, fname)
            continue
        seen[fname] = (audio, vector)
        present = {names[j] for j in np.flatnonzero(vector)}
        labels = [c for c in order if c in present]
        full = list(all_labels.get(fname, labels)) if all_labels is not None else labels
        full_set = set(full) | present
        rows.append({"fname": fname, "labels": L.join_labels(labels),
                     "all_labels": L.join_labels([c for c in class_split.classes if c in full_set])})
    frame = pd.DataFrame(rows, columns=L.LIST_COLUMNS)
    n_empty = int((frame["labels"] == "").sum())
    if n_empty:
        log.info("%s: %d of %d clips have no positive label", source, n_empty, len(frame))
    return frame


Located = list[tuple[int, str, np.ndarray]]  # (line, audio path, vector) of one file's records
_SHOWN = 5  # clips quoted in a leakage error or a repeated-clip warning


def _locations(files: Sequence[Path], located: Sequence[Located]) -> dict[str, list[tuple[Path, int]]]:
    """Each clip (its ``fname``) -> the files listing it, each with the line of its first record
    there, in the order of ``files``."""
    where: dict[str, list[tuple[Path, int]]] = {}
    for path, records in zip(files, located):
        for line, audio, _ in records:
            spots = where.setdefault(clip_stem(audio), [])
            if not spots or spots[-1][0] != path:
                spots.append((path, line))
    return where


def _at(spot: tuple[Path, int]) -> str:
    return f"{spot[0]}, line {spot[1]}"


def _listing(clips: Sequence[str], describe) -> str:
    rows = [f"  {fname}: {describe(fname)}" for fname in clips[:_SHOWN]]
    if len(clips) > _SHOWN:
        rows.append(f"  ... and {len(clips) - _SHOWN} more")
    return "\n".join(rows)


def _check_no_leakage(train: Mapping[str, list[tuple[Path, int]]],
                      test: Mapping[str, list[tuple[Path, int]]]) -> None:
    """A clip in a training list and in a test list would be trained on and then scored: stop,
    naming its first training and first test record (clips compare by ``fname``, whatever the
    folder in front)."""
    leaked = sorted(set(train) & set(test))
    if not leaked:
        return

    def both(fname: str) -> str:
        others = len(test[fname]) - 1
        more = f" (and {others} more test list(s))" if others else ""
        return f"{'; '.join(_at(s) for s in train[fname])} and {_at(test[fname][0])}{more}"

    raise ValueError(
        f"{len(leaked)} clip(s) are in a training list and in a test list, so they would be trained "
        f"on and then scored (inflated test results):\n{_listing(leaked, both)}\n"
        "Remove each such clip from its training list(s) or from every test list that holds it: "
        "training and test clips must be distinct audio files (they are matched by file name "
        "without folder and extension)."
    )


def _warn_repeated_training(train: Mapping[str, list[tuple[Path, int]]]) -> None:
    """Log the clips listed in more than one phase's training list.

    Not an error: a training list of phase k labels its clips with phase k's classes only, so a
    clip holding classes of two phases is a valid example in each (this project's
    ``assignment: every`` makes such lists; the reference repository's README even shows the
    same example records under train_phase_3.txt and train_phase_4.txt). Unlike a training clip
    in a test list, it biases no score, and stopping would leave a published split impossible to
    import as it is. Where each clip is meant to train in one phase, it is a mistake worth a look,
    hence the warning.
    """
    repeated = sorted(f for f, spots in train.items() if len(spots) > 1)
    if not repeated:
        return
    listing = _listing(repeated, lambda fname: "; ".join(_at(s) for s in train[fname]))
    log.warning(
        "%d clip(s) are in more than one phase's training list (each of those phases trains on it "
        "with its own classes only); if each clip should train in one phase, remove it from all "
        "lists but one:\n%s", len(repeated), listing)


def check_clip_overlaps(folder: Path, names: Sequence[tuple[str, str]],
                        located: Mapping[str, Sequence[Located]]) -> None:
    """Stop on a clip in a training and a test list; warn about one in several training lists.
    ``names``: :func:`paper_list_names`; ``located``: each kind's records with their lines."""
    where = {kind: _locations([folder / pair[i] for pair in names], located[kind])
             for i, kind in enumerate(KINDS)}
    _check_no_leakage(where["train"], where["test"])
    _warn_repeated_training(where["train"])


def paper_list_names(n_phases: int) -> list[tuple[str, str]]:
    """Standard file names ``[(train_phase_k.txt, test_phase_0_..._k.txt), ...]``."""
    return [(f"train_phase_{k}.txt", "test_phase_" + "_".join(str(j) for j in range(k + 1)) + ".txt")
            for k in range(n_phases)]


def missing_paper_lists(folder: str | os.PathLike, n_phases: int) -> tuple[list[str], list[Path]]:
    """The standard file names of ``n_phases`` phases in one flat list, and the paths of those
    that ``folder`` lacks."""
    names = [n for pair in paper_list_names(n_phases) for n in pair]
    return names, [Path(folder) / n for n in names if not (Path(folder) / n).is_file()]


def import_paper_lists(folder: str | os.PathLike, out_folder: str | os.PathLike, class_split: ClassSplit, *,
                       classes: Sequence[str] | None = None) -> dict[str, list[Path] | Path]:
    """Convert ``folder``'s papers' lists into our lists in ``out_folder``.

    Writes ``train_phase{k}.tsv`` and ``test_phase{k}.tsv`` for every phase of ``class_split``, plus
    ``classes.tsv``, ``clips_dev.tsv`` (every training clip) and ``clips_eval.tsv`` (every test
    clip), i.e. a complete lists folder. ``classes`` is the vectors' class order (default
    ``class_split.classes``). Every file is read and checked before anything is written (a clip in a
    training list and a test list is an error, see :func:`check_clip_overlaps`). Returns the
    written paths (keys ``train``, ``test``, ``classes``, ``clips_dev``, ``clips_eval``).
    """
    folder, out_folder = Path(folder), Path(out_folder)
    classes = list(class_split.classes if classes is None else classes)
    names = paper_list_names(class_split.n_phases)
    expected, missing = missing_paper_lists(folder, class_split.n_phases)
    if missing:
        raise FileNotFoundError(
            f"papers' list file(s) missing in {folder}: {', '.join(str(p) for p in missing)} "
            f"(expected {', '.join(expected)})"
        )
    located = {kind: [_parse_located(folder / pair[i]) for pair in names]
               for i, kind in enumerate(KINDS)}
    parsed = {kind: [[(audio, vector) for _, audio, vector in recs] for recs in located[kind]]
              for kind in KINDS}
    # First pass: each clip's labels per kind, for all_labels.
    frames: dict[str, list[pd.DataFrame]] = {}
    for i, kind in enumerate(KINDS):
        plain = [to_list_frame(recs, classes, phase=k, class_split=class_split, kind=kind,
                               source=str(folder / names[k][i]))
                 for k, recs in enumerate(parsed[kind])]
        union: dict[str, set[str]] = {}
        for frame in plain:
            for fname, labels in zip(frame["fname"], frame["labels"]):
                union.setdefault(fname, set()).update(L.split_labels(labels))
        frames[kind] = [to_list_frame(recs, classes, phase=k, class_split=class_split, kind=kind,
                                      source=str(folder / names[k][i]),
                                      all_labels={f: sorted(v) for f, v in union.items()})
                        for k, recs in enumerate(parsed[kind])]
    check_clip_overlaps(folder, names, located)
    out = {"train": [out_folder / f"train_phase{k}.tsv" for k in range(class_split.n_phases)],
           "test": [out_folder / f"test_phase{k}.tsv" for k in range(class_split.n_phases)],
           "classes": out_folder / "classes.tsv", "clips_dev": out_folder / "clips_dev.tsv",
           "clips_eval": out_folder / "clips_eval.tsv"}
    L.write_classes(class_split, out["classes"])
    for kind in KINDS:
        for frame, path in zip(frames[kind], out[kind]):
            L.write_list(frame, path)
    for kind, key in (("train", "clips_dev"), ("test", "clips_eval")):
        clips = pd.concat(frames[kind])["fname"].drop_duplicates().sort_values()
        L.write_list(pd.DataFrame({"fname": clips, "labels": "", "all_labels": ""}), out[key])
    for k in range(class_split.n_phases):
        log.info("phase %d: %d training clips, %d test clips", k, len(frames["train"][k]), len(frames["test"][k]))
    return out

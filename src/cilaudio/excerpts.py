"""Training and test sets streamed from the HDF5 feature files.

A list (see :mod:`cilaudio.lists`) names clips; the feature file holds their excerpts. Every
excerpt inherits its clip's labels. Each process (DataLoader worker) opens its own HDF5 handle.
Every open goes through :func:`cilaudio.features.open_features`, which refuses a feature file
that is incomplete or written by the older join (a virtual dataset over shard files).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Sequence

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .features import open_features
from .lists import label_matrix

log = logging.getLogger(__name__)


class ExcerptIndex(dict):
    """fname -> row numbers of its excerpts; ``skipped``: clips extraction left out, and why."""

    skipped: dict[str, str]


def excerpt_index(h5_path: str | os.PathLike) -> ExcerptIndex:
    """fname -> row numbers of its excerpts in the feature file."""
    with open_features(h5_path) as h5:
        names = h5["fname"].asstr()[:]
        skipped = json.loads(h5.attrs["skipped"])
    order = np.argsort(names, kind="stable")
    sorted_names = names[order]
    uniq, first = np.unique(sorted_names, return_index=True)
    bounds = list(first) + [len(names)]
    index = ExcerptIndex({str(n): order[bounds[i] : bounds[i + 1]] for i, n in enumerate(uniq)})
    index.skipped = skipped
    return index


#: A clip is flagged when it holds more than DOMINANT_SHARE of the excerpts of a phase's list
#: and more than DOMINANT_MIN_EXCERPTS of them (100 s of audio with the default 10-s excerpts, so
#: that a list of a few short clips is not flagged): a one-hour recording among 10-s clips gives
#: 360 excerpts, and trains (or tests) that phase on one recording.
DOMINANT_SHARE = 0.2
DOMINANT_MIN_EXCERPTS = 10


def dominant_clips(fnames: Sequence[str], index: dict[str, np.ndarray], *, share: float = DOMINANT_SHARE,
                   min_excerpts: int = DOMINANT_MIN_EXCERPTS) -> list[tuple[str, int, int]]:
    """Clips of ``fnames`` that hold more than ``share`` of their excerpts (and more than
    ``min_excerpts``): ``(fname, its excerpts, all excerpts)``, most excerpts first. Clips
    without features (skipped) count nothing."""
    counts = {f: len(index.get(f, ())) for f in dict.fromkeys(fnames)}
    total = sum(counts.values())
    found = [(f, n, total) for f, n in counts.items() if n > min_excerpts and n > share * total]
    return sorted(found, key=lambda t: -t[1])


def dominant_clip_warnings(lists: dict[str, str | os.PathLike], index: dict[str, np.ndarray],
                           **kwargs) -> list[str]:
    """One sentence per clip that dominates a list (:func:`dominant_clips`); ``lists`` maps what
    a list is (``"phase 1's training list"``) to its path."""
    from .lists import read_list

    out = []
    for what, path in lists.items():
        for fname, n, total in dominant_clips(read_list(path)["fname"].tolist(), index, **kwargs):
            out.append(f"clip {fname!r} holds {n} of the {total} excerpts ({n / total:.1%}) of {what} "
                       f"({path}): that phase learns (or is measured) mostly on one recording. Cut it "
                       f"into shorter clips, or leave it out of the dataset's CSV, if that is not meant "
                       f"(flagged above {DOMINANT_SHARE:.0%} of a list's excerpts)")
    return out


@dataclass
class ExcerptTable:
    """Rows of the feature file and their (n_rows, n_classes) targets."""

    rows: np.ndarray  # (n,) int64, sorted
    targets: np.ndarray  # (n, n_classes) float32
    clip: np.ndarray  # (n,) index of the clip in the list the rows came from

    def __len__(self) -> int:
        return len(self.rows)


def excerpts_of(
    frame: pd.DataFrame,
    classes: Sequence[str],
    index: dict[str, np.ndarray],
    *,
    column: str = "labels",
    source: str = "list",
    features: str = "features",
) -> ExcerptTable:
    """Expand a clip list to the feature file's excerpt rows, each with its clip's targets."""
    y = label_matrix(frame, classes, column=column, source=source)
    rows, targets, clip = [], [], []
    missing, skipped = [], []
    for i, fname in enumerate(frame["fname"]):
        r = index.get(fname)
        if r is None:
            (skipped if fname in getattr(index, "skipped", {}) else missing).append(fname)
            continue
        rows.append(r)
        targets.append(np.repeat(y[i : i + 1], len(r), axis=0))
        clip.append(np.full(len(r), i))
    if missing:
        raise ValueError(
            f"{len(missing)} clip(s) of {source} have no features in {features} "
            f"(first: {missing[:3]}); the feature file is older than the list: rerun feature extraction"
        )
    if skipped:
        log.warning(f"{len(skipped)} clip(s) of {source} were skipped at feature extraction "
                    f"(bad audio; first: {skipped[:3]})")
    if not rows:
        raise ValueError(f"no clip of {source} has features in {features}")
    rows_a = np.concatenate(rows)
    order = np.argsort(rows_a, kind="stable")
    return ExcerptTable(rows_a[order], np.concatenate(targets)[order], np.concatenate(clip)[order])


class FeatureDataset(Dataset):
    """(features (frames, mels) float32, target (n_classes,) float32) per excerpt.

    With ``in_memory`` the selected rows are read once into RAM (fast for small sets);
    otherwise each item is read from the HDF5 file, through a handle opened per process.
    """

    def __init__(self, h5_path: str | os.PathLike, table: ExcerptTable, *, in_memory: bool = False) -> None:
        self.h5_path = str(h5_path)
        self.table = table
        self._h5: h5py.File | None = None
        self._dset: h5py.Dataset | None = None
        self._pid: int | None = None
        self._cache: np.ndarray | None = None
        with open_features(self.h5_path) as h5:  # a file that cannot be read stops here, not in a worker
            if in_memory and len(table.rows):
                # h5py reads increasing, unique indices: read each needed row once, then map
                unique, where = np.unique(table.rows, return_inverse=True)
                self._cache = h5["features"][unique][where]

    def move_to(self, device: torch.device | str) -> torch.Tensor:
        """All of this set's features on ``device`` (n, frames, mels), in table order, for
        ``features_on_gpu``. No host copy is kept: the in-memory rows are handed over and
        released, or, streamed, each needed row is read once and the table order is built on
        the device (the host then holds one copy of the unique rows, briefly, not two)."""
        unique, where = np.unique(self.table.rows, return_inverse=True)
        if self._cache is not None:
            host, self._cache = self._cache, None  # the device holds them from now on
            return torch.from_numpy(np.ascontiguousarray(host)).to(device)
        with open_features(self.h5_path) as h5:
            moved = torch.from_numpy(h5["features"][unique]).to(device)  # (n_unique, frames, mels)
        return moved[torch.as_tensor(where, device=moved.device)]

    def _features(self) -> h5py.Dataset:
        # one handle per process (DataLoader workers fork), and the dataset object kept: looking
        # it up by name on every item costs more than reading the item
        if self._dset is None or self._pid != os.getpid():
            self._h5 = open_features(self.h5_path)
            self._dset = self._h5["features"]
            self._pid = os.getpid()
        return self._dset

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None:
            x = self._cache[i]
        else:
            x = self._features()[self.table.rows[i]]
        return torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.from_numpy(self.table.targets[i])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"] = state["_dset"] = None  # h5py handles do not pickle; workers open their own
        return state

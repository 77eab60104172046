"""Read FSD50K's metadata (the real Zenodo download or the built-in synthetic benchmark).

Layout (Zenodo record 4060432)::

    <root>/FSD50K.ground_truth/vocabulary.csv   no header: index,label,mid
    <root>/FSD50K.ground_truth/dev.csv          header: fname,labels,mids,split
    <root>/FSD50K.ground_truth/eval.csv         header: fname,labels,mids
    <root>/FSD50K.dev_audio/<fname>.wav
    <root>/FSD50K.eval_audio/<fname>.wav

``labels`` and ``mids`` are single CSV fields holding comma-separated lists (quoted when they
hold several values).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from .datasets import check_split

__all__ = ["FSD50K", "read_vocabulary", "read_ground_truth", "MISSING_HINT"]

MISSING_HINT = (
    "FSD50K comes from Zenodo record 4060432 (https://zenodo.org/record/4060432): download and "
    "unpack FSD50K.ground_truth, FSD50K.dev_audio and FSD50K.eval_audio into the dataset root; "
    "the built-in synthetic benchmark is produced by the workflow's generate rule"
)

_DEV_HEADER = ["fname", "labels", "mids", "split"]
_EVAL_HEADER = ["fname", "labels", "mids"]
_DEV_SPLITS = {"train", "val"}


def _require(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"missing FSD50K file {path}: {MISSING_HINT}")


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank row of a CSV file (:func:`csv_rows`)."""
    _require(path)
    return csv_rows(path)


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank row of a UTF-8 CSV file (a byte-order
    mark, as spreadsheets write, is allowed); an unreadable row or non-UTF-8 text is a
    ValueError naming the file (and line). The FSD50K and folder_csv readers share it."""
    out: list[tuple[int, list[str]]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            for fields in reader:
                if fields and any(x.strip() for x in fields):
                    out.append((reader.line_num, fields))
        except csv.Error as err:
            raise ValueError(f"{path}, line {reader.line_num}: unreadable CSV ({err})") from err
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err}); save it as UTF-8 CSV") from err
    return out


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def read_vocabulary(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``vocabulary.csv`` (no header; rows ``index,label,mid``).

    Returns a DataFrame with columns ``index`` (int), ``label`` (str), ``mid`` (str) in file
    order. Raises FileNotFoundError if the file is missing and ValueError (naming the file and
    line) for a malformed row or a repeated index/label.
    """
    path = Path(path)
    records = []
    seen_idx: set[int] = set()
    seen_lab: set[str] = set()
    for line, fields in _rows(path):
        if len(fields) != 3:
            raise ValueError(
                f"{path}, line {line}: expected 3 fields index,label,mid (no header), "
                f"got {len(fields)}: {fields!r}"
            )
        idx_s, label, mid = (x.strip() for x in fields)
        try:
            idx = int(idx_s)
        except ValueError:
            raise ValueError(
                f"{path}, line {line}: index {idx_s!r} is not an integer "
                "(vocabulary.csv has no header row)"
            ) from None
        if not label or not mid:
            raise ValueError(f"{path}, line {line}: empty label or mid: {fields!r}")
        if idx in seen_idx or label in seen_lab:
            raise ValueError(f"{path}, line {line}: repeated index or label: {fields!r}")
        seen_idx.add(idx)
        seen_lab.add(label)
        records.append((idx, label, mid))
    if not records:
        raise ValueError(f"{path}: vocabulary is empty")
    df = pd.DataFrame(records, columns=["index", "label", "mid"])
    df["index"] = df["index"].astype(int)
    return df


def read_ground_truth(path: str | os.PathLike, *, split_column: bool) -> pd.DataFrame:
    """Read ``dev.csv`` (``split_column=True``) or ``eval.csv`` (``split_column=False``).

    Returns a DataFrame with columns ``fname`` (str), ``labels`` (tuple of str), ``mids``
    (tuple of str, same order as labels) and ``split`` ("train"/"val" from dev.csv, "eval" for
    eval.csv). Labels absent from the vocabulary are kept as they are.
    """
    path = Path(path)
    rows = _rows(path)
    header = _DEV_HEADER if split_column else _EVAL_HEADER
    if not rows:
        raise ValueError(f"{path}: empty file, expected header {','.join(header)}")
    line, got = rows[0]
    if [x.strip() for x in got] != header:
        raise ValueError(
            f"{path}, line {line}: expected header {','.join(header)!r}, got {','.join(got)!r}"
        )
    records = []
    seen: set[str] = set()
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise ValueError(
                f"{path}, line {line}: expected {len(header)} fields ({','.join(header)}), "
                f"got {len(fields)}: {fields!r} (multi-valued labels/mids must be quoted)"
            )
        fname = fields[0].strip()
        if not fname:
            raise ValueError(f"{path}, line {line}: empty fname")
        if fname in seen:
            raise ValueError(f"{path}, line {line}: repeated fname {fname!r}")
        seen.add(fname)
        labels = _split_list(fields[1])
        mids = _split_list(fields[2])
        if not labels:
            raise ValueError(f"{path}, line {line}: clip {fname} has no labels")
        if len(labels) != len(mids):
            raise ValueError(
                f"{path}, line {line}: {len(labels)} labels but {len(mids)} mids for clip {fname}"
            )
        if split_column:
            split = fields[3].strip()
            if split not in _DEV_SPLITS:
                raise ValueError(
                    f"{path}, line {line}: split {split!r} is not 'train' or 'val'"
                )
        else:
            split = "eval"
        records.append((fname, labels, mids, split))
    df = pd.DataFrame(records, columns=["fname", "labels", "mids", "split"])
    df["fname"] = df["fname"].astype(str)
    return df


@dataclass(frozen=True)
class FSD50K:
    """Paths and metadata of an FSD50K-layout dataset rooted at ``root``."""

    root: Path

    DOWNLOAD: ClassVar[str] = "Download FSD50K: Zenodo record 4060432 (https://zenodo.org/record/4060432)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def open(cls, root: str | os.PathLike, files: Mapping[str, Any]) -> "FSD50K":
        """The reader interface (:class:`cilaudio.datasets.DatasetReader`). FSD50K's file names
        are fixed: ``files`` (the config's AudioSet file names, filled with their defaults for
        every dataset) is not used."""
        return cls(Path(root))

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "FSD50K.ground_truth"

    @property
    def vocabulary_file(self) -> Path:
        return self.ground_truth_dir / "vocabulary.csv"

    def ground_truth_file(self, split: str) -> Path:
        """``dev.csv`` or ``eval.csv``."""
        return self.ground_truth_dir / f"{_check_split(split)}.csv"

    def audio_dir(self, split: str) -> Path:
        return self.root / f"FSD50K.{_check_split(split)}_audio"

    def metadata_files(self) -> list[Path]:
        """The three metadata CSVs: vocabulary.csv, dev.csv, eval.csv."""
        return [self.vocabulary_file, self.ground_truth_file("dev"), self.ground_truth_file("eval")]

    def load_vocabulary(self) -> pd.DataFrame:
        return read_vocabulary(self.vocabulary_file)

    def load_split(self, split: str) -> pd.DataFrame:
        """Ground truth of ``"dev"`` (split train/val) or ``"eval"`` (split eval)."""
        split = _check_split(split)
        return read_ground_truth(self.ground_truth_file(split), split_column=split == "dev")

    def audio_path(self, split: str, fname: str | int) -> Path:
        return self.audio_dir(split) / f"{fname}.wav"


def _check_split(split: str) -> str:
    return check_split(split, format="FSD50K")

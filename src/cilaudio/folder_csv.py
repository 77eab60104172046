"""Read a researcher's own multi-label audio data: two folders of audio and a CSV per split.

Layout (fixed names under the dataset's ``root``; ``datasets.<name>.files`` is not used)::

    <root>/dev.csv        header: fname,labels[,split]   (development clips: trained on)
    <root>/eval.csv       header: fname,labels           (evaluation clips: tested on)
    <root>/dev_audio/<fname>
    <root>/eval_audio/<fname>

- ``fname``: the audio file's name in its split's folder, **extension included**
  (``dog_01.wav``, ``street.flac``, ``take 3.ogg``: any format libsndfile reads). A plain file
  name, no sub-folder; each at most once per CSV. ``audio_path(split, fname)`` is
  ``audio_dir(split) / fname``.
- ``labels``: the clip's class names separated by commas; a field holding several must be
  quoted (``"Dog,Car horn"``), as in FSD50K. Spaces around a name are dropped; a name cannot
  hold a comma or ``|``; every clip has at least one label.
- ``split`` (dev.csv only, optional): ``train`` or ``val`` on every row. Without the column
  every development clip is ``train``. Which rows are trained on is the config's
  ``train_splits`` (both by default).
- Other columns are ignored. The files are UTF-8 (a byte-order mark, as spreadsheets write it,
  is allowed); blank lines are skipped.

The vocabulary is every class name that occurs in dev.csv, sorted (Python string order): a
class without a development clip cannot be learnt. Choose and order the classes to learn with
``datasets.<name>.classes`` (``sum(phases)`` of them; null takes the whole vocabulary in sorted
order). A label of eval.csv that is not in the vocabulary is ignored, with a warning naming the
file and the clips. Mistakes (a missing column, a row with too many fields, a label with no name,
a repeated fname, a split other than train/val) raise ValueError naming the file and line.

The clip table and the vocabulary have the columns of the other readers (:mod:`cilaudio.fsd50k`):
own data has no ontology ids, so ``mid`` / ``mids`` repeat the class names.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from .datasets import check_split
from .fsd50k import csv_rows

__all__ = ["FolderCSV", "LAYOUT", "read_clip_table"]

log = logging.getLogger(__name__)

#: The fixed names under ``root``.
DEV_CSV, EVAL_CSV = "dev.csv", "eval.csv"
DEV_AUDIO, EVAL_AUDIO = "dev_audio", "eval_audio"

LAYOUT = (
    f"<root>/{DEV_CSV} (columns fname,labels and optionally split = train/val), "
    f"<root>/{EVAL_CSV} (columns fname,labels), <root>/{DEV_AUDIO}/ and <root>/{EVAL_AUDIO}/ "
    "holding the files named in fname (extension included)"
)

_DEV_SPLITS = ("train", "val")
_LIST_SEPARATOR = "|"  # the phase lists' label separator (cilaudio.lists.SEPARATOR)


def _require(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}: a folder_csv dataset is your own data, laid out as {LAYOUT}")


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, fields) of every non-blank row of a CSV file."""
    _require(path)
    return csv_rows(path)


def _labels(field: str, *, where: str, fname: str) -> tuple[str, ...]:
    """The class names of a ``labels`` field, in the order written, repeats dropped."""
    if not field.strip():
        raise ValueError(f"{where}: clip {fname!r} has no labels; every clip needs at least one class name")
    names = [x.strip() for x in field.split(",")]
    if not all(names):
        raise ValueError(
            f"{where}: clip {fname!r} has a label with no name in {field!r} (two commas in a row, "
            "or a comma at an end); labels are class names separated by commas")
    for name in names:
        if _LIST_SEPARATOR in name:
            raise ValueError(f"{where}: class name {name!r} of clip {fname!r} holds {_LIST_SEPARATOR!r}, "
                             "which the phase lists use as their separator; rename the class")
    return tuple(dict.fromkeys(names))


def read_clip_table(path: str | os.PathLike, *, split_column: bool) -> pd.DataFrame:
    """Read ``dev.csv`` (``split_column=True``: a ``split`` column is allowed) or ``eval.csv``.

    Returns a DataFrame with columns ``fname`` (str), ``labels`` (tuple of str, as written),
    ``mids`` (the same tuple: own data has no ontology ids) and ``split`` (``train``/``val`` in
    dev.csv, ``train`` where it has no split column; ``eval`` for eval.csv), in file order.
    Raises FileNotFoundError when the file is missing and ValueError naming the file and line
    for a malformed header or row.
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header row naming the columns fname,labels")
    head_line, header = rows[0]
    header = [x.strip() for x in header]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}, line {head_line}: column(s) {repeated} named twice in the header {header}")
    missing = [c for c in ("fname", "labels") if c not in header]
    if missing:
        raise ValueError(f"{path}, line {head_line}: missing column(s) {missing}; the header row must name "
                         f"fname and labels{' (and optionally split)' if split_column else ''}, got {header}")
    if "split" in header and not split_column:
        raise ValueError(f"{path}, line {head_line}: a split column belongs in {DEV_CSV} (train/val rows); "
                         f"every clip of {path.name} is an evaluation clip, remove the column")
    col = {c: i for i, c in enumerate(header)}
    records = []
    seen: dict[str, int] = {}
    for line, fields in rows[1:]:
        where = f"{path}, line {line}"
        if len(fields) != len(header):
            raise ValueError(
                f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}: {fields!r} "
                '(a labels field holding several class names must be quoted: "Dog,Car horn")')
        fname = fields[col["fname"]].strip()
        if not fname:
            raise ValueError(f"{where}: empty fname")
        if "/" in fname or "\\" in fname or fname in (".", ".."):
            raise ValueError(f"{where}: fname {fname!r} is not a file name; give the name of a file directly "
                             "in the split's audio folder (no sub-folders)")
        if fname in seen:
            raise ValueError(f"{where}: fname {fname!r} is repeated (first on line {seen[fname]}); "
                             "give each clip one row with all its labels")
        seen[fname] = line
        labels = _labels(fields[col["labels"]], where=where, fname=fname)
        if not split_column:
            split = "eval"
        elif "split" in col:
            split = fields[col["split"]].strip()
            if split not in _DEV_SPLITS:
                raise ValueError(f"{where}: split {split!r} of clip {fname!r} is not 'train' or 'val'")
        else:
            split = "train"
        records.append((fname, labels, labels, split))
    if not records:
        raise ValueError(f"{path}: no clips (only the header row)")
    frame = pd.DataFrame(records, columns=["fname", "labels", "mids", "split"])
    frame["fname"] = frame["fname"].astype(str)
    return frame


def _unused_files(files: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``files`` that differ from the config's defaults (AudioSet's file names,
    which the schema fills in for every dataset)."""
    from .audioset import AudioSet

    defaults = {k: p.default for k, p in inspect.signature(AudioSet.from_root).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in files.items() if k not in defaults or defaults[k] != v}


@dataclass(frozen=True)
class FolderCSV:
    """Paths and metadata of a folder_csv dataset (your own data) rooted at ``root``."""

    root: Path

    DOWNLOAD: ClassVar[str] = (
        f"folder_csv is your own data, laid out as {LAYOUT}; the audio in any format "
        "libsndfile reads (https://libsndfile.github.io/libsndfile/formats.html)"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def open(cls, root: str | os.PathLike, files: Mapping[str, Any]) -> "FolderCSV":
        """The reader interface (:class:`cilaudio.datasets.DatasetReader`). The names are fixed:
        ``files`` other than the config's defaults is an error rather than silently unused."""
        unused = _unused_files(files or {})
        if unused:
            raise ValueError(
                f"`files` sets {unused}, which the folder_csv format does not use: its names are fixed "
                f"({LAYOUT}); remove `files` from this dataset's config and rename the files or folders")
        return cls(Path(root))

    # -- paths -----------------------------------------------------------------------------

    def clip_table_file(self, split: str) -> Path:
        """``dev.csv`` or ``eval.csv``."""
        return self.root / (DEV_CSV if _check_split(split) == "dev" else EVAL_CSV)

    @property
    def vocabulary_file(self) -> Path:
        """Where the vocabulary is read from: dev.csv (its class names)."""
        return self.clip_table_file("dev")

    def audio_dir(self, split: str) -> Path:
        return self.root / (DEV_AUDIO if _check_split(split) == "dev" else EVAL_AUDIO)

    def audio_path(self, split: str, fname: str) -> Path:
        return self.audio_dir(split) / fname

    def metadata_files(self) -> list[Path]:
        """The two CSVs: dev.csv, eval.csv."""
        return [self.clip_table_file("dev"), self.clip_table_file("eval")]

    # -- metadata --------------------------------------------------------------------------

    def load_vocabulary(self) -> pd.DataFrame:
        """Columns ``index`` (int), ``label`` and ``mid`` (the same name): every class name of
        dev.csv, sorted."""
        dev = read_clip_table(self.vocabulary_file, split_column=True)
        names = sorted({name for labels in dev["labels"] for name in labels})
        frame = pd.DataFrame({"index": range(len(names)), "label": names, "mid": names})
        frame["index"] = frame["index"].astype(int)
        return frame

    def load_split(self, split: str) -> pd.DataFrame:
        """Clip table of ``"dev"`` (split train/val) or ``"eval"`` (split eval); see
        :func:`read_clip_table`. Labels of eval.csv outside the vocabulary are logged."""
        split = _check_split(split)
        frame = read_clip_table(self.clip_table_file(split), split_column=split == "dev")
        if split == "eval":
            self._warn_unknown(frame)
        return frame

    def _warn_unknown(self, frame: pd.DataFrame) -> None:
        known = set(self.load_vocabulary()["label"])
        unknown: dict[str, list[str]] = {}
        for fname, labels in zip(frame["fname"], frame["labels"]):
            for name in labels:
                if name not in known:
                    unknown.setdefault(name, []).append(fname)
        if unknown:
            detail = "; ".join(f"{name!r} (clips {', '.join(clips[:3])}{' ...' if len(clips) > 3 else ''})"
                               for name, clips in sorted(unknown.items()))
            log.warning("%s: %d label(s) not in %s, so never learnt, are ignored: %s",
                        self.clip_table_file("eval"), len(unknown), self.vocabulary_file, detail)


def _check_split(split: str) -> str:
    return check_split(split, format="folder_csv")

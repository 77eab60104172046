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
order). Before any job (:func:`check_labels`, run by :mod:`cilaudio.config_checks`), a label of
either file that is not a chosen class but looks like one (case, quotes, spaces, a close spelling)
stops the run naming the file, the line and the chosen class; the other labels that are not
chosen (a deliberate subset) are listed in one note; a clip in both dev.csv and eval.csv stops the
run naming both lines (as ``cilaudio import-lists`` does). A label of eval.csv that is not in the
vocabulary is ignored by the list job, with a warning naming the file and the clips. Mistakes (a missing column, a row with too many fields, a label with no name,
a repeated fname, a split other than train/val) raise ValueError naming the file and line.

The clip table and the vocabulary have the columns of the other readers (:mod:`cilaudio.fsd50k`):
own data has no ontology ids, so ``mid`` / ``mids`` repeat the class names.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from .datasets import check_split
from .fsd50k import csv_rows

__all__ = ["FolderCSV", "LAYOUT", "check_labels", "check_no_leakage", "read_clip_table"]

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
    records, lines = [], []
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
        lines.append(line)
    if not records:
        raise ValueError(f"{path}: no clips (only the header row)")
    frame = pd.DataFrame(records, columns=["fname", "labels", "mids", "split"])
    frame["fname"] = frame["fname"].astype(str)
    frame.attrs["lines"] = lines  # each row's line in the file, for messages
    frame.attrs["path"] = str(path)
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
            check_no_leakage(read_clip_table(self.clip_table_file("dev"), split_column=True), frame)
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


# -- start-up checks (cilaudio.config_checks runs them before any job) ---------------------------

_SHOWN = 5  # clips or labels quoted in one message


def _stem(fname: str) -> str:
    return Path(fname).stem


def check_no_leakage(dev: pd.DataFrame, eval_: pd.DataFrame) -> None:
    """A clip in dev.csv and in eval.csv would be trained on and then scored: stop, naming both
    files and lines (clips compare by file name without extension, as ``cilaudio import-lists``
    compares them)."""
    first_dev = {}
    for fname, line in zip(dev["fname"], dev.attrs.get("lines", [None] * len(dev))):
        first_dev.setdefault(_stem(fname), line)
    leaked = [(fname, first_dev[_stem(fname)], line)
              for fname, line in zip(eval_["fname"], eval_.attrs.get("lines", [None] * len(eval_)))
              if _stem(fname) in first_dev]
    if not leaked:
        return
    dev_path, eval_path = dev.attrs.get("path", DEV_CSV), eval_.attrs.get("path", EVAL_CSV)
    rows = [f"  {fname}: {dev_path}, line {dl} and {eval_path}, line {el}" for fname, dl, el in leaked[:_SHOWN]]
    if len(leaked) > _SHOWN:
        rows.append(f"  ... and {len(leaked) - _SHOWN} more")
    raise ValueError(
        f"{len(leaked)} clip(s) are in {DEV_CSV} and in {EVAL_CSV} (a training list and a test list), so they "
        "would be trained on and then scored (inflated test results):\n" + "\n".join(rows) + "\n"
        f"Remove each such clip from {DEV_CSV} or from {EVAL_CSV}: training and test clips must be distinct "
        "audio files (they are matched by file name without folder and extension).")


def _normal(name: str) -> str:
    """A class name as a typo would still match it: case, surrounding quotes and spaces dropped."""
    return " ".join(name.strip().strip("\"'").split()).casefold()


def _closest(name: str, chosen: list[str]) -> str | None:
    """The chosen class that ``name`` is most likely a misspelling of, or None."""
    by_normal = {_normal(c): c for c in chosen}
    if _normal(name) in by_normal:
        return by_normal[_normal(name)]
    close = difflib.get_close_matches(_normal(name), list(by_normal), n=1, cutoff=0.75)
    return by_normal[close[0]] if close else None


def check_labels(root: str | os.PathLike, classes: list[str] | None, *, key: str
                 ) -> tuple[list[str], list[str]]:
    """``(errors, notes)`` about the labels of ``root``'s dev.csv and eval.csv that are not chosen
    classes (``classes``; None: the whole vocabulary of dev.csv), and about clips in both files.

    A label that is not a chosen class but looks like one (the same name but for case, quotes or
    spaces, or a close spelling, difflib ratio >= 0.75) is an error naming the file, the line and
    the chosen class. Other labels are a deliberate subset: one note lists them with their clip
    counts. With ``classes`` null, names of dev.csv that look like each other are named too (each
    is a class of its own, which makes the count differ from ``phases``)."""
    root = Path(root)
    dev = read_clip_table(root / DEV_CSV, split_column=True)
    eval_ = read_clip_table(root / EVAL_CSV, split_column=False)
    errors: list[str] = []
    try:
        check_no_leakage(dev, eval_)
    except ValueError as err:
        errors.append(str(err))
    vocabulary = sorted({n for labels in dev["labels"] for n in labels})
    chosen = list(vocabulary if classes is None else classes)
    known = set(chosen)
    typos: list[str] = []
    others: dict[str, int] = {}
    for frame in (dev, eval_):
        for line, fname, labels in zip(frame.attrs["lines"], frame["fname"], frame["labels"]):
            for name in labels:
                if name in known:
                    continue
                close = _closest(name, chosen)
                if close is not None:
                    typos.append(f"{frame.attrs['path']}, line {line}: label {name!r} of clip {fname!r} is not a "
                                 f"chosen class; closest chosen class: {close!r}")
                else:
                    others[name] = others.get(name, 0) + 1
    if typos:
        shown = typos[:_SHOWN] + ([f"... and {len(typos) - _SHOWN} more"] if len(typos) > _SHOWN else [])
        errors.append(f"{len(typos)} label(s) look like a chosen class ({key}) but differ from it; fix the "
                      "label in the file (class names must match exactly):\n  " + "\n  ".join(shown))
    if others:
        listed = ", ".join(f"{n!r} ({c} label(s))" for n, c in sorted(others.items()))
        notes = [f"{root}: {len(others)} class name(s) in {DEV_CSV}/{EVAL_CSV} are not chosen classes ({key}) "
                 f"and are ignored (a deliberate subset): {listed}"]
    else:
        notes = []
    return errors, notes


def near_duplicates(root: str | os.PathLike) -> list[str]:
    """Names of dev.csv that look like another of its names (case, quotes, spaces, or a close
    spelling), each with its first file and line: the odd classes of a vocabulary count."""
    dev = read_clip_table(Path(root) / DEV_CSV, split_column=True)
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for line, labels in zip(dev.attrs["lines"], dev["labels"]):
        for name in labels:
            first.setdefault(name, line)
            count[name] = count.get(name, 0) + 1
    out = []
    for name in sorted(first):
        others = [n for n in first if n != name]
        close = _closest(name, others)
        if close is not None and count[name] <= count[close]:
            out.append(f"{name!r} ({dev.attrs['path']}, line {first[name]}; {count[name]} clip(s)) looks like "
                       f"{close!r} ({count[close]} clip(s))")
    return out

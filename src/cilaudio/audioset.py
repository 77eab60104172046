"""Read AudioSet's temporally strong labels (Hershey et al., ICASSP 2021) as a clip table.

Files (https://research.google.com/audioset/download_strong.html)::

    audioset_train_strong.tsv   header: segment_id  start_time_seconds  end_time_seconds  label
    audioset_eval_strong.tsv    same columns
    mid_to_display_name.tsv     no header: <mid> TAB <display name>

One row per event. ``segment_id`` is ``<YouTube id>_<start in ms>`` of a 10-s excerpt, without a
leading ``Y``; YouTube ids may start with ``-`` and contain ``_``, so the id is split off at the
**last** ``_``. Labels are ontology ids (``/m/09x0r``) mapped to display names, which may contain
commas (``Male speech, man speaking``).

Audio is not distributed with the labels: the user's own download lives in two folders (dev and
eval) with file names given by a pattern, ``Y{id}_{start_ms}.wav`` by default (the papers'
names). A 10-s excerpt is positive for a class when at least one of its events carries it.

:meth:`AudioSet.load_split` returns the same *clip table* as :mod:`cilaudio.fsd50k`
(``fname``, ``labels``, ``mids``, ``split``), so the list generator can use either reader.
``fname`` is the audio file name without its extension, and
``audio_path(split, fname) == audio_dir(split) / (fname + extension)``.
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from .datasets import check_split

__all__ = ["AudioSet", "MISSING_HINT", "PATTERN_FIELDS", "parse_segment_id", "read_label_names",
           "read_strong_labels"]

log = logging.getLogger(__name__)

MISSING_HINT = (
    "AudioSet strong labels (audioset_train_strong.tsv, audioset_eval_strong.tsv, "
    "mid_to_display_name.tsv) come from https://research.google.com/audioset/download_strong.html; "
    "the audio must be downloaded separately"
)

STRONG_HEADER = ["segment_id", "start_time_seconds", "end_time_seconds", "label"]

#: Fields the file-name pattern may use (str.format syntax, format specs allowed).
PATTERN_FIELDS = {
    "id": "YouTube id (may start with '-' and contain '_')",
    "start_ms": "start of the 10-s excerpt in milliseconds (int)",
    "end_ms": "start_ms + 10000 (int)",
    "start_s": "start in seconds (float, e.g. {start_s:.3f})",
    "end_s": "start_s + 10 (float)",
    "segment_id": "<id>_<start_ms>, as in the label files",
}



def _require(path: Path, key: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"missing AudioSet file {path}: {MISSING_HINT}; set datasets.<name>.{key} in the config "
            "to where the file is"
        )


def parse_segment_id(segment_id: str) -> tuple[str, int]:
    """``"ql66pp0iq_4_40000"`` -> ``("ql66pp0iq_4", 40000)``: split on the last ``_``.

    Raises ValueError when there is no ``_``, the id is empty or the start is not an integer.
    """
    yt_id, sep, start = segment_id.rpartition("_")
    if not sep or not yt_id or not start.isdigit():
        raise ValueError(
            f"segment id {segment_id!r} is not <YouTube id>_<start in ms> (e.g. s9d-2nhuJCQ_30000)"
        )
    return yt_id, int(start)


def read_label_names(path: str | os.PathLike, *, key: str = "label_names") -> pd.DataFrame:
    """Read ``mid_to_display_name.tsv`` (no header; ``<mid> TAB <display name>``).

    Returns a DataFrame with columns ``index`` (int, file order), ``label`` (display name) and
    ``mid``. A repeated mid or a row without exactly two tab-separated fields is an error naming
    the file and line; a display name used by several mids is kept, with a warning.
    """
    path = Path(path)
    _require(path, key)
    records = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ValueError(
                    f"{path}, line {line_no}: expected <mid> TAB <display name> (no header), got {line!r}"
                )
            mid, name = parts[0].strip(), parts[1].strip()
            if mid in seen:
                raise ValueError(f"{path}, line {line_no}: mid {mid} already given on line {seen[mid]}")
            seen[mid] = line_no
            records.append((len(records), name, mid))
    if not records:
        raise ValueError(f"{path}: label table is empty")
    frame = pd.DataFrame(records, columns=["index", "label", "mid"])
    repeated = sorted(frame.loc[frame["label"].duplicated(), "label"].unique())
    if repeated:
        log.warning("%s: %d display name(s) are used by several mids: %s", path, len(repeated),
                    ", ".join(map(repr, repeated[:10])))
    return frame


def read_strong_labels(path: str | os.PathLike, *, key: str = "train_labels") -> pd.DataFrame:
    """Read a strong-label TSV (``audioset_{train,eval}_strong.tsv``): one row per event.

    Returns a DataFrame with columns ``segment_id``, ``id`` (YouTube id), ``start_ms`` (int),
    ``onset``/``offset`` (float seconds) and ``mid``, in file order. The first line must be the
    header; a malformed row raises ValueError naming the file and line.
    """
    path = Path(path)
    _require(path, key)
    records = []
    with open(path, encoding="utf-8") as f:
        header_line = None
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("\t")]
            if header_line is None:
                header_line = line_no
                if parts != STRONG_HEADER:
                    raise ValueError(
                        f"{path}, line {line_no}: expected the header "
                        f"{chr(9).join(STRONG_HEADER)!r} (tab-separated), got {line!r}"
                    )
                continue
            if len(parts) != 4:
                raise ValueError(
                    f"{path}, line {line_no}: expected 4 tab-separated fields "
                    f"({', '.join(STRONG_HEADER)}), got {len(parts)}: {line!r}"
                )
            segment_id, onset_s, offset_s, mid = parts
            try:
                yt_id, start_ms = parse_segment_id(segment_id)
            except ValueError as err:
                raise ValueError(f"{path}, line {line_no}: {err}") from None
            try:
                onset, offset = float(onset_s), float(offset_s)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line_no}: start/end times {onset_s!r}, {offset_s!r} are not numbers"
                ) from None
            if not (0.0 <= onset <= offset):
                raise ValueError(
                    f"{path}, line {line_no}: event times must satisfy 0 <= start <= end, "
                    f"got {onset} .. {offset}"
                )
            if not mid:
                raise ValueError(f"{path}, line {line_no}: empty label")
            records.append((segment_id, yt_id, start_ms, onset, offset, mid))
    if header_line is None:
        raise ValueError(f"{path}: empty file, expected header {chr(9).join(STRONG_HEADER)!r}")
    return pd.DataFrame(records, columns=["segment_id", "id", "start_ms", "onset", "offset", "mid"])


@dataclass(frozen=True)
class AudioSet:
    """Paths, file-name pattern and metadata of an AudioSet strong-label dataset.

    Attributes:
        train_labels: ``audioset_train_strong.tsv`` (the development segments).
        eval_labels: ``audioset_eval_strong.tsv``.
        label_names: ``mid_to_display_name.tsv``.
        dev_audio: folder of the development segments' audio files.
        eval_audio: folder of the evaluation segments' audio files.
        file_pattern: an audio file's name (str.format; fields in :data:`PATTERN_FIELDS`), e.g.
            ``Y{id}_{start_ms}.wav`` or ``Y{id}_{start_s:.3f}_{end_s:.3f}.wav``. Its extension (the
            text from the last ``.`` after the last ``}``) is not part of ``fname``.
    """

    train_labels: Path
    eval_labels: Path
    label_names: Path
    dev_audio: Path
    eval_audio: Path
    file_pattern: str = "Y{id}_{start_ms}.wav"

    DOWNLOAD: ClassVar[str] = ("Download AudioSet's strong labels (https://research.google.com/audioset/download_strong.html) "
                               "and your copy of its audio")

    @property
    def vocabulary_file(self) -> Path:
        """Where the vocabulary is read from (the reader interface): the label table."""
        return self.label_names

    @classmethod
    def open(cls, root: str | os.PathLike, files: Mapping[str, Any]) -> "AudioSet":
        """The reader interface (:class:`cilaudio.datasets.DatasetReader`): ``files`` are the
        keyword arguments of :meth:`from_root`."""
        return cls.from_root(Path(root), **dict(files))

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "file_pattern":
                object.__setattr__(self, f.name, Path(getattr(self, f.name)))
        _check_pattern(self.file_pattern)

    @classmethod
    def from_root(cls, root: str | os.PathLike, *, train_labels: str = "audioset_train_strong.tsv",
                  eval_labels: str = "audioset_eval_strong.tsv",
                  label_names: str = "mid_to_display_name.tsv", dev_audio: str = "train",
                  eval_audio: str = "eval", file_pattern: str = "Y{id}_{start_ms}.wav") -> "AudioSet":
        """Paths relative to ``root`` (absolute paths are kept as they are)."""
        root = Path(root)
        return cls(train_labels=root / train_labels, eval_labels=root / eval_labels,
                   label_names=root / label_names, dev_audio=root / dev_audio,
                   eval_audio=root / eval_audio, file_pattern=file_pattern)

    # -- paths -----------------------------------------------------------------------------

    @property
    def extension(self) -> str:
        """The pattern's file extension (``.wav``), or ``""`` when it has none."""
        return _extension(self.file_pattern)

    def labels_file(self, split: str) -> Path:
        return self.train_labels if _check_split(split) == "dev" else self.eval_labels

    def audio_dir(self, split: str) -> Path:
        return self.dev_audio if _check_split(split) == "dev" else self.eval_audio

    def metadata_files(self) -> list[Path]:
        """The three label files: mid_to_display_name.tsv, train strong TSV, eval strong TSV."""
        return [self.label_names, self.train_labels, self.eval_labels]

    def fname(self, yt_id: str, start_ms: int) -> str:
        """The audio file name of a segment, without extension (the clip table's ``fname``)."""
        name = self.file_pattern.format(
            id=yt_id, start_ms=start_ms, end_ms=start_ms + 10000, start_s=start_ms / 1000.0,
            end_s=start_ms / 1000.0 + 10.0, segment_id=f"{yt_id}_{start_ms}",
        )
        ext = self.extension
        return name[: len(name) - len(ext)] if ext else name

    def audio_path(self, split: str, fname: str) -> Path:
        return self.audio_dir(split) / f"{fname}{self.extension}"

    # -- metadata --------------------------------------------------------------------------

    def load_vocabulary(self) -> pd.DataFrame:
        """Columns ``index``, ``label`` (display name), ``mid``, in the label table's order."""
        return read_label_names(self.label_names, key="label_names")

    def load_split(self, split: str, *, only_with_audio: bool = False) -> pd.DataFrame:
        """Clip table of ``"dev"`` (split ``train``) or ``"eval"`` (split ``eval``).

        One row per segment, in order of first appearance: ``fname`` (audio file stem from the
        pattern), ``labels`` (display names of every class with at least one event, in the label
        table's order, unknown mids last as the mids themselves), ``mids`` (same order) and
        ``split``. ``only_with_audio`` drops segments whose audio file does not exist (real
        downloads miss some videos), logging how many.
        """
        split = _check_split(split)
        key = "train_labels" if split == "dev" else "eval_labels"
        path = self.labels_file(split)
        events = read_strong_labels(path, key=key)
        vocab = self.load_vocabulary()
        name_of = dict(zip(vocab["mid"], vocab["label"]))
        rank = {mid: i for i, mid in enumerate(vocab["mid"])}

        unknown = events.loc[~events["mid"].isin(name_of), "mid"]
        if len(unknown):
            distinct = sorted(unknown.unique())
            log.warning(
                "%s: %d event(s) with %d mid(s) not in %s, kept as the mid itself: %s%s", path,
                len(unknown), len(distinct), self.label_names, ", ".join(distinct[:10]),
                " ..." if len(distinct) > 10 else "",
            )

        mids_of: dict[str, set[str]] = {}
        where: dict[str, tuple[str, int]] = {}
        for segment_id, yt_id, start_ms, mid in zip(events["segment_id"], events["id"],
                                                    events["start_ms"], events["mid"]):
            if segment_id not in mids_of:
                mids_of[segment_id] = set()
                where[segment_id] = (yt_id, int(start_ms))
            mids_of[segment_id].add(mid)

        records = []
        owner: dict[str, str] = {}
        out_split = "train" if split == "dev" else "eval"
        for segment_id, mids in mids_of.items():
            fname = self.fname(*where[segment_id])
            if fname in owner:
                raise ValueError(
                    f"file pattern {self.file_pattern!r} gives the same name {fname!r} to segments "
                    f"{owner[fname]} and {segment_id} of {path}: include {{start_ms}} in it"
                )
            owner[fname] = segment_id
            ordered = sorted(mids, key=lambda m: (rank.get(m, len(rank)), m))
            labels = tuple(dict.fromkeys(name_of.get(m, m) for m in ordered))
            records.append((fname, labels, tuple(ordered), out_split))
        frame = pd.DataFrame(records, columns=["fname", "labels", "mids", "split"])
        frame["fname"] = frame["fname"].astype(str)
        if only_with_audio and len(frame):
            exists = [self.audio_path(split, f).is_file() for f in frame["fname"]]
            n_missing = len(frame) - sum(exists)
            if n_missing:
                log.warning("%s: %d of %d segments have no audio file in %s; they are left out",
                            path, n_missing, len(frame), self.audio_dir(split))
            frame = frame[exists].reset_index(drop=True)
        log.info("%s: %d events, %d segments", path, len(events), len(frame))
        return frame


def _extension(pattern: str) -> str:
    tail = pattern[pattern.rfind("}") + 1 :]
    dot = tail.rfind(".")
    return tail[dot:] if dot >= 0 else ""


def _check_pattern(pattern: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"file_pattern must be a non-empty string, got {pattern!r}")
    if "/" in pattern or "\\" in pattern:
        raise ValueError(f"file_pattern {pattern!r} must be a file name, not a path (set the audio folders instead)")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as err:
        raise ValueError(f"file_pattern {pattern!r} is not a valid format string: {err}") from None
    unknown = names - set(PATTERN_FIELDS)
    if unknown:
        raise ValueError(
            f"file_pattern {pattern!r} uses unknown field(s) {sorted(unknown)}; allowed: "
            + ", ".join(f"{{{k}}} ({v})" for k, v in PATTERN_FIELDS.items())
        )
    if not names & {"id", "segment_id"}:
        raise ValueError(f"file_pattern {pattern!r} must contain {{id}} or {{segment_id}}")
    try:
        pattern.format(id="x", start_ms=0, end_ms=10000, start_s=0.0, end_s=10.0, segment_id="x_0")
    except (ValueError, IndexError) as err:
        raise ValueError(f"file_pattern {pattern!r} cannot be filled in: {err}") from None


def _check_split(split: str) -> str:
    return check_split(split, format="AudioSet")

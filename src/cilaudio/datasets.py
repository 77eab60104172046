"""Open a configured dataset: the readers share one interface (vocabulary, clip tables, audio
paths, metadata files), so lists and features do not depend on the layout."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol

class DatasetReader(Protocol):
    """What the workflow needs of a dataset format (one module per format, named in
    :data:`FORMATS`): the class opens a dataset with ``open(root, files)`` and says where the data
    comes from in ``DOWNLOAD`` (the message when it is missing)."""

    DOWNLOAD: ClassVar[str]

    @property
    def vocabulary_file(self) -> Path: ...

    def metadata_files(self) -> list[Path]: ...

    def load_vocabulary(self) -> Any: ...

    def load_split(self, split: str) -> Any: ...

    def audio_dir(self, split: str) -> Path: ...

    def audio_path(self, split: str, fname: str) -> Path: ...


#: The dataset formats: ``datasets.<name>.format`` -> (module of this package, reader class).
#: A new format is one module with a reader class and one entry here; the config schema's
#: ``format`` enum is checked against these keys (tests/test_datasets.py).
FORMATS: dict[str, tuple[str, str]] = {
    "fsd50k": ("fsd50k", "FSD50K"),
    "audioset": ("audioset", "AudioSet"),
    "folder_csv": ("folder_csv", "FolderCSV"),
}


#: The splits every reader has: the development clips (trained on) and the evaluation clips.
SPLITS = ("dev", "eval")


def check_split(split: str, *, format: str) -> str:
    """``split`` when it is one of :data:`SPLITS`; else a ValueError naming the format."""
    if split not in SPLITS:
        raise ValueError(f"{format} split must be 'dev' or 'eval', got {split!r}")
    return split


def reader_class(format: str) -> type:
    """The reader class of a dataset format."""
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; allowed: {list(FORMATS)}")
    module, name = FORMATS[format]
    return getattr(importlib.import_module(f".{module}", __package__), name)


def open_dataset(format: str, root: str | Path, files: Mapping[str, Any] | None = None) -> DatasetReader:
    """The reader of a dataset in ``format`` layout under ``root`` (``files``: its file names,
    for the formats that have settable ones)."""
    return reader_class(format).open(Path(root), dict(files or {}))


def download_hint(format: str) -> str:
    """Where a dataset of ``format`` comes from (for the message when it is missing)."""
    return reader_class(format).DOWNLOAD


def audio_fingerprint(folder: str | Path) -> str:
    """A short hash of the name, size and modification time of every file in an audio folder
    (not its subfolders: the readers keep a split's clips side by side). It changes when a clip
    is added, removed, or rewritten in place (a folder's own time does not change then), so
    that the workflow extracts a split's features again; it is the same as long as nothing
    there is touched. A missing folder has its own value (its extraction stops naming the clips)."""
    import hashlib
    import os

    h = hashlib.sha256()
    try:
        entries = sorted((e for e in os.scandir(folder) if e.is_file()), key=lambda e: e.name)
    except FileNotFoundError:
        return "missing"
    for e in entries:
        st = e.stat()
        h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{len(entries)} files, {h.hexdigest()[:16]}"

"""Open a configured dataset: the readers share one interface (vocabulary, clip tables, audio
paths, metadata files), so lists and features do not depend on the layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

FORMATS = ("fsd50k", "audioset")


def open_dataset(format: str, root: str | Path, files: Mapping[str, Any] | None = None):
    """The reader of a dataset in ``format`` layout under ``root`` (``files``: AudioSet's file names)."""
    if format == "fsd50k":
        from .fsd50k import FSD50K

        return FSD50K(Path(root))
    if format == "audioset":
        from .audioset import AudioSet

        return AudioSet.from_root(Path(root), **dict(files or {}))
    raise ValueError(f"unknown dataset format {format!r}; allowed: {list(FORMATS)}")


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

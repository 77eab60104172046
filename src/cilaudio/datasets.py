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

"""The README's promise that results can be copied holds only for a copy that keeps the files'
modification times: Snakemake decides what is up to date by comparing them, and `cp -r` gives
every copy the time of copying, in whatever order it copies, so a copied results folder is
recomputed. The README must say how to copy (`cp -a`, `rsync -a`) wherever it says one can."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_copying_results_says_how():
    sentences = re.split(r"(?<=[.!?])\s+", README)
    about_copying = [s for s in sentences if re.search(r"results/?`?\)? can be (copied|moved)|copy (the )?`?results", s)]
    assert about_copying, "the README no longer says that results can be copied"
    for sentence in about_copying:
        assert "cp -a" in sentence and "rsync -a" in sentence, sentence
    assert not re.search(r"cp -r[^\n`]*results", README)

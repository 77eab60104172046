"""Shared fixtures: a tiny generated dataset with lists and features, made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cilaudio import workflow_steps as W
from cilaudio.synth import generate

FEATURES = dict(sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=64, f_min=20.0,
                f_max=3900.0, excerpt_seconds=0.7, hop_seconds=0.7)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate(root / "dataset", seed=3, group_sizes=(3, 2, 2), dev_clips=(12, 8, 8),
             eval_clips=(9, 6, 6), sample_rate=16000, min_seconds=0.6, max_seconds=1.6)
    lists = root / "lists"
    outputs = {"classes": lists / "classes.tsv", "clips_dev": lists / "clips_dev.tsv",
               "clips_eval": lists / "clips_eval.tsv",
               "train": [lists / f"train_phase{k}.tsv" for k in range(3)],
               "test": [lists / f"test_phase{k}.tsv" for k in range(3)]}
    W.make_lists(outputs=outputs, root=str(root / "dataset"), classes=None, phases=[3, 2, 2],
                 assignment="latest", train_splits=["train", "val"])
    for split in ("dev", "eval"):
        W.extract_features(clips=str(lists / f"clips_{split}.tsv"), root=str(root / "dataset"), split=split,
                           out=str(root / f"{split}.h5"), settings=FEATURES)
    return root




@pytest.fixture
def copy(finished, tmp_path) -> Path:
    """A copy of a module's ``finished`` workflow folder (Snakemake's records and file times
    included), to plan or rerun in without touching the original."""
    target = tmp_path / "run"
    shutil.copytree(finished, target, symlinks=True)
    return target

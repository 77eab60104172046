"""The workflow's feature files: shards are temporary, the joined file is what stays.

One small run makes ``features/dev.h5`` of the tiny config in two shards; the checks after it
are dry runs on copies of that folder: the shards are gone once joined, nothing is planned
while the joined file is there, and when it is deleted (or the feature settings change) the
shards are extracted again and joined.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import yaml

from cilaudio.excerpts import excerpt_index

from workflow_runs import TINY, planned, snakemake

TARGET = "results/synth/features/dev.h5"
SHARDS = [f"results/synth/features/dev/shard{i}of2.h5" for i in range(2)]


def config(**features) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["datasets"]["synth"]["shards"] = 2
    cfg["datasets"]["synth"]["features"].update(features)
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("features_run")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config(), sort_keys=False))
    snakemake(workdir, TARGET)
    return workdir


@pytest.mark.workflow
def test_shards_are_deleted_once_joined_and_the_joined_file_stands_alone(finished):
    for shard in SHARDS:
        assert not (finished / shard).exists(), f"{shard} was kept after the join"
    joined = finished / TARGET
    with h5py.File(joined, "r") as h5:
        assert not h5["features"].is_virtual
        n = h5["features"].shape[0]
        assert n > 0 and h5["features"][:].any()
    assert sum(len(rows) for rows in excerpt_index(joined).values()) == n


@pytest.mark.workflow
def test_joined_file_without_its_shards_plans_nothing(copy):
    assert planned(copy, TARGET) == {}


@pytest.mark.workflow
def test_deleting_the_joined_file_plans_extraction_and_join(copy):
    (copy / TARGET).unlink()
    jobs = planned(copy, TARGET)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}


@pytest.mark.workflow
def test_changing_the_feature_settings_plans_extraction_and_join(copy):
    (copy / "config.yaml").write_text(yaml.safe_dump(config(n_mels=40), sort_keys=False))
    jobs = planned(copy, TARGET)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}


# ----------------------------------------------------------------------------- a downloaded dataset


@pytest.fixture(scope="module")
def downloaded(finished, tmp_path_factory) -> Path:
    """The tiny benchmark used as a downloaded dataset (`root`, nothing generated), its
    features extracted."""
    import shutil

    workdir = tmp_path_factory.mktemp("downloaded_run")
    shutil.copytree(finished / "results/synth/dataset", workdir / "FSD50K")
    cfg = config()
    cfg["datasets"]["synth"]["root"] = str(workdir / "FSD50K")
    cfg["datasets"]["synth"]["generate"] = {"activate": False}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(workdir, TARGET)
    return workdir


@pytest.mark.workflow
def test_audio_rewritten_in_place_extracts_the_split_again(downloaded):
    """Rewriting one clip of a downloaded dataset (its folder's time does not change) must plan
    the split's extraction and join again; an untouched dataset plans nothing."""
    import os

    import soundfile as sf

    work = downloaded  # (the config names this folder's audio: a copy would change `root`)
    assert planned(work, TARGET) == {}
    folder = work / "FSD50K" / "FSD50K.dev_audio"
    clip = sorted(folder.glob("*.wav"))[0]
    folder_time = folder.stat().st_mtime_ns
    data, rate = sf.read(clip)
    sf.write(clip, 0.5 * data, rate, subtype="PCM_16")  # repaired in place: same name and size
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    assert folder.stat().st_mtime_ns == folder_time
    jobs = planned(work, TARGET)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}

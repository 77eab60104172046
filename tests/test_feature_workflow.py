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

from cilaudio.data import excerpt_index

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


def test_shards_are_deleted_once_joined_and_the_joined_file_stands_alone(finished):
    for shard in SHARDS:
        assert not (finished / shard).exists(), f"{shard} was kept after the join"
    joined = finished / TARGET
    with h5py.File(joined, "r") as h5:
        assert not h5["features"].is_virtual
        n = h5["features"].shape[0]
        assert n > 0 and h5["features"][:].any()
    assert sum(len(rows) for rows in excerpt_index(joined).values()) == n


def test_joined_file_without_its_shards_plans_nothing(copy):
    assert planned(copy, TARGET) == {}


def test_deleting_the_joined_file_plans_extraction_and_join(copy):
    (copy / TARGET).unlink()
    jobs = planned(copy, TARGET)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}


def test_changing_the_feature_settings_plans_extraction_and_join(copy):
    (copy / "config.yaml").write_text(yaml.safe_dump(config(n_mels=40), sort_keys=False))
    jobs = planned(copy, TARGET)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}

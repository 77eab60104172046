"""The workflow's feature files: shards are temporary, the joined file is what stays.

One small run makes ``features/dev.h5`` of the tiny config in two shards; the checks after it
are dry runs on copies of that folder: the shards are gone once joined, nothing is planned
while the joined file is there, and when it is deleted (or the feature settings change) the
shards are extracted again and joined.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from cilaudio.data import excerpt_index

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
TARGET = "results/synth/features/dev.h5"
SHARDS = [f"results/synth/features/dev/shard{i}of2.h5" for i in range(2)]


def config(**features) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["datasets"]["synth"]["shards"] = 2
    cfg["datasets"]["synth"]["features"].update(features)
    return cfg


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), TARGET, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def planned(workdir: Path) -> dict[str, str]:
    """Output path -> rule of every job a dry run plans."""
    text = snakemake(workdir, "-n").stdout
    jobs, rule = {}, None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        m = re.match(r"^\s+output: (.*)$", line)
        if m and rule:
            jobs.update({path.strip(): rule for path in m.group(1).split(", ")})
    return jobs


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("features_run")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config(), sort_keys=False))
    snakemake(workdir)
    return workdir


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target, symlinks=True)
    return target


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
    assert planned(copy) == {}


def test_deleting_the_joined_file_plans_extraction_and_join(copy):
    (copy / TARGET).unlink()
    jobs = planned(copy)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}


def test_changing_the_feature_settings_plans_extraction_and_join(copy):
    (copy / "config.yaml").write_text(yaml.safe_dump(config(n_mels=40), sort_keys=False))
    jobs = planned(copy)
    assert jobs == {**{shard: "extract_features" for shard in SHARDS}, TARGET: "join_features"}

"""The workflow with `model.pretrained`: phase 0 starts from a PANNs-named checkpoint file (built in
the test at the tiny width), features from PANNs' front end, and the file's path and sha256 reach
the checkpoints, the metrics, versions.tsv and the report."""

from __future__ import annotations

import copy
import hashlib
import json

import pandas as pd
import pytest
import torch

from test_pretrained import panns_state
from workflow_runs import TINY, snakemake, write_config


@pytest.mark.workflow
def test_phase0_starts_from_a_panns_file(tmp_path):
    weights = tmp_path / "Cnn14_tiny.pth"
    theirs = panns_state(TINY["model"]["width"])
    torch.save({"model": theirs}, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    config = copy.deepcopy(TINY)
    config["run"]["methods"] = ["finetune"]
    config["cka"]["methods"] = []
    config["model"]["pretrained"] = str(weights)
    config["datasets"]["synth"]["features"]["front_end"] = "panns"
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/synth/bn/report.html")
    res = tmp_path / "results" / "synth" / "bn"
    phase0 = torch.load(res / "base/seed0/phase0.pt", weights_only=False)
    assert phase0["pretrained"]["path"] == str(weights) and phase0["pretrained"]["sha256"] == sha
    assert phase0["features"]["front_end"] == "panns"
    # the weights started from the file's: after one epoch they moved, but not far
    w0, w = theirs["conv_block1.conv1.weight"], phase0["model_state"]["block1.conv1.weight"]
    assert 0 < (w - w0).abs().max() < 0.1 * w0.abs().max()
    assert torch.load(res / "finetune/seed0/phase4.pt", weights_only=False)["pretrained"]["sha256"] == sha
    record = json.loads((res / "finetune/seed0/metrics.json").read_text())["phases"][-1]
    assert record["pretrained"]["sha256"] == sha
    versions = pd.read_csv(res / "versions.tsv", sep="\t", dtype=str)
    assert set(versions["start"]) == {f"{weights} (sha256 {sha})"}
    assert sha in (res / "report.html").read_text()
    log = next((tmp_path / "logs/synth/bn/base/seed0").glob("train_phase0.log")).read_text()
    assert "starts from" in log and "fc_audioset" in log

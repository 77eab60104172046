"""Start-up checks of settings that would otherwise fail late or do nothing: each stops
`snakemake -n` with a message naming the key and the fix, before any job runs."""

from __future__ import annotations

import subprocess

import yaml

from cilaudio import config_checks
from workflow_runs import REPO, SNAKEMAKE, TINY


def _config(**changes) -> dict:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config.setdefault("training", {})["tensorboard"] = False
    # a plan needs no generator settings beyond these (the others keep their defaults)
    config["datasets"]["synth"]["generate"] = {"activate": True, "seed": 7}
    for key, value in changes.items():
        section, name = key.split("__")
        config.setdefault(section, {})[name] = value
    return config


def _dry_run(tmp_path, config: dict) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_tensorboard_without_the_package_is_refused(monkeypatch):
    monkeypatch.setattr(config_checks, "module_available", lambda name: name != "tensorboard")
    [msg] = config_checks.check_run_settings(_config(training__tensorboard=True))
    assert "training.tensorboard" in msg and "pip install tensorboard" in msg
    assert config_checks.check_run_settings(_config(training__tensorboard=False)) == []
    monkeypatch.setattr(config_checks, "module_available", lambda name: True)
    assert config_checks.check_run_settings(_config(training__tensorboard=True)) == []


def test_cka_method_outside_run_methods_is_refused():
    # tiny.yaml: run.methods [finetune, joint, indl_fd_od]; indl is defined but not run
    [msg] = config_checks.check_run_settings(_config(cka__methods=["indl_fd_od", "indl"]))
    assert "cka.methods names 'indl'" in msg and "run.methods" in msg
    assert config_checks.check_run_settings(_config(cka__methods=["indl_fd_od"])) == []
    assert config_checks.check_run_settings(_config(cka__methods=None)) == []


def test_dry_run_stops_on_a_cka_method_that_is_not_run(tmp_path):
    proc = _dry_run(tmp_path, _config(cka__methods=["indl"]))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "cka.methods names 'indl'" in text, text[-3000:]
    assert not (tmp_path / "results").exists()


def test_a_missing_pretrained_file_is_refused(tmp_path):
    [msg] = config_checks.check_run_settings(_config(model__pretrained=str(tmp_path / "Cnn14.pth")))
    assert "model.pretrained" in msg and "Cnn14.pth does not exist" in msg and "zenodo.org/record/3987831" in msg
    (tmp_path / "Cnn14.pth").write_bytes(b"x")
    assert config_checks.check_run_settings(_config(model__pretrained=str(tmp_path / "Cnn14.pth"))) == []


def test_pretrained_weights_with_the_papers_front_end_get_a_note(tmp_path):
    (tmp_path / "Cnn14.pth").write_bytes(b"x")
    proc = _dry_run(tmp_path, _config(model__pretrained=str(tmp_path / "Cnn14.pth")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "datasets.synth.features.front_end is not panns" in proc.stderr


def test_the_front_end_note_names_each_dataset_without_panns_features(tmp_path):
    config = _config(model__pretrained=str(tmp_path / "Cnn14.pth"))
    [note] = config_checks.pretrained_front_end_notes(config)
    assert "datasets.synth.features.front_end is not panns" in note
    config["datasets"]["synth"]["features"]["front_end"] = "panns"
    assert config_checks.pretrained_front_end_notes(config) == []
    assert config_checks.pretrained_front_end_notes(_config()) == []  # no pretrained weights, no note

"""Own data (folder_csv): a label that is not a chosen class, and a clip in both dev.csv and
eval.csv, are found at start-up (`snakemake -n`), naming the file and line; labels of classes
left out on purpose are listed in one note."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cilaudio.config_checks import check_class_list
from cilaudio.folder_csv import FolderCSV
from workflow_runs import REPO, SNAKEMAKE, TINY

FILES_DEFAULTS = {"train_labels": "audioset_train_strong.tsv", "eval_labels": "audioset_eval_strong.tsv",
                  "label_names": "mid_to_display_name.tsv", "dev_audio": "train", "eval_audio": "eval",
                  "file_pattern": "Y{id}_{start_ms}.wav"}


def _folder(root: Path, dev: str, eval_: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev.csv").write_text(dev)
    (root / "eval.csv").write_text(eval_)
    return root


def _ds(root: Path, classes, phases) -> dict:
    return {"format": "folder_csv", "root": str(root), "files": FILES_DEFAULTS, "generate": {"activate": False},
            "classes": classes, "phases": phases}


DEV = 'fname,labels\na.wav,Dog bark\nb.wav,"Rain,dog bark"\nc.wav,Rain\nd.wav,Car horn\n'  # line 3: wrong case


def test_a_differently_cased_dev_label_names_file_line_and_the_chosen_class(tmp_path):
    root = _folder(tmp_path, DEV, "fname,labels\ne.wav,Rain\n")
    notes: list[str] = []
    [msg] = check_class_list("mine", _ds(root, ["Dog bark", "Rain"], [1, 1]), notes)
    assert f"{root / 'dev.csv'}, line 3" in msg and "'dog bark'" in msg and "closest chosen class: 'Dog bark'" in msg
    # Car horn is no chosen class and looks like none: a deliberate subset, one note
    [note] = notes
    assert "'Car horn'" in note and "deliberate subset" in note


def test_misspelt_and_quoted_eval_labels_are_errors(tmp_path):
    dev = 'fname,labels\na.wav,Dog bark\nc.wav,Rain\n'
    root = _folder(tmp_path, dev, 'fname,labels\ne.wav,Rian\nf.wav,"""Dog bark"""\n')
    [msg] = check_class_list("mine", _ds(root, ["Dog bark", "Rain"], [1, 1]))
    assert f"{root / 'eval.csv'}, line 2" in msg and "'Rian'" in msg and "closest chosen class: 'Rain'" in msg
    assert f"{root / 'eval.csv'}, line 3" in msg and "'\"Dog bark\"'" in msg
    assert "2 label(s)" in msg


def test_a_clean_subset_passes_with_a_note(tmp_path):
    root = _folder(tmp_path, 'fname,labels\na.wav,Dog bark\nc.wav,Rain\nd.wav,Car horn\n', "fname,labels\ne.wav,Rain\n")
    notes: list[str] = []
    assert check_class_list("mine", _ds(root, ["Dog bark", "Rain"], [1, 1]), notes) == []
    assert len(notes) == 1 and "'Car horn' (1 label(s))" in notes[0]


def test_with_null_classes_the_count_error_names_the_odd_class(tmp_path):
    root = _folder(tmp_path, DEV.replace("d.wav,Car horn\n", "d.wav,Dog bark\n"), "fname,labels\ne.wav,Rain\n")
    # vocabulary: 'Dog bark' (2 clips), 'Rain' (2), 'dog bark' (1): 3 names for 2 classes
    [msg] = check_class_list("mine", _ds(root, None, [1, 1]))
    assert "3 names" in msg and f"'dog bark' ({root / 'dev.csv'}, line 3; 1 clip(s)) looks like 'Dog bark'" in msg


def test_a_clip_in_dev_and_eval_names_both_files_and_lines(tmp_path):
    root = _folder(tmp_path, 'fname,labels\na.wav,Dog bark\nc.wav,Rain\n', "fname,labels\ne.wav,Rain\nc.flac,Rain\n")
    [msg] = check_class_list("mine", _ds(root, ["Dog bark", "Rain"], [1, 1]))
    assert f"c.flac: {root / 'dev.csv'}, line 3 and {root / 'eval.csv'}, line 3" in msg
    assert "trained on and then scored" in msg
    with pytest.raises(ValueError, match="trained on and then scored"):
        FolderCSV(root).load_split("eval")


def test_dry_run_stops_on_a_misspelt_own_label(tmp_path):
    root = _folder(tmp_path / "data", DEV, "fname,labels\ne.wav,Rain\n")
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["run"]["datasets"] = ["mine"]
    config["datasets"] = {"mine": {"format": "folder_csv", "root": str(root), "classes": ["Dog bark", "Rain"],
                                   "phases": [1, 1]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "--configfile", str(tmp_path / "config.yaml"), "-n"],
                          capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{root / 'dev.csv'}, line 3" in text, text[-3000:]
    assert "note:" in text and "'Car horn'" in text

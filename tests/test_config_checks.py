"""Start-up checks of a dataset's class list (`datasets.<name>.classes`) against its vocabulary:
duplicates, misspelt names and the count against `phases`, before any job runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cilaudio import workflow_steps as W
from cilaudio.config_checks import check_class_list
from cilaudio.synth import vocabulary
from workflow_runs import REPO, SNAKEMAKE, TINY

SYNTH = [c.name for c in vocabulary(6, seed=7)]  # tiny.yaml's benchmark: seed 7, phases 2 + 4 x 1


def _synth(classes=None, phases=(2, 1, 1, 1, 1)) -> dict:
    return {"format": "fsd50k", "root": None, "files": {}, "generate": {"activate": True, "seed": 7},
            "classes": classes, "phases": list(phases), "papers_lists": None}


def _fsd50k(root: Path, classes, vocab: list[str] | None = None, phases=(2, 1)) -> dict:
    if vocab is not None:
        gt = root / "FSD50K.ground_truth"
        gt.mkdir(parents=True)
        (gt / "vocabulary.csv").write_text("".join(f"{i},{n},/m/f{i}\n" for i, n in enumerate(vocab)))
    return {"format": "fsd50k", "root": str(root), "files": {}, "generate": {"activate": False},
            "classes": classes, "phases": list(phases), "papers_lists": None}


def _one(errors: list[str]) -> str:
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_lists_pass(tmp_path):
    assert check_class_list("synth", _synth()) == []
    assert check_class_list("synth", _synth(list(reversed(SYNTH)))) == []
    vocab = ["Dog", "Bark", "Cat", "Meow", "Rain"]
    assert check_class_list("fsd", _fsd50k(tmp_path / "F", ["Cat", "Dog", "Rain"], vocab, (2, 1))) == []


def test_misspelt_synth_class_names_the_key_the_entry_and_the_closest_name():
    bad = SYNTH.copy()
    bad[3] = SYNTH[3].lower()
    text = _one(check_class_list("synth", _synth(bad)))
    assert "datasets.synth.classes, entry 4" in text
    assert repr(SYNTH[3].lower()) in text and f"closest: {SYNTH[3]!r}" in text
    assert "built-in benchmark" in text and "seed 7" in text


def test_class_outside_the_generated_vocabulary_is_unknown():
    """The generator makes sum(phases) classes only: a pool class beyond them is not there."""
    extra = next(c.name for c in vocabulary(64, seed=7) if c.name not in SYNTH)
    text = _one(check_class_list("synth", _synth(SYNTH[:5] + [extra])))
    assert repr(extra) in text and "entry 6" in text


def test_duplicates_in_a_file_name_the_file_and_both_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join([SYNTH[0], SYNTH[1], "", SYNTH[2], SYNTH[1], SYNTH[3], SYNTH[4]]) + "\n")
    text = _one(check_class_list("synth", _synth(str(path))))
    assert "datasets.synth.classes" in text and repr(SYNTH[1]) in text
    assert f"{path}, line 2" in text and f"{path}, line 5" in text  # blank line 3 still counts
    assert "once" in text


def test_duplicate_in_a_list_names_both_entries():
    text = _one(check_class_list("synth", _synth([*SYNTH[:5], SYNTH[0]])))
    assert "datasets.synth.classes, entry 1" in text and "datasets.synth.classes, entry 6" in text


def test_count_must_match_phases():
    text = _one(check_class_list("synth", _synth(SYNTH[:5])))
    assert "datasets.synth.classes names 5 classes" in text
    assert "datasets.synth.phases [2, 1, 1, 1, 1] add up to 6" in text


def test_too_many_phases_for_the_generator():
    text = _one(check_class_list("synth", _synth(phases=(60, 5))))
    assert "datasets.synth.phases" in text and "at most 64" in text


def test_fsd50k_vocabulary_file_misspelt_name_in_a_class_file(tmp_path):
    vocab = ["Dog", "Bark", "Cat", "Meow", "Rain"]
    path = tmp_path / "classes.txt"
    path.write_text("Dog\nCta\nRain\n")
    ds = _fsd50k(tmp_path / "FSD50K", str(path), vocab, (2, 1))
    text = _one(check_class_list("fsd50k", ds))
    assert "datasets.fsd50k.classes" in text and f"{path}, line 2" in text
    assert "'Cta'" in text and "closest: 'Cat'" in text
    assert str(tmp_path / "FSD50K" / "FSD50K.ground_truth" / "vocabulary.csv") in text


def test_without_vocabulary_only_duplicates_and_count(tmp_path):
    ds = _fsd50k(tmp_path / "nowhere", ["Dgo", "Cat", "Cat"], None, (2, 1))
    text = _one(check_class_list("fsd50k", ds))  # the duplicate; 'Dgo' cannot be checked yet
    assert "'Cat'" in text and "'Dgo'" not in text
    assert check_class_list("fsd50k", _fsd50k(tmp_path / "nowhere", ["Dgo", "Cat"], None, (3, 1))) != []


def test_missing_class_file_is_left_to_the_list_job(tmp_path):
    # a relative path resolves in the working directory, which a dry run elsewhere may lack
    assert check_class_list("synth", _synth(str(tmp_path / "nope.txt"))) == []


def test_null_classes_take_the_whole_vocabulary(tmp_path):
    ds = _fsd50k(tmp_path / "F", None, ["Dog", "Bark", "Cat", "Meow"], (2, 1))
    text = _one(check_class_list("fsd50k", ds))
    assert "datasets.fsd50k.classes is null" in text and "4 names" in text and "add up to 3" in text


def test_audioset_label_table_from_files(tmp_path):
    root = tmp_path / "AudioSet"
    root.mkdir()
    (root / "labels.tsv").write_text("/m/a\tSpeech\n/m/b\tMusic\n/m/c\tDog\n")
    ds = {"format": "audioset", "root": str(root), "files": {"label_names": "labels.tsv"},
          "generate": {"activate": False}, "classes": ["Speech", "Musci"], "phases": [1, 1],
          "papers_lists": None}
    text = _one(check_class_list("audioset", ds))
    assert "datasets.audioset.classes, entry 2" in text and "closest: 'Music'" in text
    assert str(root / "labels.tsv") in text


def test_unreadable_vocabulary_is_reported(tmp_path):
    gt = tmp_path / "F" / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text("index,label,mid\n0,Dog,/m/a\n")
    text = _one(check_class_list("fsd50k", _fsd50k(tmp_path / "F", ["Dog", "Cat"], None, (1, 1))))
    assert "datasets.fsd50k" in text and "vocabulary.csv, line 1" in text


def test_list_job_names_the_real_key(tmp_path):
    """The list job's messages name `datasets.<dataset>.classes`, not a placeholder."""
    root = tmp_path / "F"
    _fsd50k(root, None, ["Dog", "Cat"])
    lists = tmp_path / "results" / "fsd50k" / "lists"
    outputs = {"classes": str(lists / "classes.tsv"), "clips_dev": str(lists / "clips_dev.tsv"),
               "clips_eval": str(lists / "clips_eval.tsv"), "train": [str(lists / "train_phase0.tsv")],
               "test": [str(lists / "test_phase0.tsv")]}
    common = dict(outputs=outputs, root=str(root), phases=[1, 1], assignment="latest", train_splits=["train"])
    with pytest.raises(FileNotFoundError, match=r"\(datasets\.fsd50k\.classes\)"):
        W.make_lists(classes=str(tmp_path / "nope.txt"), **common)
    with pytest.raises(ValueError, match=r"datasets\.fsd50k\.classes in the config") as err:
        W.make_lists(classes=["Dgo", "Cat"], **common)
    assert "<name>" not in str(err.value)


def test_dry_run_stops_on_a_misspelt_benchmark_class(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    bad = SYNTH.copy()
    bad[2] = bad[2].replace("_band_", "_bnad_")
    assert bad[2] != SYNTH[2]
    config["datasets"]["synth"]["classes"] = bad
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "datasets.synth.classes, entry 3" in text and repr(bad[2]) in text, text[-3000:]
    assert f"closest: {SYNTH[2]!r}" in text
    assert not (tmp_path / "results").exists()  # stopped before any job

"""The folder_csv format (your own data): dev.csv / eval.csv (fname,labels[,split]) beside the
folders dev_audio/ and eval_audio/. Unit tests of the reader on hand-written folders, the
checks the workflow makes with it before any job, its lists, and one run of the real workflow
on a small own-data folder of sine tones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from cilaudio import workflow_steps as W
from cilaudio.config_checks import check_class_list
from cilaudio.datasets import download_hint, open_dataset
from cilaudio.folder_csv import FolderCSV, read_clip_table
from workflow_runs import REPO, TINY, snakemake, write_config

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
# `files` as the workflow hands it to every reader: the schema fills in AudioSet's defaults
FILES_DEFAULTS = {k: v["default"] for k, v in SCHEMA["$defs"]["dataset"]["properties"]["files"]["properties"].items()}

DEV = (
    "fname,labels,split\n"
    'dog_01.wav,"Dog bark, Car horn",train\n'     # spaces after the comma, two labels
    "horn.flac,Car horn,val\n"
    '\n'                                           # a blank line is skipped
    'rain 3.ogg,"Rain,Dog bark,Rain",train\n'     # repeated label, space in the file name
)
EVAL = (
    "fname,labels\n"
    "e1.wav,Rain\n"
    'e2.wav,"Car horn,Thunder"\n'                  # Thunder has no development clip
)


def write_folder(root: Path, dev: str = DEV, eval_: str = EVAL) -> FolderCSV:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev.csv").write_text(dev, encoding="utf-8")
    (root / "eval.csv").write_text(eval_, encoding="utf-8")
    return FolderCSV(root)


# -- the reader ------------------------------------------------------------------------------


def test_vocabulary_is_the_sorted_class_names_of_dev_csv(tmp_path):
    v = write_folder(tmp_path).load_vocabulary()
    assert list(v.columns) == ["index", "label", "mid"]
    assert v["label"].tolist() == ["Car horn", "Dog bark", "Rain"]  # sorted; Thunder (eval only) is not
    assert v["index"].tolist() == [0, 1, 2] and pd.api.types.is_integer_dtype(v["index"])
    assert v["mid"].tolist() == v["label"].tolist()


def test_dev_split_labels_as_written_and_paths(tmp_path):
    ds = write_folder(tmp_path)
    dev = ds.load_split("dev")
    assert list(dev.columns) == ["fname", "labels", "mids", "split"]
    assert dev["fname"].tolist() == ["dog_01.wav", "horn.flac", "rain 3.ogg"]
    assert dev["labels"].tolist() == [("Dog bark", "Car horn"), ("Car horn",), ("Rain", "Dog bark")]
    assert dev["mids"].tolist() == dev["labels"].tolist()
    assert dev["split"].tolist() == ["train", "val", "train"]
    assert ds.audio_dir("dev") == tmp_path / "dev_audio" and ds.audio_dir("eval") == tmp_path / "eval_audio"
    assert ds.audio_path("dev", "rain 3.ogg") == tmp_path / "dev_audio" / "rain 3.ogg"  # extension kept as given
    assert ds.metadata_files() == [tmp_path / "dev.csv", tmp_path / "eval.csv"]
    with pytest.raises(ValueError, match="'dev' or 'eval'"):
        ds.load_split("train")


def test_dev_without_split_column_is_all_train_and_columns_in_any_order(tmp_path):
    dev = 'labels,comment,fname\n"Dog bark,Rain",ignored,a.wav\nRain,,b.wav\n'
    frame = write_folder(tmp_path, dev=dev).load_split("dev")
    assert frame["fname"].tolist() == ["a.wav", "b.wav"]
    assert frame["labels"].tolist() == [("Dog bark", "Rain"), ("Rain",)]
    assert frame["split"].tolist() == ["train", "train"]


def test_eval_split_and_labels_outside_the_vocabulary_warned(tmp_path, caplog):
    ds = write_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cilaudio.folder_csv"):
        ev = ds.load_split("eval")
    assert ev["split"].tolist() == ["eval", "eval"]
    assert ev["labels"].tolist() == [("Rain",), ("Car horn", "Thunder")]
    assert "'Thunder' (clips e2.wav)" in caplog.text and str(tmp_path / "eval.csv") in caplog.text


def test_byte_order_mark_of_a_spreadsheet_is_allowed(tmp_path):
    (tmp_path / "dev.csv").write_bytes("\ufefffname,labels\na.wav,Rain\n".encode("utf-8"))
    assert read_clip_table(tmp_path / "dev.csv", split_column=True)["fname"].tolist() == ["a.wav"]


BAD_DEV = {
    "missing column": ("fname,label\na.wav,Rain\n", 1, r"missing column\(s\) \['labels'\]"),
    "column twice": ("fname,labels,fname\na.wav,Rain,b.wav\n", 1, "named twice"),
    "unquoted labels": ("fname,labels\na.wav,Rain\nb.wav,Rain,Dog bark\n", 3, 'expected 2 fields.*quoted'),
    "two commas": ('fname,labels\na.wav,Rain\n\nb.wav,"Rain,,Dog bark"\n', 4, "label with no name"),
    "trailing comma": ('fname,labels\nb.wav,"Rain,"\n', 2, "label with no name"),
    "no labels": ("fname,labels\na.wav,Rain\nb.wav,\n", 3, "clip 'b.wav' has no labels"),
    "repeated fname": ("fname,labels\na.wav,Rain\nb.wav,Rain\na.wav,Dog\n", 4, "'a.wav' is repeated.*line 2"),
    "empty fname": ("fname,labels\n,Rain\n", 2, "empty fname"),
    "sub-folder": ("fname,labels\nclips/a.wav,Rain\n", 2, "not a file name"),
    "bad split": ("fname,labels,split\na.wav,Rain,train\nb.wav,Rain,test\n", 3, "split 'test'"),
    "separator in name": ("fname,labels\na.wav,Rain|Hail\n", 2, "'Rain|Hail'.*separator"),
}


@pytest.mark.parametrize("case", list(BAD_DEV))
def test_bad_dev_csv_names_file_and_line(tmp_path, case):
    text, line, message = BAD_DEV[case]
    ds = write_folder(tmp_path, dev=text)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'dev.csv'}, line {line}: .*{message}"):
        ds.load_split("dev")
    with pytest.raises(ValueError, match=rf"line {line}: "):
        ds.load_vocabulary()  # the vocabulary is read from the same rows


def test_bad_eval_csv_names_file_and_line(tmp_path):
    ds = write_folder(tmp_path, eval_="fname,labels,split\ne1.wav,Rain,train\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'eval.csv'}, line 1: a split column belongs in dev.csv"):
        ds.load_split("eval")
    ds = write_folder(tmp_path, eval_="fname,labels\ne1.wav,Rain\ne1.wav,Dog bark\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'eval.csv'}, line 3: fname 'e1.wav' is repeated"):
        ds.load_split("eval")
    ds = write_folder(tmp_path, eval_="fname,labels\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'eval.csv'}: no clips"):
        ds.load_split("eval")


def test_missing_csv_names_the_file_and_the_layout(tmp_path):
    ds = FolderCSV(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"missing file {tmp_path / 'dev.csv'}.*dev_audio/"):
        ds.load_vocabulary()


# -- through the registry, as the workflow opens it --------------------------------------------


def test_registry_opens_it_with_the_configs_default_files(tmp_path):
    write_folder(tmp_path)
    ds = open_dataset("folder_csv", tmp_path, FILES_DEFAULTS)
    assert isinstance(ds, FolderCSV) and ds.load_vocabulary()["label"].tolist() == ["Car horn", "Dog bark", "Rain"]
    assert "your own data" in download_hint("folder_csv") and "dev.csv" in download_hint("folder_csv")


def test_files_set_for_folder_csv_is_an_error_not_ignored(tmp_path):
    with pytest.raises(ValueError,
                       match=r"`files` sets \{'dev_audio': 'my_audio'\}, which the folder_csv format does not use"):
        open_dataset("folder_csv", tmp_path, {**FILES_DEFAULTS, "dev_audio": "my_audio"})


def _dataset_config(root: Path, **settings) -> dict:
    """``datasets.<name>`` with the schema's defaults, as the workflow's checks see it."""
    return {"format": "folder_csv", "root": str(root), "files": FILES_DEFAULTS, "generate": {"activate": False},
            "classes": None, "phases": [2, 1], **settings}


def test_class_list_checked_against_dev_csv_before_any_job(tmp_path):
    write_folder(tmp_path)
    assert check_class_list("mine", _dataset_config(tmp_path, phases=[2, 1])) == []
    assert check_class_list("mine", _dataset_config(tmp_path, classes=["Rain", "Dog bark"], phases=[1, 1])) == []
    [msg] = check_class_list("mine", _dataset_config(tmp_path, classes=["Rain", "Dog brak"], phases=[1, 1]))
    assert "datasets.mine.classes, entry 2: 'Dog brak' is not in" in msg and str(tmp_path / "dev.csv") in msg
    assert "closest: 'Dog bark'" in msg
    [msg] = check_class_list("mine", _dataset_config(tmp_path, phases=[2, 2]))
    assert "whole vocabulary (3 names" in msg
    write_folder(tmp_path, dev="fname,labels\na.wav,Rain\na.wav,Rain\n")
    [msg] = check_class_list("mine", _dataset_config(tmp_path))
    assert "datasets.mine" in msg and f"{tmp_path / 'dev.csv'}, line 3" in msg


def test_lists_made_from_own_data(tmp_path):
    dev = ("fname,labels,split\n" "a.wav,Rain,train\n" 'b.wav,"Rain,Dog bark",train\n' "c.wav,Car horn,val\n"
           "d.wav,Dog bark,train\n")
    eval_ = 'fname,labels\ne1.wav,Rain\ne2.wav,"Car horn,Dog bark"\n'
    write_folder(tmp_path / "data", dev=dev, eval_=eval_)
    out = tmp_path / "lists"
    outputs = {"classes": out / "classes.tsv", "clips_dev": out / "clips_dev.tsv", "clips_eval": out / "clips_eval.tsv",
               "train": [out / f"train_phase{k}.tsv" for k in range(2)],
               "test": [out / f"test_phase{k}.tsv" for k in range(2)]}
    W.make_lists(outputs=outputs, root=str(tmp_path / "data"), classes=["Rain", "Dog bark"], phases=[1, 1],
                 assignment="latest", train_splits=["train"], format="folder_csv", files=FILES_DEFAULTS)
    assert pd.read_csv(outputs["classes"], sep="\t")["name"].tolist() == ["Rain", "Dog bark"]
    train = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in outputs["train"]]
    assert train[0]["fname"].tolist() == ["a.wav"]
    assert train[1].to_dict("list") == {"fname": ["b.wav", "d.wav"], "labels": ["Dog bark", "Dog bark"],
                                        "all_labels": ["Rain|Dog bark", "Dog bark"]}  # c.wav is val
    test1 = pd.read_csv(outputs["test"][1], sep="\t", keep_default_na=False)
    assert test1["labels"].tolist() == ["Rain", "Dog bark"]


# -- the real workflow -------------------------------------------------------------------------

CLASSES = ["Bird song", "Car horn", "Dog bark", "Door knock", "Rain", "Siren"]  # sorted, as the vocabulary is
RATE = 16000


def _tone(rng: np.random.Generator, classes: list[str], seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.02 * rng.standard_normal(len(t))
    for name in classes:
        x += 0.3 * np.sin(2 * np.pi * (400 + 500 * CLASSES.index(name)) * t)
    return (x / max(1.0, np.abs(x).max())).astype(np.float32)


def make_own_data(root: Path) -> None:
    """6 classes of sine tones; .wav and .flac files; dev.csv without a split column. Evaluation
    files have names of their own ("test_..."): a name in both CSVs is refused as a leak."""
    rng = np.random.default_rng(0)
    for split, per_class in (("dev", 4), ("eval", 3)):
        (root / f"{split}_audio").mkdir(parents=True)
        rows = ["fname,labels"]
        for c, name in enumerate(CLASSES):
            for j in range(per_class):
                labels = [name] + ([CLASSES[(c + 1) % len(CLASSES)]] if j == per_class - 1 else [])
                prefix = "test_" if split == "eval" else ""
                fname = f"{prefix}{name.replace(' ', '_').lower()}_{j}.{'flac' if j % 2 else 'wav'}"
                sf.write(root / f"{split}_audio" / fname, _tone(rng, labels, 0.7 + 0.1 * j), RATE)
                rows.append(f'{fname},"{",".join(labels)}"')
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.workflow
def test_workflow_runs_on_own_data(tmp_path):
    make_own_data(tmp_path / "my_sounds")
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["run"]["datasets"] = ["mine"]
    config["datasets"] = {"mine": {"format": "folder_csv", "root": str(tmp_path / "my_sounds"), "classes": None,
                                   "phases": [2, 1, 1, 1, 1], "features": TINY["datasets"]["synth"]["features"]}}
    work = tmp_path / "work"
    work.mkdir()
    write_config(work, config)
    snakemake(work, "results/mine/bn/report.html")
    assert (work / "results/mine/bn/report.html").stat().st_size > 0
    classes = pd.read_csv(work / "results/mine/lists/classes.tsv", sep="\t")
    assert classes["name"].tolist() == CLASSES and classes["phase"].tolist() == [0, 0, 1, 2, 3, 4]
    table = pd.read_csv(work / "results/mine/bn/metrics.tsv", sep="\t")
    per_class = {s.removeprefix("class:") for s in table["subset"].unique() if s.startswith("class:")}
    assert per_class == set(CLASSES)
    final = table[(table["method"] == "joint") & (table["phase"] == 4) & (table["subset"] == "all")
                  & (table["metric"] == "map")]
    assert len(final) == 1 and 0.0 <= final["value"].iloc[0] <= 1.0

"""The real workflow on a dataset in AudioSet's on-disk layout, written by the test: strong-label
TSVs with overlapping events, events of non-target classes, ids starting with ``-`` and holding
``_``, audio at several sample rates and channel counts, and clips that are missing, unreadable
or empty.

- ``on_bad_audio: skip``: the run goes through to the report, which counts and names the clips
  left out; the clips of other rates and channel counts are used.
- ``on_bad_audio: stop``: the run stops, the failed job's log names the file, the list it came
  from and the fix; with ``--keep-going`` every job that does not need the failed one finishes
  and keeps its output; once the files are fixed, the split whose audio changed is extracted
  again (its audio fingerprint changed) and what depends on it runs; the lists and the other
  split's features are kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# mid, display name; the first six are the run's classes, Squeak is not
VOCAB = [("/m/09x0r", "Speech"), ("/m/0bt9lr", "Dog"), ("/m/04rlf", "Music"), ("/m/01yrx", "Cat"),
         ("/m/0k4j", "Car"), ("/m/015p6", "Bird"), ("/m/07q6cd_", "Squeak")]
CLASSES = [name for _, name in VOCAB[:6]]
# audio formats the clips cycle through: (sample rate, channels)
FORMATS = [(16000, 1), (44100, 2), (22050, 1), (48000, 2)]
BAD = {"missing": "-bad_missing_0", "corrupt": "-bad_corrupt_0", "empty": "-bad_empty_0"}
SECONDS = 2.0


def _segment(i: int, split: str) -> tuple[str, str, int]:
    """(segment id, YouTube id, start ms); ids start with '-' and hold '_' every third clip."""
    yt = f"-x{split}_{i:03d}q" if i % 3 == 0 else f"{split}{i:04d}abcde"
    start_ms = 1000 * (i % 7)
    return f"{yt}_{start_ms}", yt, start_ms


def _wave(rng: np.random.Generator, mids: list[str], rate: int, channels: int) -> np.ndarray:
    """A tone per target class (its own frequency) over noise: learnable, and quick to make."""
    t = np.arange(int(SECONDS * rate)) / rate
    x = 0.05 * rng.standard_normal(len(t))
    for mid in mids:
        k = [m for m, _ in VOCAB].index(mid)
        x += 0.3 * np.sin(2 * np.pi * (300 + 450 * k) * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def make_audioset(root: Path) -> dict[str, dict[str, set[str]]]:
    """Writes the dataset; returns split -> audio file stem -> target classes of the good clips."""
    rng = np.random.default_rng(0)
    truth: dict[str, dict[str, set[str]]] = {"train": {}, "eval": {}}
    name_of = dict(VOCAB)
    header = "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
    (root / "mid_to_display_name.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "mid_to_display_name.tsv").write_text("".join(f"{m}\t{n}\n" for m, n in VOCAB))
    mids = [m for m, _ in VOCAB[:6]]
    for split, folder, per_class in (("train", "train", 5), ("eval", "eval", 3)):
        rows, n = [], 0
        (root / folder).mkdir(exist_ok=True)
        for c in range(6):
            for j in range(per_class):
                seg, yt, start_ms = _segment(n, split)
                events = [mids[c]] + ([mids[(c + 1) % 6]] if j % 2 else [])
                # overlapping events; the same class twice in one segment
                rows += [f"{seg}\t0.0\t{SECONDS * 0.7:.3f}\t{events[0]}\n",
                         f"{seg}\t{SECONDS * 0.5:.3f}\t{SECONDS:.3f}\t{events[-1]}\n",
                         f"{seg}\t{SECONDS * 0.8:.3f}\t{SECONDS:.3f}\t{events[0]}\n"]
                if j == 0:
                    rows.append(f"{seg}\t0.2\t0.4\t/m/07q6cd_\n")  # an event of a non-target class
                rate, channels = FORMATS[n % len(FORMATS)]
                sf.write(root / folder / f"Y{yt}_{start_ms}.wav", _wave(rng, events, rate, channels), rate,
                         subtype="PCM_16")
                truth[split][f"Y{yt}_{start_ms}"] = {name_of[m] for m in events}
                n += 1
        # a segment holding only a non-target class: in no list
        seg, yt, start_ms = _segment(n, split)
        rows.append(f"{seg}\t0.0\t{SECONDS}\t/m/07q6cd_\n")
        sf.write(root / folder / f"Y{yt}_{start_ms}.wav", _wave(rng, [], 16000, 1), 16000, subtype="PCM_16")
        if split == "train":
            # bad clips, all Speech; the clip list is sorted by name, so they fall in shard 0
            for seg in BAD.values():
                rows.append(f"{seg}\t0.0\t{SECONDS}\t/m/09x0r\n")
            (root / folder / f"Y{BAD['corrupt']}.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
            sf.write(root / folder / f"Y{BAD['empty']}.wav", np.zeros((0, 1)), 16000)
        (root / f"audioset_{split}_strong.tsv").write_text(header + "".join(rows))
    return truth


def fix_bad_clips(root: Path) -> None:
    rng = np.random.default_rng(1)
    for seg in BAD.values():
        sf.write(root / "train" / f"Y{seg}.wav", _wave(rng, ["/m/09x0r"], 16000, 1), 16000, subtype="PCM_16")


def config(root: Path, on_bad_audio: str) -> dict:
    return {
        "run": {"datasets": ["audioset"], "norms": ["bn"], "methods": ["finetune", "indl_fd_od"], "seeds": [0]},
        "datasets": {"audioset": {
            "format": "audioset", "root": str(root), "classes": CLASSES, "phases": [2, 1, 1, 1, 1],
            "train_splits": ["train"], "on_bad_audio": on_bad_audio, "shards": 2,
            "features": {"sample_rate": 8000, "n_fft": 256, "win_length": 256, "hop_length": 80, "n_mels": 64,
                         "f_min": 20.0, "f_max": 3900.0, "excerpt_seconds": SECONDS, "hop_seconds": SECONDS,
                         "dtype": "float16"},
        }},
        "model": {"width": 4},
        "training": {"in_memory": False,
                     "base": {"epochs": 1, "batch_size": 8, "lr": 0.01, "lr_min": 0.0001},
                     "incremental": {"epochs": 1, "batch_size": 8, "lr": 0.001, "lr_min": 0.0001}},
        "methods": {"finetune": {"data": "current", "bce_on": "all"},
                    "indl_fd_od": {"data": "current", "bce_on": "new", "feature_distill": 1.0,
                                   "output_distill": "kl"}},
        "cka": {"methods": ["indl_fd_od"], "batch_size": 8},
    }


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "results/audioset/bn/report.html", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args, "--configfile", str(workdir / "config.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)  # only bounds a hang


def _setup(tmp_path: Path, on_bad_audio: str) -> tuple[Path, Path]:
    root, workdir = tmp_path / "AudioSet", tmp_path / "run"
    make_audioset(root)
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config(root, on_bad_audio), sort_keys=False))
    return root, workdir


@pytest.mark.workflow
def test_skip_runs_to_the_report_and_counts_the_bad_clips(tmp_path):
    root, workdir = _setup(tmp_path, "skip")
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = workdir / "results/audioset"

    dev = pd.read_csv(res / "lists/clips_dev.tsv", sep="\t", dtype=str)
    # the non-target-only segment is in no list; the bad ones are listed (the data says so)
    assert len(dev) == 6 * 5 + len(BAD)
    assert set(BAD.values()) <= set(dev["fname"].str.removeprefix("Y"))
    assert any(f.startswith("Y-x") and f.count("_") >= 2 for f in dev["fname"])

    report = (res / "bn/report.html").read_text()
    assert f"{len(BAD)} clip(s) were skipped at feature extraction" in report
    for seg in BAD.values():
        assert seg in report
    log = "".join(p.read_text() for p in (workdir / "logs/audioset").glob("extract_features_dev_shard*.log"))
    for what, seg in BAD.items():
        assert f"skipping clip 'Y{seg}'" in log, (what, log[-2000:])

    metrics = pd.read_csv(res / "bn/metrics.tsv", sep="\t")
    assert sorted(metrics["phase"].unique()) == [0, 1, 2, 3, 4]
    assert set(metrics["method"]) == {"finetune", "indl_fd_od"}
    # every good training clip was used: 30 excerpts (one per 2-s clip) of 6 classes, of 4 formats
    import h5py

    with h5py.File(res / "features/dev.h5", "r") as h5:
        assert h5["features"].shape[0] == 6 * 5
        assert h5["features"].dtype == np.float16
        # self-contained: the features are copied in, the shards (temp) deleted once joined
        assert not h5["features"].is_virtual
        assert h5["features"][:].any()
    assert not list((res / "features").rglob("shard*.h5"))


@pytest.mark.workflow
def test_stop_names_the_file_keeps_finished_work_and_reruns_only_the_changed_split(tmp_path):
    root, workdir = _setup(tmp_path, "stop")
    # as the SLURM profile: one retry, and the attempt passed to the jobs as a resource
    proc = snakemake(workdir, "--keep-going", "--retries", "1", "--default-resources", "attempt=attempt")
    assert proc.returncode != 0
    res = workdir / "results/audioset"
    feats = res / "features"
    # the bad clips sort first in the dev clip list: shard 0 of 2 fails, on the first of them
    assert not (feats / "dev/shard0of2.h5").exists()
    assert not list(feats.rglob("*.tmp*")), "a failed job left a partial file"
    log = (workdir / "logs/audioset/extract_features_dev_shard0of2.log").read_text()
    corrupt = root / "train" / f"Y{BAD['corrupt']}.wav"
    assert f"cannot decode audio file {corrupt}" in log
    # the retry stopped at once, repeating the message, instead of extracting the shard again
    assert "not retried: this job stopped on bad input in its previous attempt" in log
    assert "lists/clips_dev.tsv" in log and "on_bad_audio: skip" in log
    # what did not need the failed job finished and is kept; the other shard too, though it is
    # temporary: Snakemake deletes it only once the join that needs it has run
    other_shard = feats / "dev/shard1of2.h5"
    for path in (res / "lists/clips_dev.tsv", other_shard, feats / "eval.h5"):
        assert path.exists(), path
    # fixing the files changes the dev audio (its fingerprint: names, sizes, times), so the dev
    # split is extracted again, both shards (the rerun's join deletes the shard: its extraction
    # log tells whether it was extracted again); the lists and the eval features are kept
    kept = [res / "lists/clips_dev.tsv", feats / "eval.h5"]
    times = {p: os.stat(p).st_mtime_ns for p in kept}
    shard1_log = workdir / "logs/audioset/extract_features_dev_shard1of2.log"
    shard1_time = os.stat(shard1_log).st_mtime_ns

    fix_bad_clips(root)
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for path, t in times.items():
        assert os.stat(path).st_mtime_ns == t, f"{path} was computed again"
    assert os.stat(shard1_log).st_mtime_ns != shard1_time, "the changed dev audio was not extracted again"
    import h5py

    with h5py.File(feats / "dev.h5", "r") as h5:
        assert h5["features"].shape[0] == 6 * 5 + len(BAD)
        assert not h5["features"].is_virtual
    assert not other_shard.exists()
    assert "were skipped at feature extraction" not in (res / "bn/report.html").read_text()


def _papers_record(path: str, vector: list[int]) -> str:
    """A record as the papers' code prints it: numpy's float array, wrapped after 3 entries."""
    entries = [f"{v}." for v in vector]
    lines = [" ".join(entries[i:i + 3]) for i in range(0, len(entries), 3)]
    return f"{path}_[" + "\n ".join(lines) + "]"


def write_papers_lists(folder: Path, truth: dict[str, dict[str, set[str]]], groups: list[list[str]]) -> None:
    """The papers' list files of a split made independently of the library: phase k trains on
    the clips holding a class of group k (vector over group k); the test list after phase k
    holds the eval clips with a seen class (vector over every seen class)."""
    folder.mkdir()
    seen: list[str] = []
    for k, group in enumerate(groups):
        seen += group
        train = [_papers_record(f"/data/Audioset/train/{f}.wav", [int(c in labels) for c in group])
                 for f, labels in truth["train"].items() if labels & set(group)]
        test = [_papers_record(f"/scratch/eval/{f}.wav", [int(c in labels) for c in seen])
                for f, labels in truth["eval"].items() if labels & set(seen)]
        (folder / f"train_phase_{k}.txt").write_text("\n".join(train) + "\n")
        (folder / ("test_phase_" + "_".join(map(str, range(k + 1))) + ".txt")).write_text("\n".join(test) + "\n")


@pytest.mark.workflow
def test_imported_papers_lists_run_without_the_metadata(tmp_path):
    root, workdir = tmp_path / "AudioSet", tmp_path / "run"
    truth = make_audioset(root)
    groups = [CLASSES[:2]] + [[c] for c in CLASSES[2:]]
    write_papers_lists(tmp_path / "papers", truth, groups)
    # the published split and the audio are enough: the label TSVs are not needed
    for tsv in ("audioset_train_strong.tsv", "audioset_eval_strong.tsv"):
        (root / tsv).unlink()
    cfg = config(root, "stop")
    cfg["datasets"]["audioset"]["papers_lists"] = str(tmp_path / "papers")
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    # a papers' list file missing: the run stops at once, naming it and the key
    moved = tmp_path / "papers/test_phase_0_1.txt"
    moved.rename(tmp_path / "aside.txt")
    proc = snakemake(workdir, "-n")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert str(moved) in text and "datasets.audioset.papers_lists" in text
    (tmp_path / "aside.txt").rename(moved)

    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lists = workdir / "results/audioset/lists"
    seen: list[str] = []
    for k, group in enumerate(groups):
        seen += group
        train = pd.read_csv(lists / f"train_phase{k}.tsv", sep="\t", dtype=str, keep_default_na=False)
        expected = {f: sorted(labels & set(group)) for f, labels in truth["train"].items() if labels & set(group)}
        assert dict(zip(train["fname"], train["labels"].str.split("|").map(sorted))) == expected
        test = pd.read_csv(lists / f"test_phase{k}.tsv", sep="\t", dtype=str, keep_default_na=False)
        expected = {f: sorted(labels & set(seen)) for f, labels in truth["eval"].items() if labels & set(seen)}
        assert dict(zip(test["fname"], test["labels"].str.split("|").map(sorted))) == expected
    report = (workdir / "results/audioset/bn/report.html").read_text()
    assert f"imported from the papers&#x27; list files in {tmp_path / 'papers'}" in report or \
        f"imported from the papers' list files in {tmp_path / 'papers'}" in report
    metrics = pd.read_csv(workdir / "results/audioset/bn/metrics.tsv", sep="\t")
    assert sorted(metrics["phase"].unique()) == [0, 1, 2, 3, 4]

    # editing a papers' list (its first record dropped) makes the lists, and what they feed, run again
    path = tmp_path / "papers/train_phase_4.txt"
    path.write_text("\n".join(path.read_text().split("\n")[1:]))
    proc = snakemake(workdir, "-n", "--quiet", "rules")
    assert proc.returncode == 0
    assert "make_lists_audioset" in proc.stdout and "train_incremental" in proc.stdout


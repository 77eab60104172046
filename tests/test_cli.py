"""The ``cilaudio`` command line: tagging with a tiny checkpoint, list import."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cilaudio import lists as L
from cilaudio.checkpoint import save_checkpoint
from cilaudio.cli import main
from cilaudio.features import FeatureSettings, LogMel, extract_to_hdf5
from cilaudio.model import CNN14, ModelSettings
from cilaudio.phases import PhaseSplit

SETTINGS = FeatureSettings(sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=64, f_min=20.0,
                           f_max=3900.0, excerpt_seconds=2.0, hop_seconds=2.0, min_last_seconds=0.5)
CLASSES = [f"Sound {i}, kind {i % 3}" for i in range(7)]
DURATIONS = {"a.wav": 3.3, "b.wav": 1.7, "c.wav": 0.4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = CNN14(ModelSettings(norm="bn", width=4, n_mels=64, n_classes=len(CLASSES))).eval()
    with torch.no_grad():  # spread the scores so the top-k order is clear
        model.classifier.weight.mul_(20.0)
        model.classifier.bias.copy_(torch.linspace(-2, 2, len(CLASSES)))
    bare = root / "bare.pt"
    save_checkpoint(bare, model=model, classes=CLASSES, phase=0, method="base", seed=0, params={})
    state = torch.load(bare, weights_only=False)
    state["features"] = dataclasses.asdict(SETTINGS)
    full = root / "full.pt"
    torch.save(state, full)
    rng = np.random.default_rng(0)
    clips = {}
    for name, seconds in DURATIONS.items():
        t = np.arange(int(round(seconds * SETTINGS.sample_rate))) / SETTINGS.sample_rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        clips[name] = root / name
        sf.write(clips[name], wave.astype(np.float32), SETTINGS.sample_rate, subtype="FLOAT")
    h5 = root / "dev.h5"
    extract_to_hdf5([("a", clips["a.wav"])], h5, SETTINGS)
    return {"model": model, "bare": bare, "full": full, "clips": clips, "h5": h5, "root": root}


def _reference_scores(model: CNN14, path: Path, *, excerpt_s: float) -> np.ndarray:
    """Sigmoid scores per excerpt, computed here: soundfile, zero-padded numpy slices, LogMel."""
    wave, rate = sf.read(path, dtype="float32")
    assert rate == SETTINGS.sample_rate
    size = int(excerpt_s * rate)
    n = _n_excerpts(len(wave) / rate, excerpt_s)
    x = np.zeros((n, size), dtype=np.float32)
    for i in range(n):
        piece = wave[i * size : (i + 1) * size]
        x[i, : len(piece)] = piece
    settings = dataclasses.replace(SETTINGS, excerpt_seconds=excerpt_s, hop_seconds=excerpt_s)
    with torch.no_grad():
        logits, _ = model(LogMel(settings)(torch.from_numpy(x)))
    return torch.sigmoid(logits).numpy()


def _n_excerpts(duration: float, excerpt_s: float) -> int:
    """Closed form: full excerpts, plus a last partial one of at least 0.5 s; at least one."""
    full = math.floor(duration / excerpt_s + 1e-9)
    rest = duration - full * excerpt_s
    return max(1, full + (1 if rest >= 0.5 - 1e-9 else 0))


def _rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    assert lines[0].split("\t") == ["file", "start", "end", "rank", "class", "score"]
    return [line.split("\t") for line in lines[1:]]


def test_tag_prints_top_k_per_clip(setup, capsys) -> None:
    clips = [setup["clips"][n] for n in DURATIONS]
    assert main(["tag", str(setup["full"]), *map(str, clips), "--top", "3", "--device", "cpu"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 3 * len(clips)
    for path, seconds in zip(clips, DURATIONS.values()):
        mine = [r for r in rows if r[0] == str(path)]
        scores = _reference_scores(setup["model"], path, excerpt_s=2.0).max(axis=0)
        want = np.argsort(-scores)[:3]
        assert [r[4] for r in mine] == [CLASSES[j] for j in want]
        assert [int(r[3]) for r in mine] == [1, 2, 3]
        np.testing.assert_allclose([float(r[5]) for r in mine], scores[want], atol=1e-4)
        assert float(mine[0][1]) == 0.0
        assert float(mine[0][2]) == pytest.approx(seconds, abs=1e-3)


def test_tag_per_second_rows_and_threshold(setup, capsys) -> None:
    clips = [setup["clips"][n] for n in DURATIONS]
    assert main(["tag", str(setup["full"]), *map(str, clips), "--per-second", "--top", "2"]) == 0
    rows = _rows(capsys.readouterr().out)
    for path, seconds in zip(clips, DURATIONS.values()):
        mine = [r for r in rows if r[0] == str(path)]
        n = _n_excerpts(seconds, 1.0)
        assert len(mine) == 2 * n
        assert sorted({float(r[1]) for r in mine}) == [float(s) for s in range(n)]
        scores = _reference_scores(setup["model"], path, excerpt_s=1.0)  # (seconds, classes)
        for s in range(n):
            got = [r[4] for r in mine if float(r[1]) == s]
            assert got == [CLASSES[j] for j in np.argsort(-scores[s])[:2]]
    # --threshold keeps only scores at or above it; --top 0 means every class
    path = setup["clips"]["a.wav"]
    scores = _reference_scores(setup["model"], path, excerpt_s=2.0).max(axis=0)
    threshold = float(np.sort(scores)[len(CLASSES) // 2]) - 1e-3
    assert main(["tag", str(setup["full"]), str(path), "--top", "0", "--threshold", str(threshold)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert {r[4] for r in rows} == {CLASSES[j] for j in np.flatnonzero(scores >= threshold)}


def test_feature_settings_from_hdf5_when_checkpoint_lacks_them(setup, capsys) -> None:
    path = str(setup["clips"]["b.wav"])
    assert main(["tag", str(setup["bare"]), path]) == 1
    err = capsys.readouterr().err
    assert "--features" in err and str(setup["bare"]) in err
    assert main(["tag", str(setup["bare"]), path, "--features", str(setup["h5"])]) == 0
    via_h5 = capsys.readouterr().out
    assert main(["tag", str(setup["full"]), path]) == 0
    assert capsys.readouterr().out == via_h5


def test_missing_files_are_named(setup, capsys) -> None:
    missing = setup["root"] / "nope.wav"
    assert main(["tag", str(setup["full"]), str(setup["clips"]["a.wav"]), str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    missing_pt = setup["root"] / "nope.pt"
    assert main(["tag", str(missing_pt), str(setup["clips"]["a.wav"])]) == 1
    assert str(missing_pt) in capsys.readouterr().err
    assert main(["tag", str(setup["bare"]), str(setup["clips"]["a.wav"]), "--features",
                 str(setup["root"] / "none.h5")]) == 1
    assert "none.h5" in capsys.readouterr().err


def test_import_lists_command(tmp_path: Path, capsys) -> None:
    names = [f"c{i}" for i in range(6)]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    papers = tmp_path / "papers"
    papers.mkdir()
    sizes = [4, 1, 1]
    for k in range(3):
        n_train = sizes[k]
        (papers / f"train_phase_{k}.txt").write_text(f"/x/Ytr{k}_0.wav_{np.eye(n_train)[0]}\n")
        n_seen = sum(sizes[: k + 1])
        name = "test_phase_" + "_".join(str(j) for j in range(k + 1)) + ".txt"
        (papers / name).write_text(f"/x/Yte_0.wav_{np.ones(n_seen)}.npy\n")
    out = tmp_path / "lists"
    code = main(["import-lists", str(papers), str(out), "--classes", str(tmp_path / "classes.txt"),
                 "--phases", "4", "1", "1"])
    assert code == 0
    assert L.read_classes(out / "classes.tsv") == PhaseSplit.from_sizes(names, sizes)
    assert L.read_list(out / "train_phase1.tsv")["labels"].tolist() == ["c4"]
    assert L.read_list(out / "test_phase2.tsv")["labels"].tolist() == ["|".join(names)]
    # classes.tsv written by the workflow is accepted as it is
    assert main(["import-lists", str(papers), str(tmp_path / "again"), "--classes", str(out / "classes.tsv")]) == 0
    assert (tmp_path / "again" / "test_phase2.tsv").read_text() == (out / "test_phase2.tsv").read_text()
    capsys.readouterr()
    # wrong phase sizes: the vector length error names the file
    assert main(["import-lists", str(papers), str(tmp_path / "bad"), "--classes", str(tmp_path / "classes.txt"),
                 "--phases", "3", "2", "1"]) == 1
    assert "train_phase_0.txt" in capsys.readouterr().err

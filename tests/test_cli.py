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
from cilaudio.phases import ClassSplit

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
    assert L.read_classes(out / "classes.tsv") == ClassSplit.from_sizes(names, sizes)
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


def _write(path: Path, wave: np.ndarray, rate: int = SETTINGS.sample_rate) -> Path:
    sf.write(path, np.asarray(wave, dtype=np.float32), rate, subtype="FLOAT")
    return path


def _tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SETTINGS.sample_rate))) / SETTINGS.sample_rate
    return amplitude * np.sin(2 * np.pi * 440 * t)


@pytest.mark.parametrize("option, value", [("--threshold", "0"), ("--threshold", "1"), ("--threshold", "1.5"),
                                           ("--threshold", "-0.2"), ("--threshold", "nan"),
                                           ("--threshold", "high"), ("--top", "-1")])
def test_tag_options_out_of_range_are_argparse_errors(setup, capsys, option, value) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tag", str(setup["full"]), str(setup["clips"]["a.wav"]), option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and value in err
    assert ("(0, 1)" if option == "--threshold" else ">= 0") in err


def test_tag_warns_about_silent_short_and_cancelling_audio(setup, tmp_path, capsys) -> None:
    tone = _tone(3.0)
    clips = {
        "silent": _write(tmp_path / "silent.wav", np.zeros(3 * SETTINGS.sample_rate)),
        "hiss": _write(tmp_path / "hiss.wav", 1e-5 * np.random.default_rng(1).standard_normal(len(tone))),
        "antiphase": _write(tmp_path / "antiphase.wav", np.stack([tone, -tone], axis=1)),
        "short": setup["clips"]["c.wav"],  # 0.4 s, excerpts are 2 s
        "quiet": _write(tmp_path / "quiet.wav", _tone(3.0, amplitude=0.01)),  # -40 dBFS is not silence
        "stereo": _write(tmp_path / "stereo.wav", np.stack([tone, 0.5 * tone], axis=1)),
    }
    assert main(["tag", str(setup["full"]), *map(str, clips.values()), "--top", "1"]) == 0
    out, err = capsys.readouterr()
    assert sorted(r[0] for r in _rows(out)) == sorted(map(str, clips.values()))  # rows for all of them
    warnings = {name: [line for line in err.splitlines() if str(path) in line] for name, path in clips.items()}
    assert all(line.startswith("cilaudio tag: warning: ") for lines in warnings.values() for line in lines)
    assert len(warnings["silent"]) == 1 and "silent" in warnings["silent"][0]
    assert len(warnings["hiss"]) == 1 and "silent" in warnings["hiss"][0]
    assert len(warnings["antiphase"]) == 1 and "cancel" in warnings["antiphase"][0]
    assert len(warnings["short"]) == 1 and "shorter than" in warnings["short"][0]
    assert "padded" in warnings["short"][0] and "2.0" in warnings["short"][0]
    assert warnings["quiet"] == [] and warnings["stereo"] == []


def test_tag_short_warning_follows_the_excerpt_length(setup, capsys) -> None:
    # b.wav (1.7 s) is shorter than the 2-s excerpts, but not than the 1-s ones of --per-second
    path = str(setup["clips"]["b.wav"])
    assert main(["tag", str(setup["full"]), path]) == 0
    assert "shorter than" in capsys.readouterr().err
    assert main(["tag", str(setup["full"]), path, "--per-second"]) == 0
    assert capsys.readouterr().err == ""


def test_tag_prints_a_row_for_clips_with_no_class_above_the_threshold(setup, capsys) -> None:
    clips = [setup["clips"][n] for n in DURATIONS]
    best = {path: _reference_scores(setup["model"], path, excerpt_s=2.0).max(axis=0) for path in clips}
    high, low = max(clips, key=lambda p: best[p].max()), min(clips, key=lambda p: best[p].max())
    threshold = (best[high].max() + best[low].max()) / 2
    assert main(["tag", str(setup["full"]), *map(str, clips), "--threshold", f"{threshold:.6f}"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert {r[0] for r in rows} == set(map(str, clips))  # every clip has a row
    for path in clips:
        mine = [r for r in rows if r[0] == str(path)]
        if best[path].max() >= threshold:
            assert [int(r[3]) for r in mine] == list(range(1, len(mine) + 1))
            assert all(float(r[5]) >= threshold for r in mine)
        else:  # one row of rank 0: the best class and its score, below the threshold
            assert len(mine) == 1 and mine[0][3] == "0"
            assert mine[0][4] == CLASSES[int(np.argmax(best[path]))]
            assert float(mine[0][5]) == pytest.approx(best[path].max(), abs=1e-4)
            assert float(mine[0][5]) < threshold
    assert any(best[p].max() < threshold for p in clips)
    # per second too: a threshold above every score leaves one rank-0 row per second
    assert main(["tag", str(setup["full"]), str(setup["clips"]["a.wav"]), "--per-second",
                 "--threshold", "0.999"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r[3] for r in rows] == ["0"] * _n_excerpts(DURATIONS["a.wav"], 1.0)
    assert [float(r[1]) for r in rows] == [0.0, 1.0, 2.0]


def test_tag_says_which_argument_is_wrong(setup, tmp_path, capsys) -> None:
    wav, ckpt = str(setup["clips"]["a.wav"]), str(setup["full"])
    # an audio file where the checkpoint goes
    assert main(["tag", wav, ckpt]) == 1
    out, err = capsys.readouterr()
    assert "first argument must be a phase checkpoint" in err and wav in err
    assert "CHECKPOINT CLIP [CLIP ...]" in err
    assert "delete" not in err and out == ""
    # a file that is neither
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert main(["tag", str(notes), wav]) == 1
    err = capsys.readouterr().err
    assert "first argument must be a phase checkpoint" in err and str(notes) in err and "delete" not in err
    # a checkpoint among the clips: named as such, the audio still tagged
    assert main(["tag", ckpt, wav, ckpt, "--top", "1"]) == 1
    out, err = capsys.readouterr()
    assert [r[0] for r in _rows(out)] == [wav]
    assert f"{ckpt} is a checkpoint, not an audio file" in err and "CHECKPOINT CLIP [CLIP ...]" in err


def test_tag_bad_files_do_not_abort_the_batch(setup, tmp_path, capsys) -> None:
    good = [str(setup["clips"]["a.wav"]), str(setup["clips"]["b.wav"])]
    assert main(["tag", str(setup["full"]), *good]) == 0
    clean = capsys.readouterr().out
    missing = tmp_path / "missing.wav"
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEjunk")
    nan_wave = _tone(1.0)
    nan_wave[100] = np.nan
    nan = _write(tmp_path / "nan.wav", nan_wave)
    args = [good[0], str(missing), str(corrupt), str(nan), good[1]]
    assert main(["tag", str(setup["full"]), *args]) == 1
    out, err = capsys.readouterr()
    assert out == clean  # the good files' rows, as without the bad ones
    for path, reason in [(missing, "does not exist"), (corrupt, "cannot decode"), (nan, "non-finite")]:
        line = [line for line in err.splitlines() if str(path) in line]
        assert len(line) == 1 and reason in line[0], (path, err)
    assert "3 of 5" in err

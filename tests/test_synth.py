"""Built-in synthetic benchmark: layout, determinism, label statistics and learnability."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from cilaudio import synth
from cilaudio.fsd50k import FSD50K

GROUPS = (30, 5, 5, 5, 5)
DEV_CLIPS, EVAL_CLIPS = (200, 60, 60, 60, 60), (80, 20, 20, 20, 20)
SR = 16000
MIN_S, MAX_S = 0.6, 2.0
MAX_EVENTS = 4


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> FSD50K:
    root = tmp_path_factory.mktemp("synth")
    synth.generate(
        root, seed=3, group_sizes=GROUPS, dev_clips=DEV_CLIPS, eval_clips=EVAL_CLIPS,
        sample_rate=SR, min_seconds=MIN_S, max_seconds=MAX_S, max_events=MAX_EVENTS,
    )
    return FSD50K(root)


def _groups_of(vocab_labels: list[str]) -> dict[str, int]:
    bounds = np.cumsum(GROUPS)
    return {lab: int(np.searchsorted(bounds, i, side="right")) for i, lab in enumerate(vocab_labels)}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


SMALL = dict(group_sizes=(4, 2, 2), dev_clips=(12, 6, 6), eval_clips=(8, 4, 4), sample_rate=16000)


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    synth.generate(tmp_path / "a", seed=7, **SMALL)
    synth.generate(tmp_path / "b", seed=7, **SMALL)
    synth.generate(tmp_path / "c", seed=8, **SMALL)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert len(a) == 3 + 24 + 16
    assert a == b  # CSVs and audio byte-identical
    gt = "FSD50K.ground_truth/"
    assert a[gt + "vocabulary.csv"] != c[gt + "vocabulary.csv"] or a[gt + "dev.csv"] != c[gt + "dev.csv"]
    common = [k for k in a if k.endswith(".wav") and k in c]
    assert common and all(a[k] != c[k] for k in common)


def test_layout_and_reader(bench: FSD50K) -> None:
    gt = bench.ground_truth_dir
    vocab_text = (gt / "vocabulary.csv").read_text()
    dev_text = (gt / "dev.csv").read_text()
    eval_text = (gt / "eval.csv").read_text()
    assert vocab_text.startswith("0,")  # no header
    assert dev_text.splitlines()[0] == "fname,labels,mids,split"
    assert eval_text.splitlines()[0] == "fname,labels,mids"
    quoted = re.compile(r'^\d+,"[^",]+(,[^",]+)+","/synth/c\d+(,/synth/c\d+)+"', re.M)
    assert quoted.search(dev_text) and quoted.search(eval_text)

    vocab = bench.load_vocabulary()
    assert len(vocab) == sum(GROUPS) == len(vocab_text.splitlines())
    assert vocab["index"].tolist() == list(range(sum(GROUPS)))
    assert vocab["label"].is_unique and vocab["mid"].is_unique
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", lab) for lab in vocab["label"])
    assert all(re.fullmatch(r"/synth/c\d\d", m) for m in vocab["mid"])

    dev, ev = bench.load_split("dev"), bench.load_split("eval")
    assert len(dev) == sum(DEV_CLIPS) and len(ev) == sum(EVAL_CLIPS)
    assert set(dev["split"]) == {"train", "val"}
    assert abs((dev["split"] == "val").mean() - 0.1) < 0.05
    assert all(f.isdigit() for f in list(dev["fname"]) + list(ev["fname"]))
    assert not set(dev["fname"]) & set(ev["fname"])
    mid_of = dict(zip(vocab["label"], vocab["mid"]))
    for df in (dev, ev):
        for labels, mids in zip(df["labels"], df["mids"]):
            assert set(labels) <= set(mid_of) and len(set(labels)) == len(labels)
            assert tuple(mid_of[lab] for lab in labels) == mids
    for split, df in (("dev", dev), ("eval", ev)):
        on_disk = {p.stem for p in bench.audio_dir(split).glob("*.wav")}
        assert on_disk == set(df["fname"])
    assert not list(bench.root.rglob("*.tmp-*"))


def test_wav_format_and_band(bench: FSD50K) -> None:
    ev = bench.load_split("eval")
    for fname in ev["fname"][::25]:
        path = bench.audio_path("eval", fname)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
        assert MIN_S * SR - 1 <= info.frames <= MAX_S * SR + 1
        x, _ = sf.read(path)
        assert 0.45 < np.max(np.abs(x)) <= 0.51
        f, pxx = welch(x, fs=SR, nperseg=2048)
        outside = pxx[(f < 80) | (f > 7200)].sum() / pxx.sum()
        assert outside < 1e-3


def test_phase_structure_and_old_sounds(bench: FSD50K) -> None:
    vocab = bench.load_vocabulary()["label"].tolist()
    group = _groups_of(vocab)
    for split, clips in (("dev", DEV_CLIPS), ("eval", EVAL_CLIPS)):
        df = bench.load_split(split)
        clip_group = [max(group[lab] for lab in labels) for labels in df["labels"]]
        # A clip of phase g holds a class of g and none of a later phase, so the newest group of
        # its labels recovers the requested number of clips per phase, in file order.
        assert clip_group == [g for g, n in enumerate(clips) for _ in range(n)]
        assert max(len(labels) for labels in df["labels"]) <= MAX_EVENTS
        # Base-class sounds fill the later phases' clips (FSD50K's rates: 1.4 per clip).
        later = [labels for labels, cg in zip(df["labels"], clip_group) if cg > 0]
        old = np.mean([sum(group[lab] < max(group[x] for x in labels) for lab in labels) for labels in later])
        assert 0.9 < old < 2.0
        # Every class has clips in dev (the rarest FSD50K class has about 6 % of its phase's clips).
        if split == "dev":
            assert set(vocab) == {lab for labels in df["labels"] for lab in labels}


def test_groups_mix_families(bench: FSD50K) -> None:
    vocab = bench.load_vocabulary()["label"].tolist()
    bounds = np.concatenate([[0], np.cumsum(GROUPS)])
    for g in range(len(GROUPS)):
        families = {lab.split("_")[0] for lab in vocab[bounds[g] : bounds[g + 1]]}
        assert len(families) >= 2


def test_learnable(bench: FSD50K) -> None:
    """Log-mel mean/std + one-vs-rest logistic regression: clearly above chance, not trivial."""
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    labels = bench.load_vocabulary()["label"].tolist()
    mel = torchaudio.transforms.MelSpectrogram(
        SR, n_fft=1024, hop_length=160, n_mels=64, f_min=20.0, f_max=7000.0
    )

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        df = bench.load_split(split)
        x = np.zeros((len(df), 128))
        y = np.zeros((len(df), len(labels)), dtype=int)
        for i, (fname, labs) in enumerate(zip(df["fname"], df["labels"])):
            audio, _ = sf.read(bench.audio_path(split, fname), dtype="float32")
            logmel = torch.log(mel(torch.from_numpy(audio)) + 1e-6)  # (mel, time)
            x[i] = np.concatenate([logmel.mean(1).numpy(), logmel.std(1).numpy()])
            y[i, [labels.index(lab) for lab in labs]] = 1
        return x, y

    xd, yd = features("dev")
    xe, ye = features("eval")
    scaler = StandardScaler().fit(xd)
    clf = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=2000)).fit(scaler.transform(xd), yd)
    scores = clf.decision_function(scaler.transform(xe))
    ap = np.array([average_precision_score(ye[:, c], scores[:, c]) for c in range(len(labels))])
    assert ap.mean() > 0.6  # chance is the label prior, about 0.03
    assert ap.min() < 0.99  # some classes are confusable


def test_progress_and_interrupted_run(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    synth.generate(tmp_path / "ok", progress=lambda d, t: calls.append((d, t)), **SMALL)
    total = 24 + 16
    assert calls[-1] == (total, total) and len(calls) == total

    class Stop(Exception):
        pass

    def stop_after(done: int, _total: int) -> None:
        if done == 5:
            raise Stop

    # Interrupting a regeneration over a finished dataset must not leave metadata behind.
    with pytest.raises(Stop):
        synth.generate(tmp_path / "ok", seed=1, progress=stop_after, **SMALL)
    ds = FSD50K(tmp_path / "ok")
    assert not any(p.exists() for p in ds.metadata_files())
    assert not list((tmp_path / "ok").rglob("*.tmp-*"))


def test_rejects_too_many_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most"):
        synth.generate(tmp_path, group_sizes=(60, 10), dev_clips=(1, 1), eval_clips=(1, 1))

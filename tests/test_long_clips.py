"""Long clips in own data: a clip that holds most of a phase's excerpts is named (training log,
report, console), and extraction streams a long clip instead of reading it whole.

The expected features are computed here from the whole clip (soundfile, a channel mean,
torchaudio's resampler on the whole signal, zero-padded slices, the log-mel); the excerpt
counts of the warnings are counted by hand.
"""

from __future__ import annotations

import logging
import tracemalloc

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from cilaudio import excerpts as E
from cilaudio import workflow_steps as W
from cilaudio.features import FeatureSettings, LogMel, extract_to_hdf5

SETTINGS = FeatureSettings(sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=32, f_min=20.0,
                           f_max=3900.0, excerpt_seconds=1.0, hop_seconds=1.0, min_last_seconds=0.5)


def _write(path, seconds: float, rate: int, channels: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / seconds))[:, None] + 0.05 * rng.standard_normal((n, channels))
    sf.write(path, wave.astype(np.float32), rate, subtype="FLOAT")
    return path


def test_a_long_clip_is_streamed_with_the_features_of_the_whole_clip(tmp_path):
    # 20.3 s of stereo at 11025 Hz: 20 excerpts of 1 s, and a last one of 0.3 s < 0.5 s is dropped
    path = _write(tmp_path / "long.wav", 20.3, 11025, channels=2)
    out = tmp_path / "f.h5"
    assert extract_to_hdf5([("long", path)], out, SETTINGS, block_excerpts=3, chunk=4) == 20
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = torchaudio.transforms.Resample(rate, 8000)(torch.from_numpy(data.mean(axis=1))).numpy()
    pieces = np.zeros((20, 8000), dtype=np.float32)
    for i in range(20):
        piece = wave[i * 8000:(i + 1) * 8000]
        pieces[i, :len(piece)] = piece
    expected = LogMel(SETTINGS)(torch.from_numpy(pieces)).numpy()
    with h5py.File(out, "r") as h5:
        np.testing.assert_allclose(h5["features"][:], expected, rtol=0, atol=1e-3)
        assert h5["start"][:].tolist() == list(range(20))
        assert set(h5["fname"].asstr()[:]) == {"long"}


def test_extraction_memory_does_not_grow_with_a_clip(tmp_path):
    # 400 s at 8 kHz: 12.8 MB as float32 samples read whole; streamed, blocks of 8 excerpts (256 kB)
    path = _write(tmp_path / "hour.wav", 400.0, 8000)
    whole = 400 * 8000 * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = extract_to_hdf5([("hour", path)], tmp_path / "f.h5", SETTINGS, block_excerpts=8, chunk=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 400
    assert peak < whole / 4, f"peak {peak / 1e6:.1f} MB for a clip of {whole / 1e6:.1f} MB"


def test_a_damaged_block_of_a_long_clip_skips_the_whole_clip(tmp_path):
    path = _write(tmp_path / "long.wav", 12.0, 8000)
    data, rate = sf.read(path, dtype="float32")
    data[10 * 8000 + 5] = np.nan  # in the last block: excerpts 9-11
    sf.write(path, data, rate, subtype="FLOAT")
    short = _write(tmp_path / "short.wav", 2.0, 8000)
    out = tmp_path / "f.h5"
    assert extract_to_hdf5([("short", short), ("long", path)], out, SETTINGS, block_excerpts=3, chunk=2,
                           on_bad_audio="skip") == 2
    with h5py.File(out, "r") as h5:
        assert set(h5["fname"].asstr()[:]) == {"short"}
        assert "80005" in h5.attrs["skipped"]  # the file's sample number of the first NaN


# --- a clip that dominates a phase ----------------------------------------------------------------

def _index(counts: dict[str, int]) -> dict[str, np.ndarray]:
    rows, out = 0, {}
    for name, n in counts.items():
        out[name] = np.arange(rows, rows + n)
        rows += n
    return out


def test_dominant_clips_by_hand_counts():
    # 30 ten-second clips of one excerpt and a one-hour clip of 360: 360 / 390 = 92.3 %
    counts = {f"c{i}": 1 for i in range(30)} | {"hour": 360}
    assert E.dominant_clips(list(counts), _index(counts)) == [("hour", 360, 390)]
    # 11 excerpts of 60 (18 %, under 20 %), and a list of 3 short clips (50 % but 2 excerpts): not flagged
    counts = {f"c{i}": 1 for i in range(49)} | {"long": 11}
    assert E.dominant_clips(list(counts), _index(counts)) == []
    assert E.dominant_clips(["a", "b", "c"], _index({"a": 1, "b": 1, "c": 2})) == []


def _list(path, names):
    pd.DataFrame({"fname": names, "labels": "A", "all_labels": "A"}).to_csv(path, sep="\t", index=False)
    return path


def _features(path, counts: dict[str, int]):
    n = sum(counts.values())
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=np.zeros((n, 4, 2), dtype=np.float32))
        h5.create_dataset("fname", data=np.array([f for f, k in counts.items() for _ in range(k)], dtype=object),
                          dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.zeros(n, dtype=np.float32))
        h5.attrs["settings"] = "{}"
        h5.attrs["skipped"] = "{}"
    return path


def test_the_report_and_the_console_name_a_clip_that_dominates_a_phase(tmp_path, caplog):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classes.tsv").write_text("x")
    dev = {f"d{i}": 1 for i in range(20)} | {"hour": 360}
    _list(lists / "train_phase0.tsv", [f"d{i}" for i in range(10)])
    _list(lists / "train_phase1.tsv", [f"d{i}" for i in range(10, 20)] + ["hour"])  # 360 of 370: 97.3 %
    ev = {f"e{i}": 1 for i in range(8)}
    _list(lists / "test_phase0.tsv", [f"e{i}" for i in range(4)])
    _list(lists / "test_phase1.tsv", [f"e{i}" for i in range(8)])
    features = [str(_features(tmp_path / "dev.h5", dev)), str(_features(tmp_path / "eval.h5", ev))]
    with caplog.at_level(logging.WARNING):
        (warning,) = W.list_warnings(str(lists / "classes.tsv"), features, n_phases=2)
    assert "'hour'" in warning and "360 of the 370" in warning and "97.3%" in warning
    assert "phase 1's training list" in warning and "train_phase1.tsv" in warning
    (record,) = [r for r in caplog.records if "'hour'" in r.getMessage()]
    assert getattr(record, "console", False)  # shown on the console by the job's logging

"""Log-mel features against librosa, excerpt cutting, audio loading and the HDF5 file."""

import h5py
import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from cilaudio.features import FeatureSettings, LogMel, cut_excerpts, extract_to_hdf5, load_audio, skipped_clips

SMALL = FeatureSettings(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64,
                        f_min=20.0, f_max=7000.0, excerpt_seconds=1.0, hop_seconds=1.0,
                        min_last_seconds=0.5)


@pytest.mark.parametrize("settings", [SMALL, FeatureSettings()])  # the benchmark's and the papers'
def test_logmel_matches_librosa(settings):
    rng = np.random.default_rng(0)
    n = settings.excerpt_samples  # 1 s (benchmark) or 10 s (papers)
    t = np.arange(n) / settings.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = LogMel(settings)(torch.from_numpy(wave)).numpy()  # (frames, mels)
    ref = librosa.feature.melspectrogram(
        y=wave, sr=settings.sample_rate, n_fft=settings.n_fft, hop_length=settings.hop_length,
        win_length=settings.win_length, window="hann", center=True, pad_mode="reflect", power=2.0,
        n_mels=settings.n_mels, fmin=settings.f_min, fmax=settings.f_max, htk=True, norm=None,
    )
    ref = np.log(ref + np.finfo(np.float32).eps).T
    assert ours.shape == ref.shape == (settings.n_frames, settings.n_mels)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-3)


def test_papers_frame_count():
    # 10 s at 32 kHz with hop 320 gives 1001 frames (method.md)
    assert FeatureSettings().n_frames == 1001


def test_cut_excerpts_counts_and_padding():
    sr = SMALL.sample_rate
    for seconds, expected in [(0.3, [0.0]), (1.0, [0.0]), (1.4, [0.0]), (1.5, [0.0, 1.0]),
                              (2.0, [0.0, 1.0]), (2.6, [0.0, 1.0, 2.0])]:
        wave = np.arange(int(seconds * sr), dtype=np.float32) + 1
        pieces, starts = cut_excerpts(wave, SMALL)
        assert starts == expected, seconds
        assert pieces.shape == (len(expected), sr)
        # content is the clip's, the rest zeros
        for piece, start in zip(pieces, starts):
            s = int(start * sr)
            n = min(sr, len(wave) - s)
            np.testing.assert_array_equal(piece[:n], wave[s:s + n])
            assert not piece[n:].any()


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = 0.1 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], 1), sr_in, subtype="PCM_16")
    out = load_audio(tmp_path / "stereo.wav", 16000)
    expected = resample_poly((left + right) / 2, 160, 441)
    assert len(out) == 16000
    core = slice(500, -500)  # filters differ at the edges
    assert np.max(np.abs(out[core] - expected[core])) < 0.01


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="corrupt.wav"):
        load_audio(tmp_path / "corrupt.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(ValueError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav", 16000)


def test_extract_to_hdf5(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name, seconds in [("10", 0.7), ("11", 2.0), ("12", 1.2)]:
        wave = 0.2 * rng.standard_normal(int(seconds * 16000))
        sf.write(tmp_path / f"{name}.wav", wave, 16000, subtype="PCM_16")
        paths.append((name, tmp_path / f"{name}.wav"))
    out = tmp_path / "feat.h5"
    n = extract_to_hdf5(paths, out, SMALL, chunk=2)
    assert n == 4
    with h5py.File(out, "r") as h5:
        assert h5["features"].shape == (4, 101, 64)
        assert list(h5["fname"].asstr()[:]) == ["10", "11", "11", "12"]
        assert h5["start"][:].tolist() == [0.0, 0.0, 1.0, 0.0]
        stored = h5["features"][2]
    wave = load_audio(tmp_path / "11.wav", 16000)
    direct = LogMel(SMALL)(torch.from_numpy(cut_excerpts(wave, SMALL)[0][1])).numpy()
    np.testing.assert_allclose(stored, direct, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_extraction_leaves_no_final_file(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(16000), 16000)
    out = tmp_path / "feat.h5"
    with pytest.raises(FileNotFoundError):
        extract_to_hdf5([("ok", tmp_path / "ok.wav"), ("gone", tmp_path / "gone.wav")], out, SMALL)
    assert not out.exists()
    assert not list(tmp_path.glob("*.h5"))


def _non_finite_wav(path, bad: float) -> None:
    """A 1-s float WAV (16 kHz) of noise with one sample set to ``bad`` (NaN or +-inf)."""
    wave = 0.1 * np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    wave[8000] = bad
    sf.write(path, wave, 16000, subtype="FLOAT")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_audio_refuses_non_finite_samples(tmp_path, bad):
    _non_finite_wav(tmp_path / "bad.wav", bad)
    with pytest.raises(ValueError, match=r"bad\.wav.*non-finite"):
        load_audio(tmp_path / "bad.wav", 16000)


def test_extraction_stops_on_non_finite_audio(tmp_path):
    sf.write(tmp_path / "ok.wav", 0.1 * np.ones(16000), 16000)
    _non_finite_wav(tmp_path / "nan.wav", np.nan)
    out = tmp_path / "feat.h5"
    with pytest.raises(ValueError, match=r"nan\.wav.*'nan' of my list.*on_bad_audio: skip"):
        extract_to_hdf5([("ok", tmp_path / "ok.wav"), ("nan", tmp_path / "nan.wav")], out, SMALL,
                        source="my list")
    assert not out.exists()


def test_extraction_skips_non_finite_audio(tmp_path):
    sf.write(tmp_path / "ok.wav", 0.1 * np.ones(16000), 16000)
    _non_finite_wav(tmp_path / "nan.wav", np.nan)
    _non_finite_wav(tmp_path / "inf.wav", np.inf)
    out = tmp_path / "feat.h5"
    clips = [("ok", tmp_path / "ok.wav"), ("nan", tmp_path / "nan.wav"), ("inf", tmp_path / "inf.wav")]
    assert extract_to_hdf5(clips, out, SMALL, on_bad_audio="skip") == 1
    skipped = skipped_clips(out)
    assert sorted(skipped) == ["inf", "nan"]
    assert "nan.wav" in skipped["nan"] and "non-finite" in skipped["nan"]
    with h5py.File(out, "r") as h5:
        assert list(h5["fname"].asstr()[:]) == ["ok"]
        assert np.isfinite(h5["features"][:]).all()

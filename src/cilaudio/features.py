"""Log-mel features: audio read with soundfile, computed with torchaudio, stored in HDF5.

Each clip is downmixed to mono, resampled to the feature sample rate, cut into fixed-length
excerpts (``excerpt_seconds`` long, every ``hop_seconds``; a last partial excerpt is kept,
zero-padded, when it is at least ``min_last_seconds`` long, and a clip shorter than one excerpt
always gives one padded excerpt), and each excerpt becomes a (frames, mels) log-mel matrix.

The HDF5 file holds ``features`` (n_excerpts, frames, mels), ``fname`` (n_excerpts,) and
``start`` (n_excerpts,) seconds, plus the settings as attributes. It is written in chunks, so
extraction memory does not grow with the number of clips.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import soundfile as sf
import torch
import torchaudio

from .atomic import atomic_path
from .progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSettings:
    """Log-mel parameters (the papers': 32 kHz, n_fft = win = 1024, hop 320, 64 mels, 20 Hz-14 kHz)."""

    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 14000.0
    excerpt_seconds: float = 10.0
    hop_seconds: float = 10.0
    min_last_seconds: float = 0.5
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.f_max > self.sample_rate / 2:
            raise ValueError(
                f"f_max {self.f_max} Hz is above the Nyquist frequency of {self.sample_rate} Hz; "
                "lower features.f_max or raise features.sample_rate"
            )
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"features.dtype must be float32 or float16, not {self.dtype!r}")

    @property
    def excerpt_samples(self) -> int:
        return int(round(self.excerpt_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        # centred STFT: one frame per hop plus one
        return self.excerpt_samples // self.hop_length + 1


class LogMel(torch.nn.Module):
    """torchaudio MelSpectrogram (HTK scale, no Slaney norm, centred, reflect pad, power 2),
    then natural log of (mel power + float32 eps). (..., samples) -> (..., frames, mels)."""

    def __init__(self, settings: FeatureSettings) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=settings.sample_rate,
            n_fft=settings.n_fft,
            win_length=settings.win_length,
            hop_length=settings.hop_length,
            f_min=settings.f_min,
            f_max=settings.f_max,
            n_mels=settings.n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
            window_fn=torch.hann_window,
        )
        self.eps = float(np.finfo(np.float32).eps)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave)  # (..., mels, frames)
        return torch.log(mel + self.eps).transpose(-1, -2)  # (..., frames, mels)


@functools.lru_cache(maxsize=8)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    """One resampling filter per rate pair, built once (not once per clip)."""
    return torchaudio.transforms.Resample(source_rate, target_rate)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read a clip with soundfile, downmix to mono and resample to ``sample_rate``.

    Returns float32 samples. Errors name the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = _resampler(rate, sample_rate)(torch.from_numpy(mono)).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def cut_excerpts(wave: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, list[float]]:
    """Cut a mono clip into (n, excerpt_samples) zero-padded excerpts and their start times."""
    size = settings.excerpt_samples
    hop = int(round(settings.hop_seconds * settings.sample_rate))
    min_last = int(round(settings.min_last_seconds * settings.sample_rate))
    starts = [0]
    while starts[-1] + size < len(wave):
        nxt = starts[-1] + hop
        if len(wave) - nxt < min_last:
            break
        starts.append(nxt)
    out = np.zeros((len(starts), size), dtype=np.float32)
    for i, s in enumerate(starts):
        piece = wave[s : s + size]
        out[i, : len(piece)] = piece
    return out, [s / settings.sample_rate for s in starts]


BAD_AUDIO = ("stop", "skip")


def extract_to_hdf5(
    audio_paths: Sequence[tuple[str, Path]],
    out_path: str | os.PathLike,
    settings: FeatureSettings,
    *,
    chunk: int = 256,
    threads: int = 1,
    on_bad_audio: str = "stop",
    source: str = "the clip list",
) -> int:
    """Extract log-mel excerpts of ``audio_paths`` ((fname, path) pairs) into ``out_path``.

    A clip that is missing, unreadable or empty stops the extraction with a message naming the
    file and ``source`` (``on_bad_audio="stop"``), or is skipped and recorded in the file's
    ``skipped`` attribute (``"skip"``). Written to a temporary file and renamed at the end: a
    killed job leaves no final-named, truncated HDF5. Returns the number of excerpts written.
    """
    if on_bad_audio not in BAD_AUDIO:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO}, not {on_bad_audio!r}")
    torch.set_num_threads(max(1, threads))
    logmel = LogMel(settings)
    dtype = np.dtype(settings.dtype)
    frames, mels = settings.n_frames, settings.n_mels
    progress = Progress(total=len(audio_paths), what="clips", logger=log)
    skipped: dict[str, str] = {}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        feats = h5.create_dataset(
            "features", shape=(0, frames, mels), maxshape=(None, frames, mels),
            dtype=dtype, chunks=(1, frames, mels),
        )
        names = h5.create_dataset("fname", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        starts = h5.create_dataset("start", shape=(0,), maxshape=(None,), dtype="float32")
        h5.attrs["settings"] = json.dumps(asdict(settings))
        buf_x: list[np.ndarray] = []
        buf_n: list[str] = []
        buf_s: list[float] = []

        def flush() -> None:
            if not buf_x:
                return
            x = np.concatenate(buf_x).astype(dtype)
            n0 = feats.shape[0]
            for ds in (feats, names, starts):
                ds.resize(n0 + len(x), axis=0)
            feats[n0:] = x
            names[n0:] = buf_n
            starts[n0:] = buf_s
            buf_x.clear(), buf_n.clear(), buf_s.clear()

        with torch.inference_mode():
            for fname, path in audio_paths:
                try:
                    wave = load_audio(path, settings.sample_rate)
                except (FileNotFoundError, ValueError) as exc:
                    if on_bad_audio == "stop":
                        raise type(exc)(
                            f"{exc} (clip {fname!r} of {source}). Fix or restore the file, or set "
                            "`on_bad_audio: skip` for this dataset to leave such clips out") from exc
                    skipped[fname] = str(exc)
                    log.warning(f"skipping clip {fname!r} of {source}: {exc}")
                    progress.step()
                    continue
                pieces, offsets = cut_excerpts(wave, settings)
                buf_x.append(logmel(torch.from_numpy(pieces)).numpy())
                buf_n.extend([fname] * len(offsets))
                buf_s.extend(offsets)
                if sum(len(b) for b in buf_x) >= chunk:
                    flush()
                progress.step()
            flush()
        h5.attrs["skipped"] = json.dumps(skipped)
        n_written = feats.shape[0]
    progress.done(f"({len(skipped)} skipped)" if skipped else "")
    return n_written


def join_shards(shards: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> int:
    """Join shard files into one without copying the features: ``features`` becomes an HDF5
    virtual dataset over the shards (which must stay beside it, in the same folder or below);
    the small ``fname``/``start`` index and the skipped clips are copied."""
    out_path = Path(out_path)
    metas, settings, skipped = [], None, {}
    for path in shards:
        with h5py.File(path, "r") as h5:
            shape, dtype = h5["features"].shape, h5["features"].dtype
            metas.append((Path(path), shape, dtype, h5["fname"].asstr()[:], h5["start"][:]))
            if settings is None:
                settings = h5.attrs["settings"]
            elif h5.attrs["settings"] != settings:
                raise ValueError(f"{path} was extracted with other feature settings than {shards[0]}; "
                                 "delete the shards and rerun the extraction")
            skipped.update(json.loads(h5.attrs.get("skipped", "{}")))
    total = sum(m[1][0] for m in metas)
    frames, mels = metas[0][1][1:]
    layout = h5py.VirtualLayout(shape=(total, frames, mels), dtype=metas[0][2])
    n0 = 0
    for path, shape, dtype, _, _ in metas:
        if shape[0]:
            rel = os.path.relpath(path, out_path.parent)
            layout[n0:n0 + shape[0]] = h5py.VirtualSource(rel, "features", shape=shape)
        n0 += shape[0]
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_virtual_dataset("features", layout)
        h5.create_dataset("fname", data=np.concatenate([m[3] for m in metas]).astype(object),
                          dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.concatenate([m[4] for m in metas]).astype("float32"))
        h5.attrs["settings"] = settings
        h5.attrs["skipped"] = json.dumps(skipped)
        h5.attrs["shards"] = json.dumps([os.path.relpath(m[0], out_path.parent) for m in metas])
    return total


def shard_of(items: Sequence, shard: int, n_shards: int) -> list:
    """The contiguous ``shard``-th of ``n_shards`` near-equal parts of ``items``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    bounds = np.linspace(0, len(items), n_shards + 1).round().astype(int)
    return list(items[bounds[shard]:bounds[shard + 1]])


def skipped_clips(h5_path: str | os.PathLike) -> dict[str, str]:
    """Clips that extraction left out (``on_bad_audio: skip``) and why."""
    with h5py.File(h5_path, "r") as h5:
        return json.loads(h5.attrs.get("skipped", "{}"))


def read_settings(h5_path: str | os.PathLike) -> dict:
    with h5py.File(h5_path, "r") as h5:
        return json.loads(h5.attrs["settings"])

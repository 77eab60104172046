"""Log-mel features: audio read with soundfile, computed with torchaudio, stored in HDF5.

Each clip is downmixed to mono, resampled to the feature sample rate, cut into fixed-length
excerpts (``excerpt_seconds`` long, every ``hop_seconds``; a last partial excerpt is kept,
zero-padded, when it is at least ``min_last_seconds`` long, and a clip shorter than one excerpt
always gives one padded excerpt), and each excerpt becomes a (frames, mels) log-mel matrix.

The HDF5 file holds ``features`` (n_excerpts, frames, mels), ``fname`` (n_excerpts,) and
``start`` (n_excerpts,) seconds, plus the settings and the skipped clips as attributes. It is
written in chunks, so extraction memory does not grow with the number of clips. The workflow
extracts a split in shards and joins them into one self-contained file (``join_shards``: a copy,
not a view of the shards). Every reader opens feature files with ``open_features``, which refuses
an incomplete file or one written by the older join (an HDF5 virtual dataset over the shards).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
import soundfile as sf
import torch
import torchaudio

from .atomic import atomic_path
from .progress import Progress

log = logging.getLogger(__name__)


#: How the log-mel energies are computed (:class:`LogMel`): ``papers`` - torchaudio's HTK mel
#: scale without area normalisation, natural log of (power + float32 eps), the papers' features;
#: ``panns`` - PANNs' own front end (librosa's Slaney mel scale with Slaney area normalisation,
#: ``10 * log10(max(power, 1e-10))``, ref 1, no top_db), for a network started from PANNs' weights.
FRONT_ENDS = ("papers", "panns")


@dataclass(frozen=True)
class FeatureSettings:
    """Log-mel parameters (the papers': 32 kHz, n_fft = win = 1024, hop 320, 64 mels, 20 Hz-14 kHz;
    PANNs': the same with 50 Hz-14 kHz and ``front_end="panns"``)."""

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
    front_end: str = "papers"

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"features.front_end must be one of {list(FRONT_ENDS)}, not {self.front_end!r}")
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
    """torchaudio MelSpectrogram (Hann window, centred, reflect pad, power 2), then the log of
    ``settings.front_end`` (:data:`FRONT_ENDS`): ``papers`` - HTK scale, no area normalisation,
    natural log of (mel power + float32 eps); ``panns`` - Slaney scale with Slaney area
    normalisation (librosa's filters), ``10 * log10(max(mel power, 1e-10))``.
    (..., samples) -> (..., frames, mels)."""

    def __init__(self, settings: FeatureSettings) -> None:
        super().__init__()
        self.panns = settings.front_end == "panns"
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
            norm="slaney" if self.panns else None,
            mel_scale="slaney" if self.panns else "htk",
            window_fn=torch.hann_window,
        )
        self.eps = float(np.finfo(np.float32).eps)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave)  # (..., mels, frames)
        if self.panns:  # power_to_db with ref 1.0, amin 1e-10 and no top_db, as PANNs
            return (10.0 * torch.log10(torch.clamp(mel, min=1e-10))).transpose(-1, -2)
        return torch.log(mel + self.eps).transpose(-1, -2)  # (..., frames, mels)


@functools.lru_cache(maxsize=8)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    """One resampling filter per rate pair, built once (not once per clip)."""
    return torchaudio.transforms.Resample(source_rate, target_rate)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read a clip with soundfile, downmix to mono and resample to ``sample_rate``.

    Returns float32 samples. A missing file raises FileNotFoundError; an undecodable or empty
    file, or one holding NaN or infinite samples, raises ValueError. Errors name the file.
    """
    data, rate = read_audio(path)
    return to_mono(data, rate, sample_rate)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A clip as soundfile decodes it: float32 (samples, channels) and its sample rate, with
    the errors of :func:`load_audio` (callers that look at the channels use this)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    _check_finite(data, path)
    return data, rate


def to_mono(data: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Mean of the channels of ``data`` (samples, channels), resampled from ``rate`` to
    ``sample_rate``; contiguous float32."""
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = _resampler(rate, sample_rate)(torch.from_numpy(mono)).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_finite(data: np.ndarray, path: Path, offset: int = 0) -> None:
    """Refuse NaN or infinite samples (float WAV/FLAC can hold them): they would turn every
    log-mel value of the clip, and any score computed from it, into NaN without an error.
    ``offset``: the file's sample number of ``data``'s first row (a block of a long clip)."""
    bad = ~np.isfinite(data)  # (samples, channels)
    if bad.any():
        count, first = int(bad.sum()), offset + int(np.argmax(bad.any(axis=1)))
        raise ValueError(f"audio file {path} holds {count} non-finite sample{'s' * (count != 1)} (NaN "
                         f"or infinite; the first at sample {first}): the file is damaged")


def excerpt_starts(n_samples: int, settings: FeatureSettings) -> list[int]:
    """The first sample of each excerpt of a mono clip of ``n_samples`` (at the feature rate)."""
    size = settings.excerpt_samples
    hop = int(round(settings.hop_seconds * settings.sample_rate))
    min_last = int(round(settings.min_last_seconds * settings.sample_rate))
    starts = [0]
    while starts[-1] + size < n_samples:
        nxt = starts[-1] + hop
        if n_samples - nxt < min_last:
            break
        starts.append(nxt)
    return starts


def _pieces(wave: np.ndarray, starts: Sequence[int], size: int, offset: int = 0) -> np.ndarray:
    """(len(starts), size) zero-padded excerpts of ``wave``, whose first sample is the clip's
    sample ``offset``."""
    out = np.zeros((len(starts), size), dtype=np.float32)
    for i, s in enumerate(starts):
        piece = wave[s - offset : s - offset + size]
        out[i, : len(piece)] = piece
    return out


def cut_excerpts(wave: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, list[float]]:
    """Cut a mono clip into (n, excerpt_samples) zero-padded excerpts and their start times."""
    starts = excerpt_starts(len(wave), settings)
    return _pieces(wave, starts, settings.excerpt_samples), [s / settings.sample_rate for s in starts]


#: A clip of more excerpts than this is read, downmixed, resampled and cut this many excerpts at
#: a time (:func:`clip_excerpts`), so that extraction memory does not grow with a clip's length
#: (a one-hour clip read whole took 3 GB). Shorter clips are read whole, as before.
STREAM_EXCERPTS = 32


def clip_excerpts(path: str | os.PathLike, settings: FeatureSettings, *,
                  block_excerpts: int = STREAM_EXCERPTS) -> Iterator[tuple[np.ndarray, list[float]]]:
    """The excerpts of a clip as :func:`load_audio` and :func:`cut_excerpts` give them, in
    blocks of at most ``block_excerpts``: ``(pieces (n, excerpt_samples), start seconds)``.

    A clip of at most ``block_excerpts`` excerpts is one block, read whole. A longer one is
    streamed: each block reads only the samples of its excerpts from the file (with soundfile's
    seek), plus the resampling filter's reach on either side taken at the filter's period, so
    that its samples are those of the whole clip resampled at once (up to float rounding). Errors
    are those of :func:`load_audio`; a damaged block of a long clip raises after the earlier
    blocks were yielded (the caller drops them).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {exc}") from exc
    rate, frames, sr = int(info.samplerate), int(info.frames), settings.sample_rate
    if rate == sr:
        n_out, period, reach, new = frames, 1, 0, 1
    else:
        resampler = _resampler(rate, sr)
        period, new = rate // resampler.gcd, sr // resampler.gcd  # input / output samples per filter step
        reach = -(-resampler.width // period) * period  # the filter's reach, in whole filter steps
        n_out = int(torch.ceil(torch.as_tensor(new * frames / period)).long())  # as torchaudio cuts it
    starts = excerpt_starts(n_out, settings) if frames > 0 else [0]
    if frames <= 0 or len(starts) <= block_excerpts:
        wave = load_audio(path, sr)
        yield cut_excerpts(wave, settings)
        return
    size = settings.excerpt_samples
    with sf.SoundFile(str(path)) as f:
        for g in range(0, len(starts), block_excerpts):
            group = starts[g : g + block_excerpts]
            o0, o1 = group[0], min(group[-1] + size, n_out)  # output samples [o0, o1) of this block
            a = max(0, (o0 // new) * period - reach)  # input samples [a, b), whole filter steps
            b = min(frames, -(-o1 // new) * period + reach)
            f.seek(a)
            data = f.read(b - a, dtype="float32", always_2d=True)  # (samples, channels)
            _check_finite(data, path, offset=a)
            wave = to_mono(data, rate, sr)  # output sample a // period * new onwards
            yield _pieces(wave, group, size, offset=a // period * new), [s / sr for s in group]


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
    block_excerpts: int = STREAM_EXCERPTS,
) -> int:
    """Extract log-mel excerpts of ``audio_paths`` ((fname, path) pairs) into ``out_path``.

    A clip that is missing, unreadable, empty or holds NaN/infinite samples stops the
    extraction with a message naming the file and ``source`` (``on_bad_audio="stop"``), or is
    skipped and recorded in the file's ``skipped`` attribute (``"skip"``). Written to a
    temporary file and renamed at the end: a killed job leaves no final-named, truncated HDF5.
    A clip longer than ``block_excerpts`` excerpts is streamed (:func:`clip_excerpts`): memory
    holds at most ``max(chunk, block_excerpts)`` excerpts, however long the clip.
    Returns the number of excerpts written.
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
                before = feats.shape[0] + sum(len(b) for b in buf_x)  # rows before this clip's
                try:
                    for pieces, offsets in clip_excerpts(path, settings, block_excerpts=block_excerpts):
                        buf_x.append(logmel(torch.from_numpy(pieces)).numpy())
                        buf_n.extend([fname] * len(offsets))
                        buf_s.extend(offsets)
                        if sum(len(b) for b in buf_x) >= chunk:
                            flush()
                except (FileNotFoundError, ValueError) as exc:
                    if on_bad_audio == "stop":
                        raise type(exc)(
                            f"{exc} (clip {fname!r} of {source}). Fix or restore the file, or set "
                            "`on_bad_audio: skip` for this dataset to leave such clips out") from exc
                    flush()  # then drop the rows of the clip's blocks read before the damage
                    for ds in (feats, names, starts):
                        ds.resize(before, axis=0)
                    skipped[fname] = str(exc)
                    log.warning(f"skipping clip {fname!r} of {source}: {exc}")
                progress.step()
            flush()
        h5.attrs["skipped"] = json.dumps(skipped)
        n_written = feats.shape[0]
    progress.done(f"({len(skipped)} skipped)" if skipped else "")
    return n_written


JOIN_BLOCK_BYTES = 64 * 2**20  # features copied per read/write when joining shards


def join_shards(
    shards: Sequence[str | os.PathLike], out_path: str | os.PathLike, *, block_bytes: int = JOIN_BLOCK_BYTES
) -> int:
    """Join shard files into one self-contained feature file: the shards' features, ``fname``
    and ``start`` are copied, in shard order, into real datasets of ``out_path`` (chunked one
    excerpt a chunk as extraction writes them, same dtype and compression as the shards), and
    their skipped clips merged. Nothing reads the shards afterwards (the workflow deletes them);
    their names stay in the ``shards`` attribute as provenance.

    Copied shard by shard in blocks of at most ``block_bytes`` of features, so memory does not
    grow with the shards' size; written to a temporary file and renamed at the end, so a failed
    join leaves no final-named file. Returns the number of excerpts joined.
    """
    if not shards:
        raise ValueError(f"no shard to join into {out_path}")
    out_path = Path(out_path)
    plan = _join_plan(shards)
    frames, mels = plan["shape"]
    row_bytes = frames * mels * plan["dtype"].itemsize
    block = max(1, int(block_bytes) // row_bytes)
    progress = Progress(total=plan["total"], what="excerpts", logger=log, prefix="join: ")
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset(
            "features", shape=(plan["total"], frames, mels), maxshape=(None, frames, mels),
            dtype=plan["dtype"], chunks=(1, frames, mels), **plan["filters"],
        )
        h5.create_dataset("fname", shape=(plan["total"],), dtype=h5py.string_dtype())
        h5.create_dataset("start", shape=(plan["total"],), dtype="float32")
        n0 = 0
        for path in shards:
            with open_features(path) as src:
                n0 = _copy_rows(src, h5, n0, block, progress)
        h5.attrs["settings"] = plan["settings"]
        h5.attrs["skipped"] = json.dumps(plan["skipped"])
        h5.attrs["shards"] = json.dumps([os.path.relpath(p, out_path.parent) for p in shards])
    progress.done()
    return plan["total"]


def _join_plan(shards: Sequence[str | os.PathLike]) -> dict:
    """Rows, excerpt shape, dtype, compression, settings and skipped clips of the joined file;
    shards extracted with other settings stop the join."""
    plan: dict = {"total": 0, "skipped": {}}
    for path in shards:
        with open_features(path) as h5:
            feats = h5["features"]
            if "settings" not in plan:
                plan.update(settings=h5.attrs["settings"], shape=feats.shape[1:], dtype=feats.dtype,
                            filters=_filters(feats))
            elif h5.attrs["settings"] != plan["settings"] or feats.shape[1:] != plan["shape"] \
                    or feats.dtype != plan["dtype"]:
                raise ValueError(f"{path} was extracted with other feature settings than {shards[0]}; "
                                 "delete the shards and rerun the extraction")
            plan["total"] += feats.shape[0]
            plan["skipped"].update(json.loads(h5.attrs["skipped"]))
    return plan


def _filters(dset: h5py.Dataset) -> dict:
    """The compression of ``dset``, to give the joined copy the same (none if it has none)."""
    if dset.compression is None:
        return {}
    return {"compression": dset.compression, "compression_opts": dset.compression_opts,
            "shuffle": dset.shuffle}


def _copy_rows(src: h5py.File, dst: h5py.File, n0: int, block: int, progress: Progress) -> int:
    """Copy all rows of ``src`` to ``dst`` from row ``n0``, ``block`` rows at a time; returns
    the row after the last one written."""
    feats = src["features"]
    n = feats.shape[0]
    buf = np.empty((min(block, n), *feats.shape[1:]), dtype=feats.dtype)
    for a in range(0, n, block):
        b = min(n, a + block)
        feats.read_direct(buf, np.s_[a:b], np.s_[0:b - a])
        dst["features"].write_direct(buf, np.s_[0:b - a], np.s_[n0 + a:n0 + b])
        dst["fname"][n0 + a:n0 + b] = src["fname"].asstr()[a:b]
        dst["start"][n0 + a:n0 + b] = src["start"][a:b]
        progress.step(b - a)
    return n0 + n


def shard_of(items: Sequence, shard: int, n_shards: int) -> list:
    """The contiguous ``shard``-th of ``n_shards`` near-equal parts of ``items``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    bounds = np.linspace(0, len(items), n_shards + 1).round().astype(int)
    return list(items[bounds[shard]:bounds[shard + 1]])


FEATURE_DATASETS = ("features", "fname", "start")
FEATURE_ATTRS = ("settings", "skipped")


def _remake(path: Path) -> str:
    """The fix for a feature file that cannot be read."""
    return (f"Delete {path} and rerun the workflow: Snakemake makes it again (a split's "
            "features/<split>.h5 is re-joined from its shards, which are re-extracted if they are gone)")


def open_features(h5_path: str | os.PathLike) -> h5py.File:
    """Open a feature file (a shard or a joined file) for reading, after checking it is one
    that this version wrote: ``features`` (n, frames, mels) as a real dataset, ``fname`` and
    ``start`` of n rows, and the ``settings`` and ``skipped`` attributes. Every reader of
    feature files opens them here. Returns the open ``h5py.File`` (close it, or use it in a
    ``with`` statement).

    A file whose ``features`` is an HDF5 virtual dataset (written by an older join) is refused:
    it reads as zeros when a shard is missing, and may read another run's shards found relative
    to the current directory. Errors name the file and the fix.
    """
    path = Path(h5_path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist; run the workflow to make it")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not an HDF5 file that h5py can read ({exc}). {_remake(path)}") from exc
    try:
        _check_feature_file(h5, path)
    except BaseException:
        h5.close()
        raise
    return h5


def _check_feature_file(h5: h5py.File, path: Path) -> None:
    """Raise a ValueError naming ``path`` and the fix unless ``h5`` is a complete, self-contained
    feature file."""
    for name in FEATURE_DATASETS:
        if not isinstance(h5.get(name), h5py.Dataset):
            raise ValueError(f"{path} holds no {name!r} dataset: it is not a feature file written by "
                             f"cilaudio, or an incomplete one. {_remake(path)}")
    feats = h5["features"]
    if feats.is_virtual:
        raise ValueError(
            f"{path} was written by an older cilaudio: its 'features' is an HDF5 virtual dataset over "
            "the shard files, which reads as zeros when a shard is missing and may read another run's "
            "shards found relative to the current directory, so it is not read. "
            f"{_remake(path)}; the new file holds its features itself.")
    if feats.ndim != 3:
        raise ValueError(f"{path}: 'features' has shape {feats.shape}, not (excerpts, frames, mels). "
                         f"{_remake(path)}")
    for name in FEATURE_DATASETS[1:]:
        if h5[name].shape != feats.shape[:1]:
            raise ValueError(f"{path}: {name!r} has {h5[name].shape[0]} rows but 'features' has "
                             f"{feats.shape[0]}: the file was changed or cut short. {_remake(path)}")
    missing = [key for key in FEATURE_ATTRS if key not in h5.attrs]
    if missing:
        raise ValueError(f"{path} lacks the attribute(s) {', '.join(map(repr, missing))} that a "
                         f"feature file holds: it was not written by this cilaudio. {_remake(path)}")


def skipped_clips(h5_path: str | os.PathLike) -> dict[str, str]:
    """Clips that extraction left out (``on_bad_audio: skip``) and why."""
    with open_features(h5_path) as h5:
        return json.loads(h5.attrs["skipped"])


def read_settings(h5_path: str | os.PathLike) -> dict:
    """The feature settings the file was extracted with."""
    with open_features(h5_path) as h5:
        return json.loads(h5.attrs["settings"])


def check_settings(h5_path: str | os.PathLike, expected: Mapping[str, Any] | None) -> None:
    """A feature file written under another configuration stops the job (a results folder
    copied from elsewhere, or Snakemake metadata lost): say so and how to fix it."""
    if not expected:
        return
    found = read_settings(h5_path)
    diff = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{h5_path} was extracted with other feature settings than the config ({detail}): the "
            "results folder was written by another configuration. Delete its features folder "
            "(or the whole results/<dataset>) and rerun.")

"""Built-in benchmark: a deterministic synthetic multi-label sound-event dataset.

:func:`generate` writes FSD50K's exact on-disk layout (see :mod:`cilaudio.fsd50k`)::

    <root>/FSD50K.ground_truth/{vocabulary.csv, dev.csv, eval.csv}
    <root>/FSD50K.dev_audio/<fname>.wav
    <root>/FSD50K.eval_audio/<fname>.wav

The sound classes come from several synthetic families (harmonic tones, noise bands, click
trains, pulsing tones, chirps, vibrato tones, dual tones, rattles). Each class is a fixed
parameter set; every event draws a small random jitter around it. The vocabulary order is a
seeded shuffle across families, and consecutive blocks of ``group_sizes`` classes form the
incremental groups (phases): group 0 holds the base classes.

Which classes a clip holds follows the real data's label statistics (the papers' FSD50K or
AudioSet class frequencies and labels per excerpt, :mod:`cilaudio.label_statistics`): a clip of
group ``g`` holds at least one class of group ``g``, none of a later group, and classes of
earlier groups at the rate the real frequencies imply (the base classes' sounds fill the later
phases' clips, unlabelled there under assignment "latest"). The synthetic class in position
``i`` of the vocabulary takes the frequency of the papers' class in position ``i``. One event
per class, over pink-ish background noise; its labels are the classes of all its events. All
energy lies in 100 Hz - 7 kHz.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
from scipy import fft as sfft

from cilaudio.atomic import atomic_path, write_text
from cilaudio.fsd50k import FSD50K
from cilaudio.label_statistics import STATISTICS, PhaseModel, clips_per_phase, draw_label_sets, phase_shares

__all__ = ["SynthClass", "class_pool", "vocabulary", "generate", "FNAME_START", "BAND_HZ"]

log = logging.getLogger(__name__)

FNAME_START = 100000
BAND_HZ = (100.0, 7000.0)
_SPLIT_CODE = {"dev": 1, "eval": 2}


@dataclass(frozen=True)
class SynthClass:
    """One synthetic sound class: a family and its fixed parameters."""

    name: str  # FSD50K-style label, e.g. "Harmonic_tone_220_Hz"
    mid: str  # e.g. "/synth/c00" (stable id of the class, independent of the seed)
    family: str
    params: dict = field(default_factory=dict, hash=False, compare=False)


def _hz(f: float) -> str:
    f = int(round(f))
    return f"{f // 1000}_kHz" if f % 1000 == 0 else f"{f}_Hz"


# Within each family the parameter lists are ordered so that any prefix spans the range.
_SPREAD = [0, 4, 2, 6, 1, 5, 3, 7]


def _family_lists() -> list[list[tuple[str, str, dict]]]:
    fams: list[list[tuple[str, str, dict]]] = []
    # Harmonic tones: f0, number of harmonics, spectral tilt.
    f0s = [110, 150, 200, 270, 370, 500, 680, 920]
    fams.append([
        ("harmonic", f"Harmonic_tone_{_hz(f)}", {"f0": f, "n_harm": 4 + (i * 3) % 7, "tilt": 0.6 + 0.25 * (i % 5)})
        for i, f in enumerate(f0s)
    ])
    # Band-pass noise: centre, bandwidth in octaves.
    centres = [250, 400, 650, 1000, 1600, 2500, 4000, 5600]
    fams.append([
        ("noise", f"Noise_band_{_hz(c)}", {"centre": c, "octaves": (0.35, 0.7)[i % 2]})
        for i, c in enumerate(centres)
    ])
    # Click trains: rate, filter band.
    rates = [2, 3, 5, 8, 12, 18, 25, 35]
    bands = [(300, 1500), (1000, 4000), (3000, 6800), (500, 2500)]
    fams.append([
        ("clicks", f"Clicks_{r}_per_s", {"rate": r, "band": bands[i % 4]})
        for i, r in enumerate(rates)
    ])
    # Amplitude-modulated (pulsing) tones: carrier, modulation rate.
    carriers = [300, 450, 700, 1100, 1700, 2600, 3900, 5200]
    mods = [3.0, 5.0, 8.0, 12.0]
    fams.append([
        ("am", f"Pulsing_tone_{_hz(c)}", {"carrier": c, "mod": mods[(i * 3) % 4], "sharp": 1 + i % 2})
        for i, c in enumerate(carriers)
    ])
    # Up/down chirps: start and end frequency, sweep period.
    sweeps = [(300, 1200), (1400, 350), (800, 3000), (3500, 900), (2000, 6000), (6500, 2200), (500, 5000), (4500, 600)]
    fams.append([
        ("chirp", f"{'Rising' if a < b else 'Falling'}_chirp_{a}_to_{b}_Hz",
         {"f_start": a, "f_end": b, "period": (0.15, 0.25, 0.4, 0.3)[i % 4]})
        for i, (a, b) in enumerate(sweeps)
    ])
    # Vibrato (frequency-modulated) tones: f0, vibrato rate and depth.
    vib = [180, 260, 390, 560, 820, 1200, 1750, 2500]
    fams.append([
        ("vibrato", f"Vibrato_tone_{_hz(f)}", {"f0": f, "rate": (4.0, 6.0, 5.0, 7.0)[i % 4], "depth": (0.03, 0.06)[i % 2]})
        for i, f in enumerate(vib)
    ])
    # Dual tones (telephone-like).
    pairs = [(697, 1209), (770, 1336), (852, 1477), (941, 1633), (350, 440), (480, 620), (1400, 2100), (2400, 3300)]
    fams.append([
        ("dual", f"Dual_tone_{a}_and_{b}_Hz", {"f1": a, "f2": b}) for a, b in pairs
    ])
    # Rattles: bursts of band noise at a rate.
    rc = [350, 600, 1000, 1500, 2200, 3200, 4500, 6000]
    rr = [3.0, 4.0, 6.0, 9.0]
    fams.append([
        ("rattle", f"Rattle_{_hz(c)}", {"centre": c, "rate": rr[(i * 5) % 4], "tau": (0.02, 0.04)[i % 2]})
        for i, c in enumerate(rc)
    ])
    return fams


def class_pool() -> list[SynthClass]:
    """All available synthetic classes, interleaved across families (any prefix is mixed)."""
    fams = _family_lists()
    pool: list[SynthClass] = []
    for j in _SPREAD:
        for fam in fams:
            family, name, params = fam[j]
            pool.append(SynthClass(name=name, mid=f"/synth/c{len(pool):02d}", family=family, params=params))
    return pool


def vocabulary(n_classes: int, *, seed: int = 0) -> list[SynthClass]:
    """The ``n_classes`` classes in vocabulary order: a seeded shuffle of the pool's prefix."""
    pool = class_pool()
    if not 1 <= n_classes <= len(pool):
        raise ValueError(f"the synthetic benchmark has at most {len(pool)} classes, asked for {n_classes}")
    chosen = pool[:n_classes]
    order = np.random.default_rng([seed, 0x5EED, 7]).permutation(n_classes)
    return [chosen[i] for i in order]


# --------------------------------------------------------------------------------- synthesis


def _band_mask(freqs: np.ndarray, lo: float, hi: float, ramp: float = 0.15) -> np.ndarray:
    """Smooth band-pass gain in [0, 1], zero outside [lo, hi] (ramps of ``ramp`` octaves inside)."""
    lf = np.log2(np.maximum(freqs, 1e-3))
    up = np.clip((lf - np.log2(lo)) / ramp, 0.0, 1.0)
    down = np.clip((np.log2(hi) - lf) / ramp, 0.0, 1.0)
    return np.sin(0.5 * np.pi * up) ** 2 * np.sin(0.5 * np.pi * down) ** 2


def _fast_len(n: int) -> int:
    """A length >= n whose FFT is fast (random clip lengths may be prime)."""
    return sfft.next_fast_len(n, real=True)


def _bandpass(x: np.ndarray, sr: int, lo: float, hi: float, ramp: float = 0.15) -> np.ndarray:
    """Zero-phase FFT band-pass of ``x`` (zero-padded to a fast length). Shape (len(x),)."""
    m = _fast_len(len(x))
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    return sfft.irfft(sfft.rfft(x, m) * _band_mask(freqs, lo, hi, ramp), n=m)[: len(x)]


def _impulses(n: int, sr: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    period = sr / rate
    t0 = rng.uniform(0, period)
    k = np.arange(int(n / period) + 2)
    pos = t0 + k * period + rng.uniform(-0.1, 0.1, size=k.size) * period
    pos = np.round(pos).astype(int)
    pos = pos[(pos >= 0) & (pos < n)]
    out = np.zeros(n)
    out[pos] = rng.uniform(0.6, 1.0, size=pos.size)
    return out


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    m = _fast_len(len(x) + len(h) - 1)
    y = sfft.irfft(sfft.rfft(x, m) * sfft.rfft(h, m), n=m)
    return y[: len(x)]


def _render(cls: SynthClass, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One event of ``cls``, ``n`` samples, unit RMS (before fades). Shape (n,)."""
    p = cls.params
    t = np.arange(n) / sr  # (n,)
    j = lambda rel: 1.0 + rng.uniform(-rel, rel)  # noqa: E731  (multiplicative jitter)
    fam = cls.family
    if fam == "harmonic":
        f0 = p["f0"] * j(0.03)
        k = np.arange(1, p["n_harm"] + 1)
        k = k[k * f0 < 6500]
        amp = k ** (-p["tilt"] * j(0.15)) * rng.uniform(0.8, 1.2, size=k.size)
        x = np.sin(2 * np.pi * f0 * t[:, None] * k[None, :] + rng.uniform(0, 2 * np.pi, size=k.size)) @ amp
    elif fam == "noise":
        c = p["centre"] * j(0.05)
        half = 0.5 * p["octaves"] * j(0.1)
        x = _bandpass(rng.standard_normal(n), sr, c * 2 ** -half, c * 2 ** half, ramp=0.1)
    elif fam == "clicks":
        lo, hi = p["band"]
        klen = max(8, int(0.006 * sr))
        kern = rng.standard_normal(klen) * np.exp(-np.arange(klen) / (0.0012 * sr))
        x = _bandpass(_fftconv(_impulses(n, sr, p["rate"] * j(0.1), rng), kern), sr, lo, hi)
    elif fam == "am":
        fc = p["carrier"] * j(0.03)
        fm = p["mod"] * j(0.1)
        env = (0.5 * (1 - np.cos(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi)))) ** p["sharp"]
        car = np.sin(2 * np.pi * fc * t + rng.uniform(0, 2 * np.pi))
        if 2 * fc < 6500:
            car = car + 0.3 * np.sin(4 * np.pi * fc * t + rng.uniform(0, 2 * np.pi))
        x = env * car
    elif fam == "chirp":
        f1, f2 = p["f_start"] * j(0.03), p["f_end"] * j(0.03)
        period = p["period"] * j(0.1)
        frac = ((t + rng.uniform(0, period)) % period) / period
        inst = f1 * (f2 / f1) ** frac
        phase = 2 * np.pi * np.cumsum(inst) / sr
        x = np.sin(phase) * np.sin(np.pi * frac) ** 0.5
    elif fam == "vibrato":
        f0 = p["f0"] * j(0.03)
        inst = f0 * (1 + p["depth"] * j(0.2) * np.sin(2 * np.pi * p["rate"] * j(0.1) * t + rng.uniform(0, 2 * np.pi)))
        phase = 2 * np.pi * np.cumsum(inst) / sr
        x = np.zeros(n)
        for h, a in ((1, 1.0), (2, 0.5), (3, 0.25)):
            if h * f0 * 1.1 < 6500:
                x += a * np.sin(h * phase)
    elif fam == "dual":
        a = rng.uniform(0.7, 1.0)
        x = np.sin(2 * np.pi * p["f1"] * j(0.015) * t + rng.uniform(0, 2 * np.pi)) + a * np.sin(
            2 * np.pi * p["f2"] * j(0.015) * t + rng.uniform(0, 2 * np.pi)
        )
    elif fam == "rattle":
        c = p["centre"] * j(0.05)
        noise = _bandpass(rng.standard_normal(n), sr, c / 2 ** 0.5, min(c * 2 ** 0.5, 6900), ramp=0.1)
        klen = int(5 * p["tau"] * sr)
        env = _fftconv(_impulses(n, sr, p["rate"] * j(0.1), rng), np.exp(-np.arange(klen) / (p["tau"] * j(0.2) * sr)))
        x = noise * env
    else:  # pragma: no cover - pool and renderers are defined together
        raise ValueError(f"unknown family {fam!r}")
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def _pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    m = _fast_len(n)
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    spec = sfft.rfft(rng.standard_normal(m)) / np.sqrt(np.maximum(freqs, 50.0))
    return sfft.irfft(spec * _band_mask(freqs, *BAND_HZ), n=m)[:n]


@dataclass(frozen=True)
class _ClipPlan:
    fname: str
    group: int
    classes: tuple[int, ...]  # vocabulary indices of the events (one event per class)


def _plan(
    split: str,
    *,
    seed: int,
    model: PhaseModel,
    clips: Sequence[int],
    start: int,
    max_events: int,
) -> list[_ClipPlan]:
    """Which classes each clip of a split holds: ``clips[k]`` clips of phase ``k``, their label
    sets drawn from ``model`` (the real data's statistics, :mod:`cilaudio.label_statistics`)."""
    plans: list[_ClipPlan] = []
    for g, n in enumerate(clips):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], g, 1])
        for classes in draw_label_sets(model, g, int(n), rng, max_events=max_events):
            plans.append(_ClipPlan(fname=str(start + len(plans)), group=g, classes=classes))
    return plans


def _synthesise(
    plan: _ClipPlan,
    vocab: Sequence[SynthClass],
    *,
    split: str,
    index: int,
    seed: int,
    sample_rate: int,
    min_seconds: float,
    max_seconds: float,
    snr_db: tuple[float, float],
    durations: str = "uniform",
) -> np.ndarray:
    """Audio of one clip, shape (samples,), peak 0.5."""
    sr = sample_rate
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index, 2])
    if durations == "fsd50k":
        from cilaudio.clip_lengths import draw_seconds

        n = int(round(draw_seconds(rng, split) * sr))
    else:
        n = int(round(rng.uniform(min_seconds, max_seconds) * sr))
    mix = np.zeros(n)
    for c in plan.classes:
        dur = max(1, int(round(rng.uniform(0.6, 1.0) * n)))
        onset = int(rng.integers(0, n - dur + 1))
        ev = _render(vocab[c], dur, sr, rng)
        fade = min(dur // 2, int(rng.uniform(0.01, 0.03) * sr))
        if fade > 0:
            ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2
            ev[:fade] *= ramp
            ev[dur - fade :] *= ramp[::-1]
        mix[onset : onset + dur] += ev * 10 ** (rng.uniform(-6.0, 0.0) / 20)
    noise = _pink_noise(n, sr, rng)
    snr = rng.uniform(*snr_db)
    p_ev, p_no = np.mean(mix**2), np.mean(noise**2)
    if p_no > 0 and p_ev > 0:
        mix += noise * np.sqrt(p_ev / 10 ** (snr / 10) / p_no)
    mix = _bandpass(mix, sr, *BAND_HZ, ramp=0.05)
    peak = np.max(np.abs(mix))
    return (0.5 * mix / peak if peak > 0 else mix).astype(np.float32)


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


def _clip_counts(key: str, clips: int | Sequence[int], model: PhaseModel) -> list[int]:
    """Clips per phase: the list as given, or a total split in ``model``'s phase shares."""
    if isinstance(clips, (int, np.integer)):
        return clips_per_phase(int(clips), phase_shares(model))
    clips = [int(c) for c in clips]
    n_phases = len(model.group_sizes)
    if len(clips) != n_phases or min(clips) < 1:
        raise ValueError(f"generate.{key} needs one positive clip count per phase ({n_phases} phases, "
                         f"as `phases`) or a total, got {clips}")
    return clips


def _check_settings(*, durations: str, group_sizes: Sequence[int], label_statistics: str, max_events: int,
                    min_seconds: float, max_seconds: float, sample_rate: int) -> None:
    """The generator's settings, checked before anything is written."""
    if durations not in ("uniform", "fsd50k"):
        raise ValueError(f"durations must be uniform or fsd50k, got {durations!r}")
    if not group_sizes or min(group_sizes) < 1:
        raise ValueError(f"group_sizes must be positive, got {list(group_sizes)}")
    if label_statistics not in STATISTICS:
        raise ValueError(f"generate.label_statistics must be one of {', '.join(STATISTICS)}, got {label_statistics!r}")
    if max_events < 1:
        raise ValueError("max_events must be >= 1")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    if sample_rate < 2 * BAND_HZ[1]:
        raise ValueError(f"sample_rate must be at least {2 * BAND_HZ[1]:.0f} Hz")


def generate(
    root: Path,
    *,
    seed: int = 0,
    group_sizes: Sequence[int] = (30, 5, 5, 5, 5),
    dev_clips: int | Sequence[int] = 1000,
    eval_clips: int | Sequence[int] = 500,
    label_statistics: str = "fsd50k",
    sample_rate: int = 44100,
    min_seconds: float = 0.6,
    max_seconds: float = 2.0,
    max_events: int = 6,
    snr_db: tuple[float, float] = (6.0, 20.0),
    val_fraction: float = 0.1,
    durations: str = "uniform",
    audio: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the synthetic benchmark under ``root`` in FSD50K's layout.

    ``dev_clips[k]`` / ``eval_clips[k]`` clips belong to phase ``k`` (they hold a class of group
    ``k`` and none of a later group); their label sets follow ``label_statistics`` (the papers'
    FSD50K or AudioSet class frequencies and labels per excerpt, :mod:`cilaudio.label_statistics`).
    A single number is a total, split over the phases in the shares the real statistics imply
    (FSD50K: 74 % of the excerpts in phase 0, then 9, 8, 6 and 3 %), as the real lists are.
    Deterministic in ``seed``: every clip's content comes from a generator seeded with
    (seed, split, clip index). Audio is written first, the three CSVs last (each file
    atomically), so an interrupted run never leaves a complete-looking dataset.
    ``audio=False`` writes the CSVs only (for statistics). ``progress(done, total)`` is called
    after each clip. ``durations``: ``uniform`` (between ``min_seconds`` and ``max_seconds``) or
    ``fsd50k`` (FSD50K's range and mean length per split, :mod:`cilaudio.clip_lengths`).
    """
    group_sizes = [int(s) for s in group_sizes]
    _check_settings(durations=durations, group_sizes=group_sizes, label_statistics=label_statistics,
                    max_events=max_events, min_seconds=min_seconds, max_seconds=max_seconds,
                    sample_rate=sample_rate)
    models = {split: PhaseModel.from_statistics(label_statistics, split, group_sizes) for split in ("dev", "eval")}
    dev_clips = _clip_counts("dev_clips", dev_clips, models["dev"])
    eval_clips = _clip_counts("eval_clips", eval_clips, models["eval"])
    root = Path(root)
    ds = FSD50K(root)
    vocab = vocabulary(sum(group_sizes), seed=seed)
    # A regeneration starts by removing old metadata so a killed run looks unfinished.
    for f in ds.metadata_files():
        if f.exists():
            f.unlink()

    n_dev, n_eval = sum(dev_clips), sum(eval_clips)
    plans = {
        "dev": _plan("dev", seed=seed, model=models["dev"], clips=dev_clips, start=FNAME_START, max_events=max_events),
        "eval": _plan("eval", seed=seed, model=models["eval"], clips=eval_clips, start=FNAME_START + n_dev,
                      max_events=max_events),
    }
    total, done = n_dev + n_eval, 0
    rows: dict[str, list[list[str]]] = {"dev": [], "eval": []}
    for split in ("dev", "eval"):
        ds.audio_dir(split).mkdir(parents=True, exist_ok=True)
        for index, plan in enumerate(plans[split]):
            if audio:
                wav = _synthesise(
                    plan, vocab, split=split, index=index, seed=seed, sample_rate=sample_rate,
                    min_seconds=min_seconds, max_seconds=max_seconds, snr_db=snr_db, durations=durations,
                )
                with atomic_path(ds.audio_path(split, plan.fname)) as tmp:
                    sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")
            labels = sorted(set(plan.classes))
            row = [plan.fname, ",".join(vocab[c].name for c in labels), ",".join(vocab[c].mid for c in labels)]
            if split == "dev":
                r = np.random.default_rng([seed, _SPLIT_CODE[split], index, 3]).random()
                row.append("val" if r < val_fraction else "train")
            rows[split].append(row)
            done += 1
            if progress is not None:
                progress(done, total)
    log.info("wrote %d dev and %d eval clips under %s", n_dev, n_eval, root)

    gt = ds.ground_truth_dir
    write_text(gt / "vocabulary.csv", _csv_text([[str(i), c.name, c.mid] for i, c in enumerate(vocab)]))
    write_text(gt / "eval.csv", _csv_text([["fname", "labels", "mids"], *rows["eval"]]))
    write_text(gt / "dev.csv", _csv_text([["fname", "labels", "mids", "split"], *rows["dev"]]))

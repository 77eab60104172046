"""Clip lengths of FSD50K's shape (cilaudio.clip_lengths): the clipped log-normal mean against
numerical integration, the split means against FSD50K's published totals, and the generator's
``durations: fsd50k``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from scipy import integrate, stats

from cilaudio import clip_lengths as C
from cilaudio import synth


@pytest.mark.parametrize("median, sigma", [(4.6, 1.0), (1.0, 0.5), (20.0, 1.5)])
def test_clipped_mean_is_the_integral(median, sigma):
    dist = stats.lognorm(s=sigma, scale=median)
    inside, _ = integrate.quad(lambda x: x * dist.pdf(x), 0.3, 30.0, limit=200)
    expected = 0.3 * dist.cdf(0.3) + inside + 30.0 * dist.sf(30.0)
    assert C.clipped_mean(median, sigma) == pytest.approx(expected, rel=1e-6)


def test_split_means_are_fsd50ks_hours_over_clips():
    # FSD50K: 40,966 dev clips, 80.4 h; 10,231 eval clips, 27.9 h (Fonseca et al., 2022)
    assert C.MEAN_SECONDS["dev"] == pytest.approx(80.4 * 3600 / 40966) == pytest.approx(7.0654, abs=1e-4)
    assert C.MEAN_SECONDS["eval"] == pytest.approx(27.9 * 3600 / 10231) == pytest.approx(9.8172, abs=1e-4)
    for split in ("dev", "eval"):
        assert C.clipped_mean(C.median_for_mean(C.MEAN_SECONDS[split])) == pytest.approx(C.MEAN_SECONDS[split])


@pytest.mark.parametrize("split", ["dev", "eval"])
def test_drawn_lengths_have_the_range_and_the_mean(split):
    rng = np.random.default_rng(0)
    x = np.array([C.draw_seconds(rng, split) for _ in range(20000)])
    assert x.min() >= 0.3 and x.max() <= 30.0
    assert abs(x.mean() - C.MEAN_SECONDS[split]) < 4 * x.std() / math.sqrt(len(x))
    assert np.median(x) < x.mean()  # most clips short, a long tail


def test_the_generator_draws_fsd50k_lengths(tmp_path):
    synth.generate(tmp_path / "a", seed=3, dev_clips=[4, 1, 1, 1, 1], eval_clips=[2, 1, 1, 1, 1],
                   durations="fsd50k", sample_rate=16000)
    lengths = [sf.info(p).duration for p in sorted((tmp_path / "a").rglob("*.wav"))]
    assert len(lengths) == 14 and min(lengths) >= 0.3 and max(lengths) <= 30.0
    assert max(lengths) > 2.0  # not the uniform default's 0.6-2 s
    with pytest.raises(ValueError, match="durations"):
        synth.generate(tmp_path / "b", dev_clips=[1] * 5, eval_clips=[1] * 5, durations="long")

"""Clip lengths with FSD50K's range and totals, for a generated dataset of FSD50K's shape.

FSD50K's clips last 0.3 to 30 s, most of them short: 40,966 development clips hold 80.4 h of
audio and 10,231 evaluation clips 27.9 h (Fonseca et al., 2022), so a development clip lasts
7.07 s on average and an evaluation clip 9.82 s. Only the range and the means are known here,
not the whole distribution: the lengths are drawn from a log-normal distribution with shape
``SIGMA`` (a long tail of long clips above a mass of short ones), clipped to the range, whose
median is solved so that the clipped mean is the split's (:func:`median_for_mean`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

MIN_SECONDS, MAX_SECONDS = 0.3, 30.0
#: Mean clip length of each FSD50K split: its hours of audio over its clips.
MEAN_SECONDS = {"dev": 80.4 * 3600 / 40966, "eval": 27.9 * 3600 / 10231}
#: The clips' number in each FSD50K split.
N_CLIPS = {"dev": 40966, "eval": 10231}
SIGMA = 1.0


def clipped_mean(median: float, sigma: float = SIGMA, low: float = MIN_SECONDS, high: float = MAX_SECONDS) -> float:
    """E[min(max(X, low), high)] for X log-normal with this median and shape (closed form)."""
    mu = math.log(median)
    a, b = (math.log(low) - mu) / sigma, (math.log(high) - mu) / sigma
    inside = math.exp(mu + sigma ** 2 / 2) * (stats.norm.cdf(b - sigma) - stats.norm.cdf(a - sigma))
    return low * stats.norm.cdf(a) + inside + high * stats.norm.sf(b)


def median_for_mean(mean: float, sigma: float = SIGMA) -> float:
    """The median whose clipped log-normal has this mean."""
    return optimize.brentq(lambda m: clipped_mean(m, sigma) - mean, MIN_SECONDS / 10, MAX_SECONDS * 10)


def draw_seconds(rng: np.random.Generator, split: str) -> float:
    """One clip length of ``split`` (``dev`` or ``eval``), in seconds."""
    if split not in _MEDIANS:
        _MEDIANS[split] = median_for_mean(MEAN_SECONDS[split])
    median = _MEDIANS[split]
    return float(np.clip(rng.lognormal(math.log(median), SIGMA), MIN_SECONDS, MAX_SECONDS))


_MEDIANS: dict[str, float] = {}

"""Per-epoch training tables: collected over a norm's phase jobs, and read for convergence.

Every phase job writes ``phase<k>_history.tsv`` beside its checkpoint (:func:`cilaudio.train.
history_path`): one row per epoch with ``method``, ``seed``, ``phase``, ``epoch``, ``lr``, the
epoch mean of each loss term (``bce``, ``feature_distill``, ``output_distill``, ``total``),
the adaptive weight ``lambda`` where output distillation is on, ``seconds`` and ``clips_per_s``.
"""

from __future__ import annotations

import os
from typing import Iterable

import pandas as pd

from .atomic import atomic_path

#: A phase is flagged as still converging when its total loss fell by more than this share
#: over the last STILL_FALLING_WINDOW of its epochs (at least two epochs).
STILL_FALLING_DROP = 0.05
STILL_FALLING_WINDOW = 0.25

LOSS_TERMS = ("bce", "feature_distill", "output_distill", "total")

#: A phase is flagged as rising when its total loss at the last epoch is more than this share
#: above its value before the last STILL_FALLING_WINDOW of the epochs, or above its first epoch's.
RISING_RISE = 0.05

#: A training job stops when a loss term's epoch mean is more than EXPLODING_RISE times the
#: largest of its own value at the start of the epoch, the total's there, and EXPLODING_FLOOR
#: (the scale of an untrained BCE, ln 2 = 0.69, so that a term that starts near 0, as
#: distillation does, is measured against the loss, not against its own 0).
EXPLODING_RISE = 100.0
EXPLODING_FLOOR = 1.0

#: Parts of a training step that are weights, not losses (never checked for a rise).
NOT_LOSSES = ("lambda",)


def exploded(means: dict[str, float], start: dict[str, float]) -> list[str]:
    """The loss terms of ``means`` (an epoch's means) that rose by orders of magnitude from
    ``start`` (the same terms at the start of the epoch): ``|mean| > EXPLODING_RISE * max(|start
    of the term|, |start of total|, EXPLODING_FLOOR)``. A term missing from ``start`` is measured
    against the total and the floor."""
    scale = max(abs(float(start.get("total", 0.0))), EXPLODING_FLOOR)
    out = []
    for k, v in means.items():
        if k in NOT_LOSSES:
            continue
        ref = max(abs(float(start.get(k, 0.0))), scale)
        if abs(v) > EXPLODING_RISE * ref:
            out.append(k)
    return out


def collect_history(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Concatenate phase jobs' history tables into one TSV (sorted by method, seed, phase, epoch)."""
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    if not frames:
        raise ValueError("no training history table to collect")
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values(["method", "seed", "phase", "epoch"], kind="stable").reset_index(drop=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def still_falling(table: pd.DataFrame) -> pd.DataFrame:
    """Phase jobs whose total loss was still falling steeply at the end.

    For each (method, seed, phase): the relative drop of the total loss from the epoch before
    the last ``STILL_FALLING_WINDOW`` of the epochs to the last epoch,
    ``(L[-w-1] - L[-1]) / |L[-w-1]|`` with ``w = max(2, round(window * epochs))``; flagged when
    it exceeds ``STILL_FALLING_DROP``. Returns the flagged rows with ``method``, ``seed``,
    ``phase``, ``epochs``, ``window`` and ``drop``.
    """
    rows = []
    for (method, seed, phase), run in table.groupby(["method", "seed", "phase"], sort=True):
        loss = run.sort_values("epoch")["total"].to_numpy()
        w = max(2, round(STILL_FALLING_WINDOW * len(loss)))
        if len(loss) <= w:
            continue
        before, last = loss[-w - 1], loss[-1]
        drop = (before - last) / abs(before) if before else 0.0
        if drop > STILL_FALLING_DROP:
            rows.append({"method": method, "seed": seed, "phase": phase, "epochs": len(loss), "window": w,
                         "drop": float(drop)})
    return pd.DataFrame(rows, columns=["method", "seed", "phase", "epochs", "window", "drop"])


def rising(table: pd.DataFrame) -> pd.DataFrame:
    """Phase jobs whose total loss rose: at the last epoch more than ``RISING_RISE`` above its
    value before the last ``STILL_FALLING_WINDOW`` of the epochs (the window of
    :func:`still_falling`), or above its first epoch's value. ``rise`` is the larger of
    ``(L[-1] - L[-w-1]) / |L[-w-1]|`` and ``(L[-1] - L[0]) / |L[0]|``. Returns the flagged rows
    with ``method``, ``seed``, ``phase``, ``epochs``, ``window`` and ``rise``."""
    rows = []
    for (method, seed, phase), run in table.groupby(["method", "seed", "phase"], sort=True):
        loss = run.sort_values("epoch")["total"].to_numpy(dtype=float)
        if len(loss) < 2:
            continue
        w = min(max(2, round(STILL_FALLING_WINDOW * len(loss))), len(loss) - 1)
        rises = [(loss[-1] - ref) / abs(ref) for ref in (loss[-w - 1], loss[0]) if ref]
        rise = max(rises, default=0.0)
        if rise > RISING_RISE:
            rows.append({"method": method, "seed": seed, "phase": phase, "epochs": len(loss), "window": w,
                         "rise": float(rise)})
    return pd.DataFrame(rows, columns=["method", "seed", "phase", "epochs", "window", "rise"])


def _rise_text(rise: float) -> str:
    """A relative rise as a percentage, or as a factor when it is large (``1e18 times``)."""
    return f"+{rise:.0%}" if rise < 10 else f"{rise + 1:.3g} times the value"


def convergence_findings(table: pd.DataFrame) -> list[str]:
    """Plain sentences for the report: which phases had not converged (or that all had), and
    which ended with a rising loss."""
    flagged = still_falling(table)
    rose = rising(table)
    rule = (f"total loss fell by more than {STILL_FALLING_DROP:.0%} over the last {STILL_FALLING_WINDOW:.0%} "
            "of the epochs")
    out = []
    for method, rows in rose.groupby("method", sort=True):
        phases = ", ".join(str(p) for p in sorted(rows["phase"].unique()))
        seeds = ", ".join(str(s) for s in sorted(rows["seed"].unique()))
        out.append(f"Training: the total loss of {method} rose in phase(s) {phases} (its last epoch more than "
                   f"{RISING_RISE:.0%} above the start of the last {STILL_FALLING_WINDOW:.0%} of the epochs or "
                   f"above the first epoch: {_rise_text(rows['rise'].max())} at most; seed(s) {seeds}): the learning "
                   "rate may be too high for that phase (the training curves below show each phase).")
    if flagged.empty:
        if rose.empty:
            out.append(f"Training: every phase job had levelled off (no {rule}).")
        return out
    for method, rows in flagged.groupby("method", sort=True):
        phases = ", ".join(str(p) for p in sorted(rows["phase"].unique()))
        seeds = ", ".join(str(s) for s in sorted(rows["seed"].unique()))
        out.append(f"Training: {method} was still converging at the end of phase(s) {phases} ({rule}: "
                   f"{rows['drop'].max():.0%} at most; seed(s) {seeds}); more epochs may change its numbers "
                   "(the training curves below show each phase).")
    return out

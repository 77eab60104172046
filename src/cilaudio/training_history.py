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


def convergence_findings(table: pd.DataFrame) -> list[str]:
    """Plain sentences for the report: which phases had not converged (or that all had)."""
    flagged = still_falling(table)
    rule = (f"total loss fell by more than {STILL_FALLING_DROP:.0%} over the last {STILL_FALLING_WINDOW:.0%} "
            "of the epochs")
    if flagged.empty:
        return [f"Training: every phase job had levelled off (no {rule})."]
    out = []
    for method, rows in flagged.groupby("method", sort=True):
        phases = ", ".join(str(p) for p in sorted(rows["phase"].unique()))
        seeds = ", ".join(str(s) for s in sorted(rows["seed"].unique()))
        out.append(f"Training: {method} was still converging at the end of phase(s) {phases} ({rule}: "
                   f"{rows['drop'].max():.0%} at most; seed(s) {seeds}); more epochs may change its numbers "
                   "(the training curves below show each phase).")
    return out

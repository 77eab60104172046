"""The numbers of the norms' comparison, computed from the tidy metrics tables: the final-phase
quantities per seed (:func:`seed_table`) and over seeds (:func:`comparison_table`), backward
transfer, the diagonal CKA per layer kind, and the rankings backed by paired differences.

Backward transfer (Lopez-Paz & Ranzato, 2017) of one run whose last phase is K::

    BWT = 1/K * sum_{j=0}^{K-1} ( R[K, j] - R[j, j] )

where ``R[k, j]`` is the mAP of class group j (the classes introduced in phase j, subset
``group<j>``) measured after phase k. Negative values mean the earlier groups were forgotten.

Every number is computed per seed; over seeds it is the mean with its 95 % Student-t interval,
and a ranking (:func:`best_that_holds`) names the best only where its paired difference (by
seed) with the runner-up holds (:mod:`cilaudio.stats`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cilaudio.reporting.cka_files import block_number, is_norm_layer, load_cka_files
from cilaudio.stats import Interval, interval, paired
from cilaudio.tables import final_per_seed, gap_shares

log = logging.getLogger(__name__)

#: The bounds: fine-tuning (lower) and joint training (upper).
LOWER, UPPER = "finetune", "joint"
BOUNDS = (LOWER, UPPER)
GROUP = re.compile(r"^group(\d+)$")

QUANTITIES = ("base_final", "all_final", "forgetting", "forgetting_avg", "bwt", "gap_closed_base", "gap_closed_all",
              "base_f1_final", "forgetting_f1_avg")


def _mean(x: Sequence[float]) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.mean(x)) if len(x) else math.nan


# ----------------------------------------------------------------------------- reading


def read_tables(tables: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Read each norm's ``metrics.tsv`` (``{norm: path}``) into one table, in the mapping's order.

    Raises ``ValueError`` when a file holds rows of another norm than its key, or when the
    files hold more than one dataset.
    """
    parts = []
    for norm, path in tables.items():
        t = pd.read_csv(path, sep="\t")
        other = sorted(set(t["norm"].astype(str)) - {str(norm)})
        if other:
            raise ValueError(f"{path}: expected rows of norm {norm!r} only, found {other}")
        parts.append(t)
    if not parts:
        raise ValueError("no metrics tables given")
    table = pd.concat(parts, ignore_index=True).astype({"seed": int, "phase": int, "value": float})
    datasets = sorted(set(table["dataset"].astype(str)))
    if len(datasets) > 1:
        raise ValueError(f"the metrics tables hold several datasets {datasets}; the comparison is per dataset")
    return table


def norm_order(table: pd.DataFrame, norms: Sequence[str] | None) -> list[str]:
    """The norms of ``table``: those of ``norms`` first, in its order, then the others as they appear."""
    present = list(dict.fromkeys(table["norm"].astype(str)))
    if norms is None:
        return present
    return [n for n in norms if n in present] + [n for n in present if n not in norms]


# ----------------------------------------------------------------------------- per seed


def backward_transfer(table: pd.DataFrame, *, metric: str = "map") -> pd.DataFrame:
    """BWT per (dataset, norm, method, seed) from the ``group<j>`` rows of ``table``.

    The final phase K is the last phase of the (dataset, norm). BWT is NaN when K = 0 or when
    any R[K, j] or R[j, j] (j < K) is missing or NaN. Columns: ``dataset, norm, method, seed,
    final_phase, bwt``.
    """
    cols = ["dataset", "norm", "method", "seed", "final_phase", "bwt"]
    sel = table[table["subset"].astype(str).str.match(GROUP) & (table["metric"] == metric)]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    sel = sel.assign(group=sel["subset"].str.extract(GROUP, expand=False).astype(int))
    out = []
    for (ds, norm), g in sel.groupby(["dataset", "norm"], sort=False):
        final = int(table[(table["dataset"] == ds) & (table["norm"] == norm)]["phase"].max())
        for (method, seed), h in g.groupby(["method", "seed"], sort=False):
            r = h.groupby(["phase", "group"])["value"].mean().to_dict()  # (phase, group) -> mAP
            diffs = [r.get((final, j), math.nan) - r.get((j, j), math.nan) for j in range(final)]
            ok = final > 0 and all(np.isfinite(diffs))
            if not ok and final > 0:
                log.warning("BWT of %s/%s seed %s: group results missing, BWT is NaN", norm, method, seed)
            out.append((ds, norm, method, int(seed), final, float(np.mean(diffs)) if ok else math.nan))
    return pd.DataFrame(out, columns=cols)


def _forgetting_avg(table: pd.DataFrame, *, metric: str = "map", name: str = "forgetting_avg") -> pd.DataFrame:
    """``forgetting_<metric>`` of the base classes averaged over phases 1..K, per (dataset, norm,
    method, seed), in the column ``name``."""
    keys = ["dataset", "norm", "method", "seed"]
    sel = table[(table["subset"] == "base") & (table["metric"] == f"forgetting_{metric}") & (table["phase"] >= 1)]
    if sel.empty:
        return pd.DataFrame(columns=[*keys, name])
    wide = sel.pivot_table(index=keys, columns="phase", values="value", aggfunc="mean", dropna=False)
    finals = table.groupby(["dataset", "norm"])["phase"].max()
    rows = []
    for key, r in wide.iterrows():
        phases = range(1, int(finals[(key[0], key[1])]) + 1)
        v = [r.get(k, math.nan) for k in phases]
        rows.append((*key, float(np.mean(v)) if len(v) and np.isfinite(v).all() else math.nan))
    return pd.DataFrame(rows, columns=[*keys, name])


def _quantity_parts(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each quantity of :data:`QUANTITIES` per (dataset, norm, method, seed), in a column of its name."""
    def final(subset: str, metric: str, name: str) -> pd.DataFrame:
        return final_per_seed(table, subset=subset, metric=metric).rename(columns={"value": name})

    return {
        "base_final": final("base", "map", "base_final"),
        "all_final": final("all", "map", "all_final"),
        "forgetting": final("base", "forgetting_map", "forgetting"),
        "forgetting_avg": _forgetting_avg(table),
        "bwt": backward_transfer(table),
        "gap_closed_base": gap_shares(table, subset="base").rename(columns={"share": "gap_closed_base"}),
        "gap_closed_all": gap_shares(table, subset="all").rename(columns={"share": "gap_closed_all"}),
        "base_f1_final": final("base", "f1_macro", "base_f1_final"),
        "forgetting_f1_avg": _forgetting_avg(table, metric="f1_macro", name="forgetting_f1_avg"),
    }


def seed_table(table: pd.DataFrame, *, norms: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (norm, method, seed): the final-phase numbers of the comparison, per seed.

    Columns: ``dataset, norm, method, seed, final_phase`` and :data:`QUANTITIES`: ``base_final``
    / ``all_final`` (mAP on the base classes / on all classes seen, final phase), ``forgetting``
    (``forgetting_map`` at the final phase), ``forgetting_avg`` (``forgetting_map`` averaged over
    phases 1..K, NaN when a phase is missing), ``bwt`` (:func:`backward_transfer`) and
    ``gap_closed_base`` / ``gap_closed_all`` (share of the finetune-to-joint gap in final mAP closed,
    with that seed's finetune and joint: :func:`cilaudio.tables.gap_shares`); ``base_f1_final`` and
    ``forgetting_f1_avg``: the same as ``base_final`` and ``forgetting_avg`` for macro F1 (the
    papers' metric). NaN where missing.
    """
    cols = ["dataset", "norm", "method", "seed", "final_phase", *QUANTITIES]
    if table.empty:
        return pd.DataFrame(columns=cols)
    keys = ["dataset", "norm", "method", "seed"]
    runs = table[keys].drop_duplicates().astype({"seed": int})
    finals = table.groupby(["dataset", "norm"])["phase"].max().rename("final_phase").reset_index()
    out = runs.merge(finals, on=["dataset", "norm"], how="left")
    for q, part in _quantity_parts(table).items():
        part = part[[*keys, q]].astype({"seed": int, q: float})
        out = out.merge(part, on=keys, how="left")
    order = {n: i for i, n in enumerate(norm_order(table, norms))}
    rank = {m: i for i, m in enumerate(dict.fromkeys(table["method"]))}
    out = (out.assign(_n=out["norm"].map(order), _m=out["method"].map(rank))
           .sort_values(["_n", "_m", "seed"], kind="stable").drop(columns=["_n", "_m"]))
    return out.reset_index(drop=True)[cols]


def seed_values(seeds: pd.DataFrame, norm: str, method: str, q: str) -> dict[int, float]:
    """``{seed: value}`` of quantity ``q`` of (``norm``, ``method``) in ``seeds`` (:func:`seed_table`),
    finite values only."""
    sel = seeds[(seeds["norm"] == norm) & (seeds["method"] == method)]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[q]) if np.isfinite(v)}


# ----------------------------------------------------------------------------- over seeds


def comparison_table(table: pd.DataFrame, *, norms: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (norm, method): the final-phase numbers of the comparison over seeds.

    Columns: ``dataset, norm, method, n_seeds, final_phase``, then for ``base_final``,
    ``all_final``, ``forgetting`` and ``bwt`` (see :func:`seed_table`) ``<q>_mean``, ``<q>_std``
    (ddof = 1), ``<q>_low``/``<q>_high`` (95 % t-interval of the mean, :mod:`cilaudio.stats`), and
    ``gap_closed_base`` / ``gap_closed_all`` (the mean over seeds of the per-seed share of the
    finetune-to-joint gap) with ``_std``, ``_low``, ``_high``. NaN std and bounds with one seed.
    """
    seeds = seed_table(table, norms=norms)
    rows = []
    for (norm, method), g in seeds.groupby(["norm", "method"], sort=False):
        rec: dict[str, Any] = {"dataset": str(g["dataset"].iloc[0]), "norm": norm, "method": method,
                               "n_seeds": int(g["seed"].nunique()), "final_phase": int(g["final_phase"].iloc[0])}
        for q in QUANTITIES:
            iv = interval(g[q].to_numpy(dtype=float))
            name = q if q.startswith("gap_closed") else f"{q}_mean"
            rec[name], rec[f"{q}_std"], rec[f"{q}_low"], rec[f"{q}_high"] = iv.mean, iv.std, iv.low, iv.high
        rows.append(rec)
    cols = ["dataset", "norm", "method", "n_seeds", "final_phase"]
    for q in QUANTITIES:
        cols += [q if q.startswith("gap_closed") else f"{q}_mean", f"{q}_std", f"{q}_low", f"{q}_high"]
    return pd.DataFrame(rows, columns=cols)


def ranked(values: Mapping[Any, Mapping[int, float]], *, higher_is_better: bool) -> list[tuple[Any, Interval, dict]]:
    """``{name: {seed: value}}`` -> [(name, interval over seeds, values)], best mean first; names
    without a value left out."""
    items = [(k, interval(v.values()), v) for k, v in values.items()]
    items = [t for t in items if t[1].n > 0]
    return sorted(items, key=lambda t: -t[1].mean if higher_is_better else t[1].mean)


def best_that_holds(candidates: Mapping[Any, Mapping[int, float]], *, higher_is_better: bool) -> Any | None:
    """The candidate with the best mean over seeds, but only where its paired difference (by seed)
    with the runner-up holds (95 % t-interval excludes 0); None otherwise or with < 2 candidates."""
    order = ranked(candidates, higher_is_better=higher_is_better)
    if len(order) < 2:
        return None
    return order[0][0] if paired(order[0][2], order[1][2]).holds else None


# ----------------------------------------------------------------------------- CKA


def _cka_row(records: list[dict], *, norm: str, method: str, phase: int) -> dict:
    """The layer-kind means of the diagonal CKA of ``records`` (one (norm, method), averaged)."""
    layers = records[0]["layers"]
    if any(x["layers"] != layers for x in records):
        raise ValueError(f"CKA files of {norm}/{method} phase {phase} have different layer lists")
    diag = np.mean([np.diag(x["matrix"]) for x in records], axis=0)  # (layers,)
    is_norm = np.array([is_norm_layer(n) for n in layers])
    blocks = np.array([block_number(n) or 0 for n in layers])
    n_blocks = int(blocks.max())
    half = n_blocks // 2
    conv = ~is_norm & (blocks > 0)
    early, late = (blocks > 0) & (blocks <= half), blocks > half
    i = int(np.nanargmin(diag))
    return {
        "norm": norm, "method": method, "phase": phase, "n_seeds": len(records),
        "norm_layers": _mean(diag[is_norm]), "conv_layers": _mean(diag[conv]),
        "early": _mean(diag[early]) if half else math.nan,
        "late": _mean(diag[late]) if half else math.nan,
        "early_blocks": f"blocks 1-{half}" if half else "",
        "late_blocks": f"blocks {half + 1}-{n_blocks}" if half else "",
        "lowest_layer": layers[i], "lowest": float(diag[i]),
    }


def cka_layer_summary(cka_files: Mapping[str, Sequence[str | os.PathLike]], *,
                      by_seed: bool = False) -> pd.DataFrame:
    """Diagonal CKA (phase 0 vs the last phase among each norm's files), averaged over layer kinds.

    One row per (norm, method), seeds averaged; with ``by_seed`` one row per (norm, method, seed)
    and a ``seed`` column (-1 for files that do not name their seed). Columns: ``norm, method, phase, n_seeds``,
    ``norm_layers`` / ``conv_layers`` (mean diagonal CKA of the norm layers / of the other
    layers except the classifier), ``early`` / ``late`` (mean over the layers of the first /
    second half of the ``block<b>`` blocks), ``lowest_layer``, ``lowest``.
    """
    cols = ["norm", "method", "phase", "n_seeds", "norm_layers", "conv_layers", "early", "late",
            "early_blocks", "late_blocks", "lowest_layer", "lowest"]
    if by_seed:
        cols.insert(2, "seed")
    rows = []
    for norm, paths in cka_files.items():
        recs = load_cka_files(paths)
        if not recs:
            continue
        k = max(r["phase"] for r in recs)
        groups: dict[Any, list[dict]] = {}
        for r in recs:
            if r["phase"] == k:
                seed = -1 if r["seed"] is None else int(r["seed"])
                groups.setdefault((r["method"], seed) if by_seed else r["method"], []).append(r)
        for key, rs in groups.items():
            row = _cka_row(rs, norm=norm, method=key[0] if by_seed else key, phase=k)
            rows.append({**row, "seed": key[1]} if by_seed else row)
    return pd.DataFrame(rows, columns=cols)

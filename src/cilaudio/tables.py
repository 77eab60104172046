"""Collect the metrics JSON files into one long ("tidy") results table.

A metrics file holds one phase's record (a JSON object with ``phase``), or a chain's records
(``{"phases": [record, ...]}``, what the workflow's `evaluate` job writes for each method and seed).

One row per (dataset, norm, method, seed, phase, subset, metric). The phase-0 model is shared
by every method, so its rows (method ``"base"`` in the JSON) are repeated once per configured
method: every method's curve then starts at phase 0. Forgetting is added as rows of subset
``base`` with metric ``forgetting_<m>`` = (base-class value after phase 0) - (base-class value
after phase k), on the same phase-0 test clips, for the same dataset, norm and seed, for every
metric that :data:`cilaudio.metrics.REGISTRY` flags ``forgetting`` (read when the table is made).

Besides the scores, each subset has rows of the registry's counts, e.g.
``classes_without_positives``: how many of the subset's classes had no positive test excerpt and
were left out of its ``map``, ``f1_macro`` and ``auc`` (a count, not a score: no forgetting row
is made for it; a count that is not a whole number >= 0 is refused). Metrics JSON files written
before a metric existed simply lack its rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from cilaudio.atomic import atomic_path
from cilaudio.metrics import metric_names

log = logging.getLogger(__name__)

COLUMNS = ["dataset", "norm", "method", "seed", "phase", "subset", "metric", "value"]
BASE_METHOD = "base"
_REQUIRED = ("dataset", "norm", "method", "seed", "phase", "subsets", "per_class_ap")


def _value(x: Any) -> float:
    """JSON value -> float (``None`` and non-numbers -> NaN)."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _load(path: Path) -> list[dict]:
    """The phase records of one metrics file (one, or a chain's ``phases``), each checked."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at top level")
    if "phases" in data:
        if not isinstance(data["phases"], list) or not data["phases"]:
            raise ValueError(f"{path}: 'phases' must be a non-empty list of phase records")
        return [_check_record(r, f"{path}: phases[{i}]") for i, r in enumerate(data["phases"])]
    return [_check_record(data, str(path))]


def _check_record(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise KeyError(f"{where}: metrics JSON lacks key(s) {missing}")
    if not isinstance(data["subsets"], dict) or not isinstance(data["per_class_ap"], dict):
        raise ValueError(f"{where}: 'subsets' and 'per_class_ap' must be JSON objects")
    counts = metric_names(count=True)
    for name, vals in data["subsets"].items():
        if not isinstance(vals, dict):
            raise ValueError(f"{where}: subsets[{name!r}] must be a JSON object")
        for metric in counts:
            if metric in vals and not _is_count(vals[metric]):
                raise ValueError(f"{where}: subsets[{name!r}][{metric!r}] must be a count "
                                 f"(a whole number >= 0); got {vals[metric]!r}")
    return data


def _is_count(x: Any) -> bool:
    """True for a whole number >= 0 (an int, or a float such as ``2.0``); False otherwise."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return math.isfinite(x) and x >= 0 and float(x).is_integer()


def _rows(data: dict, method: str) -> list[tuple]:
    key = (str(data["dataset"]), str(data["norm"]), method, int(data["seed"]), int(data["phase"]))
    rows = []
    for subset, vals in data["subsets"].items():
        for metric, v in vals.items():
            rows.append((*key, str(subset), str(metric), _value(v)))
    for name, ap in data["per_class_ap"].items():
        rows.append((*key, f"class:{name}", "ap", _value(ap)))
    # replay methods: how many exemplar clips of the memory carry each old class
    for name, count in (data.get("memory") or {}).get("label_counts", {}).items():
        rows.append((*key, f"class:{name}", "exemplars", float(count)))
    return rows


def metrics_table(json_paths: Iterable[str | os.PathLike], *, methods: Sequence[str]) -> pd.DataFrame:
    """Read metrics JSON files (one phase or a chain each) into one long table.

    Columns: ``dataset, norm, method, seed, phase, subset, metric, value``. Files whose
    ``method`` is ``"base"`` (the shared phase-0 model) are replicated for every name in
    ``methods``; files of methods not in ``methods`` are skipped (logged). Raises ``KeyError``
    naming the file when a JSON lacks a required key, ``ValueError`` on duplicates.
    Sorted by dataset, norm, method (in ``methods`` order), seed, phase, subset, metric.
    """
    methods = list(dict.fromkeys(str(m) for m in methods))
    rows: list[tuple] = []
    seen: dict[tuple, Path] = {}
    for p in sorted(Path(p) for p in json_paths):
        for data in _load(p):
            src = str(data["method"])
            if src == BASE_METHOD:
                targets = methods
            elif src in methods:
                targets = [src]
            else:
                log.info("skipping %s: method %r is not configured", p, src)
                continue
            for m in targets:
                key = (str(data["dataset"]), str(data["norm"]), m, int(data["seed"]), int(data["phase"]))
                if key in seen:
                    raise ValueError(f"{p}: duplicate results for {key}, also in {seen[key]}")
                seen[key] = p
                rows.extend(_rows(data, m))
    df = pd.DataFrame.from_records(rows, columns=COLUMNS)
    df = pd.concat([df, _forgetting(df)], ignore_index=True)
    return _sort(df, methods)


def _forgetting(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ``subset=base, metric=forgetting_<m>`` from the base-subset rows of ``df``, for the
    metrics the registry flags ``forgetting`` (never a count)."""
    base = df[(df["subset"] == "base") & df["metric"].isin(metric_names(forgetting=True))]
    if base.empty:
        return pd.DataFrame(columns=COLUMNS)
    ref = base[base["phase"] == 0].set_index(["dataset", "norm", "method", "seed", "metric"])["value"]
    out = base.copy()
    idx = pd.MultiIndex.from_frame(out[["dataset", "norm", "method", "seed", "metric"]])
    ref_vals = ref.reindex(idx).to_numpy(dtype=float)
    if np.isnan(ref_vals).all() and len(ref_vals):
        log.warning("no phase-0 base-class results: forgetting is NaN")
    out["value"] = ref_vals - out["value"].to_numpy(dtype=float)
    out["metric"] = "forgetting_" + out["metric"]
    return out


def _sort(df: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(methods)}
    df = df.astype({"seed": int, "phase": int, "value": float})
    df = df.assign(_m=df["method"].map(lambda m: order.get(m, len(order))))
    df = df.sort_values(["dataset", "norm", "_m", "method", "seed", "phase", "subset", "metric"], kind="stable")
    return df.drop(columns="_m").reset_index(drop=True)[COLUMNS]


def _select(table: pd.DataFrame, subset: str, metric: str) -> pd.DataFrame:
    return table[(table["subset"] == subset) & (table["metric"] == metric)]


def gap_share(value: float, finetune: float, joint: float) -> float:
    """Share of the finetune-to-joint gap closed: (value - finetune) / (joint - finetune)."""
    gap = joint - finetune
    if not np.isfinite(gap) or gap == 0 or not np.isfinite(value):
        return math.nan
    return float((value - finetune) / gap)


def write_tsv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically write ``table`` as tab-separated text with a header (NaN written as ``NaN``)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")


# ----------------------------------------------------------------------------- over seeds

SUMMARY_COLUMNS = ["dataset", "norm", "method", "phase", "subset", "metric", "mean", "std", "ci_low", "ci_high",
                   "n_seeds"]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """The tidy summary over seeds: one row per (dataset, norm, method, phase, subset, metric).

    Columns :data:`SUMMARY_COLUMNS`: ``mean`` and ``std`` (ddof = 1) over the seeds with a finite
    value, ``ci_low``/``ci_high`` the 95 % Student-t interval of the mean
    (:func:`cilaudio.stats.interval`; NaN with one seed, as is ``std``) and ``n_seeds`` the
    number of those seeds. Rows keep the order of ``table``.
    """
    from cilaudio.stats import t_quantile

    keys = ["dataset", "norm", "method", "phase", "subset", "metric"]
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    finite = table.assign(value=table["value"].where(np.isfinite(table["value"].astype(float))))
    g = finite.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", n_seeds="count").reset_index()
    std = g.std(ddof=1).to_numpy(dtype=float)
    n = out["n_seeds"].to_numpy(dtype=int)
    quantile = {int(k): t_quantile(int(k)) for k in np.unique(n)}
    t = np.array([quantile[int(k)] for k in n])
    half = np.where(n >= 2, t * std / np.sqrt(np.maximum(n, 1)), np.nan)
    out["std"] = np.where(n >= 2, std, np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["mean"] = out["mean"].where(n > 0)
    return out.astype({"phase": int, "n_seeds": int})[SUMMARY_COLUMNS]


def final_per_seed(table: pd.DataFrame, *, subset: str, metric: str) -> pd.DataFrame:
    """``metric`` on ``subset`` at the final phase (the last phase of each dataset/norm), per seed.

    Columns: ``dataset, norm, method, seed, phase, value`` (a duplicated seed's rows are averaged).
    """
    cols = ["dataset", "norm", "method", "seed", "phase", "value"]
    sel = _select(table, subset, metric)
    parts = []
    for (ds, norm), grp in table.groupby(["dataset", "norm"], sort=False):
        final = int(grp["phase"].max())
        s = sel[(sel["dataset"] == ds) & (sel["norm"] == norm) & (sel["phase"] == final)]
        parts.append(s.groupby(["dataset", "norm", "method", "seed", "phase"], sort=False)["value"].mean()
                     .reset_index())
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def gap_shares(table: pd.DataFrame, *, subset: str = "base", metric: str = "map") -> pd.DataFrame:
    """Share of the finetune-to-joint gap closed, per seed: (method - finetune) / (joint - finetune)
    at the final phase, with finetune and joint of the SAME seed (paired by seed).

    Columns: ``dataset, norm, method, seed, share``; NaN where that seed lacks finetune or joint
    or its gap is 0 (see :func:`gap_share`).
    """
    cols = ["dataset", "norm", "method", "seed", "share"]
    fin = final_per_seed(table, subset=subset, metric=metric)
    rows = []
    for (ds, norm), grp in fin.groupby(["dataset", "norm"], sort=False):
        by = {(m, int(s)): float(v) for m, s, v in zip(grp["method"], grp["seed"], grp["value"])}
        for m, s, v in zip(grp["method"], grp["seed"], grp["value"]):
            s = int(s)
            share = gap_share(float(v), by.get(("finetune", s), math.nan), by.get(("joint", s), math.nan))
            rows.append((ds, norm, m, s, share))
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- code versions

VERSION_COLUMNS = ["dataset", "norm", "method", "seed", "phase", "step", "library", "commit", "dirty", "start"]
NOT_RECORDED = "not recorded"
FROM_SCRATCH = "from scratch"


def start_of(data: Any) -> str:
    """Where a metrics record's chain started: :data:`FROM_SCRATCH`, or the PANNs file and its
    sha256 (``model.pretrained``)."""
    pretrained = data.get("pretrained")
    if not pretrained:
        return FROM_SCRATCH
    return f"{pretrained['path']} (sha256 {pretrained['sha256']})"


def code_versions(json_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Which library version trained and which evaluated each phase model: one row per metrics
    record and step (``training``, ``evaluation``), columns :data:`VERSION_COLUMNS`
    (``library`` is :data:`NOT_RECORDED` for results made before versions were recorded), and
    where the chain's phase 0 started (``start``, :func:`start_of`)."""
    rows = []
    for p in sorted(Path(p) for p in json_paths):
        for data in _load(p):
            versions = data.get("code_version") or {}
            for step in ("training", "evaluation"):
                v = versions.get(step) or {}
                rows.append((str(data["dataset"]), str(data["norm"]), str(data["method"]), int(data["seed"]),
                             int(data["phase"]), step, str(v.get("library") or NOT_RECORDED),
                             str(v.get("commit") or ""), "" if v.get("dirty") is None else str(bool(v["dirty"])),
                             start_of(data)))
    return pd.DataFrame.from_records(rows, columns=VERSION_COLUMNS)


def version_warnings(versions: pd.DataFrame) -> list[str]:
    """Sentences for the report when its results come from more than one library version (or
    partly from an unrecorded one); empty when every result comes from one version."""
    if versions is None or versions.empty:
        return []
    groups = versions.groupby("library", sort=True)
    if len(groups) <= 1:
        return []
    parts = []
    for library, g in groups:
        runs = sorted({f"{m} seed {s}" for m, s in zip(g["method"], g["seed"])})
        steps = ", ".join(sorted(set(g["step"])))
        example = ", ".join(runs[:4]) + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
        commits = sorted({c[:10] for c in g["commit"] if c})
        where = f" (commit {', '.join(commits)})" if commits else ""
        parts.append(f"{library}{where}: {len(g)} {steps} step(s), e.g. {example}")
    return [f"These results come from {len(groups)} versions of the library, so the code changed "
            "between them and differences between methods, seeds or phases may be differences of code: "
            + "; ".join(parts) + ". To recompute with one version, set provenance.rerun_on_code_change: "
            "true (it reruns the jobs whose modules changed) or rerun everything (snakemake --forceall)."]

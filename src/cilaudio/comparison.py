"""The normalisations side by side: one self-contained HTML page per dataset.

It reads each norm's tidy ``metrics.tsv`` (see :mod:`cilaudio.tables`) and the CKA files of the
final phase, and puts the norms (``bn``, ``gn``, ``cn``) next to each other: base-class and
all-class mAP after every phase, final-phase forgetting, backward transfer, the share of the
finetune-to-joint gap closed, base-class mAP curves per norm, the diagonal CKA per layer per
norm, and plain-language findings computed from the numbers.

Backward transfer (Lopez-Paz & Ranzato, 2017) of one run whose last phase is K::

    BWT = 1/K * sum_{j=0}^{K-1} ( R[K, j] - R[j, j] )

where ``R[k, j]`` is the mAP of class group j (the classes introduced in phase j, subset
``group<j>``) measured after phase k. Negative values mean the earlier groups were forgotten.

Every number is computed per seed, then shown as the mean over seeds with its 95 % Student-t
interval, and every ranking (the best norm for a method, the method closing most of the gap) is
a paired comparison by seed of the best and the runner-up (:mod:`cilaudio.stats`): it is stated
only where it holds, otherwise the text says the two are not distinguishable at this number of
seeds. :func:`write_paper_tables` writes the final-phase table for papers (LaTeX, Markdown).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cilaudio.atomic import write_text
from cilaudio.report import (
    html_head,
    LOWER,
    UPPER,
    _ci,
    _e,
    _nb,
    _f,
    _figure_html,
    _html_table,
    _provenance_html,
    provenance as _provenance,
)
from cilaudio.stats import (
    INTERVAL_NOTE,
    PAIRED_NOTE,
    Interval,
    Paired,
    describe,
    fmt_interval,
    fmt_pm,
    interval,
    paired,
    seeds_word,
    verdict,
)
from cilaudio.report_texts import NORM_NAMES
from cilaudio.tables import final_per_seed, gap_shares

log = logging.getLogger(__name__)

BOUNDS = (LOWER, UPPER)
_GROUP = re.compile(r"^group(\d+)$")
_BLOCK = re.compile(r"^block(\d+)\.")

BWT_DEFINITION = (
    "Backward transfer BWT = (1/K) * sum over j = 0..K-1 of (R[K, j] - R[j, j]), where R[k, j] is the mAP "
    "of class group j (the classes introduced in phase j) measured after phase k and K is the final phase. "
    "It is computed per seed, then averaged; negative = the earlier groups lost accuracy after they were learnt."
)


def norm_name(norm: str) -> str:
    """``"bn"`` -> ``"BatchNorm (bn)"``; unknown names are returned as they are."""
    return f"{NORM_NAMES[norm]} ({norm})" if norm in NORM_NAMES else str(norm)


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


def _norm_order(table: pd.DataFrame, norms: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(table["norm"].astype(str)))
    if norms is None:
        return present
    return [n for n in norms if n in present] + [n for n in present if n not in norms]


# ----------------------------------------------------------------------------- numbers


def backward_transfer(table: pd.DataFrame, *, metric: str = "map") -> pd.DataFrame:
    """BWT per (dataset, norm, method, seed) from the ``group<j>`` rows of ``table``.

    The final phase K is the last phase of the (dataset, norm). BWT is NaN when K = 0 or when
    any R[K, j] or R[j, j] (j < K) is missing or NaN. Columns: ``dataset, norm, method, seed,
    final_phase, bwt``.
    """
    cols = ["dataset", "norm", "method", "seed", "final_phase", "bwt"]
    sel = table[table["subset"].astype(str).str.match(_GROUP) & (table["metric"] == metric)]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    sel = sel.assign(group=sel["subset"].str.extract(_GROUP, expand=False).astype(int))
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


QUANTITIES = ("base_final", "all_final", "forgetting", "forgetting_avg", "bwt", "gap_closed_base", "gap_closed_all",
              "base_f1_final", "forgetting_f1_avg")


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
    parts = {
        "base_final": final_per_seed(table, subset="base", metric="map").rename(columns={"value": "base_final"}),
        "all_final": final_per_seed(table, subset="all", metric="map").rename(columns={"value": "all_final"}),
        "forgetting": final_per_seed(table, subset="base", metric="forgetting_map")
        .rename(columns={"value": "forgetting"}),
        "forgetting_avg": _forgetting_avg(table),
        "bwt": backward_transfer(table),
        "gap_closed_base": gap_shares(table, subset="base").rename(columns={"share": "gap_closed_base"}),
        "gap_closed_all": gap_shares(table, subset="all").rename(columns={"share": "gap_closed_all"}),
        "base_f1_final": final_per_seed(table, subset="base", metric="f1_macro")
        .rename(columns={"value": "base_f1_final"}),
        "forgetting_f1_avg": _forgetting_avg(table, metric="f1_macro", name="forgetting_f1_avg"),
    }
    for q, part in parts.items():
        part = part[[*keys, q]].astype({"seed": int, q: float})
        out = out.merge(part, on=keys, how="left")
    order = {n: i for i, n in enumerate(_norm_order(table, norms))}
    rank = {m: i for i, m in enumerate(dict.fromkeys(table["method"]))}
    out = (out.assign(_n=out["norm"].map(order), _m=out["method"].map(rank))
           .sort_values(["_n", "_m", "seed"], kind="stable").drop(columns=["_n", "_m"]))
    return out.reset_index(drop=True)[cols]


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


def _values(seeds: pd.DataFrame, norm: str, method: str, q: str) -> dict[int, float]:
    sel = seeds[(seeds["norm"] == norm) & (seeds["method"] == method)]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[q]) if np.isfinite(v)}


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


def _block(layer: str) -> int | None:
    m = _BLOCK.match(layer)
    return int(m.group(1)) if m else None


def cka_layer_summary(cka_files: Mapping[str, Sequence[str | os.PathLike]], *,
                      by_seed: bool = False) -> pd.DataFrame:
    """Diagonal CKA (phase 0 vs the last phase among each norm's files), averaged over layer kinds.

    One row per (norm, method), seeds averaged; with ``by_seed`` one row per (norm, method, seed)
    and a ``seed`` column (-1 for files that do not name their seed). Columns: ``norm, method, phase, n_seeds``,
    ``norm_layers`` / ``conv_layers`` (mean diagonal CKA of the norm layers / of the other
    layers except the classifier), ``early`` / ``late`` (mean over the layers of the first /
    second half of the ``block<b>`` blocks), ``lowest_layer``, ``lowest``.
    """
    from cilaudio.plots import _is_norm, load_cka_files

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
            method = key[0] if by_seed else key
            layers = rs[0]["layers"]
            if any(x["layers"] != layers for x in rs):
                raise ValueError(f"CKA files of {norm}/{method} phase {k} have different layer lists")
            diag = np.mean([np.diag(x["matrix"]) for x in rs], axis=0)  # (layers,)
            is_norm = np.array([_is_norm(n) for n in layers])
            blocks = np.array([_block(n) or 0 for n in layers])
            n_blocks = int(blocks.max())
            half = n_blocks // 2
            conv = ~is_norm & (blocks > 0)
            early, late = (blocks > 0) & (blocks <= half), blocks > half
            i = int(np.nanargmin(diag))
            rows.append({
                **({"seed": key[1]} if by_seed else {}),
                "norm": norm, "method": method, "phase": k, "n_seeds": len(rs),
                "norm_layers": _mean(diag[is_norm]), "conv_layers": _mean(diag[conv]),
                "early": _mean(diag[early]) if half else math.nan,
                "late": _mean(diag[late]) if half else math.nan,
                "early_blocks": f"blocks 1-{half}" if half else "",
                "late_blocks": f"blocks {half + 1}-{n_blocks}" if half else "",
                "lowest_layer": layers[i], "lowest": float(diag[i]),
            })
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- findings


def _ranked(values: Mapping[str, dict], *, higher_is_better: bool) -> list[tuple[str, Interval, dict]]:
    """``{name: {seed: value}}`` -> [(name, interval over seeds, values)], best mean first."""
    items = [(k, interval(v.values()), v) for k, v in values.items()]
    items = [t for t in items if t[1].n > 0]
    return sorted(items, key=lambda t: -t[1].mean if higher_is_better else t[1].mean)


def _paired_note(p: Paired, a: str, b: str, *, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    return f"{a} vs {b} {describe(p, scale=scale, unit=unit, digits=digits)} (paired by seed)"


def _pct_iv(iv: Interval) -> str:
    return fmt_interval(iv, 1, scale=100, unit=" %")


def _one_seed(*ivs: Interval) -> str:
    return " (one seed, no interval)" if max((iv.n for iv in ivs), default=0) == 1 else ""


def _norm_ranking(seeds: pd.DataFrame, method: str, q: str, norms: Sequence[str], *, higher_is_better: bool,
                  what: str, best_phrase: str, final: int) -> str | None:
    """A sentence on which norm is best for ``method`` on quantity ``q``, backed by the paired
    difference (by seed) of the best and the runner-up; None when no norm has a value."""
    ranked = _ranked({n: _values(seeds, n, method, q) for n in norms}, higher_is_better=higher_is_better)
    if not ranked:
        return None
    best, biv, bvals = ranked[0]
    others = ", ".join(f"{n} {fmt_interval(iv)}" for n, iv, _ in ranked[1:])
    if len(ranked) == 1:
        return (f"{method}: only {norm_name(best)} has a value of {what} after phase {final}: "
                f"{fmt_interval(biv)}{_one_seed(biv)}.")
    second, _, svals = ranked[1]
    p = paired(bvals, svals)
    note = _paired_note(p, best, second)
    if p.holds:
        return (f"{method} {best_phrase} {norm_name(best)}: {what} after phase {final} {fmt_interval(biv)} "
                f"(vs {others}); {note}")
    return (f"{method}: {what} after phase {final} is not distinguishable between {norm_name(best)} "
            f"and {norm_name(second)}: {best} {fmt_interval(biv)} (best mean), vs {others}; {note}")


def comparison_findings(table: pd.DataFrame, *, cka: pd.DataFrame | None = None,
                        norms: Sequence[str] | None = None,
                        cka_by_seed: pd.DataFrame | None = None) -> list[str]:
    """Plain-language statements computed from ``table`` (and the CKA summary ``cka``).

    Every ranking is backed by a paired comparison over seeds (:mod:`cilaudio.stats`): the best
    and the runner-up are compared on the seeds both have; the best is named as such only when
    that difference holds (its 95 % t-interval excludes 0), otherwise the sentence says the two
    are not distinguishable at this number of seeds. Norms are paired by seed too (same seed,
    different phase-0 model). For each method: the norm with the least final-phase forgetting
    of base-class mAP and the norm with the highest BWT. For each norm: the method (other than
    finetune and joint) that closes the largest share of the finetune-to-joint gap in final
    base-class mAP (per seed), then the largest over all norms. From ``cka``
    (:func:`cka_layer_summary`; ``cka_by_seed``: the same per seed, for the pairing): per
    method, the norm whose norm layers drift most, and in how many runs late blocks / norm
    layers drift more.
    """
    comp = comparison_table(table, norms=norms)
    if comp.empty:
        return ["No results are available."]
    seeds = seed_table(table, norms=norms)
    out: list[str] = []
    norm_list = list(dict.fromkeys(comp["norm"]))
    methods = list(dict.fromkeys(comp["method"]))
    final = int(comp["final_phase"].max())
    single = len(norm_list) == 1
    if single:
        out.append(f"Only one norm ({norm_list[0]}) has results: there is nothing to compare across norms.")

    for method in methods:
        forg = _ranked({n: _values(seeds, n, method, "forgetting") for n in norm_list}, higher_is_better=False)
        if not forg:
            out.append(f"{method}: no final-phase forgetting is available.")
        elif single:
            out.append(f"{method}: forgetting of base-class mAP after phase {final} "
                       f"{fmt_interval(forg[0][1])}{_one_seed(forg[0][1])}.")
        else:
            sentence = _norm_ranking(seeds, method, "forgetting", norm_list, higher_is_better=False,
                                     what="forgetting of base-class mAP", best_phrase="forgets least with",
                                     final=final)
            best, biv, bvals = forg[0]
            zero = paired(bvals, {s: 0.0 for s in bvals})
            if zero.sign < 0:
                sentence += f"; negative: base-class mAP rose with {best} ({verdict(zero)})"
            elif biv.mean < 0:
                sentence += (f"; {best}'s mean is negative, but a rise of base-class mAP is not "
                             f"distinguishable from none ({verdict(zero)})")
            out.append(sentence + ".")
        if not single:
            sentence = _norm_ranking(seeds, method, "bwt", norm_list, higher_is_better=True,
                                     what="BWT",
                                     best_phrase="has the highest backward transfer with", final=final)
            if sentence:
                out.append(sentence + ".")

    overall: list[tuple[str, str, dict]] = []
    skipped: list[str] = []
    for norm in norm_list:
        c = comp[comp["norm"] == norm]
        present = set(c["method"])
        if not set(BOUNDS) <= present:
            absent = " and ".join(b for b in BOUNDS if b not in present)
            out.append(f"With {norm}, the gap to close is undefined: {absent} was not run.")
            skipped.append(norm)
            continue
        cand = [m for m in c["method"] if m not in BOUNDS]
        if not cand:
            out.append(f"With {norm}, no method besides finetune and joint was run.")
            continue
        ranked = _ranked({m: _values(seeds, norm, m, "gap_closed_base") for m in cand}, higher_is_better=True)
        if not ranked:
            out.append(f"With {norm}, the finetune-to-joint gap is zero or missing: no gap share can be computed.")
            skipped.append(norm)
            continue
        lo, hi = _values(seeds, norm, LOWER, "base_final"), _values(seeds, norm, UPPER, "base_final")
        gap = paired(hi, lo)
        gap_iv = gap.diff
        best, biv, bvals = ranked[0]
        others = "; ".join(f"{m} {_pct_iv(iv)}" for m, iv, _ in ranked[1:])
        if len(ranked) == 1:
            text = (f"With {norm}, {best} closes {_pct_iv(biv)} of the finetune-to-joint gap in final "
                    f"base-class mAP (per seed; the only method besides the bounds){_one_seed(biv)}")
        else:
            second, _, svals = ranked[1]
            p = paired(bvals, svals)
            note = _paired_note(p, best, second, scale=100, unit=" pp", digits=1)
            if p.holds:
                text = (f"With {norm}, {best} closes the largest share of the finetune-to-joint gap in final "
                        f"base-class mAP: {_pct_iv(biv)} (per seed; others: {others}); {note}")
            else:
                text = (f"With {norm}, no method closes a distinguishably larger share of the finetune-to-joint "
                        f"gap in final base-class mAP: {best} {_pct_iv(biv)} (largest mean, per seed; others: "
                        f"{others}); {note}")
        if gap_iv.n and gap_iv.mean <= 0:
            skipped.append(norm)
            inverted = ("the bounds are inverted here" if gap.holds else
                        "joint does not end distinguishably above finetune here")
            text += (f"; {inverted} (joint {fmt_interval(interval(hi.values()))} vs finetune "
                     f"{fmt_interval(interval(lo.values()))}, joint vs finetune {describe(gap)}), so the share "
                     "does not measure progress towards joint.")
        else:
            if not gap.holds:
                text += (f"; joint vs finetune {describe(gap)}, so the gap itself is not established and the "
                         "share is uncertain")
            text += "."
            overall.append((norm, best, bvals))
            overall.extend((norm, m, v) for m, _, v in ranked[1:])
        out.append(text)

    if len(norm_list) > 1 and overall:
        ranked = _ranked({(n, m): v for n, m, v in overall}, higher_is_better=True)
        (norm, method), biv, bvals = ranked[0]
        tail = f" (not counting {', '.join(dict.fromkeys(skipped))}: no valid gap)." if skipped else "."
        if len(ranked) == 1:
            out.append(f"Over all norms, only {method} with {norm_name(norm)} has a share of the gap to compare: "
                       f"{_pct_iv(biv)}" + tail)
        else:
            (n2, m2), _, svals = ranked[1]
            p = paired(bvals, svals)
            note = _paired_note(p, f"{method} ({norm})", f"{m2} ({n2})", scale=100, unit=" pp", digits=1)
            if p.holds:
                out.append(f"Over all norms, the largest share of the gap is closed by {method} with "
                           f"{norm_name(norm)}: {_pct_iv(biv)}; {note}" + tail)
            else:
                out.append(f"Over all norms, no (norm, method) closes a distinguishably larger share of the gap: "
                           f"the largest mean is {method} with {norm_name(norm)}, {_pct_iv(biv)}; {note}" + tail)

    if cka is not None and not cka.empty:
        out.extend(_cka_findings(cka, cka_by_seed))
    return out


def _cka_findings(cka: pd.DataFrame, by_seed: pd.DataFrame | None = None) -> list[str]:
    """Counts over the (norm, method) runs and the norm whose norm layers drift most, backed by a
    paired comparison over the CKA files' seeds (the per-run numbers are in the page's CKA table)."""
    out = []
    n_seeds = int(cka["n_seeds"].max()) if len(cka) else 0
    of = f" (mean diagonal CKA of {seeds_word(n_seeds)} per run)"
    valid = cka[np.isfinite(cka["late"]) & np.isfinite(cka["early"])]
    if len(valid):
        n_late = int((valid["late"] < valid["early"]).sum())
        out.append(f"Later blocks ({valid['late_blocks'].iloc[0]}) drift more than earlier ones "
                   f"({valid['early_blocks'].iloc[0]}; lower mean diagonal CKA) in {n_late} of {len(valid)} "
                   f"(norm, method) runs{of}.")
    valid = cka[np.isfinite(cka["norm_layers"]) & np.isfinite(cka["conv_layers"])]
    if len(valid):
        n_norm = int((valid["norm_layers"] < valid["conv_layers"]).sum())
        out.append(f"Norm layers drift more than conv layers in {n_norm} of {len(valid)} (norm, method) runs{of}.")
    if cka["norm"].nunique() > 1:
        per_seed = by_seed if by_seed is not None else cka.assign(seed=-1)
        for method in dict.fromkeys(cka["method"]):
            g = per_seed[(per_seed["method"] == method) & np.isfinite(per_seed["norm_layers"])]
            vals = {n: {int(s): float(v) for s, v in zip(h["seed"], h["norm_layers"])}
                    for n, h in g.groupby("norm", sort=False)}
            ranked = _ranked(vals, higher_is_better=False)
            if len(ranked) < 2:
                continue
            (best, biv, bvals), (second, _, svals) = ranked[0], ranked[1]
            others = ", ".join(f"{n} {fmt_interval(iv)}" for n, iv, _ in ranked[1:])
            p = paired(bvals, svals)
            note = _paired_note(p, best, second)
            if p.holds:
                out.append(f"{method}: the norm layers drift most with {norm_name(best)} (mean diagonal CKA "
                           f"{fmt_interval(biv)}, vs {others}); {note}.")
            else:
                out.append(f"{method}: the norm layers' mean diagonal CKA is lowest with {norm_name(best)} "
                           f"({fmt_interval(biv)}, vs {others}), but which norm's norm layers drift most is not "
                           f"distinguishable: {note}.")
    return out


# ----------------------------------------------------------------------------- HTML


def _per_phase_html(table: pd.DataFrame, norms: Sequence[str], subset: str) -> str:
    sel = table[(table["subset"] == subset) & (table["metric"] == "map")]
    if sel.empty:
        return '<p class="note">no data</p>'
    phases = sorted(int(p) for p in sel["phase"].unique())
    rows = []
    for norm in norms:
        sub = sel[sel["norm"] == norm]
        for method in dict.fromkeys(sub["method"]):
            wide = sub[sub["method"] == method].pivot_table(index="seed", columns="phase", values="value",
                                                              aggfunc="mean", dropna=False)
            rows.append([norm, method, int(wide.shape[0])]
                        + [_ci(wide[k].to_numpy() if k in wide.columns else []) for k in phases]
                        + [_ci(wide.mean(axis=1, skipna=False).to_numpy())])
    return _html_table(["norm", "method", "seeds"] + [f"phase {k}" for k in phases] + ["average over phases"], rows)


MARK = "\u00a0▲"


def best_that_holds(candidates: Mapping[Any, Mapping[int, float]], *, higher_is_better: bool) -> Any | None:
    """The candidate with the best mean over seeds, but only where its paired difference (by seed)
    with the runner-up holds (95 % t-interval excludes 0); None otherwise or with < 2 candidates."""
    ranked = _ranked(candidates, higher_is_better=higher_is_better)
    if len(ranked) < 2:
        return None
    return ranked[0][0] if paired(ranked[0][2], ranked[1][2]).holds else None


FINAL_COLUMNS = (  # (quantity, header, higher is better)
    ("base_final", "base-class mAP", True),
    ("all_final", "all-class mAP", True),
    ("forgetting", "forgetting (base mAP)", False),
    ("bwt", "BWT", True),
    ("gap_closed_base", "gap closed (base mAP)", True),
    ("gap_closed_all", "gap closed (all-class mAP)", True),
)


def _final_html(table: pd.DataFrame, norms: Sequence[str]) -> str:
    """The final-phase table: every cell mean [95 % interval]; MARK on the best norm of a method in a
    column where its paired difference with the runner-up norm holds (the bounds' gap shares,
    0 and 1 by definition, are not marked)."""
    seeds = seed_table(table, norms=norms)
    comp = comparison_table(table, norms=norms)
    marks = set()
    for method in dict.fromkeys(comp["method"]):
        for q, _, higher in FINAL_COLUMNS:
            if q.startswith("gap_closed") and method in BOUNDS:
                continue
            best = best_that_holds({n: _values(seeds, n, method, q) for n in norms}, higher_is_better=higher)
            if best is not None:
                marks.add((best, method, q))
    header = ["norm", "method", "seeds"] + [h for _, h, _ in FINAL_COLUMNS]
    rows = []
    for r in comp.itertuples():
        row = [r.norm, r.method, r.n_seeds]
        for q, _, _ in FINAL_COLUMNS:
            iv = interval(_values(seeds, r.norm, r.method, q).values())
            cell = fmt_interval(iv, 1, scale=100, unit=" %") if q.startswith("gap_closed") else fmt_interval(iv)
            row.append(_nb(cell) + (MARK if (r.norm, r.method, q) in marks else ""))
        rows.append(row)
    return _html_table(header, rows)


# ----------------------------------------------------------------------------- paper tables

PAPER_COLUMNS = (  # (quantity, header, higher is better)
    ("base_final", "base-class mAP", True),
    ("all_final", "all-class mAP", True),
    ("forgetting_avg", "mean forgetting (base mAP)", False),
    ("base_f1_final", "base-class F1 macro", True),
    ("forgetting_f1_avg", "mean forgetting (base F1 macro)", False),
)
SHORT_NORMS = {"bn": "BN", "gn": "GN", "cn": "CN"}


def paper_table(table: pd.DataFrame, *, norms: Sequence[str] | None = None) -> dict:
    """The numbers of the paper-ready table: rows = methods, columns = (quantity, norm) for the
    quantities of :data:`PAPER_COLUMNS`.

    Returns ``{"methods", "norms", "columns": [(q, header, norm)], "cells": {(q, norm, method):
    Interval}, "bold": {(q, norm, method)}, "n_seeds": sorted distinct seed counts, "seeds":
    sorted seeds, "final_phase"}``. A cell is bold when it is the best of its column and its
    paired difference (by seed, same norm) with the second best holds.
    """
    norms = _norm_order(table, norms)
    seeds = seed_table(table, norms=norms)
    methods = list(dict.fromkeys(table["method"]))
    cells, bold, columns = {}, set(), []
    for q, header, higher in PAPER_COLUMNS:
        for norm in norms:
            columns.append((q, header, norm))
            vals = {m: _values(seeds, norm, m, q) for m in methods}
            for m in methods:
                cells[(q, norm, m)] = interval(vals[m].values())
            best = best_that_holds(vals, higher_is_better=higher)
            if best is not None:
                bold.add((q, norm, best))
    counts = sorted({iv.n for iv in cells.values() if iv.n})
    return {"methods": methods, "norms": norms, "columns": columns, "cells": cells, "bold": bold,
            "n_seeds": counts, "seeds": sorted(int(x) for x in table["seed"].unique()),
            "final_phase": int(table["phase"].max()) if len(table) else 0}


def _seed_phrase(pt: dict) -> str:
    counts = pt["n_seeds"]
    if not counts:
        return "no seeds"
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"n = {n} seed{'s' if counts[-1] != 1 else ''} ({', '.join(str(s) for s in pt['seeds'])})"


def paper_caption(pt: dict, dataset: str, *, latex: bool) -> str:
    """How the cells are computed and how many seeds (LaTeX or plain text)."""
    k = pt["final_phase"]
    if latex:
        iv = (r"mean $\pm$ half-width of the 95\,\% Student-$t$ interval over seeds, "
              r"$t_{0.975,\,n-1}\,s/\sqrt{n}$ with $s$ the sample standard deviation")
        forg = r"base-class mAP after phase 0 minus after phase $k$, averaged over $k = 1..%d$" % k
    else:
        iv = ("mean ± half-width of the 95 % Student-t interval over seeds, t(0.975, n-1) · s / √n with s the "
              "sample standard deviation")
        forg = f"base-class mAP after phase 0 minus after phase k, averaged over k = 1..{k}"
    if pt["n_seeds"] and pt["n_seeds"][-1] == 1:
        bold = ("one seed: no interval, and nothing is bold, since one seed cannot show that a difference "
                "holds")
    else:
        bold = ("bold: the best in its column, only where its paired difference with the second best (per seed, "
                "same norm) has a 95 % interval that excludes 0")
        if latex:
            bold = bold.replace("95 %", r"95\,\%")
    return (f"{_tex(dataset) if latex else dataset}: base-class and all-class mAP after the final phase ({k}) "
            f"and mean forgetting ({forg}; lower is better), then the same for the base classes' macro F1 "
            f"(threshold 0.5, the papers' metric), per method (rows) and norm (columns); "
            f"{iv}, {_seed_phrase(pt)}; {bold}.")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def _md(text: str) -> str:
    return "".join("\\" + c if c in "\\|*_`[]<>" else c for c in str(text))


def paper_latex(pt: dict, caption: str, *, label: str = "tab:norms") -> str:
    """A LaTeX table (booktabs) of :func:`paper_table`; bold cells in ``\\textbf{}``."""
    norms, cols = pt["norms"], pt["columns"]
    lines = [r"% written by cilaudio (rule compare_norms); needs \usepackage{booktabs}",
             r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule"]
    heads, rules, first = [], [], 2
    for _, header, _ in PAPER_COLUMNS:
        heads.append(rf"\multicolumn{{{len(norms)}}}{{c}}{{{_tex(header)}}}")
        rules.append(rf"\cmidrule(lr){{{first}-{first + len(norms) - 1}}}")
        first += len(norms)
    lines.append(" & " + " & ".join(heads) + r" \\")
    lines.append(" ".join(rules))
    lines.append("method & " + " & ".join(_tex(SHORT_NORMS.get(n, n)) for _, _, n in cols) + r" \\")
    lines.append(r"\midrule")
    for m in pt["methods"]:
        cells = []
        for q, _, n in cols:
            text = fmt_pm(pt["cells"][(q, n, m)])
            text = "--" if text == "n/a" else text.replace("-", "$-$").replace(" ± ", r" $\pm$ ")
            cells.append(rf"\textbf{{{text}}}" if (q, n, m) in pt["bold"] else text)
        lines.append(_tex(m) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def paper_markdown(pt: dict, caption: str) -> str:
    """A Markdown (GitHub / pandoc pipe) table of :func:`paper_table`; bold cells in ``**``."""
    cols = pt["columns"]
    header = ["method"] + [f"{h}, {SHORT_NORMS.get(n, n)}" for _, h, n in cols]
    lines = [f"Table: {caption}", "", "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join([":---"] + [":---:"] * len(cols)) + "|"]
    for m in pt["methods"]:
        cells = []
        for q, _, n in cols:
            text = fmt_pm(pt["cells"][(q, n, m)])
            cells.append(f"**{text}**" if (q, n, m) in pt["bold"] else text)
        lines.append("| " + " | ".join([_md(m), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_paper_tables(table: pd.DataFrame, *, tex: str | os.PathLike | None = None,
                       md: str | os.PathLike | None = None, norms: Sequence[str] | None = None) -> dict:
    """Write the paper-ready comparison table as LaTeX (``tex``) and Markdown (``md``), atomically."""
    pt = paper_table(table, norms=norms)
    dataset = ", ".join(sorted(set(table["dataset"].astype(str))))
    if tex is not None:
        write_text(tex, paper_latex(pt, paper_caption(pt, dataset, latex=True),
                                    label=f"tab:norms-{re.sub(r'[^A-Za-z0-9]+', '-', dataset)}"))
    if md is not None:
        write_text(md, paper_markdown(pt, paper_caption(pt, dataset, latex=False)))
    return pt


def _cka_html(cka: pd.DataFrame) -> str:
    header = ["norm", "method", "phase", "seeds", "norm layers", "conv layers", "early blocks", "late blocks",
              "lowest layer"]
    rows = [[r.norm, r.method, r.phase, r.n_seeds, _f(r.norm_layers), _f(r.conv_layers),
             f"{_f(r.early)} ({r.early_blocks})" if r.early_blocks else "n/a",
             f"{_f(r.late)} ({r.late_blocks})" if r.late_blocks else "n/a",
             f"{r.lowest_layer} ({_f(r.lowest)})"] for r in cka.itertuples()]
    return _html_table(header, rows)


def write_comparison(
    out_html: str | os.PathLike,
    *,
    table: pd.DataFrame,
    cka_files: Mapping[str, Sequence[str | os.PathLike]] = {},  # noqa: B006 (read only)
    norms: Sequence[str] | None = None,
    title: str | None = None,
    provenance: Mapping | None = None,
) -> None:
    """Write the norms-side-by-side page of one dataset (figures embedded as base64 PNG), atomically.

    ``table``: the tidy metrics of every norm (:func:`read_tables`); ``cka_files``: ``{norm:
    [npz, ...]}`` (the last phase among each norm's files is shown); ``norms``: display order.
    """
    from cilaudio.plots import BAND_CAPTION, plot_cka_diagonal_by_norm, plot_metric_by_norm

    norms = _norm_order(table, norms)
    datasets = sorted(set(table["dataset"].astype(str)))
    dataset = datasets[0] if len(datasets) == 1 else ", ".join(datasets)
    title = title or f"Normalisation layers compared: {dataset}"
    order = [*norms, *(n for n in cka_files if n not in norms)]
    cka_files = {n: list(cka_files[n]) for n in order if len(cka_files.get(n, ()))}
    methods = list(dict.fromkeys(table["method"]))
    cka = cka_layer_summary(cka_files) if cka_files else None
    cka_seeds = cka_layer_summary(cka_files, by_seed=True) if cka_files else None
    if cka is not None and len(cka):
        rank = {m: i for i, m in enumerate(methods)}
        cka = (cka.assign(_n=cka["norm"].map({n: i for i, n in enumerate(norms)}),
                          _m=cka["method"].map(lambda m: rank.get(m, len(rank))))
               .sort_values(["_n", "_m"], kind="stable").drop(columns=["_n", "_m"]).reset_index(drop=True))
    final = int(table["phase"].max()) if len(table) else 0

    h: list[str] = [
        *html_head(title),
        "<h2>Setup</h2><dl>",
        f"<dt>dataset</dt><dd>{_e(dataset)}</dd>",
        f"<dt>norms</dt><dd>{_e(', '.join(norm_name(n) for n in norms))}</dd>",
        f"<dt>methods</dt><dd>{_e(', '.join(methods))}</dd>",
    ]
    seeds = {n: ", ".join(str(s) for s in sorted(int(s) for s in table[table["norm"] == n]["seed"].unique()))
             for n in norms}
    if len(set(seeds.values())) <= 1:
        h.append(f"<dt>seeds</dt><dd>{_e(next(iter(seeds.values()), ''))}</dd>")
    else:
        h.extend(f"<dt>seeds ({_e(n)})</dt><dd>{_e(v)}</dd>" for n, v in seeds.items())
    h.append(f"<dt>phases</dt><dd>0 to {final}</dd></dl>")

    h.append("<h2>Definitions</h2><dl>")
    h.append("<dt>base-class mAP</dt><dd>mAP on the phase-0 classes, on the phase-0 test clips, after every "
             "phase (the same clips every time).</dd>")
    h.append("<dt>all-class mAP</dt><dd>mAP on every class seen so far, on that phase's cumulative test clips."
             "</dd>")
    h.append("<dt>forgetting</dt><dd>base-class mAP after phase 0 minus base-class mAP after the final phase, "
             "per seed (positive = forgotten).</dd>")
    h.append(f"<dt>backward transfer (BWT)</dt><dd>{_e(BWT_DEFINITION)}</dd>")
    h.append("<dt>gap closed</dt><dd>(method - finetune) / (joint - finetune) on the final-phase mAP, per seed "
             "(with that seed's finetune and joint), then the mean over seeds: 0 % = no better than fine-tuning, "
             "100 % = as good as joint training.</dd>")
    h.append("<dt>diagonal CKA</dt><dd>linear CKA between a layer of the phase-0 model and the same layer of "
             "the final model, on the base-class test clips: 1 = unchanged representation, low = drifted.</dd>")
    h.append("</dl>")
    h.append(f'<p class="note">All numbers: mean over seeds [95 % interval]. {_e(INTERVAL_NOTE)}</p>')
    h.append(f'<p class="note">{_e(PAIRED_NOTE)} Two methods of one norm with the same seed share the phase-0 '
             "model and the data order; two norms are paired by seed too (same seed, but each norm has its own "
             "phase-0 model). CKA is computed for the first seed only.</p>")

    h.append("<h2>Findings</h2><ul>")
    h.extend(f"<li>{_e(s)}</li>" for s in comparison_findings(table, cka=cka, norms=norms, cka_by_seed=cka_seeds))
    h.append("</ul>")

    h.append(f"<h2>Final phase ({final})</h2>")
    h.append(f'<p class="note">Mean over seeds [95 % interval].{_e(MARK)}: the best norm for that method in '
             "that column, marked only where its paired difference (by seed) with the runner-up norm holds "
             "(its 95 % interval excludes 0).</p>")
    h.append(_final_html(table, norms))
    h.append("<h2>Base-class mAP after each phase</h2>")
    h.append(_per_phase_html(table, norms, "base"))
    h.append("<h2>All-class mAP after each phase</h2>")
    h.append(_per_phase_html(table, norms, "all"))
    h.append("<h2>Diagonal CKA by layer kind</h2>")
    if cka is None or cka.empty:
        h.append('<p class="note">no CKA results</p>')
    else:
        h.append('<p class="note">Mean diagonal CKA (phase 0 vs the final phase) over the norm layers, over '
                 "the conv layers (classifier excluded) and over the first and second half of the blocks.</p>")
        h.append(_cka_html(cka))

    h.append("<h2>Figures</h2>")
    with tempfile.TemporaryDirectory(prefix="comparison-") as tmp:
        fig = Path(tmp) / "base_map.png"
        plot_metric_by_norm(table, fig, subset="base", metric="map", norms=norms, methods=methods)
        h.append(_figure_html(f"Base-class mAP after each phase, one panel per norm ({BAND_CAPTION}).", fig))
        fig = Path(tmp) / "all_map.png"
        plot_metric_by_norm(table, fig, subset="all", metric="map", norms=norms, methods=methods)
        h.append(_figure_html(f"All-class mAP after each phase, one panel per norm ({BAND_CAPTION}).", fig))
        if cka_files:
            fig = Path(tmp) / "cka_diagonal.png"
            plot_cka_diagonal_by_norm(cka_files, fig, methods=methods)
            h.append(_figure_html("CKA of each layer with itself between the phase-0 model and the final "
                                  "model, one panel per norm, one line per method (squares, shaded: norm "
                                  "layers). The TASLP paper reports that later layers and BatchNorm layers "
                                  "drift most.", fig))
        else:
            h.append('<p class="note">no CKA results</p>')

    if provenance:
        h.append("<h2>Provenance</h2>")
        h.append(_provenance_html(provenance))
    h.append("</body></html>")
    write_text(out_html, "\n".join(h) + "\n")


def make_comparison(
    *,
    out: str | os.PathLike,
    tables: Mapping[str, str | os.PathLike],
    cka: Mapping[str, Sequence[str | os.PathLike]] = {},  # noqa: B006 (read only)
    dataset: str | None = None,
    repo_dir: Path | None = None,
    tex: str | os.PathLike | None = None,
    md: str | os.PathLike | None = None,
) -> None:
    """The workflow step: ``{norm: metrics.tsv}`` and ``{norm: [cka npz]}`` -> ``out`` (HTML), and the
    paper-ready table as LaTeX (``tex``) and Markdown (``md``) when given."""
    table = read_tables(tables)
    if dataset is not None and len(table) and set(table["dataset"].astype(str)) != {str(dataset)}:
        raise ValueError(f"the metrics tables are of {sorted(set(table['dataset']))}, not {dataset!r}")
    repo = repo_dir or Path(__file__).resolve().parents[2]
    write_comparison(out, table=table, cka_files=cka, norms=list(tables), provenance=_provenance(repo))
    if tex is not None or md is not None:
        write_paper_tables(table, tex=tex, md=md, norms=list(tables))
    log.info("compared norms %s (%d rows, %d CKA files) -> %s", list(tables), len(table),
             sum(len(v) for v in cka.values()), ", ".join(str(x) for x in (out, tex, md) if x is not None))

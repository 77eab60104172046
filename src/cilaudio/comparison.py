"""The normalisations side by side: one self-contained HTML page per dataset.

It reads each norm's tidy ``metrics.tsv`` (see :mod:`cilaudio.tidy`) and the CKA files of the
final phase, and puts the norms (``bn``, ``gn``, ``cn``) next to each other: base-class and
all-class mAP after every phase, final-phase forgetting, backward transfer, the share of the
finetune-to-joint gap closed, base-class mAP curves per norm, the diagonal CKA per layer per
norm, and plain-language findings computed from the numbers.

Backward transfer (Lopez-Paz & Ranzato, 2017) of one run whose last phase is K::

    BWT = 1/K * sum_{j=0}^{K-1} ( R[K, j] - R[j, j] )

where ``R[k, j]`` is the mAP of class group j (the classes introduced in phase j, subset
``group<j>``) measured after phase k. Negative values mean the earlier groups were forgotten.
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
    _e,
    _f,
    _figure_html,
    _html_table,
    _pm,
    _provenance_html,
    provenance as _provenance,
)
from cilaudio.tidy import summary_table

log = logging.getLogger(__name__)

NORM_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm", "cn": "Continual Normalization"}
BOUNDS = (LOWER, UPPER)
_GROUP = re.compile(r"^group(\d+)$")
_BLOCK = re.compile(r"^block(\d+)\.")

BWT_DEFINITION = (
    "Backward transfer BWT = (1/K) * sum over j = 0..K-1 of (R[K, j] - R[j, j]), where R[k, j] is the mAP "
    "of class group j (the classes introduced in phase j) measured after phase k and K is the final phase. "
    "It is computed per seed, then averaged; negative = the earlier groups lost accuracy after they were learnt."
)


def _pct(x: float) -> str:
    """Share as a percentage with one decimal ("n/a" when not finite, never "-0.0 %")."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{round(100 * float(x), 1) + 0.0:.1f} %"


def norm_name(norm: str) -> str:
    """``"bn"`` -> ``"BatchNorm (bn)"``; unknown names are returned as they are."""
    return f"{NORM_NAMES[norm]} ({norm})" if norm in NORM_NAMES else str(norm)


def _std(x: Sequence[float]) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


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


def comparison_table(table: pd.DataFrame, *, norms: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (norm, method): the final-phase numbers of the comparison.

    Columns: ``dataset, norm, method, n_seeds, final_phase``, ``base_final_mean/std`` and
    ``all_final_mean/std`` (mAP on the base classes / on all classes seen, final phase),
    ``forgetting_mean/std`` (``forgetting_map`` at the final phase), ``bwt_mean/std``,
    ``gap_closed_base`` and ``gap_closed_all`` (share of the finetune-to-joint gap in final
    mAP closed, from :func:`cilaudio.tidy.summary_table`). Means and std (ddof=1) over seeds.
    """
    base = summary_table(table, metric="map", subset="base")
    allc = summary_table(table, metric="map", subset="all")
    bwt = backward_transfer(table)
    forg = table[(table["subset"] == "base") & (table["metric"] == "forgetting_map")]
    rows = []
    for norm in _norm_order(table, norms):
        sub = table[table["norm"] == norm]
        final = int(sub["phase"].max())
        for method in dict.fromkeys(sub["method"]):
            m = sub[sub["method"] == method]
            rec: dict[str, Any] = {"dataset": str(m["dataset"].iloc[0]), "norm": norm, "method": method,
                                   "n_seeds": int(m["seed"].nunique()), "final_phase": final}
            for key, s in (("base", base), ("all", allc)):
                r = s[(s["norm"] == norm) & (s["method"] == method)]
                rec[f"{key}_final_mean"] = float(r["final_mean"].iloc[0]) if len(r) else math.nan
                rec[f"{key}_final_std"] = float(r["final_std"].iloc[0]) if len(r) else math.nan
                rec[f"gap_closed_{key}"] = float(r["gap_closed"].iloc[0]) if len(r) else math.nan
            f = forg[(forg["norm"] == norm) & (forg["method"] == method) & (forg["phase"] == final)]
            f = f.groupby("seed")["value"].mean()
            rec["forgetting_mean"], rec["forgetting_std"] = _mean(f), _std(f)
            b = bwt[(bwt["norm"] == norm) & (bwt["method"] == method)]["bwt"]
            rec["bwt_mean"], rec["bwt_std"] = _mean(b), _std(b)
            rows.append(rec)
    cols = ["dataset", "norm", "method", "n_seeds", "final_phase", "base_final_mean", "base_final_std",
            "all_final_mean", "all_final_std", "forgetting_mean", "forgetting_std", "bwt_mean", "bwt_std",
            "gap_closed_base", "gap_closed_all"]
    return pd.DataFrame(rows, columns=cols)


def _block(layer: str) -> int | None:
    m = _BLOCK.match(layer)
    return int(m.group(1)) if m else None


def cka_layer_summary(cka_files: Mapping[str, Sequence[str | os.PathLike]]) -> pd.DataFrame:
    """Diagonal CKA (phase 0 vs the last phase among each norm's files), averaged over layer kinds.

    One row per (norm, method), seeds averaged. Columns: ``norm, method, phase, n_seeds``,
    ``norm_layers`` / ``conv_layers`` (mean diagonal CKA of the norm layers / of the other
    layers except the classifier), ``early`` / ``late`` (mean over the layers of the first /
    second half of the ``block<b>`` blocks), ``lowest_layer``, ``lowest``.
    """
    from cilaudio.plots import _is_norm, _load_cka

    cols = ["norm", "method", "phase", "n_seeds", "norm_layers", "conv_layers", "early", "late",
            "early_blocks", "late_blocks", "lowest_layer", "lowest"]
    rows = []
    for norm, paths in cka_files.items():
        recs = [_load_cka(p) for p in paths]
        if not recs:
            continue
        k = max(r["phase"] for r in recs)
        groups: dict[str, list[dict]] = {}
        for r in recs:
            if r["phase"] == k:
                groups.setdefault(r["method"], []).append(r)
        for method, rs in groups.items():
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


def _ranked(values: Mapping[str, tuple[float, float]], *, higher_is_better: bool) -> list[tuple[str, float, float]]:
    items = [(k, m, s) for k, (m, s) in values.items() if np.isfinite(m)]
    return sorted(items, key=lambda t: -t[1] if higher_is_better else t[1])


def _within_spread(best: tuple[str, float, float], second: tuple[str, float, float]) -> str:
    spread = np.nanmax([best[2], second[2]]) if np.isfinite([best[2], second[2]]).any() else math.nan
    if np.isfinite(spread) and abs(best[1] - second[1]) <= spread:
        return (f"; the lead over {second[0]} ({abs(best[1] - second[1]):.3f}) is within one standard "
                f"deviation over seeds ({spread:.3f})")
    return ""


def comparison_findings(table: pd.DataFrame, *, cka: pd.DataFrame | None = None,
                        norms: Sequence[str] | None = None) -> list[str]:
    """Plain-language statements computed from ``table`` (and the CKA summary ``cka``).

    For each method: the norm with the least final-phase forgetting of base-class mAP and the
    norm with the highest BWT. For each norm: the method (other than finetune and joint) that
    closes the largest share of the finetune-to-joint gap in final base-class mAP, then the
    largest over all norms. From ``cka`` (:func:`cka_layer_summary`): per method, the norm whose
    norm layers drift most, and in how many runs late blocks / norm layers drift more.
    """
    comp = comparison_table(table, norms=norms)
    if comp.empty:
        return ["No results are available."]
    out: list[str] = []
    norm_list = list(dict.fromkeys(comp["norm"]))
    methods = list(dict.fromkeys(comp["method"]))
    final = int(comp["final_phase"].max())
    single = len(norm_list) == 1
    if single:
        out.append(f"Only one norm ({norm_list[0]}) has results: there is nothing to compare across norms.")

    for method in methods:
        c = comp[comp["method"] == method]
        forg = {r.norm: (r.forgetting_mean, r.forgetting_std) for r in c.itertuples()}
        ranked = _ranked(forg, higher_is_better=False)
        if not ranked:
            out.append(f"{method}: no final-phase forgetting is available.")
        elif single:
            out.append(f"{method}: forgetting of base-class mAP after phase {final} "
                       f"{_pm(ranked[0][1], ranked[0][2])}.")
        else:
            best = ranked[0]
            others = ", ".join(f"{n} {_pm(m, s)}" for n, m, s in ranked[1:]) or "no other norm has a value"
            extra = _within_spread(best, ranked[1]) if len(ranked) > 1 else ""
            rose = "; negative: base-class mAP rose" if best[1] < 0 else ""
            out.append(f"{method} forgets least with {norm_name(best[0])}: forgetting of base-class mAP after "
                       f"phase {final} {_pm(best[1], best[2])} (vs {others}){extra}{rose}.")
        bwt = {r.norm: (r.bwt_mean, r.bwt_std) for r in c.itertuples()}
        ranked = _ranked(bwt, higher_is_better=True)
        if ranked and not single:
            best = ranked[0]
            others = ", ".join(f"{n} {_pm(m, s)}" for n, m, s in ranked[1:]) or "no other norm has a value"
            out.append(f"{method} has the highest backward transfer with {norm_name(best[0])}: BWT "
                       f"{_pm(best[1], best[2])} (vs {others}).")

    overall: list[tuple[str, str, float]] = []
    for norm in norm_list:
        c = comp[comp["norm"] == norm]
        present = set(c["method"])
        if not set(BOUNDS) <= present:
            absent = " and ".join(b for b in BOUNDS if b not in present)
            out.append(f"With {norm}, the gap to close is undefined: {absent} was not run.")
            continue
        cand = c[~c["method"].isin(BOUNDS)]
        if cand.empty:
            out.append(f"With {norm}, no method besides finetune and joint was run.")
            continue
        shares = {r.method: r.gap_closed_base for r in cand.itertuples() if np.isfinite(r.gap_closed_base)}
        if not shares:
            out.append(f"With {norm}, the finetune-to-joint gap is zero or missing: no gap share can be computed.")
            continue
        order = sorted(shares, key=lambda m: -shares[m])
        best = order[0]
        lo = float(c.loc[c["method"] == LOWER, "base_final_mean"].iloc[0])
        hi = float(c.loc[c["method"] == UPPER, "base_final_mean"].iloc[0])
        inverted = hi < lo
        if not inverted:
            overall.append((norm, best, shares[best]))
        others = "; ".join(f"{m} {_pct(shares[m])}" for m in order[1:])
        out.append(f"With {norm}, {best} closes the largest share of the finetune-to-joint gap in final "
                   f"base-class mAP: {_pct(shares[best])}" + (f" (others: {others})" if others else
                                                             " (the only method besides the bounds)")
                   + (f"; the bounds are inverted here (joint {_f(hi)} ends below finetune {_f(lo)}), so "
                      "the share does not measure progress towards joint." if inverted else "."))
    if len(norm_list) > 1 and overall:
        norm, method, share = max(overall, key=lambda t: t[2])
        skipped = [n for n in norm_list if n not in {t[0] for t in overall}]
        out.append(f"Over all norms, the largest share of the gap is closed by {method} with "
                   f"{norm_name(norm)}: {_pct(share)}"
                   + (f" (not counting {', '.join(skipped)}: no valid gap)." if skipped else "."))

    if cka is not None and not cka.empty:
        out.extend(_cka_findings(cka))
    return out


def _cka_findings(cka: pd.DataFrame) -> list[str]:
    """Counts over the (norm, method) runs and the norm whose norm layers drift most (the
    per-run numbers are in the page's CKA table)."""
    out = []
    valid = cka[np.isfinite(cka["late"]) & np.isfinite(cka["early"])]
    if len(valid):
        n_late = int((valid["late"] < valid["early"]).sum())
        out.append(f"Later blocks ({valid['late_blocks'].iloc[0]}) drift more than earlier ones "
                   f"({valid['early_blocks'].iloc[0]}; lower mean diagonal CKA) in {n_late} of {len(valid)} "
                   "(norm, method) runs.")
    valid = cka[np.isfinite(cka["norm_layers"]) & np.isfinite(cka["conv_layers"])]
    if len(valid):
        n_norm = int((valid["norm_layers"] < valid["conv_layers"]).sum())
        out.append(f"Norm layers drift more than conv layers in {n_norm} of {len(valid)} (norm, method) runs.")
    if cka["norm"].nunique() > 1:
        for method, g in cka.groupby("method", sort=False):
            g = g[np.isfinite(g["norm_layers"])].sort_values("norm_layers", kind="stable")
            if len(g) > 1:
                others = ", ".join(f"{r.norm} {_f(r.norm_layers)}" for r in g.iloc[1:].itertuples())
                out.append(f"{method}: the norm layers drift most with {norm_name(g['norm'].iloc[0])} "
                           f"(mean diagonal CKA {_f(g['norm_layers'].iloc[0])}, vs {others}).")
    return out


# ----------------------------------------------------------------------------- HTML


def _per_phase_html(table: pd.DataFrame, norms: Sequence[str], subset: str) -> str:
    s = summary_table(table, metric="map", subset=subset)
    if s.empty:
        return '<p class="note">no data</p>'
    phases = sorted(int(c[5:-5]) for c in s.columns if c.startswith("phase") and c.endswith("_mean"))
    rows = []
    for norm in norms:
        for _, r in s[s["norm"] == norm].iterrows():
            rows.append([norm, r["method"], int(r["n_seeds"])]
                        + [_pm(r[f"phase{k}_mean"], r[f"phase{k}_std"]) for k in phases]
                        + [_pm(r["average_mean"], r["average_std"])])
    return _html_table(["norm", "method", "seeds"] + [f"phase {k}" for k in phases] + ["average over phases"], rows)


def _final_html(comp: pd.DataFrame) -> str:
    header = ["norm", "method", "seeds", "base-class mAP", "all-class mAP", "forgetting (base mAP)", "BWT",
              "gap closed (base mAP)", "gap closed (all-class mAP)"]
    rows = [[r.norm, r.method, r.n_seeds, _pm(r.base_final_mean, r.base_final_std),
             _pm(r.all_final_mean, r.all_final_std), _pm(r.forgetting_mean, r.forgetting_std),
             _pm(r.bwt_mean, r.bwt_std), _pct(r.gap_closed_base), _pct(r.gap_closed_all)]
            for r in comp.itertuples()]
    return _html_table(header, rows)


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
    from cilaudio.plots import plot_cka_diagonal_by_norm, plot_metric_by_norm

    norms = _norm_order(table, norms)
    datasets = sorted(set(table["dataset"].astype(str)))
    dataset = datasets[0] if len(datasets) == 1 else ", ".join(datasets)
    title = title or f"Normalisation layers compared: {dataset}"
    comp = comparison_table(table, norms=norms)
    order = [*norms, *(n for n in cka_files if n not in norms)]
    cka_files = {n: list(cka_files[n]) for n in order if len(cka_files.get(n, ()))}
    methods = list(dict.fromkeys(table["method"]))
    cka = cka_layer_summary(cka_files) if cka_files else None
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
    h.append("<dt>gap closed</dt><dd>(method - finetune) / (joint - finetune) on the final-phase mean over "
             "seeds: 0 % = no better than fine-tuning, 100 % = as good as joint training.</dd>")
    h.append("<dt>diagonal CKA</dt><dd>linear CKA between a layer of the phase-0 model and the same layer of "
             "the final model, on the base-class test clips: 1 = unchanged representation, low = drifted.</dd>")
    h.append("</dl>")
    h.append('<p class="note">All numbers: mean ± standard deviation over seeds (ddof = 1; the ± part is '
             "left out with one seed).</p>")

    h.append("<h2>Findings</h2><ul>")
    h.extend(f"<li>{_e(s)}</li>" for s in comparison_findings(table, cka=cka, norms=norms))
    h.append("</ul>")

    h.append(f"<h2>Final phase ({final})</h2>")
    h.append(_final_html(comp))
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
        h.append(_figure_html("Base-class mAP after each phase, one panel per norm (mean over seeds; "
                              "band: min..max over seeds).", fig))
        fig = Path(tmp) / "all_map.png"
        plot_metric_by_norm(table, fig, subset="all", metric="map", norms=norms, methods=methods)
        h.append(_figure_html("All-class mAP after each phase, one panel per norm.", fig))
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
) -> None:
    """The workflow step: ``{norm: metrics.tsv}`` and ``{norm: [cka npz]}`` -> ``out`` (HTML)."""
    table = read_tables(tables)
    if dataset is not None and len(table) and set(table["dataset"].astype(str)) != {str(dataset)}:
        raise ValueError(f"the metrics tables are of {sorted(set(table['dataset']))}, not {dataset!r}")
    repo = repo_dir or Path(__file__).resolve().parents[2]
    write_comparison(out, table=table, cka_files=cka, norms=list(tables), provenance=_provenance(repo))
    log.info("compared norms %s (%d rows, %d CKA files) -> %s", list(tables), len(table),
             sum(len(v) for v in cka.values()), out)

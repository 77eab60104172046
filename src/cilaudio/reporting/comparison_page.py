"""The normalisations side by side: one self-contained HTML page per dataset.

It reads each norm's tidy ``metrics.tsv`` (see :mod:`cilaudio.tables`) and the CKA files of the
final phase, and puts the norms (``bn``, ``gn``, ``cn``) next to each other: base-class and
all-class mAP after every phase, final-phase forgetting, backward transfer, the share of the
finetune-to-joint gap closed, base-class mAP curves per norm, the diagonal CKA per layer per
norm, and plain-language findings computed from the numbers (:mod:`cilaudio.reporting.statistics`,
:mod:`cilaudio.reporting.findings`). :func:`make_comparison` is the workflow's step: the page and
the paper tables (:mod:`cilaudio.reporting.paper_tables`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cilaudio.atomic import write_text
from cilaudio.reporting.findings import comparison_findings
from cilaudio.reporting.html import escape, figure_html, html_head, html_table, interval_cell, no_break
from cilaudio.reporting.paper_tables import write_paper_tables
from cilaudio.reporting.provenance import provenance as code_provenance, provenance_html
from cilaudio.reporting.statistics import (
    BOUNDS,
    best_that_holds,
    cka_layer_summary,
    comparison_table,
    norm_order,
    read_tables,
    seed_table,
    seed_values,
)
from cilaudio.reporting.texts import BWT_DEFINITION, norm_name
from cilaudio.stats import INTERVAL_NOTE, PAIRED_NOTE, fmt_interval, interval

log = logging.getLogger(__name__)

MARK = "\u00a0▲"

FINAL_COLUMNS = (  # (quantity, header, higher is better)
    ("base_final", "base-class mAP", True),
    ("all_final", "all-class mAP", True),
    ("forgetting", "forgetting (base mAP)", False),
    ("bwt", "BWT", True),
    ("gap_closed_base", "gap closed (base mAP)", True),
    ("gap_closed_all", "gap closed (all-class mAP)", True),
)

DEFINITIONS = (  # (term, definition)
    ("base-class mAP", "mAP on the phase-0 classes, on the phase-0 test clips, after every phase (the same clips "
                       "every time)."),
    ("all-class mAP", "mAP on every class seen so far, on that phase's cumulative test clips."),
    ("forgetting", "base-class mAP after phase 0 minus base-class mAP after the final phase, per seed (positive = "
                   "forgotten)."),
    ("backward transfer (BWT)", BWT_DEFINITION),
    ("gap closed", "(method - finetune) / (joint - finetune) on the final-phase mAP, per seed (with that seed's "
                   "finetune and joint), then the mean over seeds: 0 % = no better than fine-tuning, 100 % = as "
                   "good as joint training."),
    ("diagonal CKA", "linear CKA between a layer of the phase-0 model and the same layer of the final model, on "
                     "the base-class test clips: 1 = unchanged representation, low = drifted."),
)


def _f(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


# ----------------------------------------------------------------------------- tables


def _per_phase_table(table: pd.DataFrame, norms: Sequence[str], subset: str) -> str:
    """mAP on ``subset`` after each phase and averaged over phases, per (norm, method)."""
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
                        + [interval_cell(wide[k].to_numpy() if k in wide.columns else []) for k in phases]
                        + [interval_cell(wide.mean(axis=1, skipna=False).to_numpy())])
    return html_table(["norm", "method", "seeds"] + [f"phase {k}" for k in phases] + ["average over phases"], rows)


def final_table(table: pd.DataFrame, norms: Sequence[str]) -> str:
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
            best = best_that_holds({n: seed_values(seeds, n, method, q) for n in norms}, higher_is_better=higher)
            if best is not None:
                marks.add((best, method, q))
    header = ["norm", "method", "seeds"] + [h for _, h, _ in FINAL_COLUMNS]
    rows = []
    for r in comp.itertuples():
        row = [r.norm, r.method, r.n_seeds]
        for q, _, _ in FINAL_COLUMNS:
            iv = interval(seed_values(seeds, r.norm, r.method, q).values())
            cell = fmt_interval(iv, 1, scale=100, unit=" %") if q.startswith("gap_closed") else fmt_interval(iv)
            row.append(no_break(cell) + (MARK if (r.norm, r.method, q) in marks else ""))
        rows.append(row)
    return html_table(header, rows)


def _cka_table(cka: pd.DataFrame) -> str:
    header = ["norm", "method", "phase", "seeds", "norm layers", "conv layers", "early blocks", "late blocks",
              "lowest layer"]
    rows = [[r.norm, r.method, r.phase, r.n_seeds, _f(r.norm_layers), _f(r.conv_layers),
             f"{_f(r.early)} ({r.early_blocks})" if r.early_blocks else "n/a",
             f"{_f(r.late)} ({r.late_blocks})" if r.late_blocks else "n/a",
             f"{r.lowest_layer} ({_f(r.lowest)})"] for r in cka.itertuples()]
    return html_table(header, rows)


def _sorted_cka(cka: pd.DataFrame, norms: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """The CKA summary in the page's order of norms, then of methods."""
    if not len(cka):
        return cka
    rank = {m: i for i, m in enumerate(methods)}
    return (cka.assign(_n=cka["norm"].map({n: i for i, n in enumerate(norms)}),
                       _m=cka["method"].map(lambda m: rank.get(m, len(rank))))
            .sort_values(["_n", "_m"], kind="stable").drop(columns=["_n", "_m"]).reset_index(drop=True))


# ----------------------------------------------------------------------------- sections


def _setup_section(table: pd.DataFrame, dataset: str, norms: Sequence[str], methods: Sequence[str],
                   final: int) -> list[str]:
    h = ["<h2>Setup</h2><dl>",
         f"<dt>dataset</dt><dd>{escape(dataset)}</dd>",
         f"<dt>norms</dt><dd>{escape(', '.join(norm_name(n) for n in norms))}</dd>",
         f"<dt>methods</dt><dd>{escape(', '.join(methods))}</dd>"]
    seeds = {n: ", ".join(str(s) for s in sorted(int(s) for s in table[table["norm"] == n]["seed"].unique()))
             for n in norms}
    if len(set(seeds.values())) <= 1:
        h.append(f"<dt>seeds</dt><dd>{escape(next(iter(seeds.values()), ''))}</dd>")
    else:
        h.extend(f"<dt>seeds ({escape(n)})</dt><dd>{escape(v)}</dd>" for n, v in seeds.items())
    h.append(f"<dt>phases</dt><dd>0 to {final}</dd></dl>")
    return h


def _definitions_section() -> list[str]:
    h = ["<h2>Definitions</h2><dl>"]
    h += [f"<dt>{escape(term, quote=False)}</dt><dd>{escape(text, quote=False)}</dd>" for term, text in DEFINITIONS]
    h.append("</dl>")
    h.append(f'<p class="note">All numbers: mean over seeds [95 % interval]. {escape(INTERVAL_NOTE)}</p>')
    h.append(f'<p class="note">{escape(PAIRED_NOTE)} Two methods of one norm with the same seed share the phase-0 '
             "model and the data order; two norms are paired by seed too (same seed, but each norm has its own "
             "phase-0 model). CKA is computed for the first seed only.</p>")
    return h


def _tables_sections(table: pd.DataFrame, norms: Sequence[str], final: int, cka: pd.DataFrame | None) -> list[str]:
    """The final-phase table, mAP after each phase and the diagonal CKA by layer kind."""
    h = [f"<h2>Final phase ({final})</h2>",
         f'<p class="note">Mean over seeds [95 % interval].{escape(MARK)}: the best norm for that method in '
         "that column, marked only where its paired difference (by seed) with the runner-up norm holds "
         "(its 95 % interval excludes 0).</p>",
         final_table(table, norms),
         "<h2>Base-class mAP after each phase</h2>", _per_phase_table(table, norms, "base"),
         "<h2>All-class mAP after each phase</h2>", _per_phase_table(table, norms, "all"),
         "<h2>Diagonal CKA by layer kind</h2>"]
    if cka is None or cka.empty:
        h.append('<p class="note">no CKA results</p>')
    else:
        h.append('<p class="note">Mean diagonal CKA (phase 0 vs the final phase) over the norm layers, over '
                 "the conv layers (classifier excluded) and over the first and second half of the blocks.</p>")
        h.append(_cka_table(cka))
    return h


def _figures_section(table: pd.DataFrame, norms: Sequence[str], methods: Sequence[str],
                     cka_files: Mapping[str, Sequence[str | os.PathLike]]) -> list[str]:
    """mAP curves per norm and the diagonal CKA per norm, drawn into a temporary folder and embedded."""
    from cilaudio.reporting.plots import BAND_CAPTION, plot_cka_diagonal_by_norm, plot_metric_by_norm

    h = ["<h2>Figures</h2>"]
    with tempfile.TemporaryDirectory(prefix="comparison-") as tmp:
        for subset, what in (("base", "Base-class"), ("all", "All-class")):
            fig = Path(tmp) / f"{subset}_map.png"
            plot_metric_by_norm(table, fig, subset=subset, metric="map", norms=norms, methods=methods)
            h.append(figure_html(f"{what} mAP after each phase, one panel per norm ({BAND_CAPTION}).", fig))
        if cka_files:
            fig = Path(tmp) / "cka_diagonal.png"
            plot_cka_diagonal_by_norm(cka_files, fig, methods=methods)
            h.append(figure_html("CKA of each layer with itself between the phase-0 model and the final "
                                 "model, one panel per norm, one line per method (squares, shaded: norm "
                                 "layers). The TASLP paper reports that later layers and BatchNorm layers "
                                 "drift most.", fig))
        else:
            h.append('<p class="note">no CKA results</p>')
    return h


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

    ``table``: the tidy metrics of every norm (:func:`~cilaudio.reporting.statistics.read_tables`);
    ``cka_files``: ``{norm: [npz, ...]}`` (the last phase among each norm's files is shown);
    ``norms``: display order.
    """
    norms = norm_order(table, norms)
    datasets = sorted(set(table["dataset"].astype(str)))
    dataset = datasets[0] if len(datasets) == 1 else ", ".join(datasets)
    title = title or f"Normalisation layers compared: {dataset}"
    order = [*norms, *(n for n in cka_files if n not in norms)]
    cka_files = {n: list(cka_files[n]) for n in order if len(cka_files.get(n, ()))}
    methods = list(dict.fromkeys(table["method"]))
    cka = _sorted_cka(cka_layer_summary(cka_files), norms, methods) if cka_files else None
    cka_seeds = cka_layer_summary(cka_files, by_seed=True) if cka_files else None
    final = int(table["phase"].max()) if len(table) else 0

    h: list[str] = [*html_head(title), *_setup_section(table, dataset, norms, methods, final)]
    h += _definitions_section()
    h.append("<h2>Findings</h2><ul>")
    h.extend(f"<li>{escape(s)}</li>" for s in comparison_findings(table, cka=cka, norms=norms, cka_by_seed=cka_seeds))
    h.append("</ul>")
    h += _tables_sections(table, norms, final, cka)
    h += _figures_section(table, norms, methods, cka_files)
    if provenance:
        h += ["<h2>Provenance</h2>", provenance_html(provenance)]
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
    repo = repo_dir or Path(__file__).resolve().parents[3]
    write_comparison(out, table=table, cka_files=cka, norms=list(tables), provenance=code_provenance(repo))
    if tex is not None or md is not None:
        write_paper_tables(table, tex=tex, md=md, norms=list(tables))
    log.info("compared norms %s (%d rows, %d CKA files) -> %s", list(tables), len(table),
             sum(len(v) for v in cka.values()), ", ".join(str(x) for x in (out, tex, md) if x is not None))

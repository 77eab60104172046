"""The report of one run (a dataset and a norm): a single self-contained HTML page with the
setup, the result tables, the findings, the figures, the exact configuration and the software
provenance (:func:`write_report`)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import pandas as pd

from cilaudio.atomic import write_text
from cilaudio.metrics import metric_label, metric_names, registry
from cilaudio.reporting.findings import findings, left_out_note
from cilaudio.reporting.html import (
    escape,
    figure_html,
    html_head,
    html_table,
    interval_cell,
    percent_interval_cell,
)
from cilaudio.reporting.provenance import config_html, provenance_html, setup_html, warnings_html
from cilaudio.stats import INTERVAL_NOTE, PAIRED_NOTE
from cilaudio.tables import gap_shares

DEFAULT_THRESHOLD = 0.5  # the schema's evaluation.threshold


def report_metrics(config: Mapping | None = None) -> dict[str, list[tuple[str, str]]]:
    """``(name, label)`` of the report's metrics, from :data:`cilaudio.metrics.REGISTRY` as it is
    when called: ``standard`` (scores that are not reference variants), ``reference`` (the
    reference code's variants) and ``forgetting`` (the metrics with forgetting rows). Counts get
    no section. The label of a metric taken on ``scores > threshold`` names the threshold of
    ``config`` (``evaluation.threshold``, else 0.5)."""
    evaluation = config.get("evaluation") if isinstance(config, Mapping) else None
    threshold = evaluation.get("threshold") if isinstance(evaluation, Mapping) else None
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    out: dict[str, list[tuple[str, str]]] = {"standard": [], "reference": [], "forgetting": []}
    for m in registry():
        if m.count:
            continue
        label = f"{m.label} (threshold {threshold:g})" if m.thresholded else m.label
        out["reference" if m.reference else "standard"].append((m.name, label))
        if m.forgetting:
            out["forgetting"].append((m.name, label))
    return out


# ----------------------------------------------------------------------------- tables


def _groups(table: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    pairs = list(dict.fromkeys(zip(table["dataset"], table["norm"])))
    return [(d, n, table[(table["dataset"] == d) & (table["norm"] == n)]) for d, n in pairs]


def phase_table(sub: pd.DataFrame, subset: str, metric: str) -> str:
    """The table of ``metric`` on ``subset``: one row per method, one column per phase, every cell
    the mean over seeds with its 95 % interval."""
    sel = sub[(sub["subset"] == subset) & (sub["metric"] == metric)]
    if sel.empty:
        return '<p class="note">no data</p>'
    phases = sorted(int(p) for p in sel["phase"].unique())
    rows = []
    for method in dict.fromkeys(sel["method"]):
        m = sel[sel["method"] == method]
        per_phase = {int(k): g.groupby("seed")["value"].mean().to_numpy() for k, g in m.groupby("phase")}
        row = [method, int(m["seed"].nunique())]
        row += [interval_cell(per_phase.get(k, [])) for k in phases]
        rows.append(row)
    return html_table(["method", "seeds"] + [f"phase {k}" for k in phases], rows)


def _group_matrix(sub: pd.DataFrame, method: str) -> str:
    """mAP of each class group (columns) after each phase (rows) of one method."""
    sel = sub[(sub["method"] == method) & sub["subset"].str.match(r"^group\d+$") & (sub["metric"] == "map")]
    if sel.empty:
        return '<p class="note">no per-group results</p>'
    sel = sel.assign(group=sel["subset"].str[5:].astype(int))
    cells = {(int(p), int(g)): v.groupby("seed")["value"].mean().to_numpy()
             for (p, g), v in sel.groupby(["phase", "group"])}
    phases = sorted(sel["phase"].unique())
    groups = sorted(sel["group"].unique())
    rows = []
    for p in phases:
        row = [f"after phase {int(p)}"]
        row += [interval_cell(cells[(int(p), int(g))]) if (int(p), int(g)) in cells else "" for g in groups]
        rows.append(row)
    return html_table(["measured"] + [f"group {int(g)} (classes of phase {int(g)})" for g in groups], rows)


def _summary_table(table: pd.DataFrame, metric: str = "map") -> str:
    """Base-class ``metric`` after each phase, its average over phases, its final value and the
    share of the finetune-to-joint gap closed, per (dataset, norm, method)."""
    sel = table[(table["subset"] == "base") & (table["metric"] == metric)]
    if sel.empty:
        return f'<p class="note">no base-class {escape(metric_label(metric))} results</p>'
    phases = sorted(int(p) for p in sel["phase"].unique())
    shares = gap_shares(table, subset="base", metric=metric)
    header = ["dataset", "norm", "method", "seeds"] + [f"phase {k}" for k in phases] + [
        "average over phases", "final phase", "share of finetune-to-joint gap closed (final, per seed)"]
    rows = []
    for (ds, norm), grp in sel.groupby(["dataset", "norm"], sort=False):
        final = int(table[(table["dataset"] == ds) & (table["norm"] == norm)]["phase"].max())
        for method in dict.fromkeys(grp["method"]):
            wide = grp[grp["method"] == method].pivot_table(index="seed", columns="phase", values="value",
                                                              aggfunc="mean", dropna=False)
            col = {k: (wide[k].to_numpy() if k in wide.columns else []) for k in phases}
            avg = wide.mean(axis=1, skipna=False).to_numpy()  # over phases per seed, then over seeds
            sh = shares[(shares["dataset"] == ds) & (shares["norm"] == norm) & (shares["method"] == method)]
            rows.append([ds, norm, method, int(wide.shape[0])] + [interval_cell(col[k]) for k in phases]
                        + [interval_cell(avg), interval_cell(col.get(final, [])),
                           percent_interval_cell(sh["share"].to_numpy())])
    return html_table(header, rows)


# ----------------------------------------------------------------------------- sections


def _summary_sections(table: pd.DataFrame, headline: Sequence[str]) -> list[str]:
    h = []
    for metric in headline:
        label = metric_label(metric)
        h.append(f"<h2>Summary: base-class {escape(label)}</h2>")
        h.append(f'<p class="note">{escape(label)} on the base (phase-0) classes, on the same phase-0 test clips '
                 f"after every phase. Every cell: mean over seeds [95 % interval]. {escape(INTERVAL_NOTE)} Gap "
                 "share = (method - finetune) / (joint - finetune) at the final phase, computed per seed with that "
                 "seed's finetune and joint, then averaged over seeds with its interval.</p>")
        h.append(_summary_table(table, metric))
    return h


def _findings_section(table: pd.DataFrame, headline: Sequence[str], training: pd.DataFrame | None,
                      notes: Sequence[str]) -> list[str]:
    """The findings of each headline metric, of the training histories and the notes."""
    h = ["<h2>Findings</h2>",
         f'<p class="note">{escape(PAIRED_NOTE)} Two methods with the same seed share the phase-0 model and '
         "the data order. One list per headline metric (the papers report F1 beside mAP); the F1 scores "
         "threshold the scores at the evaluation threshold, mAP ranks them.</p>"]
    for metric in headline:
        h.append(f"<h3>Base-class {escape(metric_label(metric))}</h3><ul>")
        h.extend(f"<li>{escape(s)}</li>" for s in findings(table, metric))
        h.append("</ul>")
    if training is not None:
        from cilaudio.training_history import convergence_findings

        h.append("<h3>Training</h3><ul>")
        h.extend(f"<li>{escape(s)}</li>" for s in convergence_findings(training))
        h.append("</ul>")
    if notes:
        h.append("<h3>Notes</h3><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    return h


def _metric_sections(groups, metrics) -> list[str]:
    """Per-phase tables of ``metrics`` for all seen classes and for the base classes."""
    h, multi = [], len(groups) > 1
    for ds, norm, sub in groups:
        if multi:
            h.append(f"<h3>{escape(ds)} / {escape(norm)}</h3>")
        for subset, what in (("all", "all classes seen so far"), ("base", "base classes")):
            for metric, label in metrics:
                h.append(f"<h4>{escape(label)} - {escape(what)}</h4>")
                h.append(phase_table(sub, subset, metric))
    return h


def _results_sections(table: pd.DataFrame, groups, sections: Mapping[str, list[tuple[str, str]]]) -> list[str]:
    """The per-phase tables of the standard metrics, then of the reference code's variants."""
    h = ["<h2>Results per phase</h2>",
         '<p class="note">Mean over seeds [95 % interval]; the mean alone with one seed. "all": every class '
         'seen so far, on that phase\'s cumulative test set; "base": the phase-0 classes on the phase-0 test '
         "clips. " + escape(left_out_note(table)) + "</p>"]
    h.extend(_metric_sections(groups, sections["standard"]))
    h.append("<h2>Reference code's thresholded variants (NOT the standard metrics)</h2>")
    h.append('<p class="note">These reproduce the reference implementation\'s "mAP" and lwlrap, computed '
             "on 0/1 predictions at threshold 0.5 instead of on scores, only so that published numbers can be "
             "compared. They reproduce the reference exactly, including its mean over every class (a class "
             "without positives counts as AP 0), except its alias defect that zeroes the first test clip's "
             "labels. Use the standard metrics above for conclusions.</p>")
    h.extend(_metric_sections(groups, sections["reference"]))
    return h


def _forgetting_section(groups, forgetting: Sequence[tuple[str, str]]) -> list[str]:
    h = ["<h2>Forgetting</h2>",
         '<p class="note">Forgetting = (base-class value after phase 0) - (base-class value after phase k), '
         "on the same phase-0 test clips and seed; positive = forgotten.</p>"]
    for ds, norm, sub in groups:
        if len(groups) > 1:
            h.append(f"<h3>{escape(ds)} / {escape(norm)}</h3>")
        for m, label in forgetting:
            h.append(f"<h4>forgetting of {escape(label)}</h4>")
            h.append(phase_table(sub, "base", f"forgetting_{m}"))
    return h


def _group_section(groups) -> list[str]:
    h = ["<h2>mAP per class group</h2>",
         '<p class="note">Rows: the phase after which the model is measured; columns: the classes '
         "introduced in each phase, on that phase's test clips. Mean over seeds [95 % interval].</p>"]
    for ds, norm, sub in groups:
        for method in dict.fromkeys(sub["method"]):
            h.append(f"<h3>{escape(method)}" + (f" ({escape(ds)} / {escape(norm)})" if len(groups) > 1 else "")
                     + "</h3>")
            h.append(_group_matrix(sub, method))
    return h


def _figures_section(figures: Mapping[str, str | os.PathLike]) -> list[str]:
    h = ["<h2>Figures</h2>"]
    if not figures:
        h.append('<p class="note">no figures</p>')
    h.extend(figure_html(caption, path) for caption, path in figures.items())
    return h


def write_report(
    out_html: str | os.PathLike,
    *,
    title: str,
    table: pd.DataFrame,
    figures: Mapping[str, str | os.PathLike],
    config: Mapping,
    provenance: Mapping,
    notes: Sequence[str] = (),
    setup: Mapping[str, str] = {},  # noqa: B006 (read only)
    training: pd.DataFrame | None = None,
    warnings: Sequence[str] = (),
) -> None:
    """Write one self-contained HTML report (figures embedded as base64 PNG), atomically.
    ``warnings`` (e.g. results of several library versions) are shown first, in a box."""
    headline = [m for m in metric_names(headline=True) if m in set(table.get("metric", []))] or ["map"]
    groups = _groups(table)
    sections = report_metrics(config)
    h: list[str] = [*html_head(title), *warnings_html(warnings), *setup_html(setup)]
    h += _summary_sections(table, headline)
    h += _findings_section(table, headline, training, notes)
    h += _results_sections(table, groups, sections)
    h += _forgetting_section(groups, sections["forgetting"])
    h += _group_section(groups)
    h += _figures_section(figures)
    h += config_html(config)
    h += ["<h2>Provenance</h2>", provenance_html(provenance), "</body></html>"]
    write_text(out_html, "\n".join(h) + "\n")

"""A single self-contained HTML report of a run: setup, result tables, findings, figures,
the exact configuration and the software provenance."""

from __future__ import annotations

import base64
import html
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from cilaudio.atomic import write_text
from cilaudio.metrics import metric_label, metric_names, registry
from cilaudio.stats import INTERVAL_NOTE, PAIRED_NOTE, Interval, describe, fmt_interval, interval, paired, seeds_word
from cilaudio.tables import final_per_seed, gap_shares

PACKAGES = ("torch", "torchaudio", "numpy", "pandas", "scikit-learn", "h5py", "soundfile", "matplotlib", "snakemake")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOWER, UPPER = "finetune", "joint"

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


# ----------------------------------------------------------------------------- provenance


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def provenance(repo_dir: Path | None = None) -> dict:
    """Code version (git commit, ``-dirty`` with uncommitted changes, else ``"unknown"``),
    Python version, platform and versions of the main packages (``"not installed"``)."""
    cwd = Path(repo_dir) if repo_dir is not None else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit and commit.strip():
        version = commit.strip()
        status = _git(["status", "--porcelain"], cwd)
        if status is None or status.strip():
            version += "-dirty"
    else:
        version = "unknown"
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "code_version": version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


# ----------------------------------------------------------------------------- findings


def _f(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _iv(iv: Interval) -> str:
    """A mean with its 95 % interval (the mean alone with one seed)."""
    return fmt_interval(iv)


def _iv_pct(iv: Interval) -> str:
    return fmt_interval(iv, 1, scale=100, unit=" %")


def _one(*ivs: Interval) -> str:
    """``"; one seed, no interval"`` when the numbers of a sentence come from one seed."""
    return "; one seed, no interval" if max((iv.n for iv in ivs), default=0) == 1 else ""


def _by_seed(frame: pd.DataFrame, method: str, column: str = "value") -> dict[int, float]:
    sel = frame[frame["method"] == method]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[column])}


def findings(table: pd.DataFrame, metric: str = "map") -> list[str]:
    """Plain-language statements about the base-class ``metric`` (a registered metric) from ``table``.

    Every number is a mean over seeds with its 95 % t-interval (:mod:`cilaudio.stats`). Joint and
    finetune: how much of their phase-0 base-class mAP they keep at the final phase and whether
    the drop holds over the seeds. Every other method: its final base-class mAP against finetune
    and joint as paired differences over seeds, and its per-seed share of the gap. A method is
    said to lie between, below or above the bounds only where those differences hold; otherwise
    the sentence says that it is not distinguishable at this number of seeds. Beside the final
    phase, each method's value averaged over phases 1..K (per seed) is compared with finetune's:
    the steadier statistic when the final phase alone is noisy.
    """
    name = metric_label(metric)
    out: list[str] = []
    sel = table[(table["subset"] == "base") & (table["metric"] == metric)]
    if sel.empty:
        return [f"No base-class {name} results are available."]
    fin_all = final_per_seed(table, subset="base", metric=metric)
    shares_all = gap_shares(table, subset="base", metric=metric)
    pairs = list(dict.fromkeys(zip(sel["dataset"], sel["norm"])))
    for ds, norm in pairs:
        sub = sel[(sel["dataset"] == ds) & (sel["norm"] == norm)]
        prefix = f"[{ds}, {norm}] " if len(pairs) > 1 else ""
        final = int(table[(table["dataset"] == ds) & (table["norm"] == norm)]["phase"].max())
        fin = fin_all[(fin_all["dataset"] == ds) & (fin_all["norm"] == norm)]
        shares = shares_all[(shares_all["dataset"] == ds) & (shares_all["norm"] == norm)]
        p0 = sub[sub["phase"] == 0].groupby(["method", "seed"])["value"].mean()
        methods = list(dict.fromkeys(sub["method"]))
        final_of = {m: _by_seed(fin, m) for m in methods}
        start_of = {m: {int(s): float(v) for (mm, s), v in p0.items() if mm == m} for m in methods}
        later = sub[sub["phase"] > 0].groupby(["method", "seed"])["value"].mean()
        mean_of = {m: {int(s): float(v) for (mm, s), v in later.items() if mm == m} for m in methods}

        for m, what in ((UPPER, "joint training (upper bound)"), (LOWER, "fine-tuning (lower bound)")):
            if m not in methods:
                continue
            a, b = start_of[m], final_of[m]
            keep = interval([b[s] / a[s] for s in a if s in b and a[s] != 0])
            drop = paired(a, b)
            out.append(
                f"{prefix}After the final phase ({final}), {what} keeps {_iv_pct(keep)} of its phase-0 "
                f"base-class {name} ({_iv(interval(a.values()))} -> {_iv(interval(b.values()))}); its drop "
                f"(phase 0 minus final, per seed) {describe(drop)}{_one(keep)}.")
        have_bounds = LOWER in methods and UPPER in methods
        gap = paired(final_of[UPPER], final_of[LOWER]) if have_bounds else None
        for m in methods:
            if m in (LOWER, UPPER):
                continue
            v = interval(final_of[m].values())
            if v.n == 0:
                out.append(f"{prefix}{m}: no final-phase base-class {name} is available.")
                continue
            if not have_bounds:
                absent = " and ".join(b for b in (LOWER, UPPER) if b not in methods)
                out.append(f"{prefix}{m} ends phase {final} with base-class {name} {_iv(v)}{_one(v)}; "
                           f"it cannot be placed between the bounds because {absent} was not run.")
                continue
            lo, hi = paired(final_of[m], final_of[LOWER]), paired(final_of[m], final_of[UPPER])
            share = interval(_by_seed(shares, m, "share").values())
            over = paired(mean_of[m], mean_of[LOWER])
            detail = (f"final base-class {name} {_iv(v)} vs finetune {_iv(interval(final_of[LOWER].values()))} "
                      f"and joint {_iv(interval(final_of[UPPER].values()))}; {m} vs finetune {describe(lo)}; "
                      f"{m} vs joint {describe(hi)}; share of the finetune-to-joint gap closed "
                      f"{_iv_pct(share)} (per seed); averaged over phases 1-{final}, {m} vs finetune "
                      f"{describe(over)}{_one(v)}")
            if gap.n == 0:
                out.append(f"{prefix}{m}: the bounds have no final-phase value on a common seed ({detail}).")
            elif gap.sign < 0:
                out.append(f"{prefix}{m}: the bounds are inverted here - joint ends below finetune "
                           f"(joint vs finetune {describe(gap)}; {detail}).")
            elif lo.sign < 0:
                out.append(f"{prefix}{m} does NOT land between the bounds: it ends BELOW finetune, "
                           f"the lower bound ({detail}).")
            elif hi.sign > 0:
                out.append(f"{prefix}{m} does NOT land between the bounds: it ends ABOVE joint, "
                           f"the upper bound ({detail}).")
            elif lo.sign > 0 and hi.sign < 0:
                out.append(f"{prefix}{m} lands between finetune and joint ({detail}).")
            else:
                unclear = " or ".join(b for b, p in ((LOWER, lo), (UPPER, hi)) if p.sign == 0)
                n = max(lo.n, hi.n)
                at = {0: "(no seed in common)", 1: "(one seed)"}.get(n, f"with {seeds_word(n)}")
                out.append(f"{prefix}{m} cannot be placed against the bounds: it is not distinguishable from "
                           f"{unclear} {at} ({detail}).")
    if not table.empty and int(table.groupby(["dataset", "norm", "method"])["seed"].nunique().max()) == 1:
        out.append(SINGLE_SEED)
    return out


SINGLE_SEED = (
    "Every figure here comes from ONE seed, so no spread was measured and no interval can be given: "
    "every difference between methods is not distinguishable (one seed). On the built-in benchmark, a "
    "change of the dropout masks alone moved a method's share of the gap by more than 20 percentage "
    "points, so do not rank methods or norms on these numbers. Add seeds (run.seeds) to get 95 % "
    "intervals over seeds and paired comparisons.")


def left_out_note(table: pd.DataFrame) -> str:
    """What the report says about classes without a positive test excerpt (left out of mAP and
    macro F1), from the ``classes_without_positives`` rows of ``table``."""
    rule = ("Classes without any positive test excerpt in a subset are left out of mAP, macro F1 and "
            "ROC AUC (micro F1 still counts predictions on them as false positives), and classes without "
            "a negative one are left out of ROC AUC too; metrics.tsv gives their number per subset as "
            "classes_without_positives and classes_without_negatives.")
    rows = table[table["metric"] == "classes_without_positives"] if "metric" in table else table.iloc[:0]
    if rows.empty:
        return rule
    worst = rows.groupby("subset")["value"].max()
    left = {k: int(v) for k, v in worst.items() if v > 0}
    if not left:
        return rule + " In this run no class was left out."
    parts = ", ".join(f"{k}: up to {v}" for k, v in sorted(left.items()))
    return rule + f" In this run classes were left out in these subsets ({parts})."


# ----------------------------------------------------------------------------- HTML helpers

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
th:first-child,td:first-child{text-align:left}
th{background:#eee}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
figure{margin:1em 0}
figure img{max-width:100%}
.note{color:#555;font-size:.92em}
dt{font-weight:bold;margin-top:.4em}
dd{white-space:pre-wrap;margin-left:1.5em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    parts = ['<div class="scroll"><table>', "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def _nb(text: str) -> str:
    """A table cell that may wrap only between the mean and its interval: no-break spaces inside
    ``[low, high]`` and before ``%``."""
    return text.replace(", ", ",\u00a0").replace(" %", "\u00a0%")


def _ci(values: Any) -> str:
    """Table cell: the mean over seeds with its 95 % t-interval (the mean alone with one seed)."""
    return _nb(fmt_interval(interval(values)))


def _ci_pct(values: Any) -> str:
    return _nb(fmt_interval(interval(values), 1, scale=100, unit=" %"))


def _groups(table: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    pairs = list(dict.fromkeys(zip(table["dataset"], table["norm"])))
    return [(d, n, table[(table["dataset"] == d) & (table["norm"] == n)]) for d, n in pairs]


def _phase_table(sub: pd.DataFrame, subset: str, metric: str) -> str:
    sel = sub[(sub["subset"] == subset) & (sub["metric"] == metric)]
    if sel.empty:
        return '<p class="note">no data</p>'
    phases = sorted(int(p) for p in sel["phase"].unique())
    rows = []
    for method in dict.fromkeys(sel["method"]):
        m = sel[sel["method"] == method]
        per_phase = {int(k): g.groupby("seed")["value"].mean().to_numpy() for k, g in m.groupby("phase")}
        row = [method, int(m["seed"].nunique())]
        row += [_ci(per_phase.get(k, [])) for k in phases]
        rows.append(row)
    return _html_table(["method", "seeds"] + [f"phase {k}" for k in phases], rows)


def _group_matrix(sub: pd.DataFrame, method: str) -> str:
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
        row += [_ci(cells[(int(p), int(g))]) if (int(p), int(g)) in cells else "" for g in groups]
        rows.append(row)
    return _html_table(["measured"] + [f"group {int(g)} (classes of phase {int(g)})" for g in groups], rows)


def _summary_html(table: pd.DataFrame, metric: str = "map") -> str:
    sel = table[(table["subset"] == "base") & (table["metric"] == metric)]
    if sel.empty:
        return f'<p class="note">no base-class {_e(metric_label(metric))} results</p>'
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
            rows.append([ds, norm, method, int(wide.shape[0])] + [_ci(col[k]) for k in phases]
                        + [_ci(avg), _ci(col.get(final, [])), _ci_pct(sh["share"].to_numpy())])
    return _html_table(header, rows)


def _plain(x: Any) -> Any:
    """Config -> plain YAML-serialisable data."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _provenance_html(prov: Mapping) -> str:
    rows = []
    for k, v in prov.items():
        if isinstance(v, Mapping):
            rows.extend([f"{k}: {kk}", vv] for kk, vv in v.items())
        else:
            rows.append([k, v])
    return _html_table(["item", "value"], rows)


def _figure_html(caption: str, path: str | os.PathLike) -> str:
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------- report


def _metric_sections(groups, metrics) -> list[str]:
    """Per-phase tables of ``metrics`` for all seen classes and for the base classes."""
    h, multi = [], len(groups) > 1
    for ds, norm, sub in groups:
        if multi:
            h.append(f"<h3>{_e(ds)} / {_e(norm)}</h3>")
        for subset, what in (("all", "all classes seen so far"), ("base", "base classes")):
            for metric, label in metrics:
                h.append(f"<h4>{_e(label)} - {_e(what)}</h4>")
                h.append(_phase_table(sub, subset, metric))
    return h


def html_head(title: str) -> list[str]:
    """The opening lines of a self-contained page (inline style), up to its <h1>."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]


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
    h: list[str] = [*html_head(title)]
    for warning in warnings:
        h.append(f'<p class="warning" style="border:2px solid #b00;padding:0.5em;background:#fee">'
                 f"<strong>Warning:</strong> {_e(warning)}</p>")
    h.append("<h2>Setup</h2>")
    if setup:
        h.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in setup.items()) + "</dl>")
    else:
        h.append('<p class="note">no setup given</p>')

    headline = [m for m in metric_names(headline=True) if m in set(table.get("metric", []))] or ["map"]
    for metric in headline:
        label = metric_label(metric)
        h.append(f"<h2>Summary: base-class {_e(label)}</h2>")
        h.append(f'<p class="note">{_e(label)} on the base (phase-0) classes, on the same phase-0 test clips after '
                 f"every phase. Every cell: mean over seeds [95 % interval]. {_e(INTERVAL_NOTE)} Gap share = "
                 "(method - finetune) / (joint - finetune) at the final phase, computed per seed with that seed's "
                 "finetune and joint, then averaged over seeds with its interval.</p>")
        h.append(_summary_html(table, metric))

    h.append("<h2>Findings</h2>")
    h.append(f'<p class="note">{_e(PAIRED_NOTE)} Two methods with the same seed share the phase-0 model and '
             "the data order. One list per headline metric (the papers report F1 beside mAP); the F1 scores "
             "threshold the scores at the evaluation threshold, mAP ranks them.</p>")
    for metric in headline:
        h.append(f"<h3>Base-class {_e(metric_label(metric))}</h3><ul>")
        h.extend(f"<li>{_e(s)}</li>" for s in findings(table, metric))
        h.append("</ul>")
    if training is not None:
        from .training_history import convergence_findings

        h.append("<h3>Training</h3><ul>")
        h.extend(f"<li>{_e(s)}</li>" for s in convergence_findings(training))
        h.append("</ul>")
    if notes:
        h.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")

    groups = _groups(table)
    multi = len(groups) > 1
    h.append("<h2>Results per phase</h2>")
    h.append('<p class="note">Mean over seeds [95 % interval]; the mean alone with one seed. "all": every class '
             'seen so far, on that phase\'s cumulative test set; "base": the phase-0 classes on the phase-0 test '
             "clips. " + _e(left_out_note(table)) + "</p>")
    sections = report_metrics(config)
    h.extend(_metric_sections(groups, sections["standard"]))
    h.append("<h2>Reference code's thresholded variants (NOT the standard metrics)</h2>")
    h.append('<p class="note">These reproduce the reference implementation\'s "mAP" and lwlrap, computed '
             "on 0/1 predictions at threshold 0.5 instead of on scores, only so that published numbers can be "
             "compared. They reproduce the reference exactly, including its mean over every class (a class "
             "without positives counts as AP 0), except its alias defect that zeroes the first test clip's "
             "labels. Use the standard metrics above for conclusions.</p>")
    h.extend(_metric_sections(groups, sections["reference"]))

    h.append("<h2>Forgetting</h2>")
    h.append('<p class="note">Forgetting = (base-class value after phase 0) - (base-class value after phase k), '
             "on the same phase-0 test clips and seed; positive = forgotten.</p>")
    for ds, norm, sub in groups:
        if multi:
            h.append(f"<h3>{_e(ds)} / {_e(norm)}</h3>")
        for m, label in sections["forgetting"]:
            h.append(f"<h4>forgetting of {_e(label)}</h4>")
            h.append(_phase_table(sub, "base", f"forgetting_{m}"))

    h.append("<h2>mAP per class group</h2>")
    h.append('<p class="note">Rows: the phase after which the model is measured; columns: the classes '
             "introduced in each phase, on that phase's test clips. Mean over seeds [95 % interval].</p>")
    for ds, norm, sub in groups:
        for method in dict.fromkeys(sub["method"]):
            h.append(f"<h3>{_e(method)}" + (f" ({_e(ds)} / {_e(norm)})" if multi else "") + "</h3>")
            h.append(_group_matrix(sub, method))

    h.append("<h2>Figures</h2>")
    if not figures:
        h.append('<p class="note">no figures</p>')
    for caption, path in figures.items():
        h.append(_figure_html(caption, path))

    h.append("<h2>Configuration</h2>")
    cfg = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    h.append(f"<pre>{_e(cfg)}</pre>")
    h.append("<h2>Provenance</h2>")
    h.append(_provenance_html(provenance))
    h.append("</body></html>")
    write_text(out_html, "\n".join(h) + "\n")

"""A single self-contained HTML report of a run: setup, result tables, findings, figures,
the exact configuration and the software provenance."""

from __future__ import annotations

import base64
import html
import importlib.metadata
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from cilaudio.atomic import write_text
from cilaudio.tidy import FORGETTING_METRICS, gap_share, summary_table

PACKAGES = ("torch", "torchaudio", "numpy", "pandas", "scikit-learn", "h5py", "soundfile", "matplotlib", "snakemake")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOWER, UPPER = "finetune", "joint"

STANDARD = [("map", "mAP"), ("f1_micro", "F1 micro (threshold 0.5)"), ("f1_macro", "F1 macro (threshold 0.5)"),
            ("lwlrap", "lwlrap")]
THRESHOLDED = [("map_thresholded_ref", "reference code's thresholded \"mAP\""),
               ("lwlrap_thresholded_ref", "reference code's thresholded lwlrap")]


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


def _means(table: pd.DataFrame, subset: str, metric: str) -> pd.DataFrame:
    """Mean over seeds: index (dataset, norm, method), columns phase."""
    sel = table[(table["subset"] == subset) & (table["metric"] == metric)]
    return sel.groupby(["dataset", "norm", "method", "phase"], sort=False)["value"].mean().unstack("phase")


def _f(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def findings(table: pd.DataFrame) -> list[str]:
    """Plain-language statements about base-class mAP computed from ``table`` (means over seeds).

    Retention of joint and finetune (final over phase-0 base-class mAP); for every other method
    whether its final base-class mAP lies between finetune and joint, and its share of the gap.
    """
    out: list[str] = []
    means = _means(table, "base", "map")
    if means.empty:
        return ["No base-class mAP results are available."]
    pairs = list(dict.fromkeys((d, n) for d, n, _ in means.index))
    for ds, norm in pairs:
        sub = means.loc[(ds, norm)]
        prefix = f"[{ds}, {norm}] " if len(pairs) > 1 else ""
        final = int(max(sub.columns))
        seeds = table[(table["dataset"] == ds) & (table["norm"] == norm)].groupby("method")["seed"].nunique()
        fin = {m: float(sub.loc[m, final]) if final in sub.columns else math.nan for m in sub.index}

        def n_seeds(m: str) -> str:
            k = int(seeds.get(m, 0))
            return f"{k} seed" + ("s" if k != 1 else "")

        for m, what in ((UPPER, "joint training (upper bound)"), (LOWER, "fine-tuning (lower bound)")):
            if m not in sub.index:
                continue
            p0 = float(sub.loc[m, 0]) if 0 in sub.columns else math.nan
            share = fin[m] / p0 if np.isfinite(p0) and p0 != 0 else math.nan
            out.append(
                f"{prefix}After the final phase ({final}), {what} keeps {_pct(share)} of its phase-0 "
                f"base-class mAP ({_f(p0)} -> {_f(fin[m])}; mean over {n_seeds(m)})."
            )
        have_bounds = LOWER in sub.index and UPPER in sub.index
        for m in sub.index:
            if m in (LOWER, UPPER):
                continue
            v = fin[m]
            if not np.isfinite(v):
                out.append(f"{prefix}{m}: no final-phase base-class mAP is available.")
                continue
            if not have_bounds:
                absent = " and ".join(b for b in (LOWER, UPPER) if b not in sub.index)
                out.append(f"{prefix}{m} ends phase {final} with base-class mAP {_f(v)}; "
                           f"it cannot be placed between the bounds because {absent} was not run.")
                continue
            lo, hi = fin[LOWER], fin[UPPER]
            share = gap_share(v, lo, hi)
            detail = (f"final base-class mAP {_f(v)} vs finetune {_f(lo)} and joint {_f(hi)}, "
                      f"{_pct(share)} of the finetune-to-joint gap closed; mean over {n_seeds(m)}")
            if not (np.isfinite(lo) and np.isfinite(hi)):
                out.append(f"{prefix}{m}: the bounds have no final-phase value ({detail}).")
            elif hi < lo:
                out.append(f"{prefix}{m}: the bounds are inverted here - joint ends below finetune ({detail}).")
            elif v < lo:
                out.append(f"{prefix}{m} does NOT land between the bounds: it ends BELOW finetune, "
                           f"the lower bound ({detail}).")
            elif v > hi:
                out.append(f"{prefix}{m} does NOT land between the bounds: it ends ABOVE joint, "
                           f"the upper bound ({detail}).")
            else:
                out.append(f"{prefix}{m} lands between finetune and joint ({detail}).")
    if not table.empty and int(table.groupby(["dataset", "norm", "method"])["seed"].nunique().max()) == 1:
        out.append(SINGLE_SEED)
    return out


SINGLE_SEED = (
    "Every figure here comes from ONE seed, so no spread was measured. On the built-in "
    "benchmark, a change of the dropout masks alone moved a method's share of the gap by more "
    "than 20 percentage points, so do not rank methods or norms on small differences. Add "
    "seeds (run.seeds) to get the bands over seeds.")


# ----------------------------------------------------------------------------- HTML helpers

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
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
    parts = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _pm(mean: float, std: float) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if std is None or not np.isfinite(std):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


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
        g = sel[sel["method"] == method].groupby("phase")["value"]
        mean, std, n = g.mean(), g.std(ddof=1), g.count()
        row = [method, int(sel[sel["method"] == method]["seed"].nunique())]
        row += [_pm(mean.get(k, math.nan), std.get(k, math.nan)) for k in phases]
        rows.append(row)
    return _html_table(["method", "seeds"] + [f"phase {k}" for k in phases], rows)


def _group_matrix(sub: pd.DataFrame, method: str) -> str:
    sel = sub[(sub["method"] == method) & sub["subset"].str.match(r"^group\d+$") & (sub["metric"] == "map")]
    if sel.empty:
        return '<p class="note">no per-group results</p>'
    sel = sel.assign(group=sel["subset"].str[5:].astype(int))
    stats = sel.groupby(["phase", "group"])["value"].agg(["mean", lambda s: s.std(ddof=1)])
    stats.columns = ["mean", "std"]
    phases = sorted(sel["phase"].unique())
    groups = sorted(sel["group"].unique())
    rows = []
    for p in phases:
        row = [f"after phase {int(p)}"]
        for g in groups:
            if (p, g) in stats.index:
                row.append(_pm(stats.loc[(p, g), "mean"], stats.loc[(p, g), "std"]))
            else:
                row.append("")
        rows.append(row)
    return _html_table(["measured"] + [f"group {int(g)} (classes of phase {int(g)})" for g in groups], rows)


def _summary_html(table: pd.DataFrame) -> str:
    s = summary_table(table, metric="map", subset="base")
    if s.empty:
        return '<p class="note">no base-class mAP results</p>'
    phases = sorted(int(c[5:-5]) for c in s.columns if c.startswith("phase") and c.endswith("_mean"))
    header = ["dataset", "norm", "method", "seeds"] + [f"phase {k}" for k in phases] + [
        "average over phases", "final phase", "share of finetune-to-joint gap closed (final)"]
    rows = []
    for _, r in s.iterrows():
        rows.append([r["dataset"], r["norm"], r["method"], int(r["n_seeds"])]
                    + [_pm(r[f"phase{k}_mean"], r[f"phase{k}_std"]) for k in phases]
                    + [_pm(r["average_mean"], r["average_std"]), _pm(r["final_mean"], r["final_std"]),
                       _pct(r["gap_closed"])])
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
) -> None:
    """Write one self-contained HTML report (figures embedded as base64 PNG), atomically."""
    h: list[str] = [*html_head(title), "<h2>Setup</h2>"]
    if setup:
        h.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in setup.items()) + "</dl>")
    else:
        h.append('<p class="note">no setup given</p>')

    h.append("<h2>Summary: base-class mAP</h2>")
    h.append('<p class="note">mAP on the base (phase-0) classes, on the same phase-0 test clips after every phase; '
             "mean ± standard deviation over seeds. Gap share = (method - finetune) / (joint - finetune) "
             "at the final phase.</p>")
    h.append(_summary_html(table))

    h.append("<h2>Findings</h2><ul>")
    h.extend(f"<li>{_e(s)}</li>" for s in findings(table))
    if training is not None:
        from .training_history import convergence_findings

        h.extend(f"<li>{_e(s)}</li>" for s in convergence_findings(training))
    h.append("</ul>")
    if notes:
        h.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")

    groups = _groups(table)
    multi = len(groups) > 1
    h.append("<h2>Results per phase</h2>")
    h.append('<p class="note">Mean ± standard deviation over seeds. "all": every class seen so far, on that '
             'phase\'s cumulative test set; "base": the phase-0 classes on the phase-0 test clips.</p>')
    h.extend(_metric_sections(groups, STANDARD))
    h.append("<h2>Reference code's thresholded variants (NOT the standard metrics)</h2>")
    h.append('<p class="note">These reproduce the reference implementation\'s "mAP" and lwlrap, computed '
             "on 0/1 predictions at threshold 0.5 instead of on scores, only so that published numbers can be "
             "compared. Use the standard metrics above for conclusions.</p>")
    h.extend(_metric_sections(groups, THRESHOLDED))

    h.append("<h2>Forgetting</h2>")
    h.append('<p class="note">Forgetting = (base-class value after phase 0) - (base-class value after phase k), '
             "on the same phase-0 test clips and seed; positive = forgotten.</p>")
    for ds, norm, sub in groups:
        if multi:
            h.append(f"<h3>{_e(ds)} / {_e(norm)}</h3>")
        for m in FORGETTING_METRICS:
            label = dict(STANDARD).get(m, m)
            h.append(f"<h4>forgetting of {_e(label)}</h4>")
            h.append(_phase_table(sub, "base", f"forgetting_{m}"))

    h.append("<h2>mAP per class group</h2>")
    h.append('<p class="note">Rows: the phase after which the model is measured; columns: the classes '
             "introduced in each phase, on that phase's test clips. Mean ± std over seeds.</p>")
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

"""The paper-ready table of the norms' comparison: final-phase mAP (base classes, all classes),
mean forgetting and the same for macro F1, per method (rows) and norm (columns), every cell the
mean over seeds with the half-width of its 95 % interval, the best of a column in bold only where
its lead holds; written as LaTeX (booktabs) and Markdown (:func:`write_paper_tables`)."""

from __future__ import annotations

import os
import re
from typing import Sequence

import pandas as pd

from cilaudio.atomic import write_text
from cilaudio.reporting.statistics import best_that_holds, norm_order, seed_table, seed_values
from cilaudio.stats import fmt_pm, interval

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
    norms = norm_order(table, norms)
    seeds = seed_table(table, norms=norms)
    methods = list(dict.fromkeys(table["method"]))
    cells, bold, columns = {}, set(), []
    for q, header, higher in PAPER_COLUMNS:
        for norm in norms:
            columns.append((q, header, norm))
            vals = {m: seed_values(seeds, norm, m, q) for m in methods}
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

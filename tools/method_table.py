"""Print the methods' final-phase table of a finished run as Markdown, one table per norm: base-
and all-class mAP and base-class macro F1 after the last phase and the share of the finetune-to-joint gap each closes,
the mean over seeds with the 95 % t-interval (cilaudio.stats), per-seed gap shares as in the
comparison page (cilaudio.reporting.statistics.seed_table). Below an analytic method's row, a reference
row: its phase-0 ridge head alone (evaluation subset ``base_head``) on the same base clips, the
closed-form head's quality before any increment.

    .venv/bin/python tools/method_table.py results/synth [--norms bn gn cn]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cilaudio.reporting.statistics import read_tables, seed_table
from cilaudio.reporting.texts import NORM_NAMES
from cilaudio.stats import fmt_interval, interval

COLUMNS = (("base_final", "base mAP", 1.0, ""), ("all_final", "all-class mAP", 1.0, ""),
           ("base_f1_final", "base F1 macro", 1.0, ""),
           ("gap_closed_base", "gap closed, base", 100.0, " %"), ("gap_closed_all", "gap closed, all", 100.0, " %"))


#: The reference row's cells: the base-class columns from subset ``base_head``.
HEAD_COLUMNS = {"base_final": "map", "base_f1_final": "f1_macro"}


def head_reference(long, norm: str, method: str) -> dict[str, str]:
    """The cells of a method's phase-0 ridge head row (subset ``base_head`` of its last phase,
    one value per seed), or {} for a method without one."""
    sel = long[(long["norm"] == norm) & (long["method"] == method) & (long["subset"] == "base_head")]
    if sel.empty:
        return {}
    last = sel[sel["phase"] == sel["phase"].max()]
    cells = {}
    for column, metric in HEAD_COLUMNS.items():
        values = last[last["metric"] == metric].sort_values("seed")["value"].to_numpy(dtype=float)
        cells[column] = fmt_interval(interval(values), 3)
    return cells


def method_tables(folder: Path, norms: list[str]) -> str:
    tables = {n: folder / n / "metrics.tsv" for n in norms if (folder / n / "metrics.tsv").exists()}
    if not tables:
        raise SystemExit(f"no <norm>/metrics.tsv under {folder} for norms {norms}")
    long = read_tables(tables)
    seeds = seed_table(long, norms=list(tables))
    out = []
    for norm, by_norm in seeds.groupby("norm", sort=False):
        n = by_norm.groupby("method")["seed"].nunique()
        out.append(f"**{NORM_NAMES.get(norm, norm)}** (final phase {int(by_norm['final_phase'].iloc[0])}, "
                   f"{n.min()}-{n.max()} seeds per method; mean [95 % t-interval])\n")
        out.append("| method | " + " | ".join(h for _, h, _, _ in COLUMNS) + " |")
        out.append("|---" * (len(COLUMNS) + 1) + "|")
        for method, g in by_norm.groupby("method", sort=False):
            cells = [fmt_interval(interval(g[q].to_numpy(dtype=float)), 1 if unit else 3, scale=scale, unit=unit)
                     for q, _, scale, unit in COLUMNS]
            out.append(f"| `{method}` | " + " | ".join(cells) + " |")
            reference = head_reference(long, norm, method)
            if reference:
                out.append(f"| `{method}`: its phase-0 ridge head, no increment (reference) | "
                           + " | ".join(reference.get(q, "-") for q, _, _, _ in COLUMNS) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="results/<dataset>")
    p.add_argument("--norms", nargs="+", default=["bn", "gn", "cn"])
    a = p.parse_args(argv)
    print(method_tables(a.folder, a.norms))


if __name__ == "__main__":
    main()

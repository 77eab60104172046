#!/usr/bin/env python3
"""The README's default-run tables from a finished run: per norm, the base classes' mAP and macro
F1 after phase 0 and phase K (mean over seeds [95 % t-interval]), the papers' method against
finetune (paired by seed) at phase K and averaged over phases 1..K, and the all-class F1 that the
ICASSP paper's headline reports (phase 0, phase K, the average over all phases).

    .venv/bin/python tools/default_run_table.py results/synth [--norms bn gn cn] [--method indl_fd_od]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cilaudio.reporting.texts import NORM_NAMES
from cilaudio.stats import describe, fmt_interval, interval, paired

BOUNDS = ("finetune", "joint")


def _wide(t: pd.DataFrame, subset: str, metric: str) -> pd.DataFrame:
    sel = t[(t["subset"] == subset) & (t["metric"] == metric)]
    return sel.pivot_table(index=["method", "seed"], columns="phase", values="value", aggfunc="mean")


def tables(folder: Path, norms: list[str], method: str) -> str:
    out = []
    frames = {n: pd.read_csv(folder / n / "metrics.tsv", sep="\t") for n in norms if (folder / n / "metrics.tsv").exists()}
    if not frames:
        raise SystemExit(f"no <norm>/metrics.tsv under {folder}")
    for metric, label in (("map", "mAP"), ("f1_macro", "macro F1")):
        out.append(f"Base-class {label}, phase 0 -> final phase (mean [95 % t-interval] over seeds), and "
                   f"{method} - finetune paired by seed at the final phase and averaged over phases 1..K:\n")
        out.append(f"| norm | finetune | joint | {method} | {method} - finetune, final | "
                   f"{method} - finetune, mean of phases 1..K |")
        out.append("|---|---|---|---|---|---|")
        for norm, t in frames.items():
            w = _wide(t, "base", metric)
            final = int(max(w.columns))
            later = [k for k in w.columns if k >= 1]
            cells = []
            for m in (*BOUNDS, method):
                if m not in w.index.get_level_values(0):
                    cells.append("n/a")
                    continue
                x = w.loc[m]
                start = "" if m != "finetune" else fmt_interval(interval(x[0])) + " -> "
                cells.append(start + fmt_interval(interval(x[final])))
            if method in w.index.get_level_values(0) and "finetune" in w.index.get_level_values(0):
                a, b = w.loc[method], w.loc["finetune"]
                cells.append(describe(paired(a[final].to_dict(), b[final].to_dict())))
                cells.append(describe(paired(a[later].mean(axis=1).to_dict(), b[later].mean(axis=1).to_dict())))
            else:
                cells += ["n/a", "n/a"]
            out.append(f"| {NORM_NAMES.get(norm, norm)} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"All-class F1 of {method} (all classes seen so far, each phase's cumulative test set), as the "
               "ICASSP headline reports it (45.2 % after phase 0, 36.3 % after phase 4, 40.9 % on average on "
               "AudioSet):\n")
    out.append("| norm | F1 | phase 0 | final phase | mean over phases 0..K | drop per phase, (phase 0 - final) / K |")
    out.append("|---|---|---|---|---|---|")
    for norm, t in frames.items():
        for metric in ("f1_micro", "f1_macro"):
            w = _wide(t, "all", metric)
            if method not in w.index.get_level_values(0):
                continue
            x = w.loc[method]
            final = int(max(x.columns))
            cols = sorted(x.columns)
            out.append(f"| {NORM_NAMES.get(norm, norm)} | {metric[3:]} | {fmt_interval(interval(x[0]))} | "
                       f"{fmt_interval(interval(x[final]))} | {fmt_interval(interval(x[cols].mean(axis=1)))} | "
                       f"{fmt_interval(interval((x[0] - x[final]) / final))} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="results/<dataset>")
    p.add_argument("--norms", nargs="+", default=["bn", "gn", "cn"])
    p.add_argument("--method", default="indl_fd_od")
    a = p.parse_args()
    print(tables(a.folder, a.norms, a.method))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The benchmark's design criteria, from the bounds alone (finetune and joint; no other method).

    .venv/bin/python tools/benchmark_bounds.py results/synth/bn/metrics.tsv [more metrics.tsv ...]

For each norm (one metrics.tsv each) and each headline statistic (base-class mAP and macro F1):

- ``phase 0``: the phase-0 base-class value (mean over seeds);
- ``finetune keeps`` / ``joint keeps``: final-phase value / phase-0 value, per seed, then the
  mean (criteria: finetune keeps at most 50 % of mAP or F1, joint at least 95 %);
- ``sd finetune`` / ``sd joint``: the sample standard deviation over seeds of the final value;
- ``detectable``: the smallest paired difference a two-sided paired t-test at 0.05 finds with
  80 % power at n seeds, (t(0.975, n-1) + t(0.8, n-1)) * sd_d / sqrt(n), with sd_d estimated
  from the bounds' own spread as sqrt(sd_finetune^2 + sd_joint^2) (conservative: it ignores
  the correlation that a shared phase-0 model gives two methods of one seed). Criterion: at
  most 0.05 base mAP;
- ``detectable (avg)``: the same for the value averaged over phases 1..K.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def detectable(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n)


def bounds_rows(table: pd.DataFrame) -> list[dict]:
    rows = []
    final = int(table["phase"].max())
    for norm, t in table.groupby("norm", sort=False):
        for metric in ("map", "f1_macro"):
            base = t[(t["subset"] == "base") & (t["metric"] == metric)]
            wide = base.pivot_table(index=["method", "seed"], columns="phase", values="value")
            p0 = wide[0] if 0 in wide.columns else None
            rec = {"norm": norm, "metric": metric, "seeds": int(base["seed"].nunique())}
            per = {}
            for m in ("finetune", "joint"):
                if m not in wide.index.get_level_values(0):
                    continue
                w = wide.loc[m]
                per[m] = {"final": w[final].to_numpy(), "avg": w[[k for k in range(1, final + 1)]].mean(axis=1).to_numpy(),
                          "p0": w[0].to_numpy()}
                rec[f"{m} keeps"] = float(np.mean(w[final] / w[0]))
                rec[f"sd {m}"] = float(np.std(w[final], ddof=1)) if len(w) > 1 else math.nan
                rec[f"{m} final"] = float(np.mean(w[final]))
            if p0 is not None and per:
                rec["phase 0"] = float(np.mean(next(iter(per.values()))["p0"]))
            if len(per) == 2:
                n = min(len(per["finetune"]["final"]), len(per["joint"]["final"]))
                sd = math.hypot(rec["sd finetune"], rec["sd joint"])
                sda = math.hypot(np.std(per["finetune"]["avg"], ddof=1), np.std(per["joint"]["avg"], ddof=1))
                rec["detectable"] = detectable(sd, n)
                rec["detectable (avg)"] = detectable(sda, n)
            rows.append(rec)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+", type=Path)
    a = ap.parse_args()
    table = pd.concat([pd.read_csv(p, sep="\t") for p in a.tables], ignore_index=True)
    cols = ["norm", "metric", "seeds", "phase 0", "finetune final", "joint final", "finetune keeps", "joint keeps",
            "sd finetune", "sd joint", "detectable", "detectable (avg)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in bounds_rows(table):
        cells = []
        for c in cols:
            v = r.get(c, math.nan)
            cells.append(f"{100 * v:.0f} %" if "keeps" in c and isinstance(v, float) and math.isfinite(v)
                         else f"{v:.3f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

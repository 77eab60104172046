"""Long metric tables (the tidy ``metrics.tsv`` layout) for the report and browser tests."""

from __future__ import annotations

import math
import statistics
from typing import Callable

import pandas as pd

from cilaudio.tables import COLUMNS

# t_{0.975, df} from closed forms (they agree with a printed t table: 12.706 and 4.303)
T1 = math.tan(0.475 * math.pi)  # df = 1: Cauchy, F(t) = 1/2 + atan(t) / pi
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # df = 2: F(t) = 1/2 + t / (2 sqrt(t^2 + 2))


def ci(values) -> tuple[float, float, float]:
    """Mean and 95 % t-interval by hand (2 or 3 values)."""
    t = {2: T1, 3: T2}[len(values)]
    m, h = statistics.mean(values), t * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - h, m + h


def metric_table(final_base: dict[str, float], *, norm: str = "bn", seeds=(0, 1), phases: int = 3,
                 group_map: Callable[[int, int, float], float] = lambda k, g, fin: 0.5 + 0.1 * g,
                 class_name: str = "class:Dog",
                 final_offset: Callable[[str, int], float] = lambda m, s: 0.0) -> pd.DataFrame:
    """Base mAP falls linearly from 0.8 (phase 0) to final_base[m] + final_offset(m, seed) (last
    phase), plus 0.01 per seed; 'all' is 0.1 below it; class group g after phase k has mAP
    group_map(k, g, final)."""
    rows = []
    for m, fin in final_base.items():
        for s in seeds:
            for k in range(phases):
                base = 0.8 + (fin + final_offset(m, s) - 0.8) * k / (phases - 1) + 0.01 * s
                for subset, v in (("all", base - 0.1), ("base", base)):
                    for metric in ("map", "f1_micro", "f1_macro", "lwlrap", "map_thresholded_ref",
                                   "lwlrap_thresholded_ref"):
                        rows.append(("synth", norm, m, s, k, subset, metric, v))
                for metric in ("map", "lwlrap", "f1_micro", "f1_macro"):
                    rows.append(("synth", norm, m, s, k, "base", f"forgetting_{metric}", 0.8 + 0.01 * s - base))
                for g in range(k + 1):
                    rows.append(("synth", norm, m, s, k, f"group{g}", "map", group_map(k, g, fin)))
                rows.append(("synth", norm, m, s, k, class_name, "ap", 0.5))
    return pd.DataFrame(rows, columns=COLUMNS)

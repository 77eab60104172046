#!/usr/bin/env python3
"""Print the built-in benchmark's label statistics beside FSD50K's and AudioSet's (a Markdown table).

    .venv/bin/python tools/benchmark_statistics.py                     # the default config's benchmark
    .venv/bin/python tools/benchmark_statistics.py --ground-truth results/synth/dataset/FSD50K.ground_truth

Without --ground-truth the default config's generator writes its CSVs (no audio) to a temporary
folder first. The benchmark's column is counted from the CSVs; FSD50K's and AudioSet's first five
rows from the papers' counts, the last three implied by the independence model
(cilaudio.label_statistics). tests/test_label_statistics.py recounts the README's table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cilaudio import label_statistics as LS  # noqa: E402
from cilaudio import synth  # noqa: E402


def _label_sets(gt: Path) -> list[list[int]]:
    with open(gt / "vocabulary.csv", newline="") as fh:
        index = {r[1]: int(r[0]) for r in csv.reader(fh)}
    with open(gt / "dev.csv", newline="") as fh:
        return [[index[lab] for lab in r["labels"].split(",")] for r in csv.DictReader(fh)]


def _fmt(key: str, v: float) -> str:
    if key.endswith("share") or key in ("top_base_in_later", "mean_base_in_later"):
        return f"{100 * v:.1f} %"
    if key == "imbalance":
        return f"{v:.1f}:1"
    return f"{v:.2f}"


def table(gt: Path, phases: list[int]) -> str:
    bench = LS.describe(_label_sets(gt), phases)
    real = {name: LS.describe_real(name) for name in LS.STATISTICS}
    lines = ["| statistic (development clips) | built-in benchmark | FSD50K | AudioSet |", "|---|---|---|---|"]
    for key, label in LS.STAT_NAMES.items():
        lines.append(f"| {label} | {_fmt(key, bench[key])} | {_fmt(key, real['fsd50k'][key])} | {_fmt(key, real['audioset'][key])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ground-truth", type=Path, help="an FSD50K.ground_truth folder (default: generate the config's)")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--dataset", default="synth")
    a = ap.parse_args()
    ds = yaml.safe_load(a.config.read_text())["datasets"][a.dataset]
    if a.ground_truth:
        print(table(a.ground_truth, ds["phases"]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        gen = {k: v for k, v in ds["generate"].items() if k != "activate"}
        synth.generate(Path(tmp), group_sizes=ds["phases"], **gen, audio=False)
        print(table(Path(tmp) / "FSD50K.ground_truth", ds["phases"]))


if __name__ == "__main__":
    main()

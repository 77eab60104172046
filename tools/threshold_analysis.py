#!/usr/bin/env python3
"""Why mAP and F1 disagree: the base classes' scores of each phase model of finished chains.

For every method and seed under results/<dataset>/<norm>, and every phase model of the chain,
it scores the phase-0 test excerpts on the base classes and prints, averaged over seeds:

- ``mAP`` (ranking, threshold-free) and ``F1 macro @0.5`` (the report's, at the evaluation threshold);
- ``F1 macro @best``: each class at the threshold that maximises its own F1 on these excerpts
  (an oracle, so an upper bound: it shows what the ranking alone still supports);
- ``recall @0.5``: the share of positive (excerpt, class) pairs scored above 0.5;
- ``pos score``, ``neg score``: median score of the positive and of the negative pairs.

When F1 @0.5 collapses while mAP and F1 @best hold up, the old classes' scores fell below the
threshold but their ranking survived: the model forgot the calibration, not the sounds.

    .venv/bin/python tools/threshold_analysis.py results/synth/bn [--methods finetune joint indl_fd_od]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cilaudio.checkpoint import load_checkpoint  # noqa: E402
from cilaudio.evaluate import predict  # noqa: E402
from cilaudio.excerpts import FeatureDataset, excerpt_index, excerpts_of  # noqa: E402
from cilaudio.lists import read_classes, read_list  # noqa: E402
from cilaudio.metrics import f1_macro, mean_average_precision  # noqa: E402


def best_f1_macro(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over classes with a positive of the best F1 over thresholds (oracle per class)."""
    out = []
    for c in range(y.shape[1]):
        if y[:, c].sum() == 0:
            continue
        p, r, _ = precision_recall_curve(y[:, c], s[:, c])
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
        out.append(float(f.max()))
    return float(np.mean(out))


def analyse(norm_dir: Path, methods: list[str], threshold: float = 0.5) -> str:
    dataset_dir = norm_dir.parent
    features = dataset_dir / "features" / "eval.h5"
    base_list = dataset_dir / "lists" / "test_phase0.tsv"
    base = list(read_classes(dataset_dir / "lists" / "classes.tsv").groups[0])
    table = excerpts_of(read_list(base_list), base, excerpt_index(features), source=str(base_list),
                        features=str(features))
    data, y = FeatureDataset(features, table), table.targets
    rows: dict[tuple[str, int], list[list[float]]] = {}
    torch.set_num_threads(1)
    for method in methods:
        for seed_dir in sorted((norm_dir / method).glob("seed*")):
            ckpts = sorted(seed_dir.glob("phase*.pt"), key=lambda p: int(p.stem[5:]))
            base0 = norm_dir / "base" / seed_dir.name / "phase0.pt"
            for ck in ([base0] if base0.exists() else []) + ckpts:
                model, state = load_checkpoint(ck)
                if list(state["classes"][: len(base)]) != base:
                    raise SystemExit(f"{ck}: its first classes are not the base classes of {dataset_dir}/lists")
                s = predict(model, data, batch_size=64, device=torch.device("cpu"))[:, : len(base)]
                pos, neg = s[y == 1], s[y == 0]
                rows.setdefault((method, int(state["phase"])), []).append([
                    mean_average_precision(y, s), f1_macro(y, s, threshold=threshold), best_f1_macro(y, s),
                    float((pos > threshold).mean()), float(np.median(pos)), float(np.median(neg))])
    head = ["method", "phase", "seeds", "mAP", "F1 macro @0.5", "F1 macro @best", "recall @0.5", "pos score",
            "neg score"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, phase), vals in rows.items():
        v = np.mean(vals, axis=0)
        lines.append(f"| {method} | {phase} | {len(vals)} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("norm_dir", type=Path, help="results/<dataset>/<norm>")
    ap.add_argument("--methods", nargs="+", default=["finetune", "joint", "indl_fd_od"])
    a = ap.parse_args()
    print(analyse(a.norm_dir, a.methods))


if __name__ == "__main__":
    main()

"""The built-in benchmark's label statistics against the real data's, counted independently.

Expected values come from the papers' counts (parsed here with the csv module) and closed forms
of the independence model solved with scipy's root finder, never from cilaudio.label_statistics'
own fixed point; observed values are counted from the written CSVs with plain Python.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.optimize import brentq

from cilaudio import label_statistics as LS
from cilaudio import synth

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ROOT / "src" / "cilaudio" / "label_counts"
EXCERPTS = {"fsd50k": 284_447, "audioset": 95_645}
GROUPS = (30, 5, 5, 5, 5)


def _counts(name: str, column: str = "dev") -> np.ndarray:
    with open(COUNTS / f"{name}.tsv", newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r and not r[0].startswith("#")]
    i = rows[0].index(column)
    return np.array([float(r[i]) for r in rows[1:]])


def _q(freq: np.ndarray) -> np.ndarray:
    """Inclusion probabilities of the independence model: Z solves Z = 1 - prod(1 - f Z)."""
    z = brentq(lambda z: 1 - np.prod(1 - freq * z) - z, 1e-6, 1 / freq.max() - 1e-9)
    return freq * z


def _csv_label_sets(gt: Path) -> tuple[list[list[int]], list[list[int]]]:
    with open(gt / "vocabulary.csv", newline="") as fh:
        index = {r[1]: int(r[0]) for r in csv.reader(fh)}
    out = []
    for split in ("dev", "eval"):
        with open(gt / f"{split}.csv", newline="") as fh:
            out.append([[index[lab] for lab in r["labels"].split(",")] for r in csv.DictReader(fh)])
    return out[0], out[1]


def test_counts_files_match_the_papers_totals() -> None:
    # method.md: FSD50K 1.95 labels per excerpt, 58:1; AudioSet 3.35, 94:1; base shares 85 / 90 %.
    for name, lpe, ratio, base in (("fsd50k", 1.95, 58, 0.85), ("audioset", 3.35, 94, 0.90)):
        c = _counts(name)
        assert c.size == 50
        assert round(c.sum() / EXCERPTS[name], 2) == lpe
        assert round(c.max() / c.min()) == ratio
        assert round(c[:30].sum() / c.sum(), 2) == base


@pytest.mark.parametrize("name", ["fsd50k", "audioset"])
def test_drawn_clips_follow_the_closed_form(tmp_path: Path, name: str) -> None:
    """Per-phase class rates of a large draw against the model's closed forms (4 sigma)."""
    n = (3000, 1500, 1500, 1500, 1500)
    synth.generate(tmp_path, seed=5, dev_clips=n, eval_clips=(5,) * 5, label_statistics=name,
                   max_events=50, audio=False)
    dev, _ = _csv_label_sets(tmp_path / "FSD50K.ground_truth")
    q = _q(_counts(name) / EXCERPTS[name])
    off = np.concatenate([[0], np.cumsum(GROUPS)])
    phase = [int(np.searchsorted(off[1:], max(s), side="right")) for s in dev]
    assert Counter(phase) == dict(enumerate(n))
    for k in range(5):
        clips = [s for s, p in zip(dev, phase) if p == k]
        y = np.zeros((len(clips), 50))
        for i, s in enumerate(clips):
            y[i, s] = 1
        own = slice(off[k], off[k + 1])
        expected = np.concatenate([q[: off[k]], q[own] / (1 - np.prod(1 - q[own]))])
        observed = y[:, : off[k + 1]].mean(axis=0)
        sd = np.sqrt(expected * (1 - expected) / len(clips))
        assert np.all(np.abs(observed - expected) < 4 * sd + 1e-9), (k, np.max(np.abs(observed - expected) / sd))
        assert y[:, off[k + 1]:].sum() == 0  # nothing of a later phase


def test_readme_table_is_the_default_benchmark(tmp_path: Path) -> None:
    """The README's statistics table: the benchmark's column recounted from the default config's
    CSVs, the real columns from the papers' counts."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    ds = config["datasets"]["synth"]
    gen = {k: v for k, v in ds["generate"].items() if k != "activate"}
    synth.generate(tmp_path, group_sizes=ds["phases"], **gen, audio=False)
    dev, _ = _csv_label_sets(tmp_path / "FSD50K.ground_truth")
    off = np.concatenate([[0], np.cumsum(ds["phases"])])
    phase = [int(np.searchsorted(off[1:], max(s), side="right")) for s in dev]
    later = [s for s, p in zip(dev, phase) if p > 0]
    counts = Counter(c for s in dev for c in s)
    base_in_later = [sum(c in s for s in later) / len(later) for c in range(30)]
    bench = {
        "labels_per_clip": sum(map(len, dev)) / len(dev),
        "labels_per_clip_later": sum(map(len, later)) / len(later),
        "imbalance": max(counts.values()) / min(counts.values()),
        "base_label_share": sum(counts[c] for c in range(30)) / sum(counts.values()),
        "top_class_share": max(counts.values()) / len(dev),
        "top_base_in_later": max(base_in_later),
        "mean_base_in_later": float(np.mean(base_in_later)),
        "old_sounds_in_later": float(np.mean([sum(c < off[p] for c in s) for s, p in zip(dev, phase) if p > 0])),
    }
    got = LS.describe(dev, ds["phases"])
    assert got == pytest.approx(bench)

    readme = (ROOT / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"^\| (.+?) \| ([\d.]+)(?: %|:1)? \| ([\d.]+)(?: %|:1)? \| ([\d.]+)(?: %|:1)? \|", line)
        if m and m.group(1) in LS.STAT_NAMES.values():
            rows[m.group(1)] = [float(x) for x in m.groups()[1:]]
    assert set(rows) == set(LS.STAT_NAMES.values()), "README's benchmark statistics table is incomplete"
    for key, label in LS.STAT_NAMES.items():
        pct = key.endswith("share") or "_in_later" in key and key != "old_sounds_in_later"
        scale = 100 if pct else 1
        assert rows[label][0] == pytest.approx(round(bench[key] * scale, 1 if pct or key == "imbalance" else 2)), label
    real = {"fsd50k": _counts("fsd50k"), "audioset": _counts("audioset")}
    for col, name in ((1, "fsd50k"), (2, "audioset")):
        c = real[name]
        assert rows[LS.STAT_NAMES["labels_per_clip"]][col] == round(c.sum() / EXCERPTS[name], 2)
        assert rows[LS.STAT_NAMES["imbalance"]][col] == round(c.max() / c.min(), 1)
        assert rows[LS.STAT_NAMES["top_base_in_later"]][col] == round(100 * _q(c / EXCERPTS[name])[:30].max(), 1)


def test_unknown_statistics_and_counts_per_phase_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_statistics"):
        synth.generate(tmp_path, label_statistics="esc50", audio=False)
    with pytest.raises(ValueError, match="dev_clips needs one positive clip count per phase"):
        synth.generate(tmp_path, dev_clips=(10, 5), audio=False)


def test_schema_offers_exactly_the_statistics_shipped() -> None:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    text = yaml.safe_dump(schema)
    m = re.search(r"label_statistics:\n\s+default: fsd50k\n(?:.*\n)*?\s+enum:\n((?:\s+- \w+\n)+)", text)
    assert m, "label_statistics not found in the schema"
    offered = re.findall(r"- (\w+)", m.group(1))
    assert sorted(offered) == sorted(LS.STATISTICS) == sorted(p.stem for p in COUNTS.glob("*.tsv"))


def test_a_total_is_split_in_the_real_phase_shares(tmp_path: Path) -> None:
    """dev_clips as a total: phase k gets total * P(latest class present is of phase k), the
    probability computed here from the independent q (groups independent: P(group g empty) is a
    product), rounded by largest remainder."""
    q = _q(_counts("fsd50k") / EXCERPTS["fsd50k"])
    off = np.concatenate([[0], np.cumsum(GROUPS)])
    empty = [np.prod(1 - q[off[g]:off[g + 1]]) for g in range(5)]
    p = np.array([(1 - empty[k]) * np.prod(empty[k + 1:]) for k in range(5)])
    p /= p.sum()
    assert np.round(p, 2).tolist() == [0.74, 0.09, 0.08, 0.06, 0.03]  # README / config comment
    synth.generate(tmp_path, seed=1, dev_clips=1000, eval_clips=20, audio=False)
    dev, _ = _csv_label_sets(tmp_path / "FSD50K.ground_truth")
    phase = Counter(int(np.searchsorted(off[1:], max(s), side="right")) for s in dev)
    got = [phase[k] for k in range(5)]
    assert sum(got) == 1000
    assert all(abs(g - 1000 * x) < 1 for g, x in zip(got, p))
    assert LS.clips_per_phase(10, np.array([0.55, 0.25, 0.2])) == [6, 2, 2]  # 5.5, 2.5, 2: remainders .5, .5, 0
    assert LS.clips_per_phase(3, np.array([0.98, 0.01, 0.01])) == [1, 1, 1]  # at least one clip each

"""The metric registry (cilaudio.metrics.REGISTRY) is the one list the tables, the report and the
plots read: a throw-away metric registered here (and nowhere else) must reach every one of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cilaudio import metrics
from cilaudio.evaluate import _clean, subset_metrics
from cilaudio.metrics import Metric, compute_metrics
from cilaudio.tables import metrics_table

# 4 excerpts x 3 classes; phase 0 holds classes 0-1, phase 1 class 2; excerpts 0-1 are base clips
Y = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
S = np.array([[0.8, 0.3, 0.4], [0.6, 0.3, 0.7], [0.7, 0.5, 0.2], [0.2, 0.3, 0.2]])
IN_BASE = np.array([True, True, False, False])


def test_registry_lists_every_metric_once_with_its_role():
    entries = metrics.registry()
    names = [m.name for m in entries]
    assert len(names) == len(set(names))
    # the keys of the metrics JSON, and what each is (written out here, not read from the code)
    assert set(names) == {"map", "f1_micro", "f1_macro", "lwlrap", "auc", "dprime", "map_thresholded_ref",
                          "lwlrap_thresholded_ref", "classes_without_positives", "classes_without_negatives"}
    by = {m.name: m for m in entries}
    assert {n for n, m in by.items() if m.forgetting} == {"map", "f1_micro", "f1_macro", "lwlrap", "auc", "dprime"}
    assert {n for n, m in by.items() if m.count} == {"classes_without_positives", "classes_without_negatives"}
    assert {n for n, m in by.items() if m.reference} == {"map_thresholded_ref", "lwlrap_thresholded_ref"}
    assert {n for n, m in by.items() if m.thresholded} == {"f1_micro", "f1_macro", "map_thresholded_ref",
                                                           "lwlrap_thresholded_ref"}
    assert all(m.label for m in entries)


def test_a_count_cannot_have_forgetting_and_names_are_unique(monkeypatch):
    with pytest.raises(ValueError, match="count"):
        Metric("n", lambda y, s: 0, "n", forgetting=True, count=True)
    with pytest.raises(ValueError, match="forgetting_"):
        Metric("forgetting_x", lambda y, s: 0.0, "x")
    monkeypatch.setattr(metrics, "REGISTRY", metrics.REGISTRY + (Metric("map", lambda y, s: 0.0, "again"),))
    with pytest.raises(ValueError, match="'map'.*twice"):
        compute_metrics(Y, S)


# two throw-away metrics: a score with forgetting rows and a count
TOP = Metric("top_score", lambda y, s: float(np.max(s)) if s.size else float("nan"), "highest score",
             forgetting=True)
CLIPS = Metric("n_clips", lambda y, s: int(len(y)), "number of clips", count=True)
FRACTION = Metric("fraction_above", lambda y, s, threshold: float(np.mean(s > threshold)), "share above",
                  thresholded=True)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(metrics, "REGISTRY", metrics.REGISTRY + (TOP, CLIPS, FRACTION))


def _record(root: Path, method: str, phase: int, y, s, in_base, groups) -> Path:
    subsets = subset_metrics(y, s, in_base=in_base, group_sizes=[len(g) for g in groups], threshold=0.5)
    names = [c for g in groups for c in g]
    data = {"dataset": "synth", "norm": "bn", "method": method, "seed": 0, "phase": phase, "classes": names,
            "groups": groups, "subsets": {k: _clean(v) for k, v in subsets.items()},
            "per_class_ap": {c: 0.5 for c in names}}
    p = root / method / "metrics.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return p


def _table(root: Path):
    groups = [["Dog", "Rain"], ["Car"]]
    s1 = S.copy()
    s1[0, 0] = 0.65  # after phase 1 the base clips' highest score is 0.65 (it was 0.8)
    p0 = _record(root, "base", 0, Y[IN_BASE, :2], S[IN_BASE, :2], np.ones(2, dtype=bool), groups[:1])
    p1 = _record(root, "finetune", 1, Y, s1, IN_BASE, groups)
    return metrics_table([p0, p1], methods=["finetune"])


def test_registered_metric_reaches_compute_metrics(registered):
    m = compute_metrics(Y, S, threshold=0.45)
    assert m["top_score"] == 0.8 and m["n_clips"] == 4 and isinstance(m["n_clips"], int)
    assert m["fraction_above"] == pytest.approx(5 / 12)  # 0.8, 0.6, 0.7, 0.7, 0.5 are above 0.45
    assert m["map"] == compute_metrics(Y, S, threshold=0.45)["map"]  # the others are still there


def test_registered_metric_reaches_the_table_with_forgetting_rows(registered, tmp_path):
    t = _table(tmp_path)
    top = t[t["metric"] == "top_score"].set_index(["phase", "subset"])["value"].to_dict()
    # phase 0: base = all = group0 = excerpts 0-1, classes 0-1 -> 0.8; phase 1: base 0.65 (changed),
    # all 0.7, group0 (classes 0-1, every excerpt) 0.7, group1 (class 2) 0.7
    assert top == {(0, "all"): 0.8, (0, "base"): 0.8, (0, "group0"): 0.8,
                   (1, "all"): 0.7, (1, "base"): 0.65, (1, "group0"): 0.7, (1, "group1"): 0.7}
    forget = t[t["metric"] == "forgetting_top_score"].set_index("phase")["value"]
    assert set(t.loc[t["metric"] == "forgetting_top_score", "subset"]) == {"base"}
    assert forget[0] == 0 and forget[1] == pytest.approx(0.8 - 0.65)
    clips = t[t["metric"] == "n_clips"].set_index(["phase", "subset"])["value"].to_dict()
    assert clips[(0, "base")] == 2 and clips[(1, "all")] == 4 and clips[(1, "base")] == 2
    assert "forgetting_n_clips" not in set(t["metric"])  # a count: no forgetting row
    assert "forgetting_fraction_above" not in set(t["metric"])  # not flagged


def test_registered_count_is_checked_as_a_count(registered, tmp_path):
    p = _record(tmp_path, "base", 0, Y[IN_BASE, :2], S[IN_BASE, :2], np.ones(2, dtype=bool), [["Dog", "Rain"]])
    data = json.loads(p.read_text())
    data["subsets"]["base"]["n_clips"] = 1.5
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="n_clips.*must be a count"):
        metrics_table([p], methods=["finetune"])


def test_registered_metric_reaches_the_report(registered, tmp_path):
    from cilaudio.reporting.norm_report import write_report

    out = tmp_path / "report.html"
    write_report(out, title="t", table=_table(tmp_path), figures={}, config={}, provenance={})
    text = out.read_text(encoding="utf-8")
    standard, rest = text.split("<h2>Reference code's thresholded variants", 1)
    reference, forgetting = rest.split("<h2>Forgetting</h2>", 1)
    assert "<h4>highest score - all classes seen so far</h4>" in standard
    assert "<h4>highest score - base classes</h4>" in standard
    assert "<h4>share above (threshold 0.5) - base classes</h4>" in standard
    assert "<h4>forgetting of highest score</h4>" in forgetting
    assert "forgetting of share above" not in forgetting
    assert "number of clips" not in text  # counts get no section
    assert "highest score" not in reference
    # the new metrics are there too, with their forgetting
    assert "<h4>ROC AUC - base classes</h4>" in standard and "<h4>forgetting of d-prime</h4>" in forgetting


def test_registered_metric_label_reaches_the_plots(registered, tmp_path):
    from cilaudio.reporting.plots import metric_curves_figure

    fig = metric_curves_figure(_table(tmp_path), metrics=[("all", "top_score"), ("base", "forgetting_top_score")])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["highest score - all classes", "forgetting of highest score - base classes"]

"""Tests of cilaudio.tables against hand-built metrics JSON fixtures (values computed by hand)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cilaudio.evaluate import _clean, subset_metrics
from cilaudio.tables import COLUMNS, metrics_table, write_tsv

# the scores and counts of a subset, as cilaudio.evaluate writes them (the keys of compute_metrics)
METRICS = ("auc", "dprime", "f1_micro", "f1_macro", "map", "lwlrap", "map_thresholded_ref", "lwlrap_thresholded_ref")
COUNT = "classes_without_positives"
COUNT_NEG = "classes_without_negatives"
FORGETTING = {"forgetting_map", "forgetting_lwlrap", "forgetting_f1_micro", "forgetting_f1_macro",
              "forgetting_auc", "forgetting_dprime"}
CLASSES = ["Dog", "Speech, male", "Rain", "Car", "Bell"]  # 3 base classes, then 1 per phase
GROUPS = [["Dog", "Speech, male", "Rain"], ["Car"], ["Bell"]]


def _subset(v: float) -> dict:
    """Eight scores: map = v, the others offset by fixed amounts; one class without positives and
    none without negatives."""
    return {m: round(v + 0.01 * i, 6) for i, m in enumerate(METRICS[::-1])} | {"map": v, COUNT: 1, COUNT_NEG: 0}


def write_json(root: Path, method: str, seed: int, phase: int, base_map: float, all_map: float) -> Path:
    n = 3 + phase
    data = {
        "dataset": "synth", "norm": "bn", "method": method, "seed": seed, "phase": phase,
        "classes": CLASSES[:n], "groups": GROUPS[: phase + 1],
        "n_excerpts": {"all": 60 + 10 * phase, "base": 40},
        "subsets": {"all": _subset(all_map), "base": _subset(base_map)}
        | {f"group{g}": _subset(all_map) for g in range(phase + 1)},
        "per_class_ap": {c: (None if c == "Rain" else 0.5) for c in CLASSES[:n]},
    }
    p = root / "synth" / "bn" / method / f"seed{seed}" / f"metrics_phase{phase}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return p


# base-class mAP after each phase: BASE0[seed] at phase 0, then per method/seed/phase
BASE0 = {0: 0.80, 1: 0.70}
LATER = {  # (method, seed) -> base map after phase 1, phase 2
    ("finetune", 0): (0.50, 0.30), ("finetune", 1): (0.40, 0.20),
    ("joint", 0): (0.78, 0.75), ("joint", 1): (0.68, 0.65),
    ("indl_fd_od", 0): (0.60, 0.40), ("indl_fd_od", 1): (0.50, 0.30),
}
METHODS = ["finetune", "joint", "indl_fd_od"]


def build(root: Path, methods=METHODS) -> list[Path]:
    paths = [write_json(root, "base", s, 0, BASE0[s], 0.9) for s in BASE0]
    for (m, s), vals in LATER.items():
        if m in methods:
            for k, v in enumerate(vals, start=1):
                paths.append(write_json(root, m, s, k, v, 0.6))
    return paths


def test_columns_and_row_counts(tmp_path):
    t = metrics_table(build(tmp_path), methods=METHODS)
    assert list(t.columns) == COLUMNS
    # per (method, seed, phase k): (2 + (k+1) groups) subsets x (8 scores + 2 counts) + (3+k) class APs
    # + 6 forgetting; the 8 scores are the 6 of before plus auc and dprime, the 2 counts
    # classes_without_positives and (new) classes_without_negatives, and forgetting rows are made
    # for map, lwlrap, f1_micro, f1_macro and (new) auc and dprime
    per_phase = {k: (3 + k) * (8 + 2) + (3 + k) + 6 for k in range(3)}
    expected = len(METHODS) * 2 * sum(per_phase.values())
    assert len(t) == expected
    assert set(t["method"]) == set(METHODS)
    assert not t.duplicated(["dataset", "norm", "method", "seed", "phase", "subset", "metric"]).any()


def test_phase0_replicated_for_every_method(tmp_path):
    t = metrics_table(build(tmp_path), methods=METHODS)
    p0 = t[(t["phase"] == 0) & (t["subset"] == "base") & (t["metric"] == "map")]
    assert len(p0) == len(METHODS) * 2
    for m in METHODS:
        for s, v in BASE0.items():
            row = p0[(p0["method"] == m) & (p0["seed"] == s)]
            assert row["value"].item() == pytest.approx(v)
    assert "base" not in set(t["method"])


def test_forgetting_hand_computed(tmp_path):
    t = metrics_table(build(tmp_path), methods=METHODS)
    f = t[(t["subset"] == "base") & (t["metric"] == "forgetting_map")]
    for m in METHODS:
        for s in BASE0:
            got = f[(f["method"] == m) & (f["seed"] == s)].set_index("phase")["value"]
            assert got[0] == 0
            assert got[1] == pytest.approx(BASE0[s] - LATER[(m, s)][0])
            assert got[2] == pytest.approx(BASE0[s] - LATER[(m, s)][1])
    # finetune seed 0 after phase 2: 0.80 - 0.30
    assert f[(f["method"] == "finetune") & (f["seed"] == 0) & (f["phase"] == 2)]["value"].item() == pytest.approx(0.5)
    # f1_micro of the fixture = map + 0.05 on every subset, so its forgetting equals the map one
    fm = t[(t["subset"] == "base") & (t["metric"] == "forgetting_f1_micro")]
    assert fm[(fm["method"] == "joint") & (fm["seed"] == 1) & (fm["phase"] == 2)]["value"].item() == pytest.approx(0.05)
    assert set(t[t["metric"].str.startswith("forgetting_")]["metric"]) == FORGETTING
    # auc of the fixture = map + 0.07 on every subset: its forgetting is the map one too
    fa = t[(t["subset"] == "base") & (t["metric"] == "forgetting_auc")]
    assert fa[(fa["method"] == "finetune") & (fa["seed"] == 0) & (fa["phase"] == 2)]["value"].item() == \
        pytest.approx(0.5)


def test_per_class_rows_and_null(tmp_path):
    t = metrics_table(build(tmp_path), methods=METHODS)
    c = t[t["subset"].str.startswith("class:")]
    assert set(c["metric"]) == {"ap"}
    assert set(c["subset"]) == {f"class:{n}" for n in CLASSES}
    assert c[c["subset"] == "class:Rain"]["value"].isna().all()
    assert (c[c["subset"] == "class:Dog"]["value"] == 0.5).all()


def test_sorted_deterministically(tmp_path):
    paths = build(tmp_path)
    a = metrics_table(paths, methods=METHODS)
    b = metrics_table(list(reversed(paths)), methods=METHODS)
    pd.testing.assert_frame_equal(a, b)
    assert list(dict.fromkeys(a["method"])) == METHODS


def test_unconfigured_method_skipped(tmp_path):
    t = metrics_table(build(tmp_path), methods=["finetune"])
    assert set(t["method"]) == {"finetune"}


def test_missing_key_names_file(tmp_path):
    p = write_json(tmp_path, "base", 0, 0, 0.8, 0.9)
    data = json.loads(p.read_text())
    del data["subsets"]
    p.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="metrics_phase0.json"):
        metrics_table([p], methods=["finetune"])


def test_tsv_round_trip(tmp_path):
    t = metrics_table(build(tmp_path), methods=METHODS)
    out = tmp_path / "out" / "metrics.tsv"
    write_tsv(t, out)
    back = pd.read_csv(out, sep="\t")
    assert list(back.columns) == COLUMNS
    pd.testing.assert_frame_equal(back, t, check_dtype=False)
    assert not list(out.parent.glob("*.tmp-*"))
    assert "class:Speech, male" in set(back["subset"])


def _evaluated_json(root: Path, method: str, phase: int, y: np.ndarray, s: np.ndarray, in_base: np.ndarray,
                    groups: list[list[str]]) -> Path:
    """A metrics JSON whose subsets come from cilaudio.evaluate.subset_metrics, as evaluate writes them."""
    sizes = [len(g) for g in groups]
    names = [c for g in groups for c in g]
    subsets = subset_metrics(y, s, in_base=in_base, group_sizes=sizes)
    data = {"dataset": "synth", "norm": "bn", "method": method, "seed": 0, "phase": phase, "classes": names,
            "groups": groups, "subsets": {k: _clean(v) for k, v in subsets.items()},
            "per_class_ap": {c: 0.5 for c in names}}
    p = root / method / f"metrics_phase{phase}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return p


def test_classes_without_positives_rows_and_no_forgetting(tmp_path):
    # excerpts 0-1 are the phase-0 (base) clips; classes Dog, Speech, Rain in phase 0, Car, Bell in phase 1
    y = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    s = np.full(y.shape, 0.7)
    in_base = np.array([True, True, False, False])
    groups = [["Dog", "Speech, male", "Rain"], ["Car", "Bell"]]
    p0 = _evaluated_json(tmp_path, "base", 0, y[in_base, :3], s[in_base, :3], np.ones(2, dtype=bool), groups[:1])
    p1 = _evaluated_json(tmp_path, "finetune", 1, y, s, in_base, groups)
    t = metrics_table([p0, p1], methods=["finetune"])
    got = t[t["metric"] == COUNT].set_index(["phase", "subset"])["value"].to_dict()
    # phase 0 (excerpts 0-1, classes 0-2): Speech and Rain have no positive, in every subset
    # phase 1: all -> Rain; base (excerpts 0-1, classes 0-2) -> Speech, Rain; group0 -> Rain; group1 -> none
    assert got == {(0, "all"): 2, (0, "base"): 2, (0, "group0"): 2,
                   (1, "all"): 1, (1, "base"): 2, (1, "group0"): 1, (1, "group1"): 0}
    forgetting = set(t.loc[t["metric"].str.startswith("forgetting_"), "metric"])
    assert forgetting == FORGETTING  # no forgetting_classes_without_positives, a count
    # phase 0 base (excerpts 0-1, classes 0-2): Dog is positive on excerpt 0 only, so it has a negative
    assert t.loc[t["metric"] == COUNT_NEG, "value"].eq(0).all() and (t["metric"] == COUNT_NEG).sum() == 7


@pytest.mark.parametrize("count", [COUNT, COUNT_NEG])
@pytest.mark.parametrize("bad", [-1, 1.5, None, "2", True, float("nan")])
def test_count_that_is_not_a_whole_number_is_refused(tmp_path, bad, count):
    p = write_json(tmp_path, "base", 0, 0, 0.8, 0.9)
    data = json.loads(p.read_text())
    data["subsets"]["base"][count] = bad
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"metrics_phase0\.json.*{count}"):
        metrics_table([p], methods=["finetune"])


# ----------------------------------------------------------------------------- summaries over seeds

T1 = math.tan(0.475 * math.pi)  # t_{0.975, 1}: the Cauchy quantile, 12.7062 in a t table


def test_summarise_hand_computed(tmp_path):
    from cilaudio.tables import SUMMARY_COLUMNS, summarise

    t = metrics_table(build(tmp_path), methods=METHODS)
    s = summarise(t)
    assert list(s.columns) == SUMMARY_COLUMNS == ["dataset", "norm", "method", "phase", "subset", "metric", "mean",
                                                  "std", "ci_low", "ci_high", "n_seeds"]
    # one row per (method, phase, subset, metric): the per-seed rows of a method/phase are the same set
    assert len(s) == len(t) // 2
    assert not s.duplicated(["method", "phase", "subset", "metric"]).any()
    r = s.set_index(["method", "phase", "subset", "metric"])
    # indl_fd_od, base mAP after phase 2: seeds 0.40 and 0.30
    row = r.loc[("indl_fd_od", 2, "base", "map")]
    half = T1 * statistics.stdev([0.40, 0.30]) / math.sqrt(2)
    assert row["mean"] == pytest.approx(0.35) and row["std"] == pytest.approx(statistics.stdev([0.40, 0.30]))
    assert row["ci_low"] == pytest.approx(0.35 - half) and row["ci_high"] == pytest.approx(0.35 + half)
    assert row["n_seeds"] == 2
    # forgetting of finetune after phase 2: 0.80 - 0.30 and 0.70 - 0.20, the same: zero width
    row = r.loc[("finetune", 2, "base", "forgetting_map")]
    assert row["mean"] == pytest.approx(0.5) and row["ci_high"] - row["ci_low"] == pytest.approx(0, abs=1e-9)
    # the class without a value (Rain's AP is null) has no seed with a value
    row = r.loc[("joint", 1, "class:Rain", "ap")]
    assert row["n_seeds"] == 0 and np.isnan(row["mean"]) and np.isnan(row["ci_low"])


def test_summarise_one_seed_has_no_interval(tmp_path):
    from cilaudio.tables import summarise

    paths = [p for p in build(tmp_path) if "seed1" not in str(p)]
    s = summarise(metrics_table(paths, methods=METHODS))
    base = s[(s["subset"] == "base") & (s["metric"] == "map")]
    assert (base["n_seeds"] == 1).all()
    assert base["std"].isna().all() and base["ci_low"].isna().all() and base["ci_high"].isna().all()
    assert base.set_index(["method", "phase"]).loc[("joint", 2), "mean"] == pytest.approx(0.75)


def _final_rows(values: dict) -> pd.DataFrame:
    """Base mAP rows: {(method, seed): final value}; phase 0 is 0.9 for every run."""
    rows = []
    for (m, s), v in values.items():
        rows.append(("synth", "bn", m, s, 0, "base", "map", 0.9))
        rows.append(("synth", "bn", m, s, 1, "base", "map", v))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_gap_shares_per_seed():
    from cilaudio.tables import final_per_seed, gap_shares

    # seed 0: (0.40 - 0.20) / (0.60 - 0.20) = 0.5; seed 1: (0.45 - 0.30) / (0.50 - 0.30) = 0.75;
    # seed 2 has no joint: NaN. The ratio of the means would be (0.425 - 0.25) / (0.55 - 0.25) = 0.583.
    t = _final_rows({("finetune", 0): 0.20, ("joint", 0): 0.60, ("m", 0): 0.40,
                     ("finetune", 1): 0.30, ("joint", 1): 0.50, ("m", 1): 0.45,
                     ("finetune", 2): 0.10, ("m", 2): 0.70})
    fin = final_per_seed(t, subset="base", metric="map")
    assert set(fin["phase"]) == {1} and len(fin) == 8
    g = gap_shares(t).set_index(["method", "seed"])["share"]
    assert g[("m", 0)] == pytest.approx(0.5) and g[("m", 1)] == pytest.approx(0.75)
    assert np.isnan(g[("m", 2)]) and np.isnan(g[("finetune", 2)])
    assert g[("finetune", 0)] == pytest.approx(0.0) and g[("joint", 1)] == pytest.approx(1.0)


def test_chain_files_read_as_their_phases(tmp_path):
    """The workflow writes one file per chain ({"phases": [...]}): the table must be the one of
    the same records written one phase per file."""
    per_phase = build(tmp_path / "single")
    expected = metrics_table(per_phase, methods=METHODS)
    chains: dict[Path, list] = {}
    for p in per_phase:
        chains.setdefault(p.parent, []).append(json.loads(p.read_text()))
    chain_paths = []
    for folder, records in chains.items():
        out = tmp_path / "chain" / folder.relative_to(tmp_path / "single") / "metrics.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"phases": sorted(records, key=lambda r: r["phase"])}))
        chain_paths.append(out)
    assert len(chain_paths) < len(per_phase)  # some files hold several phases
    got = metrics_table(chain_paths, methods=METHODS)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_chain_record_without_key_names_file_and_index(tmp_path):
    p = write_json(tmp_path, "finetune", 0, 1, 0.5, 0.6)
    record = json.loads(p.read_text())
    broken = dict(record)
    del broken["per_class_ap"]
    chain = tmp_path / "metrics.json"
    chain.write_text(json.dumps({"phases": [record, broken]}))
    with pytest.raises(KeyError, match=r"metrics\.json: phases\[1\]"):
        metrics_table([chain], methods=["finetune"])

"""Tests of the norms side by side (cilaudio.reporting: statistics, findings, the comparison page,
the paper tables) and its figures, on hand-built tables.

The fixture: 3 norms x 3 methods x 2 seeds x 3 phases (0, 1, 2). Base-class mAP after phase 0
is 0.80 for everyone; after phase 2 it is FINAL[norm][method] (+ 0.02 for seed 1); phase 1 is
the midpoint. Class group j has mAP 0.6 + 0.1 j right after phase j and loses DROP[norm][method]
per later phase (+ 0.02 for seed 1 after phase 2). Every expected number below is worked out
by hand from these definitions.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from cilaudio.reporting.comparison_page import MARK, final_table, make_comparison, write_comparison
from cilaudio.reporting.findings import comparison_findings
from cilaudio.reporting.paper_tables import write_paper_tables
from cilaudio.reporting.plots import (
    cka_diagonal_by_norm_figure,
    metric_by_norm_figure,
    plot_cka_diagonal_by_norm,
    plot_metric_by_norm,
)
from cilaudio.reporting.statistics import backward_transfer, cka_layer_summary, comparison_table, read_tables
from cilaudio.reporting.texts import BWT_DEFINITION
from cilaudio.tables import COLUMNS, write_tsv

from metric_tables import ci  # hand-computed t-intervals

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
METHODS = ("finetune", "joint", "indl_fd_od")
NORMS = ("bn", "gn", "cn")
FINAL = {  # base-class mAP after phase 2, seed 0
    "bn": {"finetune": 0.30, "joint": 0.70, "indl_fd_od": 0.70},
    "gn": {"finetune": 0.40, "joint": 0.80, "indl_fd_od": 0.60},
    "cn": {"finetune": 0.45, "joint": 0.75, "indl_fd_od": 0.66},
}
DROP = {  # group mAP lost per later phase
    "bn": {"finetune": 0.20, "joint": 0.02, "indl_fd_od": 0.10},
    "gn": {"finetune": 0.16, "joint": 0.01, "indl_fd_od": 0.04},
    "cn": {"finetune": 0.12, "joint": 0.03, "indl_fd_od": 0.06},
}
LAYERS = [f"block{b}.{k}" for b in range(1, 7) for k in ("conv1", "norm1", "conv2", "norm2")] + ["classifier"]


def make_table(norm: str, *, final=FINAL, drop=DROP, seeds=(0, 1), methods=METHODS, offset=None) -> pd.DataFrame:
    """``offset[(norm, method)][seed]`` replaces the seed offset 0.02 * seed of the final base mAP."""
    rows = []
    for m in methods:
        for s in seeds:
            off = (offset or {}).get((norm, m), [0.02 * i for i in range(max(seeds) + 1)])[s]
            for k in range(3):
                base = {0: 0.80, 1: (0.80 + final[norm][m]) / 2, 2: final[norm][m] + off}[k]
                rows.append(("synth", norm, m, s, k, "base", "map", base))
                rows.append(("synth", norm, m, s, k, "base", "forgetting_map", 0.80 - base))
                rows.append(("synth", norm, m, s, k, "all", "map", 0.5 * base + 0.1))
                rows.append(("synth", norm, m, s, k, "all", "f1_micro", 0.3))
                for j in range(k + 1):
                    v = 0.6 + 0.1 * j - drop[norm][m] * (k - j) + (0.02 * s if k == 2 else 0.0)
                    rows.append(("synth", norm, m, s, k, f"group{j}", "map", v))
                rows.append(("synth", norm, m, s, k, "class:Dog", "ap", 0.5))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_tables(tmp_path: Path, norms=NORMS, **kw) -> dict[str, Path]:
    out = {}
    for n in norms:
        out[n] = tmp_path / n / "metrics.tsv"
        write_tsv(make_table(n, **kw), out[n])
    return out


def write_cka(path: Path, *, method: str, norm_drift: float, late_drift: float = 0.05, phase: int = 2,
              seed: int = 0) -> Path:
    """Diagonal 1 - norm_drift (norm layers) - late_drift (blocks 4-6); classifier 0.5."""
    n = len(LAYERS)
    diag = np.array([0.5 if name == "classifier" else
                     1.0 - norm_drift * ("norm" in name) - late_drift * (int(name[5]) > 3) for name in LAYERS])
    m = np.full((n, n), 0.3)
    np.fill_diagonal(m, diag)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, matrix=m, layers=np.array(LAYERS), phase=np.int64(phase), method=np.array(method),
             seed=np.int64(seed))
    return path


NORM_DRIFT = {"bn": 0.2, "gn": 0.1, "cn": 0.05}


def cka_files(tmp_path: Path, norms=NORMS) -> dict[str, list[Path]]:
    return {n: [write_cka(tmp_path / n / m / "seed0" / "cka_phase2.npz", method=m, norm_drift=NORM_DRIFT[n])
                for m in METHODS] for n in norms}


def full_table(norms=NORMS) -> pd.DataFrame:
    return pd.concat([make_table(n) for n in norms], ignore_index=True)


# ----------------------------------------------------------------------------- numbers


def test_backward_transfer_literal_values():
    # one run, phases 0..3, group mAP R[k, j] written out by hand
    r = {(0, 0): 0.90, (1, 0): 0.70, (1, 1): 0.60, (2, 0): 0.65, (2, 1): 0.50, (2, 2): 0.80,
         (3, 0): 0.40, (3, 1): 0.55, (3, 2): 0.70, (3, 3): 0.75}
    t = pd.DataFrame([("d", "bn", "m", 0, k, f"group{j}", "map", v) for (k, j), v in r.items()]
                     + [("d", "bn", "m", 0, 3, "base", "map", 0.1)], columns=COLUMNS)
    b = backward_transfer(t)
    assert len(b) == 1 and int(b["final_phase"].iloc[0]) == 3
    # ((0.40 - 0.90) + (0.55 - 0.60) + (0.70 - 0.80)) / 3 = -0.65 / 3
    assert b["bwt"].iloc[0] == pytest.approx(-0.65 / 3)


def test_backward_transfer_missing_or_single_phase_is_nan():
    t = pd.DataFrame([("d", "bn", "m", 0, 0, "group0", "map", 0.9), ("d", "bn", "m", 0, 1, "group1", "map", 0.5)],
                     columns=COLUMNS)  # R[1, 0] missing
    assert np.isnan(backward_transfer(t)["bwt"].iloc[0])
    t0 = pd.DataFrame([("d", "bn", "m", 0, 0, "group0", "map", 0.9)], columns=COLUMNS)
    assert np.isnan(backward_transfer(t0)["bwt"].iloc[0])


def test_backward_transfer_fixture():
    b = backward_transfer(full_table())
    assert len(b) == 3 * 3 * 2
    row = b[(b["norm"] == "bn") & (b["method"] == "finetune")].set_index("seed")["bwt"]
    # seed 0: R00 0.6, R11 0.7, R20 0.6 - 0.4 = 0.2, R21 0.7 - 0.2 = 0.5 -> (-0.4 - 0.2) / 2 = -0.3
    assert row[0] == pytest.approx(-0.3)
    # seed 1: R20 0.22, R21 0.52 -> (-0.38 - 0.18) / 2 = -0.28
    assert row[1] == pytest.approx(-0.28)


def test_comparison_table_values():
    c = comparison_table(full_table(), norms=["cn", "bn", "gn"]).set_index(["norm", "method"])
    assert list(dict.fromkeys(n for n, _ in c.index)) == ["cn", "bn", "gn"]
    assert (c["n_seeds"] == 2).all() and (c["final_phase"] == 2).all()
    # gap shares on final base mAP (the seed-1 offset of +0.02 is the same for every method)
    assert c.loc[("bn", "indl_fd_od"), "gap_closed_base"] == pytest.approx((0.70 - 0.30) / (0.70 - 0.30))
    assert c.loc[("gn", "indl_fd_od"), "gap_closed_base"] == pytest.approx((0.60 - 0.40) / (0.80 - 0.40))
    assert c.loc[("cn", "indl_fd_od"), "gap_closed_base"] == pytest.approx((0.66 - 0.45) / (0.75 - 0.45))
    assert c.loc[("cn", "finetune"), "gap_closed_base"] == pytest.approx(0.0)
    assert c.loc[("cn", "joint"), "gap_closed_base"] == pytest.approx(1.0)
    # all-class mAP is an affine map of base mAP: the same shares
    assert c.loc[("gn", "indl_fd_od"), "gap_closed_all"] == pytest.approx(0.5)
    # forgetting of gn/joint: seed 0 0.80 - 0.80 = 0, seed 1 0.80 - 0.82 = -0.02
    assert c.loc[("gn", "joint"), "forgetting_mean"] == pytest.approx(-0.01)
    assert c.loc[("gn", "joint"), "forgetting_std"] == pytest.approx(np.sqrt(2 * 0.01**2))
    _, lo, hi = ci([0.0, -0.02])  # -0.01 ± 12.706 * 0.01414 / sqrt(2)
    assert c.loc[("gn", "joint"), "forgetting_low"] == pytest.approx(lo)
    assert c.loc[("gn", "joint"), "forgetting_high"] == pytest.approx(hi)
    # mean forgetting over phases 1-2 of gn/joint: seed 0 (0 + 0) / 2, seed 1 (0 - 0.02) / 2
    assert c.loc[("gn", "joint"), "forgetting_avg_mean"] == pytest.approx(-0.005)
    # final base mAP of bn/finetune: 0.30 and 0.32
    assert c.loc[("bn", "finetune"), "base_final_mean"] == pytest.approx(0.31)
    assert c.loc[("bn", "finetune"), "all_final_mean"] == pytest.approx(0.5 * 0.31 + 0.1)
    # BWT of bn/finetune: seeds -0.3 and -0.28
    assert c.loc[("bn", "finetune"), "bwt_mean"] == pytest.approx(-0.29)
    assert c.loc[("bn", "finetune"), "bwt_std"] == pytest.approx(0.02 / np.sqrt(2))
    # cn/indl: drop 0.06 -> seed 0 BWT = -(2 * 0.06 + 0.06) / 2 = -0.09, seed 1 -0.07
    assert c.loc[("cn", "indl_fd_od"), "bwt_mean"] == pytest.approx(-0.08)


def test_gap_share_is_computed_per_seed():
    # gn, seed 0: finetune 0.40, joint 0.80, indl 0.60 -> 0.5; seed 1: 0.40, 0.60, 0.58 -> 0.9
    # (the ratio of the means would be (0.59 - 0.40) / (0.70 - 0.40) = 0.633)
    t = make_table("gn", offset={("gn", "finetune"): [0.0, 0.0], ("gn", "joint"): [0.0, -0.2],
                                 ("gn", "indl_fd_od"): [0.0, -0.02]})
    c = comparison_table(t).set_index("method")
    _, lo, hi = ci([0.5, 0.9])
    assert c.loc["indl_fd_od", "gap_closed_base"] == pytest.approx(0.7)
    assert c.loc["indl_fd_od", "gap_closed_base_low"] == pytest.approx(lo)
    assert c.loc["indl_fd_od", "gap_closed_base_high"] == pytest.approx(hi)


def test_cka_layer_summary(tmp_path):
    s = cka_layer_summary(cka_files(tmp_path)).set_index(["norm", "method"])
    assert len(s) == 9
    r = s.loc[("bn", "finetune")]
    assert int(r["phase"]) == 2 and int(r["n_seeds"]) == 1
    # 12 norm layers, half of them in blocks 4-6: 1 - 0.2 - 0.05 / 2
    assert r["norm_layers"] == pytest.approx(0.775)
    assert r["conv_layers"] == pytest.approx(0.975)
    # blocks 1-3: 6 norm (0.8) + 6 conv (1.0); blocks 4-6: the same minus 0.05
    assert r["early"] == pytest.approx(0.9) and r["late"] == pytest.approx(0.85)
    assert r["lowest_layer"] == "classifier" and r["lowest"] == pytest.approx(0.5)
    assert s.loc[("cn", "joint"), "norm_layers"] == pytest.approx(1 - 0.05 - 0.025)


def test_cka_layer_summary_keeps_last_phase_and_averages_seeds(tmp_path):
    files = [write_cka(tmp_path / "a.npz", method="m", norm_drift=0.4, phase=1),
             write_cka(tmp_path / "b.npz", method="m", norm_drift=0.2, phase=2),
             write_cka(tmp_path / "c.npz", method="m", norm_drift=0.1, phase=2, seed=1)]
    s = cka_layer_summary({"bn": files})
    assert len(s) == 1 and int(s["phase"].iloc[0]) == 2 and int(s["n_seeds"].iloc[0]) == 2
    assert s["norm_layers"].iloc[0] == pytest.approx(1 - 0.15 - 0.025)


# ----------------------------------------------------------------------------- findings


def test_findings_name_the_right_norms(tmp_path):
    cka = cka_layer_summary(cka_files(tmp_path))
    f = comparison_findings(full_table(), cka=cka)

    def one(start: str, contains: str) -> str:
        hits = [s for s in f if s.startswith(start) and contains in s]
        assert len(hits) == 1, (start, contains, f)
        return hits[0]

    # forgetting (seed means): finetune bn 0.49, gn 0.39, cn 0.34; joint bn 0.09, gn -0.01, cn 0.04;
    # indl_fd_od bn 0.09, gn 0.19, cn 0.13
    assert "forgets least with Continual Normalization (cn)" in one("finetune", "forgets least")
    assert "forgets least with GroupNorm (gn)" in one("joint", "forgets least")
    # gn/joint forgetting 0 and -0.02: a negative mean, but its interval holds 0
    assert "gn's mean is negative, but a rise of base-class mAP is not distinguishable from none " \
           "(not distinguishable with 2 seeds)" in one("joint", "forgets least")
    # every ranking is a paired difference; the fixture's seed offsets are the same for every run,
    # so the differences do not vary over seeds and hold: gn vs cn -0.05 in both seeds
    assert "gn vs cn -0.050 [-0.050, -0.050], holds over 2 seeds (paired by seed)" in one("joint", "forgets least")
    assert "forgets least with BatchNorm (bn)" in one("indl_fd_od", "forgets least")
    # BWT (seed means): finetune bn -0.29, gn -0.23, cn -0.17 -> cn; joint bn -0.02, gn -0.005, cn -0.035 -> gn
    assert "with Continual Normalization (cn)" in one("finetune", "backward transfer")
    assert "with GroupNorm (gn)" in one("joint", "backward transfer")
    # gap: bn 100 %, gn 50 %, cn 70 %
    assert "indl_fd_od" in one("With gn,", "gap") and "50.0 %" in one("With gn,", "gap")
    assert "70.0 %" in one("With cn,", "gap")
    overall = one("Over all norms", "gap")
    assert "indl_fd_od with BatchNorm (bn): 100.0 %" in overall
    # CKA of one seed: bn's norm layers have the lowest CKA for every method, but one seed cannot
    # say that they drift most; late blocks and norm layers drift more everywhere
    for m in METHODS:
        sentence = one(f"{m}: the norm layers", "lowest with BatchNorm (bn)")
        assert "bn vs gn -0.100, not distinguishable (one seed)" in sentence and "drift most with" not in sentence
    assert "in 9 of 9" in one("Later blocks (blocks 4-6)", "drift more")
    assert "in 9 of 9" in one("Norm layers drift", "conv")


def test_findings_not_distinguishable_and_inverted_bounds():
    final = {"bn": {"finetune": 0.50, "joint": 0.40, "indl_fd_od": 0.45},
             "gn": {"finetune": 0.505, "joint": 0.60, "indl_fd_od": 0.55}}
    offset = {("gn", "finetune"): [0.0, 0.05]}  # gn/finetune varies over seeds, everything else does not
    t = pd.concat([make_table(n, final=final, drop={n: DROP["bn"] for n in final}, offset=offset) for n in final])
    f = comparison_findings(t)
    text = " ".join(f)
    # finetune forgetting: bn 0.30, 0.28; gn 0.295, 0.245: differences -0.005, -0.035
    fin = [s for s in f if s.startswith("finetune") and "forgetting" in s]
    assert len(fin) == 1
    m, lo, hi = ci([-0.005, -0.035])
    assert ("finetune: forgetting of base-class mAP after phase 2 is not distinguishable between GroupNorm (gn) "
            "and BatchNorm (bn)") in fin[0]
    assert f"gn vs bn {m:+.3f} [{lo:+.3f}, {hi:+.3f}], not distinguishable with 2 seeds (paired by seed)" in fin[0]
    assert "forgets least" not in fin[0]
    # bn: joint 0.40, 0.42 below finetune 0.50, 0.52 in both seeds: inverted, and it holds
    bn = [s for s in f if s.startswith("With bn,")][0]
    assert "bounds are inverted" in bn and "joint vs finetune -0.100 [-0.100, -0.100], holds over 2 seeds" in bn
    # gn: joint - finetune 0.095 and 0.065: positive but not distinguishable from 0 with 2 seeds
    gn = [s for s in f if s.startswith("With gn,")][0]
    m, lo, hi = ci([0.095, 0.065])
    assert f"joint vs finetune {m:+.3f} [{lo:+.3f}, {hi:+.3f}], not distinguishable with 2 seeds" in gn
    # bn is left out of the best-over-norms statement
    assert "not counting bn" in text and "only indl_fd_od with GroupNorm (gn)" in text


def test_findings_pair_norms_by_seed():
    """Seed offsets of +-0.2, shared within a seed, hide the norms' order from an unpaired
    comparison; paired by seed, cn's lead over gn (0.04, 0.03, 0.03) holds."""
    offset = {("bn", "finetune"): [0.0, 0.2, -0.2], ("gn", "finetune"): [0.01, 0.22, -0.18],
              ("cn", "finetune"): [0.0, 0.2, -0.2]}
    t = pd.concat([make_table(n, seeds=(0, 1, 2), offset=offset, methods=("finetune",)) for n in NORMS])
    f = comparison_findings(t)
    fin = [s for s in f if s.startswith("finetune") and "forgetting" in s][0]
    # forgetting: bn 0.5, 0.3, 0.7; gn 0.39, 0.18, 0.58; cn 0.35, 0.15, 0.55
    m, lo, hi = ci([-0.04, -0.03, -0.03])
    assert fin.startswith("finetune forgets least with Continual Normalization (cn)")
    assert f"cn vs gn {m:+.3f} [{lo:+.3f}, {hi:+.3f}], holds over 3 seeds (paired by seed)" in fin
    # the same forgetting values with gn's seeds shuffled: no longer paired, not distinguishable
    shuffled = {**offset, ("gn", "finetune"): [0.22, -0.18, 0.01]}
    t = pd.concat([make_table(n, seeds=(0, 1, 2), offset=shuffled, methods=("finetune",)) for n in NORMS])
    fin = [s for s in comparison_findings(t) if s.startswith("finetune") and "forgetting" in s][0]
    assert "not distinguishable between Continual Normalization (cn) and GroupNorm (gn)" in fin


def test_findings_cka_with_two_seeds(tmp_path):
    def files(drifts):
        return {n: [write_cka(tmp_path / n / f"s{s}.npz", method="m", norm_drift=d, seed=s)
                    for s, d in enumerate(ds)] for n, ds in drifts.items()}

    t = pd.concat([make_table(n, methods=("m",), final={n: {"m": 0.5}}, drop={n: {"m": 0.1}}) for n in ("bn", "gn")])
    # norm-layer CKA 1 - drift - 0.025: bn 0.775, 0.755; gn 0.875, 0.845: bn lower by 0.10, 0.09
    cka = files({"bn": [0.20, 0.22], "gn": [0.10, 0.13]})
    f = comparison_findings(t, cka=cka_layer_summary(cka), cka_by_seed=cka_layer_summary(cka, by_seed=True))
    m, lo, hi = ci([-0.10, -0.09])
    s = [x for x in f if x.startswith("m: the norm layers")][0]
    assert s.startswith("m: the norm layers drift most with BatchNorm (bn)")
    assert f"bn vs gn {m:+.3f} [{lo:+.3f}, {hi:+.3f}], holds over 2 seeds" in s
    # gn drifts 0.10 and 0.30: bn's lower mean is not distinguishable
    cka = files({"bn": [0.20, 0.22], "gn": [0.10, 0.30]})
    f = comparison_findings(t, cka=cka_layer_summary(cka), cka_by_seed=cka_layer_summary(cka, by_seed=True))
    s = [x for x in f if x.startswith("m: the norm layers")][0]
    assert "drift most with" not in s and "not distinguishable with 2 seeds" in s


def test_findings_single_norm_and_missing_bounds():
    f = comparison_findings(make_table("bn", methods=("indl_fd_od",)))
    text = " ".join(f)
    assert "Only one norm (bn)" in text
    assert "finetune and joint was not run" in text
    assert "forgets least" not in text


# ----------------------------------------------------------------------------- figures and page


def _assert_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG)
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0
    return img


def test_plots_by_norm(tmp_path):
    plot_metric_by_norm(full_table(), tmp_path / "m.png", norms=["gn", "bn", "cn"])
    plot_cka_diagonal_by_norm(cka_files(tmp_path), tmp_path / "c.png", methods=list(METHODS))
    wide = _assert_png(tmp_path / "m.png")
    assert wide.shape[1] > 2 * wide.shape[0]  # three panels side by side
    _assert_png(tmp_path / "c.png")
    plot_metric_by_norm(full_table().iloc[:0], tmp_path / "empty.png")  # no data: still a figure
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG)


def _images(text: str) -> list[bytes]:
    imgs = re.findall(r"<img[^>]*>", text)
    out = []
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag
        out.append(base64.b64decode(m.group(1), validate=True))
    return out


def test_make_comparison_self_contained(tmp_path):
    tables = write_tables(tmp_path)
    out = tmp_path / "page" / "comparison.html"
    make_comparison(out=out, tables=tables, cka=cka_files(tmp_path), dataset="synth", repo_dir=tmp_path)
    text = out.read_text(encoding="utf-8").replace("\u00a0", " ")  # table cells wrap only before "["
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "<script" not in text and "@import" not in text
    imgs = _images(text)
    assert len(imgs) == 3  # base mAP, all-class mAP, CKA diagonals
    for i, data in enumerate(imgs):
        assert data.startswith(PNG)
        p = tmp_path / f"img{i}.png"
        p.write_bytes(data)
        _assert_png(p)
    assert "BatchNorm (bn)" in text and "GroupNorm (gn)" in text and "Continual Normalization (cn)" in text
    assert BWT_DEFINITION.split(",")[0] in text
    # bn/finetune row: base 0.310 [interval], BWT -0.290 [interval], gap 0.0 %
    m, lo, hi = ci([0.30, 0.32])
    assert f"{m:.3f} [{lo:.3f}, {hi:.3f}]" in text
    m, lo, hi = ci([-0.30, -0.28])
    assert f"{m:.3f} [{lo:.3f}, {hi:.3f}]" in text
    assert f"{0.31:.3f} ± {np.std([0.30, 0.32], ddof=1):.3f}" not in text  # no longer mean ± std
    assert "band: 95 % t-interval" in text and "min..max" not in text
    assert "100.0 %" in text and "forgets least" in text and "-0.0 %" not in text
    assert not list(out.parent.glob("*.tmp-*"))


def test_make_comparison_writes_paper_tables(tmp_path):
    tables = write_tables(tmp_path, norms=("gn", "bn"))
    make_comparison(out=tmp_path / "c.html", tables=tables, repo_dir=tmp_path, tex=tmp_path / "c.tex",
                    md=tmp_path / "c.md")
    md = (tmp_path / "c.md").read_text()
    assert "base-class mAP, GN | base-class mAP, BN" in md  # the given order of the norms
    assert "\\begin{tabular}{l" + "c" * 10 + "}" in (tmp_path / "c.tex").read_text()  # 5 quantities x 2 norms


def test_make_comparison_without_cka(tmp_path):
    out = tmp_path / "c.html"
    make_comparison(out=out, tables=write_tables(tmp_path, norms=("gn", "bn")), repo_dir=tmp_path)
    text = out.read_text(encoding="utf-8")
    assert len(_images(text)) == 2 and "no CKA results" in text
    assert text.index("GroupNorm (gn)") < text.index("BatchNorm (bn)")  # the given order


def test_read_tables_checks_norm_and_dataset(tmp_path):
    tables = write_tables(tmp_path, norms=("bn", "gn"))
    with pytest.raises(ValueError, match="norm 'cn'"):
        read_tables({"cn": tables["bn"]})
    other = make_table("gn").assign(dataset="other")
    write_tsv(other, tables["gn"])
    with pytest.raises(ValueError, match="several datasets"):
        read_tables(tables)
    with pytest.raises(ValueError, match="not 'x'"):
        make_comparison(out=tmp_path / "c.html", tables={"bn": tables["bn"]}, dataset="x")


def test_write_comparison_escapes(tmp_path):
    out = tmp_path / "c.html"
    write_comparison(out, table=make_table("bn"), title="<norms & co>", provenance={"code_version": "<x>"})
    text = out.read_text(encoding="utf-8")
    assert "&lt;norms &amp; co&gt;" in text and "&lt;x&gt;" in text and "<x>" not in text


def test_plots_by_norm_twelve_methods_have_distinct_colours(tmp_path):
    from matplotlib.colors import to_rgba

    methods = [f"m{i}" for i in range(12)]
    final = {n: {m: 0.3 + 0.03 * i for i, m in enumerate(methods)} for n in NORMS}
    drop = {n: {m: 0.1 for m in methods} for n in NORMS}
    t = pd.concat([make_table(n, final=final, drop=drop, methods=methods) for n in ("bn", "gn")])
    fig = metric_by_norm_figure(t, norms=["bn", "gn"])
    for ax in fig.axes:
        colours = [to_rgba(ln.get_color()) for ln in ax.get_lines()]
        assert len(colours) == 12 and len(set(colours)) == 12
    cka = {"bn": [write_cka(tmp_path / f"{m}.npz", method=m, norm_drift=0.01 * i) for i, m in enumerate(methods)]}
    ax = cka_diagonal_by_norm_figure(cka).axes[0]
    colours = [to_rgba(ln.get_color()) for ln in ax.get_lines()]
    assert len(colours) == 12 and len(set(colours)) == 12


# ----------------------------------------------------------------------------- paper tables and marks

PAPER_FINAL = {"bn": {"finetune": 0.30, "joint": 0.60, "indl_fd_od": 0.70},
               "gn": {"finetune": 0.40, "joint": 0.58, "indl_fd_od": 0.60}}
PAPER_OFFSET = {  # final base mAP offsets of seeds 0, 1, 2
    ("bn", "finetune"): [0.0, 0.1, -0.1], ("bn", "joint"): [0.0, 0.1, -0.1], ("bn", "indl_fd_od"): [0.0, 0.11, -0.1],
    ("gn", "finetune"): [0.0, 0.1, -0.1], ("gn", "joint"): [0.0, 0.1, -0.1], ("gn", "indl_fd_od"): [0.05, 0.05, -0.15],
}


def paper_fixture(seeds=(0, 1, 2)) -> pd.DataFrame:
    """Worked out by hand. bn: indl_fd_od - joint final base mAP 0.10, 0.11, 0.10 (holds); its mean
    forgetting over phases 1-2, 0.75 (0.8 - final) - offset / 2, is below joint's by 0.075,
    0.08, 0.075 (holds). gn: indl_fd_od - joint 0.07, -0.03, -0.03 (mean +0.003: not
    distinguishable); mean forgetting indl_fd_od - joint -0.04, +0.01, +0.01 (not distinguishable)."""
    drop = {n: DROP["bn"] for n in PAPER_FINAL}
    return pd.concat([make_table(n, final=PAPER_FINAL, drop=drop, seeds=seeds, offset=PAPER_OFFSET)
                      for n in PAPER_FINAL], ignore_index=True)


def _latex_cells(tex: str) -> dict[tuple[str, int], str]:
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    out = {}
    for line in body.strip().splitlines():
        cells = line.removesuffix(" \\\\").split(" & ")
        for j, c in enumerate(cells[1:]):
            out[(cells[0].replace("\\_", "_"), j)] = c
    return out


def _md_cells(md: str) -> dict[tuple[str, int], str]:
    rows = [r for r in md.splitlines() if r.startswith("|")][2:]  # after the header and the separator
    out = {}
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split(" | ")]
        for j, c in enumerate(cells[1:]):
            out[(cells[0].replace("\\_", "_"), j)] = c
    return out


# columns: base mAP bn, gn; all-class mAP bn, gn; mean forgetting bn, gn
PAPER_BOLD = {("indl_fd_od", 0), ("indl_fd_od", 2), ("indl_fd_od", 4)}


def test_paper_tables_bold_only_where_the_lead_holds(tmp_path):
    pt = write_paper_tables(paper_fixture(), tex=tmp_path / "t.tex", md=tmp_path / "t.md", norms=["bn", "gn"])
    tex, md = (tmp_path / "t.tex").read_text(), (tmp_path / "t.md").read_text()
    latex, mark = _latex_cells(tex), _md_cells(md)
    assert set(latex) == set(mark) == {(m, j) for m in METHODS for j in range(10)}
    # the fixture has no macro-F1 rows: its two columns (base F1, F1 forgetting) are empty
    assert {latex[(m, j)] for m in METHODS for j in range(6, 10)} == {"--"}
    assert {mark[(m, j)] for m in METHODS for j in range(6, 10)} == {"n/a"}
    assert {k for k, c in latex.items() if c.startswith("\\textbf{")} == PAPER_BOLD
    assert {k for k, c in mark.items() if c.startswith("**")} == PAPER_BOLD
    # cells: mean ± t half-width; bn/indl_fd_od final base mAP 0.70, 0.81, 0.60
    m, lo, hi = ci([0.70, 0.81, 0.60])
    assert mark[("indl_fd_od", 0)] == f"**{m:.3f} ± {(hi - lo) / 2:.3f}**"
    assert latex[("indl_fd_od", 0)] == f"\\textbf{{{m:.3f} $\\pm$ {(hi - lo) / 2:.3f}}}"
    # gn/joint mean forgetting: 0.75 * 0.22 - offset / 2 = 0.165, 0.115, 0.215 (not bold)
    m, lo, hi = ci([0.165, 0.115, 0.215])
    assert mark[("joint", 5)] == f"{m:.3f} ± {(hi - lo) / 2:.3f}"
    assert "booktabs" in tex and "\\caption{" in tex and "n = 3 seeds (0, 1, 2)" in tex
    caption = md.splitlines()[0]
    assert caption.startswith("Table: ") and "95 % Student-t interval" in caption and "n = 3 seeds" in caption
    assert "averaged over k = 1..2" in caption
    assert pt["bold"] == {(q, "bn", "indl_fd_od") for q in ("base_final", "all_final", "forgetting_avg")}


def test_paper_tables_one_seed_nothing_bold(tmp_path):
    write_paper_tables(paper_fixture(seeds=(0,)), tex=tmp_path / "t.tex", md=tmp_path / "t.md")
    tex, md = (tmp_path / "t.tex").read_text(), (tmp_path / "t.md").read_text()
    assert "textbf{" not in tex.split("\\midrule", 1)[1] and "**" not in md
    assert all("±" not in c for c in _md_cells(md).values())
    assert "one seed" in md.splitlines()[0] and "one seed" in tex
    assert _md_cells(md)[("indl_fd_od", 0)] == "0.700"


def test_final_table_marks_the_best_norm_only_where_it_holds():
    def marked(t):
        rows = re.findall(r"<tr>(.*?)</tr>", final_table(t, ["bn", "gn"]))[1:]
        out = set()
        for r in rows:
            cells = re.findall(r"<td>(.*?)</td>", r)
            out |= {(cells[0], cells[1], j) for j, c in enumerate(cells[3:]) if c.endswith(MARK.strip())}
        return out

    # paper fixture, indl_fd_od bn - gn final base mAP 0.05, 0.16, 0.15: not distinguishable, no mark;
    # finetune's forgetting bn - gn 0.1 in every seed: gn marked (columns: base, all, forgetting, BWT, gaps)
    got = marked(paper_fixture())
    assert ("bn", "indl_fd_od", 0) not in got and ("gn", "indl_fd_od", 0) not in got
    assert ("gn", "finetune", 2) in got and ("gn", "finetune", 0) in got
    assert marked(paper_fixture(seeds=(0,))) == set()  # one seed: nothing holds


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("cka_on", [True, False])
def test_rule_inputs_dry_run(tmp_path, cka_on):
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["run"]["norms"] = ["gn", "bn"]
    config.setdefault("cka", {})["activate"] = cka_on
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n", "results/synth/comparison.html"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    m = re.search(r"rule compare_norms:\n\s+input: (.*)\n\s+output: (.*)\n\s+log: (.*)\n", text)
    assert m, text[-3000:]
    inputs = m.group(1).split(", ")
    seed = config["run"]["seeds"][0]
    methods = (config.get("cka") or {}).get("methods") or config["run"]["methods"]
    expected = []
    for n in ("gn", "bn"):
        expected.append(f"results/synth/{n}/metrics.tsv")
        if cka_on:
            expected += [f"results/synth/{n}/{mm}/seed{seed}/cka.npz" for mm in methods]
    assert sorted(inputs) == sorted(expected)
    assert sorted(m.group(2).split(", ")) == [f"results/synth/comparison.{x}" for x in ("html", "md", "tex")]
    assert m.group(3) == "logs/synth/comparison.log"

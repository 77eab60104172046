"""Tests of the figures and the per-norm report (cilaudio.reporting): valid PNGs, findings text,
self-contained HTML."""

from __future__ import annotations

import base64
import math
import re
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from cilaudio.reporting.cka_files import load_cka, load_cka_files
from cilaudio.reporting.findings import SINGLE_SEED, findings
from cilaudio.reporting.norm_report import phase_table, write_report
from cilaudio.reporting.plots import (
    cka_diagonal_figure,
    metric_curves_figure,
    plot_cka_diagonal,
    plot_cka_heatmaps,
    plot_metric_curves,
)
from cilaudio.reporting.provenance import provenance
from cilaudio.tables import COLUMNS
from metric_tables import T1, T2, metric_table

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"block{b}.{k}" for b in range(1, 7) for k in ("conv1", "norm1", "conv2", "norm2")] + ["classifier"]


def make_table(final_base: dict[str, float], *, seeds=(0, 1), phases=3) -> pd.DataFrame:
    """Base mAP falls linearly from 0.8 (phase 0) to final_base[m] (last phase)."""
    return metric_table(final_base, seeds=seeds, phases=phases)


def write_cka(path: Path, method: str, phase: int, seed: int = 0) -> Path:
    n = len(LAYERS)
    i = np.arange(n)
    m = np.clip(1.0 - 0.03 * np.abs(i[:, None] - i[None, :]) - 0.02 * i[None, :] * phase / 4, 0, 1)
    np.savez(path, matrix=m.astype(float), layers=np.array(LAYERS), phase=np.int64(phase),
             method=np.array(method), seed=np.int64(seed))
    return path


def assert_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG)
    # width/height from the IHDR chunk, independent of matplotlib
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    img = mpimg.imread(path)
    assert img.shape[:2] == (h, w)
    assert w > 100 and h > 100
    assert not list(path.parent.glob("*.tmp-*"))
    return img


# ----------------------------------------------------------------------------- plots


def test_plot_metric_curves(tmp_path):
    out = tmp_path / "figs" / "curves.png"
    plot_metric_curves(make_table({"finetune": 0.2, "joint": 0.75}), out)
    img = assert_png(out)
    assert img.std() > 0  # not blank


def test_plot_metric_curves_single_seed_and_missing_metric(tmp_path):
    out = tmp_path / "c.png"
    plot_metric_curves(make_table({"finetune": 0.2}, seeds=(0,)), out, metrics=[("base", "map"), ("x", "y")])
    assert_png(out)


def test_plot_cka(tmp_path):
    paths = [write_cka(tmp_path / f"cka_{m}_{k}.npz", m, k) for m in ("finetune", "indl_fd_od") for k in (1, 4)]
    paths.append(write_cka(tmp_path / "cka_seed1.npz", "finetune", 4, seed=1))
    heat = tmp_path / "heat.png"
    diag = tmp_path / "diag.png"
    plot_cka_heatmaps(paths, heat)
    plot_cka_diagonal(paths, diag)
    assert_png(heat)
    assert_png(diag)


def test_plot_cka_rejects_bad_shape(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, matrix=np.zeros((3, 3)), layers=np.array(LAYERS), phase=np.int64(1), method=np.array("x"))
    with pytest.raises(ValueError, match="bad.npz"):
        plot_cka_heatmaps([p], tmp_path / "x.png")


def test_chain_cka_file_gives_one_record_per_phase(tmp_path):
    """The workflow's `cka` job writes a chain (matrices stacked over phases 1..K): each phase's
    record must carry its own matrix, in the order written, like one file per phase."""
    rng = np.random.default_rng(0)
    mats = rng.uniform(size=(3, len(LAYERS), len(LAYERS)))
    chain = tmp_path / "cka.npz"
    np.savez(chain, matrix=mats, layers=np.array(LAYERS), phase=np.array([1, 2, 3]), method=np.array("joint"),
             seed=np.int64(2))
    recs = load_cka(chain)
    assert [r["phase"] for r in recs] == [1, 2, 3]
    for r, m in zip(recs, mats):
        np.testing.assert_array_equal(r["matrix"], m)
        assert r["method"] == "joint" and r["seed"] == 2 and r["layers"] == LAYERS
    single = write_cka(tmp_path / "one.npz", "finetune", 4)
    assert [r["phase"] for r in load_cka_files([chain, single])] == [1, 2, 3, 4]
    np.savez(tmp_path / "short.npz", matrix=mats, layers=np.array(LAYERS), phase=np.array([1, 2]),
             method=np.array("joint"))
    with pytest.raises(ValueError, match="short.npz: 3 matrices but 2 phases"):
        load_cka(tmp_path / "short.npz")
    heat = tmp_path / "heat.png"
    plot_cka_heatmaps([chain], heat, phase=3)
    assert_png(heat)


def _luminance(rgba) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_cka_diagonal_small_multiples(tmp_path):
    """12 (method, phase) curves: one panel per method, phases in distinct colours, later darker."""
    from matplotlib.colors import to_rgba

    methods, phases = ("finetune", "joint", "indl_fd_od"), (1, 2, 3, 4)
    paths = [write_cka(tmp_path / f"{m}_{k}.npz", m, k) for m in methods for k in phases]
    fig = cka_diagonal_figure(paths)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(methods)
    per_phase = {}
    for ax, method in zip(axes, methods):
        assert ax.get_title().startswith(method)
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == [f"phase {k}" for k in phases]
        colours = [to_rgba(ln.get_color()) for ln in lines]
        assert len(set(colours)) == len(lines), f"{method}: two lines share a colour"
        lum = [_luminance(c) for c in colours]
        assert lum == sorted(lum, reverse=True), "later phases must be darker"
        for k, c in zip(phases, colours):
            per_phase.setdefault(k, set()).add(c)
    assert all(len(c) == 1 for c in per_phase.values()), "a phase has the same colour in every panel"


def _band_at(ax, x: float) -> tuple[float, float]:
    (band,) = ax.collections
    v = np.concatenate([p.vertices for p in band.get_paths()])
    y = v[np.isclose(v[:, 0], x), 1]
    return float(y.min()), float(y.max())


def test_metric_curves_band_is_the_95_interval():
    # base mAP of one method: phase 0 0.8, 0.8, 0.9; phase 1 0.2, 0.3, 0.7 over seeds 0, 1, 2
    vals = {0: (0.8, 0.8, 0.9), 1: (0.2, 0.3, 0.7)}
    t = pd.DataFrame([("synth", "bn", "m", s, k, "base", "map", v[s]) for k, v in vals.items() for s in range(3)],
                     columns=COLUMNS)
    ax = metric_curves_figure(t, metrics=[("base", "map")]).axes[0]
    for k, v in vals.items():
        half = T2 * statistics.stdev(v) / math.sqrt(3)
        lo, hi = _band_at(ax, k)
        assert lo == pytest.approx(statistics.mean(v) - half) and hi == pytest.approx(statistics.mean(v) + half)
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == pytest.approx([statistics.mean(vals[0]), statistics.mean(vals[1])])
    # one seed: the mean line and no band
    ax = metric_curves_figure(t[t["seed"] == 0], metrics=[("base", "map")]).axes[0]
    assert len(ax.get_lines()) == 1 and not ax.collections


def test_metric_curves_twelve_methods_have_distinct_colours():
    from matplotlib.colors import to_rgba

    methods = {f"m{i}": 0.2 + 0.04 * i for i in range(12)}
    fig = metric_curves_figure(make_table(methods), metrics=[("base", "map"), ("all", "map")])
    for ax in fig.axes[:2]:
        colours = [to_rgba(ln.get_color()) for ln in ax.get_lines()]
        assert len(colours) == 12 and len(set(colours)) == 12


# ----------------------------------------------------------------------------- findings


def test_findings_method_below_finetune():
    # final base mAP means: finetune 0.305, joint 0.705, indl 0.205 (seed offsets 0 and 0.01)
    f = findings(make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.2}))
    text = " ".join(f)
    indl = [s for s in f if s.startswith("indl_fd_od")]
    assert len(indl) == 1
    assert "NOT" in indl[0] and "BELOW finetune" in indl[0]
    # gap share (0.205 - 0.305) / (0.705 - 0.305) = -25 %
    assert "-25.0 %" in indl[0]
    # joint keeps 0.705 / 0.805 of its phase-0 value
    assert f"{100 * 0.705 / 0.805:.1f} %" in text
    assert f"{100 * 0.305 / 0.805:.1f} %" in text


def test_findings_method_between():
    f = findings(make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4}))
    indl = [s for s in f if s.startswith("indl_fd_od")][0]
    assert "lands between finetune and joint" in indl
    assert "NOT" not in indl
    assert "25.0 %" in indl  # (0.405 - 0.305) / 0.4


def test_findings_warn_when_there_is_one_seed():
    one = findings(make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4}, seeds=(0,)))
    two = findings(make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4}, seeds=(0, 1)))
    assert any("ONE seed" in s for s in one)
    assert not any("ONE seed" in s for s in two)


def _noisy(final_offset, seeds=(0, 1, 2), indl=0.5) -> pd.DataFrame:
    return metric_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": indl}, seeds=seeds, final_offset=final_offset)


SHARED = (0.0, 0.15, -0.15)  # a large seed effect that every method of a seed shares


def test_findings_between_holds_only_when_paired():
    """indl_fd_od leads finetune by 0.21, 0.19, 0.20 and trails joint by 0.19, 0.21, 0.20 on
    seeds whose shared offsets (0, +0.15, -0.15) dwarf those spreads: paired by seed, both hold."""
    own = {0: 0.01, 1: -0.01, 2: 0.0}
    f = findings(_noisy(lambda m, s: SHARED[s] + (own[s] if m == "indl_fd_od" else 0.0)))
    indl = [x for x in f if x.startswith("indl_fd_od")]
    assert len(indl) == 1 and "lands between finetune and joint" in indl[0]
    # differences with finetune 0.21, 0.19, 0.20: mean 0.2, s 0.01, half t_{0.975,2} 0.01 / sqrt(3)
    h = T2 * 0.01 / math.sqrt(3)
    assert f"indl_fd_od vs finetune {0.2:+.3f} [{0.2 - h:+.3f}, {0.2 + h:+.3f}], holds over 3 seeds" in indl[0]
    assert f"indl_fd_od vs joint {-0.2:+.3f} [{-0.2 - h:+.3f}, {-0.2 + h:+.3f}], holds over 3 seeds" in indl[0]
    # per-seed gap shares 0.21 / 0.4, 0.19 / 0.4, 0.20 / 0.4: mean 50 %, s 2.5 %
    hs = T2 * 0.025 / math.sqrt(3)
    assert f"{50:.1f} % [{100 * (0.5 - hs):.1f} %, {100 * (0.5 + hs):.1f} %]" in indl[0]
    assert not any("ONE seed" in x for x in f)


def test_findings_not_distinguishable_from_finetune():
    """Differences with finetune 0.08, 0.18, -0.02: mean 0.08, s 0.1, the interval holds 0."""
    own = {0: 0.0, 1: 0.1, 2: -0.1}
    f = findings(_noisy(lambda m, s: own[s] if m == "indl_fd_od" else 0.0, indl=0.38))
    indl = [x for x in f if x.startswith("indl_fd_od")][0]
    h = T2 * 0.1 / math.sqrt(3)
    assert f"indl_fd_od vs finetune {0.08:+.3f} [{0.08 - h:+.3f}, {0.08 + h:+.3f}], not distinguishable " \
           "with 3 seeds" in indl
    # with joint: -0.32, -0.22, -0.42: mean -0.32, the same s: holds
    assert f"indl_fd_od vs joint {-0.32:+.3f} [{-0.32 - h:+.3f}, {-0.32 + h:+.3f}], holds over 3 seeds" in indl
    assert "cannot be placed against the bounds: it is not distinguishable from finetune with 3 seeds" in indl
    assert "lands between" not in indl and "NOT" not in indl


def test_findings_one_seed_nothing_is_distinguishable():
    f = findings(make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4}, seeds=(0,)))
    text = " ".join(f)
    assert "lands between" not in text and "holds" not in text and "[" not in text
    indl = [x for x in f if x.startswith("indl_fd_od")][0]
    assert "indl_fd_od vs finetune +0.100, not distinguishable (one seed)" in indl
    assert "indl_fd_od vs joint -0.300, not distinguishable (one seed)" in indl
    assert f[-1] == SINGLE_SEED and "ONE seed" in SINGLE_SEED
    # the bounds' drop from phase 0 is not claimed either
    assert "its drop (phase 0 minus final, per seed) +0.500, not distinguishable (one seed)" in text


def test_phase_table_cells_are_intervals():
    t = _noisy(lambda m, s: {0: 0.0, 1: 0.1, 2: -0.1}[s] if m == "indl_fd_od" else 0.0, indl=0.38)
    html_table = phase_table(t, "base", "map")
    assert "[0" in html_table and ", 0" not in html_table  # no-break space inside the brackets
    html_table = html_table.replace("\u00a0", " ")
    # indl_fd_od after phase 2: 0.38, 0.49, 0.30 (the fixture adds 0.01 per seed)
    v = [0.38, 0.49, 0.30]
    h = T2 * statistics.stdev(v) / math.sqrt(3)
    m = statistics.mean(v)
    assert f"<td>{m:.3f} [{m - h:.3f}, {m + h:.3f}]</td>" in html_table
    one = phase_table(t[t["seed"] == 1], "base", "map")
    assert "<td>0.490</td>" in one and "[" not in one


def test_findings_only_present_methods():
    f = findings(make_table({"indl_fd_od": 0.4}))
    text = " ".join(f)
    assert "joint training" not in text and "fine-tuning" not in text
    assert "cannot be placed" in text


# ----------------------------------------------------------------------------- provenance / report


def test_provenance_outside_git(tmp_path):
    p = provenance(repo_dir=tmp_path)
    assert p["code_version"] == "unknown"
    assert p["python"].count(".") == 2
    assert set(p["packages"]) >= {"torch", "numpy", "pandas", "scikit-learn", "snakemake", "matplotlib"}
    assert p["packages"]["pandas"] == pd.__version__
    assert all(isinstance(v, str) and v for v in p["packages"].values())


def test_write_report_self_contained(tmp_path):
    table = make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.2})
    curves = tmp_path / "curves.png"
    plot_metric_curves(table, curves)
    cka = write_cka(tmp_path / "cka.npz", "indl_fd_od", 4)
    diag = tmp_path / "diag.png"
    plot_cka_diagonal([cka], diag)
    out = tmp_path / "report" / "index.html"
    config = {"dataset": "synth", "seeds": [0, 1], "lr": 0.00123, "methods": ["finetune", "joint", "indl_fd_od"],
              "note": "<b>escaped</b>"}
    prov = {"code_version": "0123abcd4567-dirty", "python": "3.11.7", "packages": {"numpy": "2.4.6"}}
    write_report(out, title="CIL <synth>", table=table, figures={"Metric curves": curves, "CKA diagonal": diag},
                 config=config, provenance=prov, notes=["a note & more"],
                 setup={"dataset": "synth", "phases": "0: Dog|Cat\n1: Car"})
    text = out.read_text(encoding="utf-8").replace("\u00a0", " ")  # table cells wrap only before "["
    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    imgs = re.findall(r"<img[^>]*>", text)
    assert len(imgs) == 2
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag
        assert base64.b64decode(m.group(1)).startswith(PNG)
    assert "0123abcd4567-dirty" in text
    assert "lr: 0.00123" in text and "- indl_fd_od" in text
    assert "&lt;b&gt;escaped&lt;/b&gt;" in text and "<b>escaped</b>" not in text
    assert "CIL &lt;synth&gt;" in text and "a note &amp; more" in text
    assert "Dog|Cat" in text
    assert "thresholded" in text and "NOT the standard metrics" in text
    assert "BELOW finetune" in text
    assert "group 2" in text and "Forgetting" in text
    # final base mAP of indl_fd_od: 0.20 and 0.21 over two seeds: 0.205 ± t_{0.975,1} s / sqrt(2)
    half = T1 * statistics.stdev([0.20, 0.21]) / math.sqrt(2)
    assert f"{0.205:.3f} [{0.205 - half:.3f}, {0.205 + half:.3f}]" in text
    assert f"{0.205:.3f} ± {np.std([0.20, 0.21], ddof=1):.3f}" not in text  # no longer mean ± std
    assert "95 % interval" in text and "t(0.975, n-1)" in text
    assert not list(out.parent.glob("*.tmp-*"))


def test_write_report_rejects_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.html", title="t", table=make_table({"joint": 0.7}), figures={"x": bad},
                     config={}, provenance={})


def test_left_out_note_counts_classes_without_positives():
    import pandas as pd

    from cilaudio.reporting.findings import left_out_note

    rows = pd.DataFrame({"subset": ["all", "base", "group1", "group1"], "metric": "classes_without_positives",
                         "value": [0, 0, 1, 2], "phase": [1, 1, 1, 2]})
    note = left_out_note(rows)
    assert "left out of mAP, macro F1 and ROC AUC" in note and "group1: up to 2" in note and "all:" not in note
    assert "no class was left out" in left_out_note(rows.assign(value=0))


def test_metric_sections_follow_the_registry_and_name_the_threshold(tmp_path):
    """Sections and forgetting headings come from cilaudio.metrics.REGISTRY; a metric taken on
    predictions (scores > threshold) names the threshold of the run's config (0.5 by default)."""
    table = make_table({"finetune": 0.3, "joint": 0.7})
    out = tmp_path / "r.html"
    write_report(out, title="t", table=table, figures={}, config={"evaluation": {"threshold": 0.4}}, provenance={})
    text = out.read_text(encoding="utf-8")
    standard, rest = text.split("<h2>Reference code's thresholded variants", 1)
    reference, forgetting = rest.split("<h2>Forgetting</h2>", 1)
    forgetting = forgetting.split("<h2>", 1)[0]
    labels = ["mAP", "F1 micro (threshold 0.4)", "F1 macro (threshold 0.4)", "lwlrap", "ROC AUC", "d-prime"]
    # one section per score and subset, in registry order; none for the counts
    sections = re.findall(r"<h4>([^<]*)</h4>", standard.split("<h2>Results per phase</h2>", 1)[1])
    assert sections == [f"{label} - {what}" for what in ("all classes seen so far", "base classes")
                        for label in labels]
    assert re.findall(r"<h4>forgetting of ([^<]*)</h4>", forgetting) == labels
    assert "reference code&#x27;s thresholded lwlrap (threshold 0.4) - base classes" in reference
    # the fixture has no AUC rows (results from before AUC existed): the sections say so
    assert standard.split("<h4>ROC AUC - base classes</h4>", 1)[1].startswith('\n<p class="note">no data</p>')
    write_report(out, title="t", table=table, figures={}, config={}, provenance={})
    assert "<h4>F1 micro (threshold 0.5) - base classes</h4>" in out.read_text(encoding="utf-8")


def test_findings_per_headline_metric_and_averaged_over_phases():
    """Findings of macro F1 read the F1 rows: finetune's F1 is lowered by 0.05 after phase 0, so
    indl_fd_od leads it by 0.1 + 0.05 at the final phase (mAP: 0.1), and averaged over phases 1-2
    (the base value falls linearly from 0.8: phase k is 0.8 + (final - 0.8) k / 2) by
    0.1 * (1/2 + 1) / 2 + 0.05 = 0.125 (mAP: 0.075); no spread over seeds, so both hold."""
    t = make_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4})
    low = (t["method"] == "finetune") & (t["metric"] == "f1_macro") & (t["subset"] == "base") & (t["phase"] >= 1)
    t.loc[low, "value"] -= 0.05
    f1 = [x for x in findings(t, "f1_macro") if x.startswith("indl_fd_od")][0]
    assert "final base-class F1 macro" in f1 and "mAP" not in f1
    assert "indl_fd_od vs finetune +0.150" in f1
    assert "averaged over phases 1-2, indl_fd_od vs finetune +0.125" in f1
    m = [x for x in findings(t, "map") if x.startswith("indl_fd_od")][0]
    assert "indl_fd_od vs finetune +0.100" in m and "averaged over phases 1-2, indl_fd_od vs finetune +0.075" in m

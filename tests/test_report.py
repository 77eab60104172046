"""Tests of cilaudio.plots and cilaudio.report: valid PNGs, findings text, self-contained HTML."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from cilaudio.plots import plot_cka_diagonal, plot_cka_heatmaps, plot_metric_curves
from cilaudio.report import findings, provenance, write_report
from metric_tables import metric_table

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
    text = out.read_text(encoding="utf-8")
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
    # final base mAP of indl_fd_od: 0.20 and 0.21 over two seeds
    assert f"{0.205:.3f} ± {np.std([0.20, 0.21], ddof=1):.3f}" in text
    assert not list(out.parent.glob("*.tmp-*"))


def test_write_report_rejects_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.html", title="t", table=make_table({"joint": 0.7}), figures={"x": bad},
                     config={}, provenance={})

"""The HTML reports as a person sees them: rendered by headless Chromium.

A per-norm report (cilaudio.reporting.norm_report.write_report with real figures from
cilaudio.reporting.plots) and a norms-comparison page (cilaudio.reporting.comparison_page) are
built from fixture data. A copy of each page gets a small probe script and a Content-Security-
Policy that allows nothing but the page itself and ``data:`` images; Chromium loads the copy, and
the probe writes into the DOM how many ``<img>`` elements decoded (``complete && naturalWidth >
0``), their natural sizes, and every script error, resource error and blocked request. The dumped
DOM must show every figure loaded at the size of its PNG and nothing failed; a screenshot of the
original page must not be blank. Control pages (a broken image, an external image, a throwing
script) check the probe itself.

Chromium comes from Debian's ``chromium`` package (``bash tools/system-deps.sh``). Without it
these tests skip, unless the environment variable CI is set: then they fail.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from cilaudio.reporting.comparison_page import make_comparison
from cilaudio.reporting.norm_report import write_report
from cilaudio.reporting.plots import plot_cka_diagonal, plot_cka_heatmaps, plot_metric_curves
from cilaudio.tables import write_tsv
from metric_tables import metric_table

# needs Chromium (tools/system-deps.sh): left out of `make test-fast`
pytestmark = pytest.mark.browser

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"block{b}.{k}" for b in range(1, 7) for k in ("conv1", "norm1", "conv2", "norm2")] + ["classifier"]
METHODS = ("finetune", "joint", "indl_fd_od")
TIMEOUT_S = 120

PROBE = """<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<script>
(function () {
  var errors = [];
  window.onerror = function (msg, src, line) { errors.push("script error: " + msg + " (line " + line + ")"); };
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push("failed to load <" + t.tagName.toLowerCase() + "> " + String(t.src || t.href || "").slice(0, 80));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("blocked " + e.violatedDirective + ": " + String(e.blockedURI).slice(0, 80));
  });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var imgs = Array.prototype.slice.call(document.images);
      var out = {
        images: imgs.length,
        loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
        natural: imgs.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
        shown: imgs.filter(function (i) { var r = i.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length,
        errors: errors,
        title: document.title
      };
      var pre = document.createElement("pre");
      pre.id = "__probe";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
    }, 0);
  });
})();
</script>
"""


# ----------------------------------------------------------------------------- Chromium


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _chromium()
    if path is None:
        msg = ("Chromium is not installed (Debian package `chromium`, installed by `bash tools/system-deps.sh`): "
               "the reports cannot be rendered")
        if os.environ.get("CI"):
            pytest.fail(msg + " - CI is set, so this is an error")
        pytest.skip(msg)
    return path


def _run(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir(parents=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", *args]
    env = {**os.environ, "HOME": str(profile)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"chromium did not finish in {TIMEOUT_S} s: {' '.join(cmd)}") from e
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _with_probe(page: Path, out: Path) -> Path:
    """A copy of ``page`` with the probe right after ``<meta charset>`` (or at the start of <head>)."""
    text = page.read_text(encoding="utf-8")
    m = re.search(r"<meta charset=[^>]*>", text, flags=re.I) or re.search(r"<head[^>]*>", text, flags=re.I)
    assert m, f"{page}: no <head>"
    out.write_text(text[: m.end()] + PROBE + text[m.end():], encoding="utf-8")
    return out


def probe(chromium: str, page: Path, tmp: Path) -> dict:
    """Load a probed copy of ``page`` in Chromium; the probe's findings."""
    copy = _with_probe(page, tmp / f"probed-{page.name}")
    dom = _run(chromium, tmp, "--dump-dom", copy.resolve().as_uri()).stdout
    m = re.search(r'<pre id="__probe">(.*?)</pre>', dom, flags=re.S)
    assert m, f"the probe did not report (page not loaded?); DOM starts:\n{dom[:1500]}"
    return json.loads(html.unescape(m.group(1)))


def screenshot(chromium: str, page: Path, tmp: Path, *, height: int = 2400) -> np.ndarray:
    shot = tmp / f"shot-{page.stem}.png"
    _run(chromium, tmp, f"--screenshot={shot}", f"--window-size=1280,{height}", page.resolve().as_uri())
    assert shot.exists() and shot.read_bytes().startswith(PNG), "no screenshot written"
    return mpimg.imread(shot)  # (height, width, channels), floats in 0..1


def png_sizes(page: Path) -> list[list[int]]:
    """(width, height) of every embedded PNG, from its IHDR chunk (independent of the browser)."""
    import base64

    sizes = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page.read_text(encoding="utf-8")):
        data = base64.b64decode(b64)
        sizes.append([int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")])
    return sizes


def assert_rendered(result: dict, page: Path, n_images: int) -> None:
    assert result["errors"] == [], result["errors"]
    assert result["images"] == n_images
    assert result["loaded"] == n_images, f"only {result['loaded']} of {n_images} figures loaded"
    assert result["shown"] == n_images, "a figure is laid out with zero size"
    assert result["natural"] == png_sizes(page)


def assert_not_blank(img: np.ndarray) -> None:
    rgb = img[..., :3]
    assert rgb.shape[0] > 500 and rgb.shape[1] > 500
    assert rgb.std() > 0.05, f"screenshot looks blank (pixel std {rgb.std():.4f})"
    ink = (rgb.min(axis=-1) < 0.5).mean()  # share of dark pixels: text, lines
    assert ink > 0.002, f"screenshot has almost no dark pixels ({ink:.5f})"
    q = np.round(rgb.reshape(-1, 3) * 255).astype(np.uint32)  # (pixels, 3)
    colours = np.unique((q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2])
    assert len(colours) > 50, "screenshot has almost no distinct colours"


# ----------------------------------------------------------------------------- fixture data


def make_table(norm: str, final: dict[str, float], *, seeds=(0, 1), phases=3) -> pd.DataFrame:
    """Group mAP decays with the phases since the group was learnt; a class name with markup."""
    return metric_table(final, norm=norm, seeds=seeds, phases=phases,
                        group_map=lambda k, g, fin: 0.7 - 0.1 * (k - g) * (1 - fin), class_name="class:Dog <b>")


def write_cka(path: Path, method: str, phase: int, drift: float) -> Path:
    n = len(LAYERS)
    i = np.arange(n)
    m = np.clip(1.0 - 0.03 * np.abs(i[:, None] - i[None, :]) - drift * i[None, :] / n, 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, matrix=m, layers=np.array(LAYERS), phase=np.int64(phase), method=np.array(method),
             seed=np.int64(0))
    return path


FINALS = {"bn": {"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.5},
          "gn": {"finetune": 0.35, "joint": 0.72, "indl_fd_od": 0.6},
          "cn": {"finetune": 0.4, "joint": 0.75, "indl_fd_od": 0.65}}


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pages")
    # the per-norm report, with the figures the workflow makes
    table = make_table("bn", FINALS["bn"])
    curves, heat, diag = tmp / "metrics.png", tmp / "cka_heatmaps.png", tmp / "cka_diagonal.png"
    plot_metric_curves(table, curves)
    cka = [write_cka(tmp / "cka" / f"{m}_{k}.npz", m, k, 0.3) for m in METHODS for k in (1, 2)]
    plot_cka_heatmaps([p for p in cka if p.stem.endswith("_2")], heat)
    plot_cka_diagonal(cka, diag)
    report = tmp / "bn" / "report.html"
    write_report(report, title="Class-incremental audio tagging: synth, BatchNorm", table=table,
                 figures={"Metric curves": curves, "CKA heatmaps": heat, "CKA diagonal": diag},
                 config={"run": {"norms": ["bn"], "methods": list(METHODS)}},
                 provenance={"code_version": "test", "python": "3", "packages": {"numpy": np.__version__}},
                 notes=["a note"], setup={"dataset": "synth"})
    # the comparison page of three norms
    tables, ckas = {}, {}
    for j, (norm, final) in enumerate(FINALS.items()):
        tables[norm] = tmp / norm / "metrics.tsv"
        write_tsv(make_table(norm, final), tables[norm])
        ckas[norm] = [write_cka(tmp / norm / m / "seed0" / "cka_phase2.npz", m, 2, 0.2 + 0.1 * j) for m in METHODS]
    comparison = tmp / "comparison.html"
    make_comparison(out=comparison, tables=tables, cka=ckas, dataset="synth", repo_dir=tmp)
    return {"report": report, "comparison": comparison}


# ----------------------------------------------------------------------------- tests


def test_probe_catches_failures(chromium, tmp_path):
    """The probe itself: a broken image, an external image and a throwing script are all reported."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>bad</title></head><body>'
        '<img alt="broken" src="data:image/png;base64,AAAAAAAA">'
        '<img alt="external" src="http://127.0.0.1:9/x.png">'
        '<img alt="good" src="data:image/png;base64,'
        'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==">'
        "<script>undefinedFunction();</script></body></html>", encoding="utf-8")
    r = probe(chromium, page, tmp_path)
    assert r["images"] == 3 and r["loaded"] == 1
    text = " | ".join(r["errors"])
    assert "undefinedFunction" in text
    assert "blocked" in text and "127.0.0.1" in text
    assert "failed to load <img>" in text


def test_report_renders(chromium, pages, tmp_path):
    page = pages["report"]
    r = probe(chromium, page, tmp_path)
    assert_rendered(r, page, 3)
    assert r["title"] == "Class-incremental audio tagging: synth, BatchNorm"
    assert_not_blank(screenshot(chromium, page, tmp_path))


def test_comparison_renders(chromium, pages, tmp_path):
    page = pages["comparison"]
    r = probe(chromium, page, tmp_path)
    assert_rendered(r, page, 3)
    assert r["title"] == "Normalisation layers compared: synth"
    assert_not_blank(screenshot(chromium, page, tmp_path))

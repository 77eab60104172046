"""The rendered pages' text is fixed: the per-norm report and the norms-comparison page (with its
paper tables) of a fixed results folder, built with the steps the workflow's scripts call
(:func:`cilaudio.workflow_steps.report`, :func:`cilaudio.workflow_steps.compare_norms`, and the
figure steps), must read as the golden files in ``tests/data/reporting_golden/``.

A page's text is what a reader sees: headings, paragraphs, list items, table rows (cells joined
by `` | ``), the configuration's lines and each figure's caption; tags, the style sheet and the
embedded image data are left out. ASCII whitespace is collapsed; no-break spaces are kept (the
tables place them on purpose). What differs between machines (the provenance table's values:
code version, Python, platform, package versions) is replaced by ``<value>``.

To write the golden files anew (only after a deliberate change of the pages' text):
``CILAUDIO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_reporting_pages.py``.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cilaudio import workflow_steps as W
from cilaudio.lists import write_classes
from cilaudio.phases import ClassSplit
from cilaudio.tables import COLUMNS, VERSION_COLUMNS, write_tsv
from metric_tables import metric_table

GOLDEN = Path(__file__).parent / "data" / "reporting_golden"
UPDATE = os.environ.get("CILAUDIO_UPDATE_GOLDEN") == "1"

LAYERS = [f"block{b}.{k}" for b in range(1, 7) for k in ("conv1", "norm1", "conv2", "norm2")] + ["classifier"]
CLASSES = (("Dog", "Cat", "Bird"), ("Car", "Bus"), ("Rain", "Wind"))  # phases 0, 1, 2
SEEDS = (0, 1, 2)
NOISE = {"finetune": (0.0, 0.02, -0.01), "joint": (0.0, -0.01, 0.02), "indl_fd_od": (0.0, 0.05, -0.04),
         "ewc": (0.0, 0.01, 0.0)}
FINAL = {  # base-class mAP after the last phase, per norm and method
    "bn": {"finetune": 0.30, "joint": 0.70, "indl_fd_od": 0.50, "ewc": 0.33},
    "gn": {"finetune": 0.35, "joint": 0.74, "indl_fd_od": 0.58, "ewc": 0.31},
    "cn": {"finetune": 0.40, "joint": 0.72, "indl_fd_od": 0.55, "ewc": 0.46},
}
DROP = {"bn": 0.12, "gn": 0.08, "cn": 0.05}  # group mAP lost per later phase
NORM_DRIFT = {"bn": 0.20, "gn": 0.08, "cn": 0.10}


# ----------------------------------------------------------------------------- the page's text


class _PageText(HTMLParser):
    """The visible text of a page, one line per block (see the module's docstring)."""

    BLOCKS = {"html", "head", "body", "title", "h1", "h2", "h3", "h4", "h5", "h6", "p", "div", "ul", "ol", "li",
              "dl", "dt", "dd", "table", "tr", "pre", "figure", "figcaption", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.pre = 0
        self.first_cell = True

    def _flush(self) -> None:
        text = "".join(self.current)
        self.current = []
        text = text.rstrip(" \t\r\n") if self.pre else re.sub(r"[ \t\r\n]+", " ", text).strip(" ")
        if text:
            self.lines.append(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self._flush()
            self.pre += tag == "pre"
            self.first_cell = self.first_cell or tag == "tr"
        elif tag in ("td", "th"):
            if not self.first_cell:
                self.current.append(" | ")
            self.first_cell = False
        elif tag == "img":
            self._flush()
            self.lines.append(f"[image: {dict(attrs).get('alt', '')}]")

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip -= 1
        elif tag in self.BLOCKS:
            self._flush()
            self.pre -= tag == "pre"

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            self.current.append(data)
            return
        parts = data.split("\n")
        for part in parts[:-1]:
            self.current.append(part)
            self._flush()
        self.current.append(parts[-1])


def page_text(path: Path, tmp: Path) -> str:
    """The text of the page at ``path``, with what differs between machines replaced."""
    parser = _PageText()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    parser._flush()
    out, provenance = [], False
    for line in parser.lines:
        line = line.replace(str(tmp), "<tmp>")
        if provenance and " | " in line and line != "item | value":
            line = line.split(" | ", 1)[0] + " | <value>"
        provenance = provenance or line == "Provenance"
        out.append(line)
    return "\n".join(out) + "\n"


def check(name: str, text: str) -> None:
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    if text != expected:  # the first differing line, then the whole comparison
        a, b = expected.splitlines(), text.splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{name} differs from its golden file at line {first + 1}:\n"
                    f"  golden: {a[first] if first < len(a) else '<end>'}\n"
                    f"  now:    {b[first] if first < len(b) else '<end>'}")
    assert text == expected


# ----------------------------------------------------------------------------- the results folder


def norm_table(norm: str, *, seeds=SEEDS, methods=None) -> pd.DataFrame:
    """The metrics of one norm (tests/metric_tables.py), with a seed effect per method, class-group
    mAP that loses DROP[norm] * (1.5 - final) per later phase, classes without positives and exemplar counts."""
    final = {m: v for m, v in FINAL[norm].items() if methods is None or m in methods}
    table = metric_table(final, norm=norm, seeds=seeds, phases=3,
                         group_map=lambda k, g, fin: 0.6 + 0.05 * g - DROP[norm] * (1.5 - fin) * (k - g),
                         final_offset=lambda m, s: NOISE[m][s])
    group = table["subset"].str.extract(r"^group(\d+)$", expand=False)
    lost = (table["phase"] - group.astype(float)).fillna(0.0)  # phases since the group was learnt
    table["value"] += 0.01 * table["seed"].map(lambda s: NOISE["indl_fd_od"][s]) * lost * 10
    extra = []
    for m in final:
        for s in seeds:
            for k in range(3):
                for subset, v in (("all", 0), ("base", 0), (f"group{k}", k % 2 + (s == 1))):
                    extra.append(("synth", norm, m, s, k, subset, "classes_without_positives", v))
                if m == "indl_fd_od" and k > 0:
                    for i, name in enumerate(c for group in CLASSES[:k] for c in group):
                        extra.append(("synth", norm, m, s, k, f"class:{name}", "exemplars", 4 + (i * 3 + s) % 5))
    return pd.concat([table, pd.DataFrame(extra, columns=COLUMNS)], ignore_index=True)


def write_cka_chain(path: Path, *, norm: str, method: str, seed: int) -> Path:
    """The `cka` job's file of one chain: phase 0 against phases 1 and 2."""
    n = len(LAYERS)
    mats = []
    for phase in (1, 2):
        diag = np.array([0.5 - 0.05 * phase if name == "classifier" else
                         1.0 - NORM_DRIFT[norm] * ("norm" in name) * phase / 2 - 0.04 * phase * (int(name[5]) > 3)
                         - 0.01 * seed - 0.02 * (method == "finetune") for name in LAYERS])
        m = np.full((n, n), 0.3)
        np.fill_diagonal(m, diag)
        mats.append(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, matrix=np.stack(mats), layers=np.array(LAYERS), phase=np.array([1, 2]), method=np.array(method),
             seed=np.int64(seed))
    return path


def training_table() -> pd.DataFrame:
    """Per-epoch losses: the base model and finetune levelled off, joint still falling in phase 2,
    ewc rising in phase 1."""
    runs = []
    for method, phase, losses in (("base", 0, [1.0, 0.6, 0.5, 0.45, 0.44, 0.44, 0.44, 0.44]),
                                  ("finetune", 1, [1.0, 0.7, 0.6, 0.55, 0.54, 0.54, 0.54, 0.54]),
                                  ("joint", 2, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
                                  ("ewc", 1, [1.0, 0.8, 0.7, 0.7, 0.7, 0.75, 0.8, 0.9])):
        for seed in (0, 1):
            runs.append(pd.DataFrame({"method": method, "seed": seed, "phase": phase,
                                      "epoch": range(1, len(losses) + 1), "lr": 0.01, "bce": losses,
                                      "total": [v + 0.01 * seed for v in losses], "seconds": 1.0,
                                      "clips_per_s": 10.0}))
    return pd.concat(runs, ignore_index=True)


def versions_table() -> pd.DataFrame:
    rows = [("synth", "gn", m, s, k, step, "0.4.0" if (m, s) != ("ewc", 2) else "0.3.1",
             "0123456789abcdef" if (m, s) != ("ewc", 2) else "fedcba9876543210", "False", "from scratch")
            for m in FINAL["gn"] for s in SEEDS for k in range(3) for step in ("training", "evaluation")]
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def config(methods, seeds) -> dict:
    return {
        "run": {"methods": list(methods), "seeds": list(seeds)},
        "datasets": {"synth": {"assignment": "latest", "phases": [3, 2, 2]}},
        "model": {"width": 8, "dropout": 0.2},
        "training": {"base": {"epochs": 8, "batch_size": 16, "lr": 0.01, "lr_min": 0.0001},
                     "incremental": {"epochs": 8, "batch_size": 32, "lr": 0.001, "lr_min": 0.0001}},
        "evaluation": {"threshold": 0.4, "batch_size": 64},
        "note": "<b>escaped</b> & kept",
    }


def write_report(tmp: Path, *, norm: str, seeds, methods, full: bool) -> Path:
    """The per-norm report of ``norm`` as the workflow makes it: figures by the plotting steps,
    then the report step (with training histories, CKA and library versions when ``full``)."""
    folder = tmp / norm
    folder.mkdir(parents=True)
    classes = folder / "lists" / "classes.tsv"
    classes.parent.mkdir()
    write_classes(ClassSplit.from_sizes([c for g in CLASSES for c in g], [len(g) for g in CLASSES]), classes)
    table = folder / "metrics.tsv"
    write_tsv(norm_table(norm, seeds=seeds, methods=methods), table)
    figures = {"metrics": folder / "metrics.png"}
    W.plot_metrics(str(table), str(figures["metrics"]))
    kwargs = {}
    if full:
        training = folder / "training.tsv"
        write_tsv(training_table(), training)
        figures["training"] = folder / "training.png"
        W.plot_training(str(training), str(figures["training"]))
        cka = [str(write_cka_chain(folder / m / f"seed{s}" / "cka.npz", norm=norm, method=m, seed=s))
               for m in ("finetune", "joint", "indl_fd_od") for s in (0, 1)]
        figures["cka_heatmaps"], figures["cka_diagonal"] = folder / "heat.png", folder / "diag.png"
        W.plot_cka(cka, heatmaps=str(figures["cka_heatmaps"]), diagonal=str(figures["cka_diagonal"]))
        versions = folder / "versions.tsv"
        write_tsv(versions_table(), versions)
        kwargs = {"training": str(training), "versions": str(versions)}
    out = folder / "report.html"
    W.report(out=str(out), table=str(table), classes=str(classes), figures={k: str(v) for k, v in figures.items()},
             config=config(methods, seeds), dataset="synth", norm=norm, repo_dir=tmp, **kwargs)
    return out


def write_comparison(tmp: Path, *, norms, seeds, methods, cka: bool) -> dict[str, Path]:
    """The norms-comparison page and paper tables as the workflow's compare_norms step makes them."""
    tables, cka_files = {}, {}
    for norm in norms:
        tables[norm] = str(tmp / norm / "metrics.tsv")
        write_tsv(norm_table(norm, seeds=seeds, methods=methods), tables[norm])
        if cka:
            cka_files[norm] = [str(write_cka_chain(tmp / norm / m / f"seed{s}" / "cka.npz", norm=norm, method=m,
                                                   seed=s)) for m in methods for s in seeds[:2]]
    out = {"html": tmp / "comparison.html", "tex": tmp / "comparison.tex", "md": tmp / "comparison.md"}
    W.compare_norms(html=str(out["html"]), tex=str(out["tex"]), md=str(out["md"]), tables=tables, cka=cka_files,
                    dataset="synth")
    return out


# ----------------------------------------------------------------------------- tests


def test_report_page_text(tmp_path):
    """Three seeds, four methods, training histories (one phase still falling, one rising), CKA,
    two library versions, exemplar memory, classes left out of mAP."""
    out = write_report(tmp_path, norm="gn", seeds=SEEDS, methods=tuple(FINAL["gn"]), full=True)
    check("report_full.txt", page_text(out, tmp_path))


def test_report_page_text_one_seed(tmp_path):
    """One seed, no training history, no CKA, no versions: the single-seed warning."""
    out = write_report(tmp_path, norm="bn", seeds=(0,), methods=("finetune", "joint", "indl_fd_od"), full=False)
    check("report_one_seed.txt", page_text(out, tmp_path))


def test_comparison_page_text(tmp_path):
    """Three norms, four methods, three seeds, CKA of two seeds: every section renders."""
    out = write_comparison(tmp_path, norms=("bn", "gn", "cn"), seeds=SEEDS, methods=tuple(FINAL["bn"]), cka=True)
    check("comparison.txt", page_text(out["html"], tmp_path))
    check("comparison.md", out["md"].read_text(encoding="utf-8"))
    check("comparison.tex", out["tex"].read_text(encoding="utf-8"))


def test_comparison_page_text_one_norm(tmp_path):
    """One norm, one seed, no joint, no CKA: the sentences for what cannot be compared."""
    out = write_comparison(tmp_path, norms=("cn",), seeds=(0,), methods=("finetune", "indl_fd_od"), cka=False)
    check("comparison_one_norm.txt", page_text(out["html"], tmp_path))
    check("comparison_one_norm.md", out["md"].read_text(encoding="utf-8"))
    check("comparison_one_norm.tex", out["tex"].read_text(encoding="utf-8"))


def test_page_text_drops_markup_and_images(tmp_path):
    """The extractor itself: tags, styles and image data out; cells, captions and pre lines in."""
    page = tmp_path / "p.html"
    page.write_text('<html><head><style>td{color:red}</style><title>T &amp; t</title></head><body>'
                    "<h2>Head</h2><p>a\n  b\u00a0%</p><table><tr><th>x</th><th>y</th></tr><tr><td>1</td>"
                    '<td>2</td></tr></table><pre>k:\n  - v\n</pre><figure><img alt="cap" '
                    'src="data:image/png;base64,AAAA"><figcaption>cap</figcaption></figure>'
                    "<h2>Provenance</h2><table><tr><th>item</th><th>value</th></tr><tr><td>python</td>"
                    "<td>3.11.7</td></tr></table></body></html>", encoding="utf-8")
    assert page_text(page, tmp_path).splitlines() == [
        "T & t", "Head", "a b\u00a0%", "x | y", "1 | 2", "k:", "  - v", "[image: cap]", "cap", "Provenance",
        "item | value", "python | <value>"]

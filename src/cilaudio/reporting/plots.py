"""Figures of the results: metric curves over phases and CKA between phase-0 and phase-k models
(one run's and the norms side by side), the exemplar memory and the training loss.

Every ``plot_*`` function writes one PNG atomically. Figures are built with
``matplotlib.figure.Figure`` and the Agg canvas (no pyplot state, no display needed) and are
released after saving; the ``*_figure`` functions return the Figure itself (for tests).

Bands over seeds are the 95 % Student-t interval of the mean (:func:`cilaudio.stats.interval`),
drawn where a phase has two seeds or more. No two lines of one panel share a colour: methods
get distinct colours (tab10, tab20, then evenly spaced hues), phases a sequential colour map.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cilaudio.atomic import atomic_path
from cilaudio.metrics import metric_label
from cilaudio.reporting.cka_files import is_norm_layer, load_cka_files
from cilaudio.stats import interval

BAND_CAPTION = ("mean over seeds; band: 95 % t-interval of the mean over seeds, "
                "mean ± t(0.975, n-1) · s / √n, none with one seed")

DEFAULT_CURVES = (
    ("all", "map"),
    ("base", "map"),
    ("all", "f1_micro"),
    ("all", "f1_macro"),
    ("all", "lwlrap"),
    ("base", "forgetting_map"),
)
# a panel's title and axis name its metric by its label in cilaudio.metrics.REGISTRY (metric_label)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | os.PathLike) -> None:
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        fig.clear()


def _over_seeds(g: pd.DataFrame) -> pd.DataFrame:
    """Per phase of the rows ``g`` (one run's metric): mean over seeds and the 95 % t-interval
    (NaN bounds where a phase has one seed). Index: phase; columns ``mean, low, high, n``."""
    rows = {}
    for phase, h in g.groupby("phase"):
        iv = interval(h.groupby("seed")["value"].mean().to_numpy(dtype=float))
        rows[int(phase)] = (iv.mean, iv.low, iv.high, iv.n)
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "low", "high", "n"]).sort_index()


def _band(ax, stats: pd.DataFrame, colour) -> None:
    if (stats["n"] > 1).any():
        ax.fill_between(stats.index, stats["low"], stats["high"], color=colour, alpha=0.2, linewidth=0)


def distinct_colours(n: int) -> list:
    """``n`` colours, no two alike: tab10 up to 10, tab20 up to 20, else evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def phase_colours(phases: Iterable[int]) -> dict[int, tuple]:
    """One colour per phase from viridis, later phases darker (the last phase darkest)."""
    from matplotlib import colormaps

    phases = sorted(dict.fromkeys(int(p) for p in phases))
    cmap = colormaps["viridis"]
    n = max(1, len(phases) - 1)
    return {p: cmap(0.85 * (1 - i / n)) if len(phases) > 1 else cmap(0.0) for i, p in enumerate(phases)}


def metric_curves_figure(table: pd.DataFrame, *, metrics: Sequence[tuple[str, str]] = DEFAULT_CURVES) -> Figure:
    """The figure of :func:`plot_metric_curves`."""
    metrics = list(metrics)
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, int(np.ceil(len(metrics) / ncols)))
    fig = _new_figure(4.6 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    multi = table[["dataset", "norm"]].drop_duplicates().shape[0] > 1 if len(table) else False
    runs = list(dict.fromkeys(zip(table["dataset"], table["norm"], table["method"])))
    colour = dict(zip(runs, distinct_colours(len(runs))))
    for ax, (subset, metric) in zip(axes, metrics):
        sel = table[(table["subset"] == subset) & (table["metric"] == metric)]
        if sel.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        groups = sel.groupby(["dataset", "norm", "method"], sort=False)
        for (ds, norm, method), g in groups:
            stats = _over_seeds(g)
            label = f"{method} ({ds}/{norm})" if multi else str(method)
            c = colour[(ds, norm, method)]
            ax.plot(stats.index, stats["mean"], marker="o", color=c, label=label)
            _band(ax, stats, c)
        ax.set_title(f"{metric_label(metric)} - {subset} classes" if not subset.startswith("class:") else
                     f"{metric_label(metric)} - {subset}")
        ax.set_xlabel("phase")
        ax.set_ylabel(metric_label(metric))
        phases = sorted(sel["phase"].unique()) if not sel.empty else []
        if phases:
            ax.set_xticks([int(p) for p in phases])
        ax.grid(True, alpha=0.3)
        if groups.ngroups:
            ax.legend(fontsize="small")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"Metrics after each phase ({BAND_CAPTION})")
    return fig


def plot_metric_curves(
    table: pd.DataFrame,
    out_png: str | os.PathLike,
    *,
    metrics: Sequence[tuple[str, str]] = DEFAULT_CURVES,
) -> None:
    """One panel per (subset, metric): x = phase, one line per method (mean over seeds).

    With several seeds a shaded band spans the 95 % t-interval of the mean over seeds. When
    ``table`` holds several datasets or norms, lines are labelled ``method (dataset/norm)``.
    """
    _save(metric_curves_figure(table, metrics=metrics), out_png)


def plot_cka_heatmaps(npz_paths: Iterable[str | os.PathLike], out_png: str | os.PathLike, *,
                      phase: int | None = None) -> None:
    """One CKA heatmap per record (of phase ``phase`` only, if given): rows = phase-0 layers,
    columns = phase-k layers, scale 0..1."""
    recs = [r for r in load_cka_files(npz_paths) if phase is None or r["phase"] == phase]
    n = max(1, len(recs))
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = _new_figure(6.6 * ncols, 6.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    im = None
    for ax, r in zip(axes, recs):
        im = ax.imshow(r["matrix"], vmin=0.0, vmax=1.0, cmap="viridis", origin="upper", interpolation="nearest")
        ticks = np.arange(len(r["layers"]))
        ax.set_xticks(ticks)
        ax.set_xticklabels(r["layers"], rotation=90, fontsize=6)
        ax.set_yticks(ticks)
        ax.set_yticklabels(r["layers"], fontsize=6)
        seed = "" if r["seed"] is None else f", seed {r['seed']}"
        ax.set_title(f"{r['method']}: phase 0 vs phase {r['phase']}{seed}", fontsize=10)
        ax.set_xlabel(f"phase-{r['phase']} model layer")
        ax.set_ylabel("phase-0 model layer")
    if not recs:
        axes[0].text(0.5, 0.5, "no CKA data", ha="center", va="center", transform=axes[0].transAxes)
    for ax in axes[len(recs):]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=list(axes), label="linear CKA", shrink=0.6)
    _save(fig, out_png)


def _mark_layers(ax, x, diag, is_norm, colour, *, size: float) -> None:
    """Markers on a CKA diagonal: filled squares on norm layers, open circles elsewhere (scatter
    collections, so that an axis' lines are the curves alone)."""
    ax.scatter(x[is_norm], diag[is_norm], marker="s", color=colour, s=size**2, zorder=3)
    ax.scatter(x[~is_norm], diag[~is_norm], marker="o", facecolors="none", edgecolors=colour,
               s=(size - 2) ** 2, zorder=3)


def _layer_legend_handles() -> list:
    return [Line2D([], [], color="k", marker="s", linestyle="none", label="norm layer"),
            Line2D([], [], color="k", marker="o", fillstyle="none", linestyle="none", label="conv / classifier")]


def _layer_axis(ax, layers) -> None:
    """Layer names on the x axis, norm layers shaded."""
    ax.set_xticks(np.arange(len(layers)))
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    for i, name in enumerate(layers):
        if is_norm_layer(name):
            ax.axvspan(i - 0.4, i + 0.4, color="0.9", zorder=0)


def cka_diagonal_figure(npz_paths: Iterable[str | os.PathLike]) -> Figure:
    """The figure of :func:`plot_cka_diagonal`: one panel per method (stacked, shared axes), one
    line per phase in a sequential colour map (later phases darker)."""
    recs = load_cka_files(npz_paths)
    groups: dict[str, dict[int, list[dict]]] = {}
    for r in recs:
        groups.setdefault(r["method"], {}).setdefault(r["phase"], []).append(r)
    methods = list(groups)
    colours = phase_colours(r["phase"] for r in recs)
    n = max(1, len(methods))
    fig = _new_figure(11.0, 0.8 + 3.0 * n)
    axes = fig.subplots(n, 1, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, method in zip(axes, methods):
        layers: list[str] = []
        for phase in sorted(groups[method]):
            rs = groups[method][phase]
            layers = rs[0]["layers"]
            if any(x["layers"] != layers for x in rs):
                raise ValueError(f"CKA files of {method} phase {phase} have different layer lists")
            diag = np.mean([np.diag(x["matrix"]) for x in rs], axis=0)  # (layers,)
            x = np.arange(len(layers))
            is_norm = np.array([is_norm_layer(name) for name in layers])
            label = f"phase {phase}" + (f" ({len(rs)} seeds)" if len(rs) > 1 else "")
            ax.plot(x, diag, "-", color=colours[phase], label=label)
            _mark_layers(ax, x, diag, is_norm, colours[phase], size=6)
        _layer_axis(ax, layers)
        ax.set_title(f"{method}: phase 0 vs phase k", fontsize="medium")
        ax.set_ylabel("CKA, same layer")
        ax.grid(True, axis="y", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + _layer_legend_handles(), fontsize="x-small", loc="lower left",
                  ncol=2)
    if not methods:
        axes[0].text(0.5, 0.5, "no CKA data", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_ylim(0.0, 1.02)
    axes[-1].set_xlabel("layer")
    fig.suptitle("Layer-wise similarity to the phase-0 model, one panel per method, later phases darker "
                 "(squares, shaded: norm layers)")
    return fig


def plot_cka_diagonal(npz_paths: Iterable[str | os.PathLike], out_png: str | os.PathLike) -> None:
    """Diagonal CKA(layer i of phase 0, layer i of phase k): small multiples, one panel per
    method, one line per phase k in a sequential colour map (later phases darker).

    Files of several seeds with the same (method, phase) are averaged. Norm layers are drawn
    with square markers, conv layers and the classifier with circles.
    """
    _save(cka_diagonal_figure(npz_paths), out_png)


# ----------------------------------------------------------------------------- norms side by side


def _method_colours(methods: Iterable[str]) -> dict[str, tuple]:
    """One distinct colour per method (:func:`distinct_colours`), the same in every panel."""
    methods = list(dict.fromkeys(methods))
    return dict(zip(methods, distinct_colours(len(methods))))


def plot_metric_by_norm(
    table: pd.DataFrame,
    out_png: str | os.PathLike,
    *,
    subset: str = "base",
    metric: str = "map",
    norms: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> None:
    """One panel per norm (shared y axis): x = phase, one line per method (mean over seeds).

    With several seeds a shaded band spans the 95 % t-interval of the mean over seeds. A method
    has the same colour in every panel. ``norms`` sets the panels' order and ``methods`` the
    colours' order (default: order of appearance).
    """
    _save(metric_by_norm_figure(table, subset=subset, metric=metric, norms=norms, methods=methods), out_png)


def metric_by_norm_figure(
    table: pd.DataFrame,
    *,
    subset: str = "base",
    metric: str = "map",
    norms: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> Figure:
    """The figure of :func:`plot_metric_by_norm`."""
    sel = table[(table["subset"] == subset) & (table["metric"] == metric)]
    norms = list(norms) if norms is not None else list(dict.fromkeys(table["norm"]))
    colours = _method_colours([*(methods or []), *table["method"]])
    n = max(1, len(norms))
    fig = _new_figure(4.4 * n, 3.8)
    axes = fig.subplots(1, n, squeeze=False, sharey=True).ravel()
    for ax, norm in zip(axes, norms):
        sub = sel[sel["norm"] == norm]
        if sub.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        for method, g in sub.groupby("method", sort=False):
            stats = _over_seeds(g)
            ax.plot(stats.index, stats["mean"], marker="o", color=colours[method], label=str(method))
            _band(ax, stats, colours[method])
        if not sub.empty:
            ax.set_xticks(sorted(int(p) for p in sub["phase"].unique()))
            ax.legend(fontsize="small")
        ax.set_title(str(norm))
        ax.set_xlabel("phase")
        ax.grid(True, alpha=0.3)
    if not norms:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center", transform=axes[0].transAxes)
    what = {"base": "the base classes", "all": "all classes seen so far"}.get(subset, subset)
    axes[0].set_ylabel(f"{metric_label(metric)} - {what}")
    fig.suptitle(f"{metric_label(metric)} on {what} after each phase, per norm\n({BAND_CAPTION})")
    return fig


def plot_cka_diagonal_by_norm(
    npz_by_norm: Mapping[str, Sequence[str | os.PathLike]],
    out_png: str | os.PathLike,
    *,
    phase: int | None = None,
    methods: Sequence[str] | None = None,
) -> None:
    """One panel per norm: the diagonal CKA per layer, one line per method (see
    :func:`cka_diagonal_by_norm_figure`)."""
    _save(cka_diagonal_by_norm_figure(npz_by_norm, phase=phase, methods=methods), out_png)


def cka_diagonal_by_norm_figure(
    npz_by_norm: Mapping[str, Sequence[str | os.PathLike]],
    *,
    phase: int | None = None,
    methods: Sequence[str] | None = None,
) -> Figure:
    """One panel per norm (stacked, shared y axis): CKA(layer i of phase 0, layer i of phase k)
    per layer, one line per method.

    The y axis spans [lower, 1.02] for every panel, lower = the lowest value minus 0.05 rounded
    down to a tenth (at least 0), so that small drifts stay visible. ``phase`` selects k (default:
    the last phase among each norm's files). Files of several seeds with the same method are
    averaged. Norm layers are shaded and drawn with squares.
    ``methods`` sets the order of the lines and of the colours (default: order of appearance).
    """
    norms = list(npz_by_norm)
    recs_by_norm = {n: load_cka_files(npz_by_norm[n]) for n in norms}
    colours = _method_colours([*(methods or []), *(r["method"] for rs in recs_by_norm.values() for r in rs)])
    n = max(1, len(norms))
    fig = _new_figure(11.0, 3.6 * n)
    axes = fig.subplots(n, 1, squeeze=False, sharey=True).ravel()
    lowest = 1.0
    for ax, norm in zip(axes, norms):
        recs = recs_by_norm[norm]
        k = phase if phase is not None else max((r["phase"] for r in recs), default=None)
        recs = [r for r in recs if r["phase"] == k]
        groups: dict[str, list[dict]] = {m: [] for m in colours}
        for r in recs:
            groups[r["method"]].append(r)
        groups = {m: rs for m, rs in groups.items() if rs}
        layers: list[str] = []
        for method, rs in groups.items():
            layers = rs[0]["layers"]
            if any(x["layers"] != layers for x in rs):
                raise ValueError(f"CKA files of {norm}/{method} phase {k} have different layer lists")
            diag = np.mean([np.diag(x["matrix"]) for x in rs], axis=0)  # (layers,)
            if np.isfinite(diag).any():
                lowest = min(lowest, float(np.nanmin(diag)))
            x = np.arange(len(layers))
            is_norm = np.array([is_norm_layer(name) for name in layers])
            label = str(method) + (f" ({len(rs)} seeds)" if len(rs) > 1 else "")
            ax.plot(x, diag, "-", color=colours[method], label=label)
            _mark_layers(ax, x, diag, is_norm, colours[method], size=5)
        if layers:
            _layer_axis(ax, layers)
            handles, _ = ax.get_legend_handles_labels()
            ax.legend(handles=handles + _layer_legend_handles(), fontsize="x-small", loc="best")
        else:
            ax.text(0.5, 0.5, "no CKA data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{norm}: phase 0 vs phase {k}" if k is not None else str(norm))
        ax.set_ylabel("CKA, same layer")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylim(max(0.0, np.floor((lowest - 0.05) * 10) / 10), 1.02)
    axes[-1].set_xlabel("layer")
    if not norms:
        axes[0].text(0.5, 0.5, "no CKA data", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle("Layer-wise similarity to the phase-0 model per norm (squares, shaded: norm layers)")
    return fig


def plot_memory_histograms(table, out_png: str | os.PathLike) -> bool:
    """Label histogram of each replay method's exemplar memory in the final phase (first
    seed): one bar per old class. Returns False (and writes nothing) without replay methods."""
    mem = table[(table["metric"] == "exemplars")]
    if mem.empty:
        return False
    final = mem["phase"].max()
    mem = mem[(mem["phase"] == final) & (mem["seed"] == mem["seed"].min())]
    methods = list(dict.fromkeys(mem["method"]))
    fig = _new_figure(10, 2.6 * len(methods))
    for i, method in enumerate(methods, start=1):
        ax = fig.add_subplot(len(methods), 1, i)
        sub = mem[mem["method"] == method]
        names = [c.removeprefix("class:") for c in sub["subset"]]
        ax.bar(range(len(sub)), sub["value"].to_numpy(), color="tab:blue")
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_ylabel("clips")
        ax.set_title(f"{method}: exemplar memory after phase {final - 1}, label count per old class "
                     f"(std {sub['value'].std(ddof=0):.1f})", fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)
    return True


# ----------------------------------------------------------------------------- training curves


def plot_training_curves(table: pd.DataFrame, out_png: str | os.PathLike, *, term: str = "total") -> None:
    """Small multiples of the training loss: one panel per method (phase 0, shared by every
    method, in its own panel ``base``), x = epoch, one line per phase in a sequential colour
    map (later phases darker), the mean over seeds with a min..max band when there are several.

    ``table``: the collected per-epoch table (:mod:`cilaudio.training_history`).
    """
    methods = list(dict.fromkeys(table["method"]))
    if "base" in methods:
        methods.remove("base")
        methods.insert(0, "base")
    n = max(1, len(methods))
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = _new_figure(3.6 * cols, 2.9 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colour = phase_colours(table["phase"].unique() if len(table) else [0])
    for ax, method in zip(axes, methods):
        sub = table[table["method"] == method]
        for phase, run in sub.groupby("phase", sort=True):
            stats = run.groupby("epoch")[term].agg(["mean", "min", "max", "count"])
            ax.plot(stats.index, stats["mean"], "-", color=colour[phase], label=f"phase {phase}")
            if stats["count"].max() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour[phase], alpha=0.2)
        n_seeds = sub["seed"].nunique()
        ax.set_title(f"{method} ({n_seeds} seed{'s' if n_seeds > 1 else ''})", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{term} loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    if not methods:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no training history", ha="center", va="center", transform=axes[0].transAxes)
    _save(fig, out_png)

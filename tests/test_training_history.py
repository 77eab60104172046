"""Per-epoch training tables: collection, the convergence flag and its figure."""

from __future__ import annotations

import pandas as pd
import pytest

from cilaudio.training_history import (STILL_FALLING_DROP, collect_history, convergence_findings,
                                       still_falling)


def _run(method: str, seed: int, phase: int, losses: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "seed": seed, "phase": phase, "epoch": range(1, len(losses) + 1),
                         "lr": 0.01, "bce": losses, "total": losses, "seconds": 1.0, "clips_per_s": 10.0})


def test_still_falling_flags_by_hand_counted_drops():
    # 8 epochs: the window is max(2, round(0.25 * 8)) = 2 epochs, from epoch 6 to epoch 8
    flat = _run("a", 0, 1, [1.0, 0.6, 0.5, 0.45, 0.44, 0.400, 0.395, 0.390])  # (0.400-0.390)/0.400 = 2.5 %
    steep = _run("b", 0, 1, [1.0, 0.9, 0.8, 0.7, 0.6, 0.500, 0.450, 0.400])  # (0.5-0.4)/0.5 = 20 %
    edge = _run("c", 1, 2, [1, 1, 1, 1, 1, 1.0, 0.98, 0.96])  # 4 %, below the 5 % bound: not flagged
    assert STILL_FALLING_DROP == 0.05
    flagged = still_falling(pd.concat([flat, steep, edge]))
    assert flagged[["method", "seed", "phase", "window"]].values.tolist() == [["b", 0, 1, 2]]
    assert flagged["drop"].iloc[0] == pytest.approx(0.2)


def test_convergence_findings_name_the_phase_and_seeds():
    table = pd.concat([_run("joint", 0, 3, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
                       _run("joint", 1, 3, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.49, 0.485]),  # 3 %: levelled off
                       _run("joint", 2, 1, [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35])])
    (sentence,) = convergence_findings(table)  # one sentence per method
    assert "joint was still converging at the end of phase(s) 1, 3" in sentence
    assert "seed(s) 0, 2" in sentence and "40%" in sentence
    assert convergence_findings(_run("x", 0, 1, [1, 0.5, 0.4, 0.4, 0.4]))[0].startswith("Training: every phase")


def test_collect_history_sorts_and_writes(tmp_path):
    paths = []
    for i, (m, s, p) in enumerate([("b", 0, 2), ("a", 1, 1), ("a", 0, 1)]):
        path = tmp_path / f"h{i}.tsv"
        _run(m, s, p, [0.3, 0.2]).to_csv(path, sep="\t", index=False)
        paths.append(path)
    table = collect_history(paths, tmp_path / "training.tsv")
    back = pd.read_csv(tmp_path / "training.tsv", sep="\t")
    assert back[["method", "seed", "phase"]].drop_duplicates().values.tolist() == [["a", 0, 1], ["a", 1, 1],
                                                                                   ["b", 0, 2]]
    assert len(table) == len(back) == 6


def test_training_figure_has_one_panel_per_method(tmp_path):
    from PIL import Image

    from cilaudio.reporting.plots import plot_training_curves

    table = pd.concat([_run("base", s, 0, [1, 0.5, 0.3]) for s in (0, 1)]
                      + [_run(m, s, p, [0.9, 0.6, 0.5]) for m in ("finetune", "joint") for s in (0, 1)
                         for p in (1, 2)])
    plot_training_curves(table, tmp_path / "training.png")
    with Image.open(tmp_path / "training.png") as img:
        width, height = img.size
    assert width > 2.5 * height  # three panels side by side


def test_training_figure_draws_later_phases_darker(tmp_path, monkeypatch):
    """Within a panel every phase has its own colour, and a later phase is darker (lower
    luminance), as the caption says."""
    from cilaudio.reporting import plots

    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out: saved.setdefault("fig", fig))
    table = pd.concat([_run("joint", 0, p, [0.9, 0.6, 0.5]) for p in (1, 2, 3, 4)])
    plots.plot_training_curves(table, tmp_path / "t.png")
    (ax,) = [a for a in saved["fig"].axes if a.get_visible()]
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(map(tuple, colours))) == 4

    def luminance(c):
        r, g, b = c[:3]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    lum = [luminance(c) for c in colours]  # lines drawn in phase order 1..4
    assert lum == sorted(lum, reverse=True)

"""tools/benchmark_bounds.py: the detectable difference against printed t tables, and the
bounds' keep ratios by hand on a small table."""

import pandas as pd
import pytest

from tool_loader import load_tool


def _tool():
    return load_tool("benchmark_bounds")


def test_detectable_difference_from_printed_t_tables():
    # t(0.975, 4) = 2.776 and t(0.80, 4) = 0.941 (printed tables); n = 5, sd = 0.1
    assert _tool().detectable(0.1, 5) == pytest.approx((2.776 + 0.941) * 0.1 / 5 ** 0.5, abs=2e-4)
    # n = 3: t(0.975, 2) = 4.303, t(0.80, 2) = 1.061
    assert _tool().detectable(1.0, 3) == pytest.approx((4.303 + 1.061) / 3 ** 0.5, abs=2e-3)


def test_keep_ratios_and_spread_by_hand():
    rows = []
    # phase 0: 0.8 (seed 0), 0.6 (seed 1); finetune final 0.4, 0.2; joint final 0.8, 0.6; two phases
    for m, finals in (("finetune", (0.4, 0.2)), ("joint", (0.8, 0.6))):
        for s, (p0, fin) in enumerate(zip((0.8, 0.6), finals)):
            for metric in ("map", "f1_macro"):
                rows += [("synth", "bn", m, s, 0, "base", metric, p0), ("synth", "bn", m, s, 1, "base", metric, fin)]
    t = pd.DataFrame(rows, columns=["dataset", "norm", "method", "seed", "phase", "subset", "metric", "value"])
    r = _tool().bounds_rows(t)[0]
    assert r["finetune keeps"] == pytest.approx((0.4 / 0.8 + 0.2 / 0.6) / 2)
    assert r["joint keeps"] == pytest.approx(1.0)
    assert r["sd finetune"] == pytest.approx(0.2 / 2 ** 0.5)  # two values 0.2 apart
    assert r["phase 0"] == pytest.approx(0.7)

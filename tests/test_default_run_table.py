"""tools/default_run_table.py by hand on a long table (tests/metric_tables.py)."""

from metric_tables import metric_table
from tool_loader import load_tool


def test_default_run_table_by_hand(tmp_path):
    # base value falls linearly from 0.8 + 0.01 s (phase 0) to final + 0.01 s (phase 2), seeds 0, 1
    (tmp_path / "bn").mkdir()
    metric_table({"finetune": 0.3, "joint": 0.7, "indl_fd_od": 0.4}).to_csv(
        tmp_path / "bn/metrics.tsv", sep="\t", index=False)
    text = load_tool("default_run_table").tables(tmp_path, ["bn"], "indl_fd_od")
    rows = [line for line in text.splitlines() if line.startswith("| BatchNorm |")]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1].startswith("0.805 [") and " -> 0.305 [" in cells[1]  # finetune 0.80/0.81 -> 0.30/0.31
    # indl - finetune: 0.1 at phase 2 in both seeds; at phase 1 (halfway) 0.05: mean of 1..2 = 0.075
    assert cells[4] == "+0.100 [+0.100, +0.100], holds over 2 seeds"
    assert cells[5] == "+0.075 [+0.075, +0.075], holds over 2 seeds"
    # all-class F1 (0.1 below base): phase 0 0.705, final 0.305, mean (0.705 + 0.505 + 0.305) / 3, drop 0.2
    f1 = [line for line in rows if "| micro |" in line][0]
    assert "| 0.705 [" in f1 and "| 0.305 [" in f1 and "| 0.505 [" in f1 and "| 0.200 [" in f1

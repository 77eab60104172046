"""tools/method_table.py: the final-phase numbers and gap shares by hand on a long table."""

from metric_tables import ci, metric_table
from tool_loader import load_tool


def _tool():
    return load_tool("method_table")


def test_method_table_by_hand(tmp_path):
    # base mAP after the last phase: finetune 0.4, joint 0.8, m 0.7, each + 0.01 per seed (seeds 0, 1)
    table = metric_table({"finetune": 0.4, "joint": 0.8, "m": 0.7})
    (tmp_path / "bn").mkdir()
    table.to_csv(tmp_path / "bn/metrics.tsv", sep="\t", index=False)
    text = _tool().method_tables(tmp_path, ["bn", "gn"])
    row = next(line for line in text.splitlines() if line.startswith("| `m` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean, low, high = ci([0.70, 0.71])
    assert cells[1] == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    # gap share per seed: (0.70 - 0.40) / (0.80 - 0.40) = (0.71 - 0.41) / (0.81 - 0.41) = 0.75, no spread
    assert cells[4] == "75.0 % [75.0 %, 75.0 %]"
    assert cells[3] == cells[1]  # the hand table gives macro F1 the values of mAP
    assert "BatchNorm" in text and "GroupNorm" not in text

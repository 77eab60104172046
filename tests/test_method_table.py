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


def test_an_analytic_method_gets_its_phase0_head_as_a_reference_row(tmp_path):
    """Subset ``base_head`` rows (an analytic method's phase-0 ridge head) give a reference row
    under that method with the head's base mAP and macro F1 of the last phase (mean and
    interval by hand); a method without them gets none."""
    import pandas as pd

    table = metric_table({"finetune": 0.4, "joint": 0.8, "analytic": 0.85})
    last = int(table["phase"].max())
    head = [("synth", "bn", "analytic", s, k, "base_head", metric, v + 0.02 * s)
            for s in (0, 1) for k in (1, last) for metric, v in (("map", 0.90 if k == last else 0.1),
                                                                 ("f1_macro", 0.60))]
    table = pd.concat([table, pd.DataFrame(head, columns=table.columns)], ignore_index=True)
    (tmp_path / "bn").mkdir()
    table.to_csv(tmp_path / "bn/metrics.tsv", sep="\t", index=False)
    lines = _tool().method_tables(tmp_path, ["bn"]).splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("| `analytic` |"))
    assert lines[i + 1].startswith("| `analytic`: its phase-0 ridge head")
    cells = [c.strip() for c in lines[i + 1].strip("|").split("|")]
    mean, low, high = ci([0.90, 0.92])
    assert cells[1] == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    mean, low, high = ci([0.60, 0.62])
    assert cells[3] == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    assert cells[2] == cells[4] == cells[5] == "-"
    assert sum("ridge head" in line for line in lines) == 1  # finetune and joint have none

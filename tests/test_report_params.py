"""The report's settings reach it as one param per setting (``"training.num_workers = 0"``), not
as one param holding the whole config: Snakemake's rerun reason lists the params that differ
between the recorded and the new set, so it then names the changed setting instead of printing
the whole config twice."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from cilaudio.jobs import settings_from_params, settings_params

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "run": {"methods": ["finetune", "joint"], "seeds": [0, 1]},
    "training": {"num_workers": 0, "base": {"epochs": 2, "lr": 0.01}},
    "datasets": {"synth": {"root": None, "files": {}, "classes": None}},
}


def test_one_param_per_setting():
    assert sorted(settings_params(CONFIG)) == sorted([
        'run.methods = ["finetune", "joint"]', "run.seeds = [0, 1]",
        "training.num_workers = 0", "training.base.epochs = 2", "training.base.lr = 0.01",
        "datasets.synth.root = null", "datasets.synth.files = {}", "datasets.synth.classes = null",
    ])


def test_a_changed_setting_is_the_only_difference():
    changed = copy.deepcopy(CONFIG)
    changed["training"]["num_workers"] = 4
    old, new = set(settings_params(CONFIG)), set(settings_params(changed))
    # what Snakemake prints as the reason: the params only in the old set and only in the new
    assert (old - new, new - old) == ({"training.num_workers = 0"}, {"training.num_workers = 4"})


def test_the_script_gets_the_config_back():
    params = ["not tracked", *settings_params(CONFIG)]  # the code param beside them
    assert settings_from_params(params) == CONFIG


def test_the_report_rule_passes_settings_not_the_whole_config():
    rule = (REPO / "workflow/rules/report.smk").read_text()
    block = rule[rule.index("rule report:"):]
    params = re.search(r"params:\n(.*?)\n    log:", block, re.S).group(1)
    assert "get_config_params" not in params and "get_report_settings" in params


def test_snakemake_names_the_changed_setting_in_its_rerun_reason(tmp_path):
    """A rule built as the report rule is (one function param per setting, beside a named one):
    after a changed setting, the dry run's reason holds that setting alone, before and now."""
    import subprocess
    import sys

    snakefile = tmp_path / "Snakefile"

    def write(config):
        snakefile.write_text(
            f"SETTINGS = {settings_params(config)!r}\n"
            "def constant(value):\n    def get(wildcards):\n        return value\n    return get\n"
            "rule r:\n    output: 'out.txt'\n    params:\n        *[constant(v) for v in SETTINGS],\n"
            "        code='not tracked',\n    shell: 'touch {output}'\n")

    smk = str(Path(sys.executable).parent / "snakemake")
    write(CONFIG)
    subprocess.run([smk, "-s", str(snakefile), "-d", str(tmp_path), "--cores", "1"], check=True,
                   capture_output=True)
    changed = copy.deepcopy(CONFIG)
    changed["training"]["num_workers"] = 4
    write(changed)
    proc = subprocess.run([smk, "-s", str(snakefile), "-d", str(tmp_path), "-n"], capture_output=True, text=True)
    reason = next(line for line in (proc.stdout + proc.stderr).splitlines() if "reason:" in line)
    assert "'training.num_workers = 0'" in reason and "'training.num_workers = 4'" in reason, reason
    assert "run.methods" not in reason and len(reason) < 300, reason

"""Running the real workflow from the tests: Snakemake on a work folder, and its plan."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())


# the timeout only bounds a hang: a tiny run takes 1-3 minutes on 2 cores, idle or loaded
def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Snakemake on ``workdir`` with its ``config.yaml``; ``args`` (targets included) come after
    ``--cores``, never right after ``--configfile`` (which would read them as config files)."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned(workdir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Output path -> rule of every job a dry run plans (``env``: the environment of Snakemake)."""
    proc = snakemake(workdir, "-n", *args, env=env)
    jobs: dict[str, str] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        m = re.match(r"^\s+output: (.*)$", line)
        if m and rule:
            for path in m.group(1).split(", "):
                jobs[re.sub(r" \(\w+\)$", "", path.strip())] = rule  # "x.tsv (update)": the flag dropped
    return jobs


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

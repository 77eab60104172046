"""Every Snakemake command that the README shows runs as written (as a dry run, in a copy of the
workflow, without any data): it plans jobs, or stops with the message the README promises for
data that is absent, never with an argument or parsing error. A README that drifts from the
command line (an option that swallows a target, a renamed rule or file) fails here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from workflow_runs import REPO, SNAKEMAKE

COMMAND = re.compile(r"^(?:\.venv/bin/)?snakemake\b.*$")


def readme_commands() -> list[str]:
    """The snakemake command lines of the README's bash blocks (continued lines joined, comments cut)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if COMMAND.match(line):
                commands.append(line)
    return commands


def test_the_readme_has_commands_to_check():
    commands = readme_commands()
    assert len(commands) >= 8, commands
    assert any("--configfile" in c for c in commands) and any("--profile slurm" in c for c in commands)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for folder in ("workflow", "config", "slurm", "envs"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Snakefile", work / "Snakefile")
    return work


# what a dry run without the data may answer instead of a plan (README, "The papers' presets"),
# or without PANNs' weights (README, "Starting from PANNs")
MISSING_DATA = re.compile(r"metadata file\(s\) missing, e\.g\. .*\. Download"
                          r"|model\.pretrained: \S+ does not exist: download")


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_dry_runs(workdir, command):
    args = shlex.split(command)[1:]
    proc = subprocess.run([str(SNAKEMAKE), *args, "-n"], cwd=workdir, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        assert MISSING_DATA.search(out), f"{command!r} failed:\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]
    else:
        assert "Job stats:" in out or "Nothing to be done" in out, out[-3000:]
    # every target that the command names is one that this run would build
    for target in (a for a in args if a.startswith("results/")):
        if proc.returncode == 0:
            assert target in out or "Nothing to be done" in out, (command, out[-3000:])

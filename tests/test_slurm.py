"""`snakemake --profile slurm` against a real SLURM cluster: the users' profile, unchanged.

The cluster is the single-node one of tools/slurm/cluster.sh (slurmctld, slurmd, slurmdbd on
MariaDB, munge; fake GPUs as a generic resource), which tools/run-tests.sh starts before
pytest. A copy of the repository's workflow (Snakefile, workflow/, config/, envs/, slurm/)
runs in a temporary folder on the built-in benchmark with a tiny config; the command line overrides
only what this node needs: partition and account, CPU and memory requests that fit 2 cores,
short status intervals, kept SLURM logs and the number of jobs. Then:

- sacct holds exactly one job per rule instance that a dry run plans, each COMPLETED;
- the jobs of the rules the profile gives a GPU were allocated `gres/gpu`, the others not;
- every job ran the venv's Python, with the venv first on its PATH;
- each rule's log is in logs/ (README) and SLURM's log of each job in the profile's
  slurm-logdir (logs/slurm);
- every metrics.json equals that of a local run (`snakemake --cores 2`, no profile)
  of the same config and seed.

Without a cluster the test skips, except under CI (the CI variable set), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# needs a single-node SLURM cluster (tools/system-deps.sh): left out of `make test-fast`
pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"
CLUSTER_SH = REPO / "tools" / "slurm" / "cluster.sh"
STATE = Path(os.environ.get("CILAUDIO_SLURM_DIR", "/tmp/cilaudio-slurm"))
PARTITION = os.environ.get("CILAUDIO_SLURM_PARTITION", "gpu")
ACCOUNT = os.environ.get("CILAUDIO_SLURM_ACCOUNT", "cilaudio")
PROFILE = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
# A hang (e.g. a job the plugin lost track of) fails the test instead of blocking the suite.
SLURM_RUN_TIMEOUT = 480

# Smaller than tests/configs/tiny.yaml: 4 classes in 3 phases, two methods, CKA on.
CONFIG = {
    "run": {"datasets": ["synth"], "norms": ["bn"], "methods": ["finetune", "indl_fd_od"], "seeds": [0]},
    "datasets": {"synth": {
        "format": "fsd50k",
        "generate": {"seed": 7, "dev_clips": [8, 4, 4], "eval_clips": [6, 3, 3], "sample_rate": 16000,
                     "min_seconds": 0.6, "max_seconds": 1.0},
        "phases": [2, 1, 1],
        "features": {"sample_rate": 8000, "n_fft": 256, "win_length": 256, "hop_length": 80, "n_mels": 64,
                     "f_min": 20.0, "f_max": 3900.0, "excerpt_seconds": 0.7, "hop_seconds": 0.7},
    }},
    "model": {"width": 4},
    "training": {
        "in_memory": True,
        "base": {"epochs": 1, "batch_size": 8, "lr": 0.01, "lr_min": 0.0001},
        "incremental": {"epochs": 1, "batch_size": 8, "lr": 0.001, "lr_min": 0.0001},
    },
    "methods": {
        "finetune": {"data": "current", "bce_on": "all"},
        "indl_fd_od": {"data": "current", "bce_on": "new", "feature_distill": 1.0, "output_distill": "kl"},
    },
    "cka": {"activate": True, "methods": ["indl_fd_od"], "batch_size": 8},
}


def _env() -> dict[str, str]:
    """The environment of snakemake and, through sbatch's --export=ALL, of every job: the
    venv first on PATH, SLURM's commands pointed at the test cluster."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    conf = STATE / "etc" / "slurm.conf"
    if "SLURM_CONF" not in env and conf.exists():
        env["SLURM_CONF"] = str(conf)
    return env


def _cluster_problem() -> str | None:
    """Why the test cluster cannot take jobs, or None when it can."""
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return "SLURM's commands (sbatch, sacct) are not installed: run tools/system-deps.sh as root"
    try:
        proc = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True,
                              env=_env(), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"tools/slurm/cluster.sh status failed: {e}"
    if proc.returncode != 0:
        return ("the SLURM test cluster is not up (start it with `tools/slurm/cluster.sh start`, "
                f"as root; tools/run-tests.sh does so):\n{proc.stdout}{proc.stderr}")
    return None


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {problem}")
        pytest.skip(problem)
    return _env()


def _node_limits(env: dict[str, str]) -> tuple[int, int]:
    """CPUs and memory (MB) of the test node."""
    out = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, env=env,
                         check=True).stdout
    cpus = int(re.search(r"\bCPUTot=(\d+)", out).group(1))
    mem = int(re.search(r"\bRealMemory=(\d+)", out).group(1))
    return cpus, mem


def _profile_value(value) -> str:
    """A profile value as Snakemake passes it on the command line: strings are expressions
    (e.g. "16000 * attempt"), unless they hold a number."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                kind(value)
                return repr(value)
            except ValueError:
                pass
    return str(value)


def _capped(value, cap: int) -> str:
    return str(min(value, cap)) if isinstance(value, int) else f"min({value}, {cap})"


def overrides(env: dict[str, str]) -> list[str]:
    """The command-line settings this test node needs on top of the profile. A command-line
    option replaces the profile's value as a whole, so each starts from the profile's own:
    default-resources plus partition and account; set-resources and set-threads with CPU
    and memory requests cut to what one node with 2 cores holds (GPU requests, run times and
    their growth on a retry stay as the profile sets them)."""
    _, mem = _node_limits(env)
    caps = {"cpus_per_task": 1,  # two jobs side by side on the 2-core node
            "mem_mb": min(4000, mem // 4)}
    default = {name: _capped(value, caps[name]) if name in caps else _profile_value(value)
               for name, value in PROFILE["default-resources"].items()}
    default.update(slurm_partition=repr(PARTITION), slurm_account=repr(ACCOUNT))
    set_resources = [
        f"{rule}:{name}={_capped(value, caps[name]) if name in caps else _profile_value(value)}"
        for rule, resources in PROFILE["set-resources"].items() for name, value in resources.items()
    ]
    set_threads = [f"{rule}={min(n, caps['cpus_per_task'])}" for rule, n in PROFILE["set-threads"].items()]
    return [
        "--default-resources", *(f"{name}={value}" for name, value in default.items()),
        "--set-resources", *set_resources,
        "--set-threads", *set_threads,
        "--slurm-init-seconds-before-status-checks", "3",
        "--slurm-keep-successful-logs",
        "--jobs", "4",
    ]


@dataclass
class PlannedJob:
    rule: str
    wildcards: list[str]
    log: list[str]
    output: list[str]

    @property
    def comment(self) -> str:
        """The --comment the executor plugin gives the job's sbatch call."""
        if not self.wildcards:
            return f"rule_{self.rule}"
        return f"rule_{self.rule}_wildcards_{'_'.join(self.wildcards).replace('/', '_')}"

    @property
    def slurm_log_dir(self) -> str:
        return f"rule_{self.rule}/{'_'.join(self.wildcards).replace('/', '_')}".rstrip("/")


def parse_plan(text: str) -> list[PlannedJob]:
    """Every job of a dry run that would be submitted (local rules and `all` are not)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        m = re.match(r"(local)?rule (\w+):\n", block)
        if not m:
            continue
        fields = dict(re.findall(r"^ {4}(\w+): (.*)$", block, flags=re.M))
        if m.group(1) or "output" not in fields:  # `all` has no output and runs no job
            continue
        wildcards = [kv.split("=", 1)[1] for kv in fields["wildcards"].split(", ")] if "wildcards" in fields else []
        log = fields["log"].split(", ") if "log" in fields else []
        log = [re.sub(r" \(.*\)$", "", p) for p in log]
        jobs.append(PlannedJob(m.group(2), wildcards, log, fields["output"].split(", ")))
    return jobs


def copy_workflow(target: Path) -> Path:
    target.mkdir(parents=True)
    shutil.copy2(REPO / "Snakefile", target / "Snakefile")
    for folder in ("workflow", "config", "envs", "slurm"):
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "test_config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return target


def sacct_jobs(env: dict[str, str], run_uuid: str, since: str) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "State", "ExitCode", "Comment", "ReqTRES", "AllocTRES", "Partition", "Account"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "--name", run_uuid,
                          "-o", ",".join(fields)], capture_output=True, text=True, env=env, check=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


@dataclass
class Runs:
    workdir: Path  # the SLURM run
    local: Path  # the local run
    planned: list[PlannedJob]
    jobs: list[dict[str, str]]  # sacct's rows
    output: str  # snakemake's (--verbose)
    env: dict[str, str]


def _start_local_run(env: dict[str, str], targets: list[str], tmp_path_factory) -> tuple[Path, subprocess.Popen]:
    """The same config and seed without the profile (`snakemake --cores 2`), up to the
    metrics. It runs beside the SLURM run, which spends most of its time waiting."""
    workdir = copy_workflow(tmp_path_factory.mktemp("local") / "repo")
    log = open(workdir / "snakemake-local.log", "w")
    proc = subprocess.Popen([str(SNAKEMAKE), *targets, "--cores", "2", "--configfile", "test_config.yaml"],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    return workdir, proc


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> Runs:
    env = cluster
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm") / "repo")
    assert (workdir / "slurm" / "config.yaml").read_bytes() == (REPO / "slurm" / "config.yaml").read_bytes()
    args = ["--profile", "slurm", "--configfile", "test_config.yaml", *overrides(env)]
    dry = subprocess.run([str(SNAKEMAKE), *args, "-n"], cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned = parse_plan(dry.stdout + dry.stderr)
    assert len(planned) > 10, dry.stdout
    metrics = sorted(p for job in planned for p in job.output if p.endswith("/metrics.json"))

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    local, local_proc = _start_local_run(env, metrics, tmp_path_factory)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["timeout", "-s", "INT", "-k", "30", str(SLURM_RUN_TIMEOUT), str(SNAKEMAKE), *args,
                               "--verbose"], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=SLURM_RUN_TIMEOUT + 60)
    finally:
        seconds = time.monotonic() - t0
        try:
            local_proc.wait(timeout=300)
        finally:
            if local_proc.poll() is None:
                local_proc.kill()
    output = proc.stdout + proc.stderr
    (workdir / "snakemake-slurm.log").write_text(output)
    m = re.search(r"SLURM run ID: (\S+)", output)
    assert m, output[-5000:]
    jobs = sacct_jobs(env, m.group(1), since)
    if proc.returncode != 0:
        hint = "timed out (a hang?)" if proc.returncode == 124 else f"exit status {proc.returncode}"
        pytest.fail(f"snakemake --profile slurm failed, {hint}, after {seconds:.0f} s; sacct: {jobs}\n"
                    f"{_tail(output)}\n{_failed_logs(workdir)}")
    local_log = (local / "snakemake-local.log").read_text()
    assert local_proc.returncode == 0, f"the local run failed:\n{local_log[-5000:]}"
    print(f"snakemake --profile slurm: {len(jobs)} jobs in {seconds:.0f} s")
    return Runs(workdir, local, planned, jobs, output, env)


def _tail(text: str, n: int = 6000) -> str:
    lines = [line for line in text.splitlines() if "sbatch call" not in line and "DEBUG" not in line]
    return "\n".join(lines)[-n:]


def _failed_logs(workdir: Path) -> str:
    parts = []
    for path in sorted((workdir / "logs").rglob("*.log"))[:40]:
        text = path.read_text(errors="replace")
        if re.search(r"error|Traceback", text, flags=re.I):
            parts.append(f"--- {path.relative_to(workdir)}\n{text[-2000:]}")
    return "\n".join(parts)


def test_one_completed_job_per_rule_instance(runs):
    submitted = sorted(job["Comment"] for job in runs.jobs)
    planned = sorted(job.comment for job in runs.planned)
    assert submitted == planned
    not_completed = [job for job in runs.jobs if job["State"] != "COMPLETED" or job["ExitCode"] != "0:0"]
    assert not not_completed
    assert {job["Partition"] for job in runs.jobs} == {PARTITION}
    assert {job["Account"] for job in runs.jobs} == {ACCOUNT}
    rules = {job.rule for job in runs.planned}
    assert {"generate_synth", "extract_features", "train_base", "train_incremental", "evaluate", "cka",
            "report"} <= rules


def test_gpu_requests_follow_the_profile(runs):
    gpu_rules = {rule for rule, res in PROFILE["set-resources"].items() if res.get("gpu")}
    assert {"train_base", "train_incremental"} <= gpu_rules
    by_comment = {job["Comment"]: job for job in runs.jobs}
    seen = set()
    for planned in runs.planned:
        job = by_comment[planned.comment]
        want = PROFILE["set-resources"].get(planned.rule, {}).get("gpu", 0)
        if want:
            seen.add(planned.rule)
            assert f"gres/gpu={want}" in job["AllocTRES"].split(","), job
            assert f"gres/gpu={want}" in job["ReqTRES"].split(","), job
        else:
            assert "gres/gpu" not in job["AllocTRES"], job
    assert {"train_base", "train_incremental"} <= seen
    # the plugin asked with --gpus (the profile's `gpu: 1`)
    assert re.search(r"sbatch call: sbatch .*--gpus=1", runs.output)


def test_jobs_ran_the_venv_python(runs):
    """Each job calls the venv's Python by path, and sbatch exports the environment
    (--export=ALL), so `python` and `snakemake` on a job's PATH are the venv's too."""
    calls = re.findall(r"sbatch call: (sbatch .*)", runs.output)
    assert len(calls) == len(runs.jobs) and all("--export=ALL" in call for call in calls)
    python = re.escape(str(VENV_BIN)) + r"/python3? -m snakemake "
    assert all(re.search(python, call) for call in calls), calls[0]
    for job in runs.jobs:
        # the environment the job ran with, as slurmdbd stored it (AccountingStoreFlags=job_env)
        out = subprocess.run(["sacct", "-j", job["JobID"], "--env-vars"], capture_output=True, text=True,
                             env=runs.env, check=True).stdout
        path = re.search(r"^PATH=(.*)$", out, flags=re.M)
        assert path, f"no environment stored for job {job['JobID']}:\n{out}"
        for tool in ("python", "snakemake"):
            assert shutil.which(tool, path=path.group(1)) == str(VENV_BIN / tool), (tool, path.group(1))


def test_logs_where_the_readme_says(runs):
    workdir = runs.workdir
    by_comment = {job["Comment"]: job for job in runs.jobs}
    slurm_logdir = workdir / PROFILE["slurm-logdir"]
    assert PROFILE["slurm-logdir"] == "logs/slurm"
    for planned in runs.planned:
        assert planned.log, f"rule {planned.rule} declares no log"
        for log in planned.log:
            assert log.startswith("logs/") and (workdir / log).is_file(), log
        job_id = by_comment[planned.comment]["JobID"]
        slurm_log = slurm_logdir / planned.slurm_log_dir / f"{job_id}.log"
        assert slurm_log.is_file() and slurm_log.stat().st_size > 0, slurm_log
    # training logs show the epoch; SLURM's own log shows the job step's Snakemake
    train_log = workdir / "logs/synth/bn/indl_fd_od/seed0/train_phase2.log"
    assert "epoch 1/1" in train_log.read_text()
    benchmark = workdir / "benchmarks/synth/bn/base/seed0/train_phase0.tsv"
    assert benchmark.is_file()


def test_metrics_equal_a_local_run(runs):
    slurm_files = sorted(p.relative_to(runs.workdir) for p in (runs.workdir / "results").rglob("metrics.json"))
    assert len(slurm_files) == 1 + 2  # phase 0, and phases 1-2 of each of two methods
    for rel in slurm_files:
        on_slurm = json.loads((runs.workdir / rel).read_text())
        local = json.loads((runs.local / rel).read_text())
        assert on_slurm == local, rel

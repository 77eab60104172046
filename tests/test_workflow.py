"""The real Snakemake workflow on a tiny config: a full run, then what reruns after a change.

One module-scoped run builds everything (about a minute on 2 cores); each rerun test copies
that finished folder (with Snakemake's metadata and the files' times) and asks Snakemake for
its plan with a dry run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_runs import REPO, SNAKEMAKE, TINY, planned, snakemake, write_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny_run")
    write_config(workdir, TINY)
    snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_full_run_outputs(finished):
    res = finished / "results" / "synth"
    report = (res / "bn" / "report.html").read_text()
    assert "<img" in report and "indl_fd_od" in report
    table = pd.read_csv(res / "bn" / "metrics.tsv", sep="\t")
    assert list(table.columns) == ["dataset", "norm", "method", "seed", "phase", "subset", "metric", "value"]
    assert set(table["method"]) == {"finetune", "joint", "indl_fd_od"}
    assert sorted(table["phase"].unique()) == [0, 1, 2, 3, 4]
    # every phase's metrics cover exactly the classes seen so far; base-class metrics are
    # taken on the same clips (the phase-0 test clips) after every phase
    (phase0,) = json.loads((res / "bn/base/seed0/metrics.json").read_text())["phases"]
    assert phase0["phase"] == 0 and phase0["subsets"]["base"] == phase0["subsets"]["all"]
    n_test = [phase0["n_excerpts"]["all"]]
    chain = json.loads((res / "bn/joint/seed0/metrics.json").read_text())["phases"]
    assert [data["phase"] for data in chain] == [1, 2, 3, 4]  # one evaluation job per chain
    for k, data in enumerate(chain, start=1):
        assert len(data["classes"]) == 2 + k
        assert data["n_excerpts"]["base"] == phase0["n_excerpts"]["all"]
        n_test.append(data["n_excerpts"]["all"])
    assert n_test == sorted(n_test) and n_test[-1] > n_test[0]  # cumulative test lists grow
    # every result records the library version that made it, and the report names it
    versions = pd.read_csv(res / "bn" / "versions.tsv", sep="\t", dtype=str)
    assert set(versions["step"]) == {"training", "evaluation"} and versions["library"].nunique() == 1
    assert chain[0]["code_version"]["training"]["library"] == versions["library"].iloc[0]
    assert f"<dd>{versions['library'].iloc[0]}</dd>" in report
    # every heavy job wrote its declared log and benchmark
    assert (finished / "logs/synth/bn/joint/seed0/train_phase4.log").read_text().count("epoch 1/1") == 1
    assert (finished / "benchmarks/synth/bn/base/seed0/train_phase0.tsv").exists()
    lists = res / "lists"
    assert (lists / "train_phase3.tsv").read_text().splitlines()[0] == "fname\tlabels\tall_labels"


@pytest.mark.workflow
def test_complete_run_plans_nothing(copy):
    assert planned(copy) == {}


@pytest.mark.workflow
def test_reordered_config_keys_plan_nothing(copy):
    """Snakemake compares params as text: the workflow sorts their keys, so reformatting the
    config (here: every mapping's keys sorted) reruns nothing."""
    (copy / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=True))
    assert planned(copy) == {}


@pytest.mark.workflow
@pytest.mark.parametrize("key, value", [("tensorboard", True)])
def test_execution_settings_plan_nothing(copy, key, value):
    """Settings that do not change results are read from the config, not passed as params:
    turning them on or off reruns no computation, only the report (which prints the config)."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config.setdefault("training", {})[key] = value
    write_config(copy, config)
    assert set(planned(copy)) <= {"results/synth/bn/report.html"}


def test_phases_are_chained(tmp_path):
    write_config(tmp_path, TINY)
    proc = snakemake(tmp_path, "-n", "results/synth/bn/report.html")
    text = proc.stdout
    inputs, rule, first_input = {}, None, None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule == "train_incremental" and line.strip().startswith("input:"):
            first_input = line.split("input:")[1].split(",")[0].strip()
        elif rule == "train_incremental" and line.strip().startswith("output:"):
            inputs[line.split("output:")[1].split(",")[0].strip()] = first_input
    for method in ("finetune", "joint", "indl_fd_od"):
        assert inputs[f"results/synth/bn/{method}/seed0/phase1.pt"] == "results/synth/bn/base/seed0/phase0.pt"
        for k in range(2, 5):
            assert inputs[f"results/synth/bn/{method}/seed0/phase{k}.pt"] == f"results/synth/bn/{method}/seed0/phase{k - 1}.pt"
    assert text.count("rule train_base:") == 1  # phase 0 shared by every method


AGGREGATES = {"results/synth/bn/metrics.tsv", "results/synth/bn/versions.tsv", "results/synth/bn/figures/metrics.png",
              "results/synth/bn/training.tsv", "results/synth/bn/figures/training.png",
              "results/synth/bn/summary.tsv", "results/synth/comparison.tex", "results/synth/comparison.md",
              "results/synth/bn/figures/cka_heatmaps.png", "results/synth/bn/figures/cka_diagonal.png",
              "results/synth/bn/report.html", "results/synth/comparison.html"}


def _non_aggregate(jobs: dict[str, str]) -> set[str]:
    return {p for p in jobs if p not in AGGREGATES}


@pytest.mark.workflow
def test_adding_a_method_runs_only_its_jobs(copy):
    config = dict(TINY, run=dict(TINY["run"], methods=["finetune", "joint", "indl_fd_od", "indl"]))
    write_config(copy, config)
    jobs = planned(copy)
    expected = {f"results/synth/bn/indl/seed0/{f}{k}{ext}" for k in range(1, 5)
                for f, ext in (("phase", ".pt"), ("phase", "_history.tsv"))}
    expected.add("results/synth/bn/indl/seed0/metrics.json")
    assert _non_aggregate(jobs) == expected
    assert {"results/synth/bn/report.html", "results/synth/bn/metrics.tsv"} <= set(jobs)


@pytest.mark.workflow
def test_changing_temperature_reruns_only_distilling_phases(copy):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["distillation"] = {"temperature": 3.0}
    write_config(copy, config)
    jobs = planned(copy)
    expected = {f"results/synth/bn/indl_fd_od/seed0/{f}{k}{ext}" for k in range(1, 5)
                for f, ext in (("phase", ".pt"), ("phase", "_history.tsv"))}
    expected |= {"results/synth/bn/indl_fd_od/seed0/metrics.json", "results/synth/bn/indl_fd_od/seed0/cka.npz"}
    assert _non_aggregate(jobs) == expected
    assert not any("features" in p or "base" in p or "lists" in p for p in jobs)


@pytest.mark.workflow
@pytest.mark.parametrize("section, key, value", [("training", "num_workers", 1), ("training", "in_memory", False),
                                                ("training", "device", "cpu"), ("model", "gn_groups", 2)])
def test_execution_settings_rerun_no_computation(copy, section, key, value):
    """How a job runs (loader workers, features in RAM, the device) and a setting of other norms
    (GroupNorm groups, for a BatchNorm run) must not rerun training, evaluation or CKA."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    assert config.get(section, {}).get(key) != value
    config.setdefault(section, {})[key] = value
    write_config(copy, config)
    jobs = planned(copy)
    assert _non_aggregate(jobs) == set()
    assert "results/synth/bn/report.html" in jobs  # the report prints the configuration


@pytest.mark.workflow
@pytest.mark.parametrize("module, reruns, keeps", [
    ("losses.py", {"train_base", "train_incremental", "evaluate", "cka", "report"},
     {"extract_features", "join_features", "make_lists_synth", "generate_synth"}),
    ("reporting/plots.py", {"plot_metrics", "plot_cka", "plot_training", "report", "compare_norms"},
     {"train_base", "train_incremental", "evaluate", "cka", "extract_features"}),
])
def test_library_edit_reruns_the_jobs_that_run_it(copy, tmp_path, module, reruns, keeps):
    """With provenance.rerun_on_code_change (on in the tiny config), an edit of a library module
    reruns the jobs whose code imports it, and no other: Snakemake's own code trigger sees only
    the scripts. The edited library is a copy put first on PYTHONPATH."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "cilaudio", src / "cilaudio", ignore=shutil.ignore_patterns("__pycache__"))
    edited = src / "cilaudio" / module
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert planned(copy, env={**os.environ, "PYTHONPATH": str(REPO / "src")}) == {}
    rules = set(planned(copy, env={**os.environ, "PYTHONPATH": str(src)}).values())
    assert reruns <= rules, rules
    assert not rules & keeps, rules

    # the start-up's note names the edited module (and only when there is an edit), and each
    # rerun's reason names it too
    name = "cilaudio." + module.removesuffix(".py").replace("/", ".")
    same = snakemake(copy, "-n", env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert "note: the library differs" not in same.stdout + same.stderr
    out = snakemake(copy, "-n", env={**os.environ, "PYTHONPATH": str(src)})
    lines = (out.stdout + out.stderr).splitlines()
    notes = [line for line in lines if line.startswith("note: the library differs")]
    assert len(notes) == 1 and name in notes[0] and "rerun_on_code_change is on" in notes[0], notes
    reasons = [line for line in lines if "reason: Params have changed" in line]
    assert reasons and all(name in r for r in reasons), reasons[:3]


@pytest.mark.workflow
def test_deleting_phase3_checkpoint_reruns_phases_3_and_4(copy):
    (copy / "results/synth/bn/finetune/seed0/phase3.pt").unlink()
    jobs = planned(copy)
    expected = {f"results/synth/bn/finetune/seed0/{f}{k}{ext}" for k in (3, 4)
                for f, ext in (("phase", ".pt"), ("phase", "_history.tsv"))}
    expected.add("results/synth/bn/finetune/seed0/metrics.json")  # the tiny config's CKA: indl_fd_od only
    assert _non_aggregate(jobs) == expected


@pytest.mark.workflow
def test_adding_a_seed_runs_only_that_seed(copy):
    config = dict(TINY, run=dict(TINY["run"], seeds=[0, 1]))
    write_config(copy, config)
    jobs = planned(copy)
    assert _non_aggregate(jobs)
    assert all("/seed1/" in p for p in _non_aggregate(jobs))
    assert "results/synth/bn/base/seed1/phase0.pt" in jobs
    assert not any("features" in p or "lists" in p for p in jobs)


@pytest.mark.workflow
def test_rerun_after_temperature_change_keeps_phase0_and_features(copy):
    """Not only the plan: really rerun, and check what was rewritten."""
    keep = [copy / "results/synth/bn/base/seed0/phase0.pt", copy / "results/synth/features/dev.h5",
            copy / "results/synth/bn/finetune/seed0/phase4.pt"]
    changed = copy / "results/synth/bn/indl_fd_od/seed0/phase4.pt"
    before = {p: p.stat().st_mtime_ns for p in keep + [changed]}
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["distillation"] = {"temperature": 4.0}
    write_config(copy, config)
    snakemake(copy)
    assert all(p.stat().st_mtime_ns == before[p] for p in keep)
    assert changed.stat().st_mtime_ns != before[changed]
    assert planned(copy) == {}


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["model"].update(widht=4), "widht"),
    (lambda c: c["run"].update(norms=["bn", "ln"]), "'ln' is not one of"),
    (lambda c: c["run"].update(methods=["finetune", "ewc"]), "run.methods names 'ewc'"),
    (lambda c: c["methods"]["indl"].update(output_distill="softmax"), "softmax"),
    # repeated entries would train everything and fail only when the tables are collected
    (lambda c: c["run"].update(seeds=[0, 0]), "non-unique"),
    (lambda c: c["run"].update(methods=["finetune", "finetune"]), "non-unique"),
    (lambda c: c["run"].update(norms=["bn", "bn"]), "non-unique"),
])
def test_bad_config_stops_with_a_clear_message(tmp_path, mutate, message):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    mutate(config)
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def _run_log(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[tuple[str, str]]]:
    """A running Snakemake's log so far: jobid -> (rule, outputs) of every job it started, and
    its events in order, ("start" or "finish", jobid). Snakemake logs "Finished jobid" only
    once it has recorded the job as complete in .snakemake/."""
    jobs: dict[str, tuple[str, list[str]]] = {}
    events: list[tuple[str, str]] = []
    rule, outputs = None, []
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule, outputs = m.group(1), []
            continue
        m = re.match(r"^\s+output: (.*)$", line)
        if m and rule:
            outputs = [p.strip() for p in m.group(1).split(", ")]
            continue
        m = re.match(r"^\s+jobid: (\d+)$", line)
        if m and rule:
            jobs[m.group(1)] = (rule, outputs)
            events.append(("start", m.group(1)))
            rule = None
            continue
        m = re.match(r"^Finished jobid: (\d+)", line)
        if m:
            events.append(("finish", m.group(1)))
    return jobs, events


@pytest.mark.workflow
def test_rerun_incomplete_after_snakemake_crash(tmp_path):
    """Kill Snakemake itself (SIGKILL) while a job runs, once train_base has been recorded as
    finished; --rerun-incomplete then plans only the jobs that were running or not started,
    never a finished one. The kill waits for events in Snakemake's log, never for a time."""
    import signal
    import time

    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["run"]["methods"] = ["finetune"]
    config["cka"] = {"activate": False}
    write_config(tmp_path, config)
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"]
    log_path = tmp_path / "snakemake.log"  # a file, not a pipe: nothing can block Snakemake's output
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def crash_point(text: str) -> bool:
        """Whether train_base is logged as finished and a job started after that still runs."""
        jobs, events = _run_log(text)
        base = [j for kind, j in events if kind == "start" and jobs[j][0] == "train_base"]
        if not base or ("finish", base[0]) not in events:
            return False
        after = events[events.index(("finish", base[0])) + 1:]
        return any(kind == "start" and ("finish", j) not in events for kind, j in after)

    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    start = time.monotonic()
    try:
        # 900 s only bounds a hang (the crash point comes after about 30 s on 1 core)
        while not crash_point(log_path.read_text()):
            assert proc.poll() is None, f"Snakemake ended before the crash point:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() - start < 900, f"hang? log so far:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its running job, as a crash would
        except ProcessLookupError:  # it had ended already (and the loop says so)
            pass
        proc.wait()
    print(f"crashed Snakemake after {time.monotonic() - start:.1f} s")
    jobs_log, events = _run_log(log_path.read_text())
    done = {j for kind, j in events if kind == "finish"}
    recorded = {p for j in done for p in jobs_log[j][1]}  # logged finished, so recorded complete
    running = {p for j, (_, outputs) in jobs_log.items() if j not in done for p in outputs}
    assert "results/synth/bn/base/seed0/phase0.pt" in recorded
    finished = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "results").rglob("*")
                if p.is_file() and ".tmp-" not in p.name}
    jobs = planned(tmp_path, "--rerun-incomplete")
    assert jobs, "something was left to do"
    # no job logged as finished is redone; of the outputs on disk, only those of the job that
    # was running at the crash (written, its completion not yet recorded) may be
    assert not set(jobs) & recorded, set(jobs) & recorded
    assert set(jobs) & finished <= running, (set(jobs) & finished, running)
    assert "results/synth/bn/base/seed0/phase0.pt" not in jobs
    snakemake(tmp_path, "--unlock")  # the crashed run's lock, as the README says
    snakemake(tmp_path, "--rerun-incomplete")
    assert planned(tmp_path) == {}


@pytest.mark.workflow
def test_failed_collection_keeps_the_finished_table(copy):
    """A collect_metrics job that fails (here: a metrics file broken after the run) must leave the
    last good metrics.tsv and summary.tsv in place, not delete them before its replacement exists."""
    table = copy / "results/synth/bn/metrics.tsv"
    summary = copy / "results/synth/bn/summary.tsv"
    before = table.read_bytes(), summary.read_bytes()
    (copy / "results/synth/bn/joint/seed0/metrics.json").write_text("{ not json")
    proc = snakemake(copy, "results/synth/bn/metrics.tsv", check=False)
    assert proc.returncode != 0
    assert "not valid JSON" in (copy / "logs/synth/bn/collect_metrics.log").read_text()
    assert (table.read_bytes(), summary.read_bytes()) == before

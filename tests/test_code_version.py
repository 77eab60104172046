"""Which library version made a result: the import closure of a job's modules (checked on a
hand-built package), the hash that changes with exactly those modules, the version table and
the report's warning, and the README's list of the modules each kind of job runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from cilaudio.code_version import JOB_ENTRY_MODULES, code_version, job_modules, module_closure, source_hash
from cilaudio.tables import VERSION_COLUMNS, version_warnings

REPO = Path(__file__).resolve().parents[1]


def _package(root: Path) -> Path:
    """pkg: a imports b inside a function, b imports c (``from . import c``) and numpy, c imports
    pkg.d absolutely; e imports a; f stands alone. Hand count: closure(a) = {a, b, c, d}."""
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def run():\n    from .b import thing\n    return thing\n")
    (pkg / "b.py").write_text("import numpy\nfrom . import c\nthing = 1\n")
    (pkg / "c.py").write_text("from pkg.d import x\n")
    (pkg / "d.py").write_text("x = 2\n")
    (pkg / "e.py").write_text("from .a import run\n")
    (pkg / "f.py").write_text("import os\n")
    return pkg


def test_closure_follows_relative_absolute_and_function_level_imports(tmp_path):
    pkg = _package(tmp_path)
    assert module_closure(["a"], package_dir=pkg, package="pkg") == ["a", "b", "c", "d"]
    assert module_closure(["e"], package_dir=pkg, package="pkg") == ["a", "b", "c", "d", "e"]
    assert module_closure(["f"], package_dir=pkg, package="pkg") == ["f"]


def test_closure_takes_a_subpackage_whole_and_resolves_its_relative_imports(tmp_path):
    """g imports the subpackage sub (``from . import sub``); sub's __init__ discovers its modules
    (so each counts), sub/m imports ..d and .n; sub/n imports nothing. Hand count:
    closure(g) = {d, g, sub, sub.m, sub.n}; an edit of sub/n.py changes g's hash."""
    pkg = _package(tmp_path)
    (pkg / "g.py").write_text("from . import sub\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("import pkgutil\n")
    (pkg / "sub" / "m.py").write_text("from ..d import x\nfrom .n import y\n")
    (pkg / "sub" / "n.py").write_text("y = 1\n")
    assert module_closure(["g"], package_dir=pkg, package="pkg") == ["d", "g", "sub", "sub.m", "sub.n"]
    before = source_hash(["g"], package_dir=pkg, package="pkg")
    (pkg / "sub" / "n.py").write_text("y = 2\n")
    assert source_hash(["g"], package_dir=pkg, package="pkg") != before
    assert "methods.mas" in job_modules("training")


def test_hash_changes_with_the_closure_only(tmp_path):
    pkg = _package(tmp_path)
    before = source_hash(["a"], package_dir=pkg, package="pkg")
    assert source_hash(["a"], package_dir=pkg, package="pkg") == before
    (pkg / "f.py").write_text("import os  # edited\n")
    assert source_hash(["a"], package_dir=pkg, package="pkg") == before  # not run by a
    (pkg / "d.py").write_text("x = 3\n")
    assert source_hash(["a"], package_dir=pkg, package="pkg") != before


def test_training_does_not_run_the_report_and_the_report_not_the_training():
    training, report = set(job_modules("training")), set(job_modules("report"))
    assert {"train", "losses", "model", "excerpts", "exemplar_memory", "exemplar_selection"} <= training
    assert not training & {"reporting", "reporting.norm_report", "reporting.plots", "reporting.comparison_page",
                           "tables", "evaluate", "metrics"}
    assert {"reporting.norm_report", "reporting.plots", "reporting.comparison_page", "tables"} <= report
    assert not report & {"train", "losses", "model"}


def test_code_version_hashes_the_whole_library():
    version = code_version()
    assert version["library"] == source_hash() and re.fullmatch(r"[0-9a-f]{12}", version["library"])


def test_readme_lists_the_modules_each_job_runs():
    """The README's table of job kinds and modules is the closure the workflow hashes."""
    text = (REPO / "README.md").read_text().split("**Library edits.**", 1)[1]
    for kind in JOB_ENTRY_MODULES:
        row = re.search(rf"^\| {kind} \| [^|]+ \| (.+?) \|$", text, flags=re.M)
        assert row, f"README lacks the row of {kind!r}"
        assert row.group(1).replace("`", "").split(", ") == job_modules(kind), kind


def _versions(libraries: dict[tuple[str, int], str]) -> pd.DataFrame:
    rows = [("synth", "bn", m, s, k, step, lib, "abc123" if lib != "not recorded" else "", "", "from scratch")
            for (m, s), lib in libraries.items() for k in (1, 2) for step in ("training", "evaluation")]
    return pd.DataFrame.from_records(rows, columns=VERSION_COLUMNS)


def test_one_version_no_warning_two_versions_one_warning_naming_both():
    assert version_warnings(_versions({("finetune", 0): "aaa", ("joint", 0): "aaa"})) == []
    (warning,) = version_warnings(_versions({("finetune", 0): "aaa", ("joint", 0): "bbb", ("joint", 1): "bbb"}))
    assert "2 versions" in warning and "aaa" in warning and "bbb" in warning
    assert "joint seed 1" in warning and "rerun_on_code_change" in warning
    (warning,) = version_warnings(_versions({("finetune", 0): "aaa", ("joint", 0): "not recorded"}))
    assert "not recorded" in warning


def test_jobs_that_open_a_dataset_run_every_registered_reader():
    """The readers are imported by name from the format registry: the lists and features jobs
    must still count them among their modules, or an edit of a reader would rerun nothing."""
    from cilaudio.datasets import FORMATS

    readers = {module for module, _ in FORMATS.values()}
    assert readers <= set(job_modules("lists")) and readers <= set(job_modules("features"))


# --- what made the existing results: the start-up note on library edits ----------------------

def test_an_edit_is_named_with_the_rules_whose_jobs_ran_the_module(tmp_path):
    """A record of the modules each rule's last job ran; an edit of one of them is named with
    those rules, an edit of a module no job ran is not, and nothing recorded names nothing."""
    from cilaudio.code_version import changed_since_recorded, module_hashes, record_job_code

    pkg = _package(tmp_path)
    records = tmp_path / "records"
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {}
    hashes = module_hashes(package_dir=pkg)
    record_job_code("train", {"a": hashes["a"], "b": hashes["b"]}, record_dir=records)
    record_job_code("plots", {"b": hashes["b"], "f": hashes["f"]}, record_dir=records)
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {}

    (pkg / "e.py").write_text((pkg / "e.py").read_text() + "# an edit\n")  # run by no recorded job
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {}
    (pkg / "b.py").write_text((pkg / "b.py").read_text() + "# an edit\n")
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {"b": ["plots", "train"]}
    (pkg / "f.py").unlink()  # a module gone counts as changed
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {"b": ["plots", "train"], "f": ["plots"]}
    # a rule's new record replaces its old one: once the training ran the edit, plots is left
    record_job_code("train", {"a": hashes["a"], "b": module_hashes(["b"], package_dir=pkg)["b"]}, record_dir=records)
    assert changed_since_recorded(record_dir=records, package_dir=pkg) == {"b": ["plots"], "f": ["plots"]}


def test_the_note_names_modules_rules_and_the_setting_both_ways():
    from cilaudio.code_version import library_change_note

    assert library_change_note({}, rerun_on_code_change=False) is None
    changed = {"losses": ["evaluate", "train_incremental"], "model": ["train_incremental"]}
    off = library_change_note(changed, rerun_on_code_change=False)
    on = library_change_note(changed, rerun_on_code_change=True)
    for note in (off, on):
        assert "\n" not in note
        assert "cilaudio.losses, cilaudio.model" in note and "evaluate, train_incremental" in note
        assert "provenance.rerun_on_code_change" in note
    assert "is off" in off and "--forcerun" in off and "is on" in on


def test_code_params_are_one_hash_per_module_the_job_runs():
    """Snakemake names the params values that changed: one value per module lets its rerun
    reason name the edited module."""
    from cilaudio.code_version import job_code_params, module_hashes

    params = job_code_params("training")
    names = [p.split(" sha256:")[0] for p in params]
    assert names == [f"cilaudio.{m}" for m in job_modules("training")]
    assert "cilaudio.losses" in names and "cilaudio.reporting.plots" not in names
    digest = hashlib.sha256((Path(__file__).parents[1] / "src/cilaudio/losses.py").read_bytes()).hexdigest()[:12]
    assert f"cilaudio.losses sha256:{digest}" in params
    assert module_hashes(["losses"])["losses"] == digest


def test_a_finished_job_records_the_modules_it_imported_and_a_failed_one_nothing(tmp_path):
    """In a fresh interpreter (as a job runs), so that what the test session imported does not
    count: a finished job records the library modules its step imported, not others; a failed
    job records nothing."""
    import json
    import subprocess
    import sys

    from cilaudio.code_version import RECORD_DIR

    code = (
        "import sys\n"
        "from types import SimpleNamespace\n"
        "from cilaudio import jobs\n"
        "rule, fail = sys.argv[1], sys.argv[2] == 'fail'\n"
        "smk = SimpleNamespace(log=['logs/x.log'], params={}, input=[], rule=rule,\n"
        "                      resources=SimpleNamespace(attempt=1))\n"
        "try:\n"
        "    with jobs.job(smk):\n"
        "        import cilaudio.metrics\n"
        "        if fail:\n"
        "            raise RuntimeError('the step fails')\n"
        "except RuntimeError:\n"
        "    pass\n")
    for rule, how in (("evaluate", "ok"), ("train_base", "fail")):
        subprocess.run([sys.executable, "-c", code, rule, how], cwd=tmp_path, check=True, timeout=120)
    record = json.loads((tmp_path / RECORD_DIR / "evaluate.json").read_text())
    assert {"metrics", "jobs", "code_version"} <= set(record)
    assert not any(name.startswith("reporting") or name in ("train", "model") for name in record)  # not imported
    assert record["metrics"] == hashlib.sha256((REPO / "src/cilaudio/metrics.py").read_bytes()).hexdigest()[:12]
    assert not (tmp_path / RECORD_DIR / "train_base.json").exists()

"""Which library version made a result: the import closure of a job's modules (checked on a
hand-built package), the hash that changes with exactly those modules, the version table and
the report's warning, and the README's list of the modules each kind of job runs."""

from __future__ import annotations

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
    assert not training & {"report", "plots", "tables", "comparison", "evaluate", "metrics"}
    assert {"report", "plots", "comparison", "tables"} <= report
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
    rows = [("synth", "bn", m, s, k, step, lib, "abc123" if lib != "not recorded" else "", "")
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

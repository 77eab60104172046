"""Which version of the library made a result.

Snakemake's code trigger sees only the thin scripts under ``workflow/scripts``, not this
library: after an edit of ``losses.py`` it would plan nothing, and a report would mix results
of the old and the new code without a word. So every checkpoint and metrics record carries
:func:`code_version` (a hash of the library's source, and the git commit when there is one,
dirty or not), the report warns when its results come from more than one version, and with
``provenance.rerun_on_code_change`` a job's params hold the hash of exactly the modules it runs
(:func:`module_closure`), so that Snakemake reruns the jobs whose code changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

PACKAGE = "cilaudio"
PACKAGE_DIR = Path(__file__).resolve().parent

#: The library modules that each kind of job runs (its entry points); the job depends on their
#: import closure (:func:`module_closure`) and on the glue every job runs (:data:`GLUE`). Rules map
#: to these kinds in workflow/rules/common.smk; the README lists the closures.
JOB_ENTRY_MODULES: dict[str, tuple[str, ...]] = {
    "lists": ("phase_lists", "datasets", "paper_lists", "synth"),
    "features": ("features", "datasets"),
    "training": ("train",),
    "evaluation": ("evaluate", "metrics"),
    "cka": ("evaluate", "cka"),
    "tables": ("tables", "training_history"),
    "report": ("reporting",),
}
#: Modules every job runs whose own imports are the entry points above (``workflow_steps``
#: imports every step lazily; ``jobs`` records what a job ran with this module and ``atomic``):
#: hashed as files, their imports not followed.
GLUE = ("workflow_steps", "jobs", "code_version", "atomic")


def _module_path(name: str, package_dir: Path) -> Path | None:
    """The file of a module name relative to the package (``"train"``, ``"methods.mas"``, or a
    subpackage ``"methods"``: its ``__init__.py``), or None."""
    base = package_dir / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, package_dir: Path, package: str) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in it (top level or inside a
    function), as module names relative to the package (``"train"``, ``"methods.registry"``).
    Relative imports are resolved from the module's own (sub)package."""
    path = _module_path(name, package_dir)
    is_package = path.name == "__init__.py"
    parent = name.split(".") if is_package else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y / from ..x import y
                up = parent[:len(parent) - (node.level - 1)] if node.level > 1 else parent
                base = ".".join(up + ([node.module] if node.module else []))
            elif node.module and (node.module == package or node.module.startswith(package + ".")):
                base = node.module[len(package) + 1:]
            else:
                continue
            names = [base] if base else []
            names += [f"{base}.{a.name}" if base else a.name for a in node.names]
            found.update(n for n in names if n)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(package + "."):
                    found.add(a.name[len(package) + 1:])
    return {n for n in found if _module_path(n, package_dir) is not None}


def module_closure(entries: Iterable[str], *, package_dir: Path = PACKAGE_DIR,
                   package: str = PACKAGE) -> list[str]:
    """Every module of the package that ``entries`` (module names relative to the package)
    import, directly or through each other, the entries included; sorted. A subpackage brings
    all its modules (:mod:`cilaudio.methods` imports each of its modules by discovery)."""
    todo = [e for e in entries]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_path(name, package_dir)
        if path is None:
            raise FileNotFoundError(f"{package_dir / name.replace('.', '/')}.py: no module {name!r} in {package_dir}")
        seen.add(name)
        todo.extend(_imports(name, package_dir, package) - seen)
        if path.name == "__init__.py":
            todo.extend(f"{name}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py")
        if name == "datasets" and package_dir == PACKAGE_DIR:
            # the readers are imported by name from the registry, not by an import statement
            from .datasets import FORMATS

            todo.extend(module for module, _ in FORMATS.values() if module not in seen)
    return sorted(seen)


def source_hash(entries: Iterable[str] | None = None, *, also: Iterable[str] = (),
                package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> str:
    """A short hash of the source of ``entries``' import closure and of the modules ``also``
    (their imports not followed); None: every module of the package. The same text gives the
    same hash on every machine; an edit changes it."""
    if entries is None:
        names = sorted(p.relative_to(package_dir).with_suffix("").as_posix().replace("/", ".")
                       for p in package_dir.rglob("*.py"))
    else:
        names = sorted(set(module_closure(entries, package_dir=package_dir, package=package)) | set(also))
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        h.update(_module_path(name, package_dir).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def job_modules(kind: str) -> list[str]:
    """The modules a kind of job runs (:data:`JOB_ENTRY_MODULES`: its closure and the glue)."""
    return sorted(set(module_closure(JOB_ENTRY_MODULES[kind])) | set(GLUE))


def module_hashes(names: Iterable[str] | None = None, *, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """A short hash of each module's source (module names relative to the package; None: every
    module of the package)."""
    if names is None:
        names = (p.relative_to(package_dir).with_suffix("").as_posix().replace("/", ".")
                 for p in package_dir.rglob("*.py"))
    return {name: hashlib.sha256(_module_path(name, package_dir).read_bytes()).hexdigest()[:12]
            for name in sorted(names)}


def job_code_params(kind: str) -> list[str]:
    """What a kind of job runs as one ``"cilaudio.<module> sha256:<hash>"`` per module of
    :func:`job_modules` (a rule's ``code`` param with ``provenance.rerun_on_code_change``):
    Snakemake explains a rerun by the params values only in the old set and only in the new
    one, so its reason names the edited modules."""
    # not "<key> = <value>": that form is a setting's (cilaudio.jobs.settings_params)
    return [f"{PACKAGE}.{name} sha256:{digest}" for name, digest in module_hashes(job_modules(kind)).items()]


#: Where each rule's last finished job recorded the library modules it ran (relative to the
#: workflow's working folder), one ``<rule>.json`` per rule: :func:`record_job_code`.
RECORD_DIR = Path(".snakemake") / "cilaudio" / "code"


def loaded_modules(*, package: str = PACKAGE, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The package's modules this process has imported (names relative to the package)."""
    names = []
    for full in list(sys.modules):
        if full == package or not full.startswith(package + "."):
            continue
        name = full[len(package) + 1:]
        if _module_path(name, package_dir) is not None:
            names.append(name)
    return sorted(names)


def record_job_code(rule: str, hashes: Mapping[str, str], *, record_dir: Path = RECORD_DIR) -> None:
    """Record the modules (name -> hash) that a finished job of ``rule`` ran, replacing the
    rule's previous record (written whole, atomically)."""
    from .atomic import write_text

    record_dir.mkdir(parents=True, exist_ok=True)
    write_text(record_dir / f"{rule}.json", json.dumps(dict(sorted(hashes.items())), indent=1) + "\n")


def changed_since_recorded(*, record_dir: Path = RECORD_DIR, package_dir: Path = PACKAGE_DIR) -> dict[str, list[str]]:
    """The modules whose source differs from the version that the last finished job of some rule
    ran (or that are gone), each with those rules; empty when nothing was recorded. A record
    that cannot be read is skipped."""
    current = module_hashes(package_dir=package_dir)
    changed: dict[str, list[str]] = {}
    for path in sorted(record_dir.glob("*.json")) if record_dir.is_dir() else []:
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(recorded, dict):
            continue
        for name, digest in recorded.items():
            if current.get(name) != digest:
                changed.setdefault(name, []).append(path.stem)
    return dict(sorted(changed.items()))


def library_change_note(changed: Mapping[str, list[str]], *, rerun_on_code_change: bool) -> str | None:
    """The one start-up line about :func:`changed_since_recorded` (None when nothing changed):
    the edited modules, and what ``provenance.rerun_on_code_change`` makes of them."""
    if not changed:
        return None
    modules = ", ".join(f"{PACKAGE}.{name}" for name in changed)
    rules = sorted({rule for rules in changed.values() for rule in rules})
    if rerun_on_code_change:
        what = ("provenance.rerun_on_code_change is on: the jobs that run them are planned again, their "
                "reason naming the modules")
    else:
        what = ("provenance.rerun_on_code_change is off, so nothing reruns for it: set it to true to rerun "
                "the jobs that run them, or use --forcerun")
    return (f"note: the library differs from the version that made the existing results in {modules} "
            f"(run by {', '.join(rules)}); {what}")


def _git(args: list[str]) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=30,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str | bool | None]:
    """``{"library": source hash of the whole package, "commit": git commit of the checkout
    holding the package (None outside git), "dirty": uncommitted changes in it (None outside
    git)}``. Computed once per process."""
    commit = _git(["rev-parse", "HEAD"])
    dirty = None
    if commit:
        status = _git(["status", "--porcelain", "--", "."])
        dirty = None if status is None else bool(status)
    return {"library": source_hash(), "commit": commit, "dirty": dirty}


def describe(version: dict | None) -> str:
    """``<library hash> (commit <short>[, dirty])`` for messages and the report."""
    if not version:
        return "not recorded"
    text = str(version.get("library"))
    if version.get("commit"):
        text += f" (commit {str(version['commit'])[:10]}{', with uncommitted changes' if version.get('dirty') else ''})"
    return text

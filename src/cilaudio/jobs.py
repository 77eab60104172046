"""How a workflow job runs: the log file its rule declares, and whether a failure is worth a retry."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from .code_version import loaded_modules, module_hashes, record_job_code


def setup_job_logging(log_path: str | Path) -> None:
    """Send the library's log lines and stderr (warnings, tracebacks) to ``log_path``."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1, encoding="utf-8")
    sys.stderr = stream
    # log lines marked ``extra={"console": True}`` also reach the console (the job's own stderr,
    # which Snakemake shows), e.g. a clip that dominates a phase's excerpts
    console = logging.StreamHandler(sys.__stderr__)
    console.addFilter(lambda record: getattr(record, "console", False))
    console.setFormatter(logging.Formatter("cilaudio: %(levelname)s: %(message)s"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(stream), console],
        force=True,
    )


# Errors that another attempt cannot fix: a missing or corrupt input, a config that does not
# add up. Everything else (out of memory, a time limit, a lost node) is worth a retry.
BAD_INPUT = (FileNotFoundError, ValueError, KeyError)


def _job_fingerprint(smk) -> str:
    """The job's identity for retries: its params and its inputs' names, sizes and times."""
    h = hashlib.sha256(repr(sorted((k, repr(v)) for k, v in smk.params.items())).encode())
    for path in smk.input:
        p = Path(path)
        st = p.stat() if p.exists() else None
        h.update(f"{p}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()


def _attempt(smk) -> int:
    """The job's attempt (1, then 2 on Snakemake's retry), from the ``attempt`` resource that
    the SLURM profile sets for every rule; 1 where it is not set."""
    try:
        return int(getattr(smk.resources, "attempt", 1))
    except (TypeError, ValueError):
        return 1


@contextlib.contextmanager
def job(smk) -> Iterator[None]:
    """Run a Snakemake job's step: log to the rule's log file; when the step stops on bad
    input, leave a marker beside the log, so that Snakemake's retry of the same job in the
    same run (attempt 2: the SLURM profile retries failed jobs once, with more memory and time)
    fails at once with the same message instead of recomputing. A new run (attempt 1) always
    runs the job again: the user may have fixed the file in place, which no input of the job
    shows; changing an input or a setting also makes it a new job. A job that finishes records
    the library modules it ran (:func:`cilaudio.code_version.record_job_code`), for the start-up's
    note on library edits."""
    setup_job_logging(smk.log[0])
    library = module_hashes()  # before the step runs: the source it imports
    marker = Path(str(smk.log[0]) + ".bad-input")
    fingerprint = _job_fingerprint(smk)
    if marker.exists():
        previous = marker.read_text(encoding="utf-8").split("\n", 1)
        if _attempt(smk) > 1 and previous[0] == fingerprint:
            logging.getLogger("cilaudio").error(
                "not retried: this job stopped on bad input in its previous attempt, with the same "
                "inputs and settings, which another attempt cannot fix:\n"
                + (previous[1] if len(previous) > 1 else ""))
            sys.exit(1)
        marker.unlink()
    try:
        yield
    except BAD_INPUT as exc:
        marker.write_text(f"{fingerprint}\n{type(exc).__name__}: {exc}", encoding="utf-8")
        logging.getLogger("cilaudio").error(f"{type(exc).__name__}: {exc}")
        raise
    rule = getattr(smk, "rule", None)
    if rule:  # which library modules made the rule's results (the start-up's note on edits)
        record_job_code(rule, {name: library[name] for name in loaded_modules() if name in library})


# -- settings as params ---------------------------------------------------------------------------
# A rule whose job shows the whole config (the report) gets it as one param per setting: Snakemake
# records a job's params as a set of values and explains a rerun by the values only in the old set
# and only in the new one, so a changed setting is named instead of two copies of the config.

def settings_params(config) -> list[str]:
    """Every leaf setting of ``config`` as ``"<dotted key> = <JSON value>"`` (a list, or an empty
    mapping, is one leaf), in key order."""
    import json

    out: list[str] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key in sorted(node, key=str):
                walk(node[key], f"{prefix}.{key}" if prefix else str(key))
        else:
            out.append(f"{prefix} = {json.dumps(node, sort_keys=True)}")

    walk(dict(config), "")
    return out


def settings_from_params(params) -> dict:
    """The config back from a job's params: every ``"<dotted key> = <JSON value>"`` among them
    (other params, such as the code hash, are left out)."""
    import json

    config: dict = {}
    for param in params:
        if not (isinstance(param, str) and " = " in param):
            continue
        key, value = param.split(" = ", 1)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(value)
    return config

"""What made a result, as the report pages state it: the software provenance (code version,
Python, platform, package versions), the run's setup, warnings about its results and the exact
configuration."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from cilaudio.reporting.html import escape, html_table

PACKAGES = ("torch", "torchaudio", "numpy", "pandas", "scikit-learn", "h5py", "soundfile", "matplotlib", "snakemake")


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def provenance(repo_dir: Path | None = None) -> dict:
    """Code version (git commit, ``-dirty`` with uncommitted changes, else ``"unknown"``),
    Python version, platform and versions of the main packages (``"not installed"``)."""
    cwd = Path(repo_dir) if repo_dir is not None else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit and commit.strip():
        version = commit.strip()
        status = _git(["status", "--porcelain"], cwd)
        if status is None or status.strip():
            version += "-dirty"
    else:
        version = "unknown"
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "code_version": version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


def provenance_html(prov: Mapping) -> str:
    """The provenance as a table of items and values (a mapping's entries as ``key: entry``)."""
    rows = []
    for k, v in prov.items():
        if isinstance(v, Mapping):
            rows.extend([f"{k}: {kk}", vv] for kk, vv in v.items())
        else:
            rows.append([k, v])
    return html_table(["item", "value"], rows)


def warnings_html(warnings: Sequence[str]) -> list[str]:
    """One boxed paragraph per warning (shown first on a page)."""
    return [f'<p class="warning" style="border:2px solid #b00;padding:0.5em;background:#fee">'
            f"<strong>Warning:</strong> {escape(warning)}</p>" for warning in warnings]


def setup_html(setup: Mapping[str, str]) -> list[str]:
    """The Setup section: a definition list of ``setup``'s items."""
    if not setup:
        return ["<h2>Setup</h2>", '<p class="note">no setup given</p>']
    return ["<h2>Setup</h2>",
            "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in setup.items()) + "</dl>"]


def plain(x: Any) -> Any:
    """Config -> plain YAML-serialisable data."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def config_html(config: Mapping) -> list[str]:
    """The Configuration section: ``config`` as YAML, in its own order."""
    cfg = yaml.safe_dump(plain(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return ["<h2>Configuration</h2>", f"<pre>{escape(cfg)}</pre>"]

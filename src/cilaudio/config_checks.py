"""Start-up checks of a dataset's class list, run by the workflow before planning any job.

``datasets.<name>.classes`` (a list, or a file with one name per line) is checked wherever the
vocabulary is known without running a job: always for the built-in benchmark (its names come
from :func:`cilaudio.synth.vocabulary`), and for a real dataset when its vocabulary file is
there (FSD50K ``FSD50K.ground_truth/vocabulary.csv``, AudioSet ``files.label_names``). Repeated
names and a count that differs from ``sum(phases)`` need no vocabulary and are always checked.
Each message names the config key, the file and line (or the list entry) and the fix.

:func:`check_run_settings` checks run-wide settings that would otherwise fail late (after lists
and features) or do nothing: ``training.tensorboard`` without the package, ``cka.methods``
naming a method that is not run.

The functions return messages instead of raising, so the caller reports every mistake at once.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["check_class_list", "check_run_settings", "read_class_names", "dataset_vocabulary"]

Named = list[tuple[str, str]]  # (class name, where it is given)


def read_class_names(classes: Sequence[str] | str | None, *, key: str) -> Named | None:
    """Each configured class name with where it is given (``<key>, entry <i>`` of a list, or
    ``<key> (<file>, line <n>)``). None when ``classes`` is null (the vocabulary's order) or
    names a file that is not there: the list job reports a missing file, in its own working
    directory (a dry run planned from elsewhere may not see a relative path)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        path = Path(classes)
        if not path.is_file():
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
        return [(line.strip(), f"{key} ({path}, line {n})") for n, line in enumerate(lines, start=1)
                if line.strip()]
    return [(name, f"{key}, entry {i}") for i, name in enumerate(classes, start=1)]


def _synth_vocabulary(ds: Mapping[str, Any], *, name: str) -> tuple[list[str], str]:
    from .synth import vocabulary

    seed = ds["generate"].get("seed", 0)
    n = sum(ds["phases"])
    try:
        names = [c.name for c in vocabulary(n, seed=seed)]
    except ValueError as err:  # more classes than the generator has
        raise ValueError(f"datasets.{name}.phases {list(ds['phases'])} add up to {n} classes, but {err}; "
                         f"make datasets.{name}.phases add up to fewer classes") from None
    return names, f"the built-in benchmark's vocabulary ({n} classes, generator seed {seed})"


def dataset_vocabulary(ds: Mapping[str, Any], *, name: str) -> tuple[list[str], str] | None:
    """The vocabulary's names and where they come from (for messages), or None when unknown
    before a job runs (a download whose vocabulary file is not there). ValueError naming the
    key, or the file and line, when the generator cannot make the classes or the file is
    malformed."""
    if ds["generate"].get("activate"):
        return _synth_vocabulary(ds, name=name)
    if ds.get("root") is None:
        return None
    from .datasets import open_dataset

    reader = open_dataset(ds["format"], ds["root"], ds.get("files"))
    path = reader.vocabulary_file
    if not path.is_file():
        return None
    try:
        labels = reader.load_vocabulary()["label"].tolist()
    except ValueError as err:
        raise ValueError(f"datasets.{name}: the vocabulary cannot be read: {err}") from None
    return labels, str(path)


def _repeated(named: Named) -> list[str]:
    spots_of: dict[str, list[str]] = {}
    for class_name, where in named:
        spots_of.setdefault(class_name, []).append(where)
    return [f"{class_name!r} is given {len(spots)} times: {'; '.join(spots)}; list each class once "
            "(remove the repeats)"
            for class_name, spots in spots_of.items() if len(spots) > 1]


def _unknown(named: Named, vocabulary: Sequence[str], source: str) -> list[str]:
    known = set(vocabulary)
    errors = []
    for class_name, where in named:
        if class_name in known:
            continue
        close = difflib.get_close_matches(class_name, list(vocabulary), n=3, cutoff=0.5)
        hint = f"closest: {', '.join(map(repr, close))}" if close else "no close match"
        errors.append(f"{where}: {class_name!r} is not in {source}; {hint}; fix the name, it must "
                      "match the vocabulary exactly")
    return errors


def _count(n_classes: int, phases: Sequence[int], *, key: str, phases_key: str) -> list[str]:
    if n_classes == sum(phases):
        return []
    return [f"{key} names {n_classes} classes but {phases_key} {list(phases)} add up to {sum(phases)}: "
            f"give {sum(phases)} class names, or change {phases_key}"]


def _whole_vocabulary(vocabulary: Sequence[str], source: str, phases: Sequence[int], *,
                      key: str, phases_key: str) -> list[str]:
    if len(vocabulary) == sum(phases):
        return []
    return [f"{key} is null, so the classes are the whole vocabulary ({len(vocabulary)} names in {source}), "
            f"but {phases_key} {list(phases)} add up to {sum(phases)}: list the classes to learn in {key}, "
            f"or make {phases_key} add up to {len(vocabulary)}"]


def _own_data_labels(ds: Mapping[str, Any], named: Named | None, *, key: str,
                     notes: list[str] | None) -> list[str]:
    """folder_csv: labels of dev.csv/eval.csv that look like a chosen class but differ (errors
    naming file and line), the others listed in one note; a clip in both files."""
    from .folder_csv import check_labels

    try:
        errors, found = check_labels(ds["root"], None if named is None else [n for n, _ in named], key=key)
    except (OSError, ValueError) as err:
        return [str(err)]
    if notes is not None:
        notes.extend(found)
    return errors


def check_class_list(name: str, ds: Mapping[str, Any], notes: list[str] | None = None) -> list[str]:
    """Every mistake in ``datasets.<name>``'s class list (``ds``: that dataset's config, with
    the schema's defaults), as messages; empty when there is none or nothing can be checked.
    For own data (folder_csv) also its labels that are not chosen classes and clips in both
    CSVs; ``notes`` (when given) gets the labels left out on purpose."""
    key, phases_key = f"datasets.{name}.classes", f"datasets.{name}.phases"
    try:
        known = dataset_vocabulary(ds, name=name)
    except ValueError as err:
        return [str(err)]
    own = (ds.get("format") == "folder_csv" and known is not None and ds.get("root") is not None
           and (Path(ds["root"]) / "eval.csv").is_file())
    named = read_class_names(ds.get("classes"), key=key)
    if named is None:
        if known is None or ds["generate"].get("activate"):
            return []
        errors = _whole_vocabulary(*known, ds["phases"], key=key, phases_key=phases_key)
        if errors and own:
            from .folder_csv import near_duplicates

            odd = near_duplicates(ds["root"])
            if odd:
                errors[-1] += ("; names that look like another (each counts as a class of its own): "
                               + "; ".join(odd))
        return errors + (_own_data_labels(ds, None, key=key, notes=notes) if own else [])
    errors = _repeated(named)
    errors += _count(len(named), ds["phases"], key=key, phases_key=phases_key)
    if known is not None:
        errors += _unknown(named, *known)
    if own and not errors:
        errors += _own_data_labels(ds, named, key=key, notes=notes)
    return errors


def module_available(name: str) -> bool:
    """Whether a top-level package can be imported (found without importing it)."""
    return importlib.util.find_spec(name) is not None


def check_run_settings(config: Mapping[str, Any]) -> list[str]:
    """Mistakes in run-wide settings (``config``: the whole config, with the schema's defaults)
    that a job would meet only late, or that would silently cost work: ``training.tensorboard``
    without the ``tensorboard`` package (the first training job would fail, after the lists and
    features), and ``cka.methods`` naming a method that is not in ``run.methods`` (its chains
    would be trained for CKA alone and never evaluated or shown), and ``model.pretrained`` naming a
    file that is not there."""
    errors = []
    if config.get("training", {}).get("tensorboard") and not module_available("tensorboard"):
        errors.append("training.tensorboard is true but the `tensorboard` package is not installed: "
                      "`pip install tensorboard` (or `.venv/bin/pip install -e '.[tensorboard]'`), "
                      "or set training.tensorboard: false")
    pretrained = (config.get("model") or {}).get("pretrained")
    if pretrained and not Path(pretrained).is_file():
        errors.append(f"model.pretrained: {pretrained} does not exist: download PANNs' Cnn14_mAP=0.431.pth from "
                      "https://zenodo.org/record/3987831 to that path (README, 'Starting from PANNs'), or set "
                      "model.pretrained: null to train from scratch")
    run_methods = list(config.get("run", {}).get("methods") or [])
    for name in (config.get("cka") or {}).get("methods") or []:
        if name not in run_methods:
            errors.append(f"cka.methods names {name!r}, which is not in run.methods {run_methods}: CKA compares "
                          "the methods a run trains; add it to run.methods, or remove it from cka.methods")
    return errors


def pretrained_front_end_notes(config: Mapping[str, Any]) -> list[str]:
    """A note for each dataset of the run whose features are not PANNs' own front end while
    ``model.pretrained`` starts phase 0 from PANNs' weights (allowed, but the weights never saw
    such inputs)."""
    if not (config.get("model") or {}).get("pretrained"):
        return []
    datasets = config.get("datasets") or {}
    return [f"model.pretrained is set but datasets.{name}.features.front_end is not panns: PANNs' weights "
            "were trained on its own front end (README, 'Starting from PANNs')"
            for name in config.get("run", {}).get("datasets") or []
            if name in datasets and (datasets[name].get("features") or {}).get("front_end") != "panns"]

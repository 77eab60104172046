"""A dataset's phase lists: classes.tsv, the training and test list of every phase and the clips
of each split, made from the dataset's metadata or imported from the papers' list files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import lists as L
from .phases import ClassSplit, match_classes

log = logging.getLogger(__name__)


def classes_key(outputs: Mapping[str, Any]) -> str:
    """The config key of a list job's class list, ``datasets.<dataset>.classes``: the job writes
    ``results/<dataset>/lists/classes.tsv``."""
    return f"datasets.{Path(outputs['classes']).parent.parent.name}.classes"


def read_class_list(classes: Sequence[str] | str | None, vocabulary: Sequence[str], *,
                    key: str) -> tuple[list[str], str]:
    """The configured classes in learning order, and where they came from (for messages);
    ``key`` is the config key, e.g. ``datasets.synth.classes``."""
    if classes is None:
        return list(vocabulary), "the vocabulary"
    if isinstance(classes, str):
        path = Path(classes)
        if not path.exists():
            raise FileNotFoundError(f"class list file {path} ({key}) does not exist; fix the path in {key} "
                                    "(a relative path is read from the working directory)")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return names, str(path)
    return list(classes), f"{key} in the config"


def make_lists(*, outputs: Mapping[str, Any], root: str, classes, phases: Sequence[int],
               assignment: str, train_splits: Sequence[str], format: str = "fsd50k",
               files: Mapping[str, Any] | None = None, papers_lists: str | None = None) -> None:
    """Phase lists of a dataset: classes.tsv, train/test lists, clips per split. Made from the
    dataset's metadata, or imported from the papers' list files in ``papers_lists``."""
    import pandas as pd

    from .datasets import open_dataset

    ds = open_dataset(format, root, files)
    if papers_lists:
        import_lists(outputs=outputs, ds=ds, classes=classes, phases=phases, folder=papers_lists)
        return
    vocab = ds.load_vocabulary()["label"].tolist()
    names, source = read_class_list(classes, vocab, key=classes_key(outputs))
    class_split = ClassSplit.from_sizes(match_classes(names, vocab, source=source), phases)
    dev = ds.load_split("dev")
    dev = dev[dev["split"].isin(train_splits)]
    test = ds.load_split("eval")
    train_lists = L.training_lists(dev, class_split, assignment=assignment)
    test_lists = L.test_lists(test, class_split)
    L.write_classes(class_split, outputs["classes"])
    for frame, path in zip(train_lists, outputs["train"]):
        L.write_list(frame, path)
    for frame, path in zip(test_lists, outputs["test"]):
        L.write_list(frame, path)
    dev_clips = pd.concat(train_lists)["fname"].drop_duplicates().sort_values()
    eval_clips = test_lists[-1]["fname"].sort_values()  # the last test list holds every test clip
    L.write_list(pd.DataFrame({"fname": dev_clips, "labels": "", "all_labels": ""}), outputs["clips_dev"])
    L.write_list(pd.DataFrame({"fname": eval_clips, "labels": "", "all_labels": ""}), outputs["clips_eval"])
    for k, (tr, te) in enumerate(zip(train_lists, test_lists)):
        log.info(f"phase {k}: {len(class_split.groups[k])} classes, {len(tr)} training clips, {len(te)} test clips")


def import_lists(*, outputs: Mapping[str, Any], ds, classes, phases: Sequence[int], folder: str) -> None:
    """The lists of a published split: the papers' list files in ``folder``, read in the class
    order ``classes`` (the order of their label vectors). The names are checked against the
    dataset's vocabulary when its metadata is there (the audio alone is enough to run)."""
    from .paper_lists import import_paper_lists

    names, source = read_class_list(classes, [], key=classes_key(outputs))
    if all(Path(p).exists() for p in ds.metadata_files()):
        names = match_classes(names, ds.load_vocabulary()["label"].tolist(), source=source)
    else:
        log.info(f"the dataset's metadata is not there: class names taken as given in {source}")
    class_split = ClassSplit.from_sizes(names, phases)
    written = import_paper_lists(folder, Path(outputs["classes"]).parent, class_split)

    def paths(files: Mapping[str, Any]) -> list[str]:
        return sorted(str(p) for v in files.values() for p in (v if isinstance(v, list) else [v]))

    if paths(written) != paths(outputs):  # the importer's file names are the rule's outputs
        raise RuntimeError(f"imported lists were written as {paths(written)}, the rule declares {paths(outputs)}")
    log.info(f"imported {class_split.n_phases} training and {class_split.n_phases} test lists from {folder}")

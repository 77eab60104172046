"""The workflow's steps as plain functions of paths and plain settings.

Each Snakemake script unpacks ``snakemake`` and calls one of these; tests call them directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

# Heavy modules (torch, torchaudio, scikit-learn, matplotlib) are imported inside the steps
# that need them: every Snakemake job is a fresh process, and start-up time adds up over
# hundreds of jobs.
from . import lists as L
from .phases import PhaseSplit, match_classes

log = logging.getLogger(__name__)

# What the report says about the protocol, next to the numbers it explains.
PROTOCOL_NOTES = [
    "Training lists of phase k label their clips with phase k's classes only; test lists after "
    "phase k label them with every class seen so far. Base-class metrics (and so forgetting) "
    "are measured on the phase-0 test clips after every phase, unlike the reference code, "
    "which compares different clip sets.",
    "mAP, lwlrap, ROC AUC and d-prime are computed from the continuous scores (the standard "
    "definitions; d-prime from the mean AUC, as AudioSet papers report it). The "
    "reference code's variants computed on 0/1 predictions are shown separately and named "
    "'thresholded (reference)'; use them only to compare with published numbers.",
    "Feature distillation takes the new model's embedding after the last block's dropout, as the "
    "reference model returns it (fd_embedding). Unless a method sets fd_pass: second, the new model "
    "runs one forward pass per batch that BCE, feature distillation and output distillation all use; "
    "the reference code runs a second pass, with other dropout masks, for the feature distillation "
    "(the method indl_fd_od_ref does that).",
    "In phases 1-4 the BCE has one pos_weight for the old classes' columns and one for the new "
    "classes' (each negatives / positives over that group's known entries; the new classes' equals "
    "the reference's) and is averaged per clip over the entries it is labelled for; a replayed "
    "exemplar is labelled for its own phase's classes only.",
    "KL output distillation averages over every element (batch x old classes), times T^2, as "
    "the reference does; the adaptive weight is lambda_base * (n_seen / n_new) ** exponent.",
]


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
    split = PhaseSplit.from_sizes(match_classes(names, vocab, source=source), phases)
    dev = ds.load_split("dev")
    dev = dev[dev["split"].isin(train_splits)]
    test = ds.load_split("eval")
    train_lists = L.training_lists(dev, split, assignment=assignment)
    test_lists = L.test_lists(test, split)
    L.write_classes(split, outputs["classes"])
    for frame, path in zip(train_lists, outputs["train"]):
        L.write_list(frame, path)
    for frame, path in zip(test_lists, outputs["test"]):
        L.write_list(frame, path)
    dev_clips = pd.concat(train_lists)["fname"].drop_duplicates().sort_values()
    eval_clips = test_lists[-1]["fname"].sort_values()  # the last test list holds every test clip
    L.write_list(pd.DataFrame({"fname": dev_clips, "labels": "", "all_labels": ""}), outputs["clips_dev"])
    L.write_list(pd.DataFrame({"fname": eval_clips, "labels": "", "all_labels": ""}), outputs["clips_eval"])
    for k, (tr, te) in enumerate(zip(train_lists, test_lists)):
        log.info(f"phase {k}: {len(split.groups[k])} classes, {len(tr)} training clips, {len(te)} test clips")


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
    split = PhaseSplit.from_sizes(names, phases)
    written = import_paper_lists(folder, Path(outputs["classes"]).parent, split)

    def paths(files: Mapping[str, Any]) -> list[str]:
        return sorted(str(p) for v in files.values() for p in (v if isinstance(v, list) else [v]))

    if paths(written) != paths(outputs):  # the importer's file names are the rule's outputs
        raise RuntimeError(f"imported lists were written as {paths(written)}, the rule declares {paths(outputs)}")
    log.info(f"imported {split.n_phases} training and {split.n_phases} test lists from {folder}")


def extract_features(*, clips: str, root: str, split: str, out: str, settings: Mapping[str, Any],
                     shard: int = 0, n_shards: int = 1, format: str = "fsd50k",
                     files: Mapping[str, Any] | None = None, on_bad_audio: str = "stop",
                     threads: int = 1) -> None:
    """Log-mel features of one shard of the clips of a split."""
    from .datasets import open_dataset
    from .features import FeatureSettings, extract_to_hdf5, shard_of

    ds = open_dataset(format, root, files)
    names = shard_of(L.read_list(clips)["fname"].tolist(), shard, n_shards)
    paths = [(n, ds.audio_path(split, n)) for n in names]
    n = extract_to_hdf5(paths, out, FeatureSettings(**settings), threads=threads,
                        on_bad_audio=on_bad_audio, source=clips)
    log.info(f"{split} shard {shard + 1}/{n_shards}: {len(names)} clips -> {n} excerpts in {out}")


def join_features(shards: Sequence[str], out: str) -> None:
    from .features import join_shards

    n = join_shards(shards, out)
    log.info(f"joined {len(shards)} shard(s), {n} excerpts -> {out}")


def check_features(h5_path: str, expected: Mapping[str, Any] | None) -> None:
    """A feature file written under another configuration stops the job (a results folder
    copied from elsewhere, or Snakemake metadata lost): say so and how to fix it."""
    if not expected:
        return
    from .features import read_settings

    found = read_settings(h5_path)
    diff = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{h5_path} was extracted with other feature settings than the config ({detail}): the "
            "results folder was written by another configuration. Delete its features folder "
            "(or the whole results/<dataset>) and rerun.")


def train_base(*, classes: str, train_list: str, features: str, out: str, norm: str, seed: int,
               model: Mapping[str, Any], optim: Mapping[str, Any], loader: Mapping[str, Any],
               device: str = "auto", threads: int = 1, feature_settings: Mapping[str, Any] | None = None,
               tensorboard: str | None = None) -> None:
    from . import train as T
    from .features import read_settings

    check_features(features, feature_settings)
    split = L.read_classes(classes)
    n_mels = int(read_settings(features)["n_mels"])
    T.train_base(split=split, train_list=Path(train_list), features=Path(features), out=Path(out),
                 model_settings={"norm": norm, "n_mels": n_mels, **model}, optim=T.OptimSettings(**optim),
                 loader=T.LoaderSettings(**loader), seed=seed, device=device, threads=threads,
                 params={"model": dict(model), "optim": dict(optim)},
                 tensorboard=Path(tensorboard) if tensorboard else None)


def train_incremental(*, classes: str, train_lists: Sequence[str], features: str, previous: str,
                      out: str, phase: int, method_name: str, seed: int, method: Mapping[str, Any],
                      optim: Mapping[str, Any], loader: Mapping[str, Any], device: str = "auto",
                      threads: int = 1, model: Mapping[str, Any] | None = None,
                      tensorboard: str | None = None) -> None:
    from . import train as T

    split = L.read_classes(classes)
    T.train_incremental(expected_model=model, phase=phase, split=split, train_lists=[Path(p) for p in train_lists],
                        features=Path(features), previous=Path(previous), out=Path(out),
                        method_name=method_name, method=T.MethodSettings.from_dict(dict(method)),
                        optim=T.OptimSettings(**optim), loader=T.LoaderSettings(**loader), seed=seed,
                        device=device, threads=threads,
                        params={"method": dict(method), "optim": dict(optim)},
                        tensorboard=Path(tensorboard) if tensorboard else None)


EXECUTION_LOADER_KEYS = ("num_workers", "in_memory", "features_on_gpu")


def execution_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide how a job runs but not what it computes: ``loader`` (loader
    workers, features read into RAM, features held on the GPU) and ``device``. The workflow reads
    them from the config instead of passing them as rule params, so that changing them reruns
    nothing. (The CPU and a GPU, or fp32 and bf16, do give different last bits: ``precision``
    and ``deterministic`` are params; to recompute on another device, use ``--forcerun``.)"""
    training = config.get("training", {})
    return {"loader": {k: training[k] for k in EXECUTION_LOADER_KEYS if k in training},
            "device": training.get("device", "auto")}


def tensorboard_dir(log_path: str, config: Mapping[str, Any]) -> str | None:
    """Where a training job writes TensorBoard events when ``training.tensorboard`` is on: beside
    its log, ``logs/<dataset>/<norm>/<method>/seed<s>/train_phase<k>.tensorboard/`` (so that
    ``tensorboard --logdir logs/<dataset>/<norm>`` shows every job of a norm)."""
    if not config.get("training", {}).get("tensorboard", False):
        return None
    return str(Path(log_path).with_suffix(".tensorboard"))


def _meta(meta: Mapping[str, Any]) -> dict:
    return {
        "dataset": meta["dataset"],
        "norm": meta["norm"],
        "method": meta.get("run", meta.get("method")),
        "seed": int(meta["seed"]),
    }


def evaluate(*, classes: str, checkpoints: Sequence[str], phases: Sequence[int], test_lists: Sequence[str],
             base_list: str, features: str, out: str, meta: Mapping[str, Any], threshold: float,
             batch_size: int, device: str = "auto", threads: int = 1, num_workers: int = 0) -> None:
    """Metrics of every phase model of one chain, in one JSON file (:func:`cilaudio.evaluate.evaluate_chain`)."""
    from .evaluate import evaluate_chain

    evaluate_chain(checkpoints=[Path(c) for c in checkpoints], phases=[int(k) for k in phases],
                   test_lists=[Path(t) for t in test_lists], split=L.read_classes(classes),
                   base_list=Path(base_list), features=Path(features), out=Path(out), meta=_meta(meta),
                   threshold=threshold, batch_size=batch_size, device=device, threads=threads,
                   num_workers=num_workers)


def cka(*, classes: str, reference: str, others: Sequence[str], base_list: str, features: str, out: str,
        meta: Mapping[str, Any], batch_size: int, device: str = "auto", threads: int = 1,
        num_workers: int = 0) -> None:
    """CKA of the phase-0 model with every later phase model of one chain, in one npz file."""
    from .evaluate import cka_chain

    cka_chain(reference=Path(reference), others=[Path(o) for o in others], split=L.read_classes(classes),
              base_list=Path(base_list), features=Path(features), out=Path(out), meta=_meta(meta),
              batch_size=batch_size, device=device, threads=threads, num_workers=num_workers)


def collect_metrics(paths: Sequence[str], out: str, *, methods: Sequence[str], summary: str | None = None,
                    versions: str | None = None) -> None:
    """The tidy table of every metrics file (one row per seed) and, in ``summary``, its summary over
    seeds (mean, std, 95 % interval, number of seeds: :func:`cilaudio.tidy.summarise`); in
    ``versions``, the library version that trained and evaluated each phase model."""
    from .tidy import code_versions, metrics_table, summarise, version_warnings, write_tsv

    if versions is not None:
        table = code_versions([Path(p) for p in paths])
        write_tsv(table, versions)
        for warning in version_warnings(table):
            log.warning(warning)

    table = metrics_table([Path(p) for p in paths], methods=methods)
    write_tsv(table, out)
    log.info(f"{len(table)} rows from {len(paths)} metrics files -> {out}")
    if summary is not None:
        summ = summarise(table)
        write_tsv(summ, summary)
        log.info(f"{len(summ)} rows (mean over seeds with 95 % interval) -> {summary}")


def plot_metrics(table: str, out: str) -> None:
    import pandas as pd

    from .plots import plot_metric_curves

    plot_metric_curves(pd.read_csv(table, sep="\t"), out)


def collect_training(paths: Sequence[str], out: str) -> None:
    from .training_history import collect_history

    table = collect_history(paths, out)
    log.info(f"{len(table)} epochs from {len(paths)} training jobs -> {out}")


def plot_training(table: str, out: str) -> None:
    import pandas as pd

    from .plots import plot_training_curves

    plot_training_curves(pd.read_csv(table, sep="\t"), out)


def plot_cka(paths: Sequence[str], *, heatmaps: str, diagonal: str) -> None:
    from .plots import load_cka_files, plot_cka_diagonal, plot_cka_heatmaps

    last = max(r["phase"] for r in load_cka_files(paths))
    plot_cka_heatmaps(paths, heatmaps, phase=last)
    plot_cka_diagonal(paths, diagonal)


CAPTIONS = {
    "metrics": "Metrics after every phase (mean over seeds; band: the 95 % t-interval of the mean over seeds, "
               "mean ± t(0.975, n-1) · s / √n with s the sample standard deviation over the n seeds; no band "
               "with one seed).",
    "training": "Training loss (the total that was minimised) per epoch: one panel per method, one line "
                "per phase (later phases darker), mean over seeds with a min..max band. Every loss term, "
                "the learning rate and the time of each epoch are in training.tsv.",
    "cka_heatmaps": "Linear CKA between every layer of the phase-0 model (rows) and of the final "
                    "phase's model (columns), per method, on the base-class test clips.",
    "cka_diagonal": "CKA of each layer with itself between the phase-0 model and each later "
                    "phase's model, one panel per method, one line per phase (later phases darker; squares, "
                    "shaded: norm layers): low values show where the representation drifted.",
}


PAPERS = {"base": {"epochs": 120, "batch_size": 32, "lr": 0.01, "lr_min": 0.0001},
          "incremental": {"epochs": 120, "batch_size": 32, "lr": 0.001, "lr_min": 0.0001}}


def deviations(config: Mapping) -> list[str]:
    """Where this run's training settings are not the papers' (said in the report)."""
    notes = []
    for stage, ref in PAPERS.items():
        ours = config["training"][stage]
        diff = [f"{k} {ours[k]} (papers: {v})" for k, v in ref.items() if ours.get(k) != v]
        if diff:
            name = "phase 0" if stage == "base" else "phases 1-4"
            notes.append(f"This run's {name} differ from the papers' settings: {', '.join(diff)}.")
    if config["model"]["width"] != 64:
        notes.append(f"CNN14 width {config['model']['width']} (papers: 64).")
    return notes


def make_report(*, out: str, table: str, classes: str, figures: Mapping[str, str], config: Mapping,
                dataset: str, norm: str, features: Sequence[str] = (), repo_dir: Path | None = None,
                training: str | None = None, versions: str | None = None) -> None:
    import pandas as pd

    from .report import provenance, write_report

    split = L.read_classes(classes)
    run = config["run"]
    ds = config["datasets"][dataset]
    setup = {
        "dataset": dataset,
        "normalisation": {"bn": "BatchNorm", "gn": "GroupNorm", "cn": "Continual Normalization"}[norm],
        "methods": ", ".join(run["methods"]),
        "seeds": ", ".join(str(s) for s in run["seeds"]),
        "clip assignment": f"{ds['assignment']}: {L.ASSIGNMENTS[ds['assignment']]}",
    }
    if ds.get("papers_lists"):
        del setup["clip assignment"]
        setup["lists"] = f"imported from the papers' list files in {ds['papers_lists']}"
    for k, group in enumerate(split.groups):
        setup[f"phase {k} ({len(group)} classes)"] = ", ".join(group)
    repo = repo_dir or Path(__file__).resolve().parents[2]
    frame = pd.read_csv(table, sep="\t")
    figs = {CAPTIONS.get(k, k): Path(v) for k, v in figures.items()}
    import tempfile

    from .plots import plot_memory_histograms

    tmp = Path(tempfile.mkdtemp())
    if plot_memory_histograms(frame, tmp / "memory.png"):
        figs["Label histogram of the exemplar memory of each replay method (final phase, first "
             "seed); the title gives the spread (std) of the counts over the old classes."] = tmp / "memory.png"
    notes = PROTOCOL_NOTES + deviations(config)
    for path in features:
        from .features import skipped_clips

        skipped = skipped_clips(path)
        if skipped:
            first = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            notes.append(f"{len(skipped)} clip(s) were skipped at feature extraction ({path}, "
                         f"on_bad_audio: skip), e.g. {first}")
    training_table = pd.read_csv(training, sep="\t") if training else None
    warnings: list[str] = []
    if versions:
        from .tidy import version_warnings

        version_table = pd.read_csv(versions, sep="\t", dtype=str, keep_default_na=False)
        warnings = version_warnings(version_table)
        libraries = sorted(set(version_table["library"]))
        setup["library version"] = libraries[0] if len(libraries) == 1 else f"{len(libraries)} versions (see the warning)"
    write_report(out, title=f"Class-incremental audio tagging: {dataset}, {setup['normalisation']}",
                 table=frame, training=training_table,
                 figures=figs,
                 config=_plain(config), provenance=provenance(repo),
                 notes=notes, setup=setup, warnings=warnings)


def _plain(obj: Any) -> Any:
    """Snakemake's config holds its own dict/list types: turn them into plain ones for YAML."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj

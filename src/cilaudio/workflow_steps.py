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

log = logging.getLogger(__name__)

def make_lists(**kwargs) -> None:
    """Phase lists of a dataset (:func:`cilaudio.phase_lists.make_lists`)."""
    from .phase_lists import make_lists as make

    make(**kwargs)


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


def train_base(*, classes: str, train_list: str, features: str, out: str, norm: str, seed: int,
               model: Mapping[str, Any], optim: Mapping[str, Any], execution: Mapping[str, Any] | None = None,
               numeric: Mapping[str, Any] | None = None, device: str = "auto", threads: int = 1,
               feature_settings: Mapping[str, Any] | None = None, tensorboard: str | None = None,
               pretrained: str | Sequence[str] | None = None) -> None:
    """Phase 0 (:func:`cilaudio.train.train_base`); ``pretrained``: a PANNs CNN14 checkpoint
    file, or none (a rule's input list of zero or one file)."""
    from . import train as T
    from .features import check_settings, read_settings

    check_settings(features, feature_settings)
    class_split = L.read_classes(classes)
    n_mels = int(read_settings(features)["n_mels"])
    T.train_base(class_split=class_split, train_list=Path(train_list), features=Path(features), out=Path(out),
                 model_settings={"norm": norm, "n_mels": n_mels, **model}, optim=T.OptimSettings(**optim),
                 execution=T.ExecutionSettings(**(execution or {})), numeric=T.NumericSettings(**(numeric or {})),
                 seed=seed, device=device, threads=threads,
                 params={"model": dict(model), "optim": dict(optim)},
                 tensorboard=Path(tensorboard) if tensorboard else None, pretrained=_one_file(pretrained))


def _one_file(files: str | Sequence[str] | None) -> Path | None:
    """A rule input of zero or one file as a path or None."""
    if isinstance(files, (str, Path)):
        return Path(files)
    files = list(files or [])
    if len(files) > 1:
        raise ValueError(f"expected at most one file, got {files}")
    return Path(files[0]) if files else None


def train_incremental(*, classes: str, train_lists: Sequence[str], features: str, previous: str,
                      out: str, phase: int, method_name: str, seed: int, method: Mapping[str, Any],
                      optim: Mapping[str, Any], execution: Mapping[str, Any] | None = None,
                      numeric: Mapping[str, Any] | None = None, device: str = "auto",
                      threads: int = 1, model: Mapping[str, Any] | None = None,
                      tensorboard: str | None = None) -> None:
    from . import methods
    from . import train as T

    class_split = L.read_classes(classes)
    T.train_incremental(expected_model=model, phase=phase, class_split=class_split,
                        train_lists=[Path(p) for p in train_lists], features=Path(features),
                        previous=Path(previous), out=Path(out),
                        method_name=method_name, method=methods.complete(dict(method), where=f"methods.{method_name}"),
                        optim=T.OptimSettings(**optim), execution=T.ExecutionSettings(**(execution or {})),
                        numeric=T.NumericSettings(**(numeric or {})), seed=seed,
                        device=device, threads=threads,
                        params={"method": dict(method), "optim": dict(optim)},
                        tensorboard=Path(tensorboard) if tensorboard else None)


EXECUTION_KEYS = ("num_workers", "in_memory", "features_on_gpu")  # cilaudio.train.ExecutionSettings


def execution_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide how a job runs but not what it computes: ``execution`` (loader
    workers, features read into RAM, features held on the GPU: :class:`cilaudio.train.ExecutionSettings`)
    and ``device``. The workflow reads
    them from the config instead of passing them as rule params, so that changing them reruns
    nothing. (The CPU and a GPU, or fp32 and bf16, do give different last bits: ``precision``
    and ``deterministic``, :class:`cilaudio.train.NumericSettings`, are params; to recompute on
    another device, use ``--forcerun``.)"""
    training = config.get("training", {})
    return {"execution": {k: training[k] for k in EXECUTION_KEYS if k in training},
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
                   test_lists=[Path(t) for t in test_lists], class_split=L.read_classes(classes),
                   base_list=Path(base_list), features=Path(features), out=Path(out), meta=_meta(meta),
                   threshold=threshold, batch_size=batch_size, device=device, threads=threads,
                   num_workers=num_workers)


def cka(*, classes: str, reference: str, others: Sequence[str], base_list: str, features: str, out: str,
        meta: Mapping[str, Any], batch_size: int, device: str = "auto", threads: int = 1,
        num_workers: int = 0) -> None:
    """CKA of the phase-0 model with every later phase model of one chain, in one npz file."""
    from .evaluate import cka_chain

    cka_chain(reference=Path(reference), others=[Path(o) for o in others], class_split=L.read_classes(classes),
              base_list=Path(base_list), features=Path(features), out=Path(out), meta=_meta(meta),
              batch_size=batch_size, device=device, threads=threads, num_workers=num_workers)


def collect_metrics(paths: Sequence[str], out: str, *, methods: Sequence[str], summary: str | None = None,
                    versions: str | None = None) -> None:
    """The tidy table of every metrics file (one row per seed) and, in ``summary``, its summary over
    seeds (mean, std, 95 % interval, number of seeds: :func:`cilaudio.tables.summarise`); in
    ``versions``, the library version that trained and evaluated each phase model."""
    from .tables import code_versions, metrics_table, summarise, version_warnings, write_tsv

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

    from .reporting.plots import plot_metric_curves

    plot_metric_curves(pd.read_csv(table, sep="\t"), out)


def collect_training(paths: Sequence[str], out: str) -> None:
    from .training_history import collect_history

    table = collect_history(paths, out)
    log.info(f"{len(table)} epochs from {len(paths)} training jobs -> {out}")


def plot_training(table: str, out: str) -> None:
    import pandas as pd

    from .reporting.plots import plot_training_curves

    plot_training_curves(pd.read_csv(table, sep="\t"), out)


def plot_cka(paths: Sequence[str], *, heatmaps: str, diagonal: str) -> None:
    from .reporting.cka_files import load_cka_files
    from .reporting.plots import plot_cka_diagonal, plot_cka_heatmaps

    last = max(r["phase"] for r in load_cka_files(paths))
    plot_cka_heatmaps(paths, heatmaps, phase=last)
    plot_cka_diagonal(paths, diagonal)


def report(*, out: str, table: str, classes: str, figures: Mapping[str, str], config: Mapping,
                dataset: str, norm: str, features: Sequence[str] = (), repo_dir: Path | None = None,
                training: str | None = None, versions: str | None = None) -> None:
    import pandas as pd

    from .reporting.norm_report import write_report
    from .reporting.provenance import provenance
    from .reporting.texts import CAPTIONS, NORM_NAMES, PROTOCOL_NOTES, deviations

    class_split = L.read_classes(classes)
    run = config["run"]
    ds = config["datasets"][dataset]
    setup = {
        "dataset": dataset,
        "normalisation": NORM_NAMES[norm],
        "methods": ", ".join(run["methods"]),
        "seeds": ", ".join(str(s) for s in run["seeds"]),
        "clip assignment": f"{ds['assignment']}: {L.ASSIGNMENTS[ds['assignment']]}",
    }
    if ds.get("papers_lists"):
        del setup["clip assignment"]
        setup["lists"] = f"imported from the papers' list files in {ds['papers_lists']}"
    for k, group in enumerate(class_split.groups):
        setup[f"phase {k} ({len(group)} classes)"] = ", ".join(group)
    repo = repo_dir or Path(__file__).resolve().parents[2]
    frame = pd.read_csv(table, sep="\t")
    figs = {CAPTIONS.get(k, k): Path(v) for k, v in figures.items()}
    import tempfile

    from .reporting.plots import plot_memory_histograms

    notes = PROTOCOL_NOTES + deviations(config)
    for path in features:
        from .features import skipped_clips

        skipped = skipped_clips(path)
        if skipped:
            first = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            notes.append(f"{len(skipped)} clip(s) were skipped at feature extraction ({path}, "
                         f"on_bad_audio: skip), e.g. {first}")
    training_table = pd.read_csv(training, sep="\t") if training else None
    warnings: list[str] = list_warnings(classes, features, n_phases=class_split.n_phases)
    if versions:
        from .tables import version_warnings

        version_table = pd.read_csv(versions, sep="\t", dtype=str, keep_default_na=False)
        warnings += version_warnings(version_table)
        libraries = sorted(set(version_table["library"]))
        setup["library version"] = libraries[0] if len(libraries) == 1 else f"{len(libraries)} versions (see the warning)"
        if "start" in version_table:  # model.pretrained: the PANNs file every chain started from
            setup["phase 0 starts"] = "; ".join(sorted(set(version_table["start"])))
    with tempfile.TemporaryDirectory() as tmp:  # the memory figure is embedded in the page, then deleted
        memory_png = Path(tmp) / "memory.png"
        if plot_memory_histograms(frame, memory_png):
            figs["Label histogram of the exemplar memory of each replay method (final phase, first "
                 "seed); the title gives the spread (std) of the counts over the old classes."] = memory_png
        write_report(out, title=f"Class-incremental audio tagging: {dataset}, {setup['normalisation']}",
                     table=frame, training=training_table, figures=figs, config=config,
                     provenance=provenance(repo), notes=notes, setup=setup, warnings=warnings)


def list_warnings(classes: str, features: Sequence[str], *, n_phases: int) -> list[str]:
    """Clips that dominate a phase's training or test list (:func:`cilaudio.excerpts.
    dominant_clip_warnings`), from the lists beside ``classes`` and the features ``dev.h5`` and
    ``eval.h5`` among ``features``; each is also logged, marked for the console
    (:func:`cilaudio.jobs.setup_job_logging` shows such lines beside Snakemake's output)."""
    from .excerpts import dominant_clip_warnings, excerpt_index

    folder = Path(classes).parent
    by_split = {Path(f).stem: f for f in features}
    out: list[str] = []
    for split, kind in (("dev", "train"), ("eval", "test")):
        if split not in by_split:
            continue
        lists = {f"phase {k}'s {'training' if kind == 'train' else 'test'} list": folder / f"{kind}_phase{k}.tsv"
                 for k in range(n_phases)}
        out += dominant_clip_warnings({w: p for w, p in lists.items() if p.exists()}, excerpt_index(by_split[split]))
    for message in out:
        log.warning(message, extra={"console": True})
    return out


def generate_synth(*, out_dir: str, settings: Mapping[str, Any]) -> None:
    """The built-in benchmark's audio and metadata in FSD50K's layout (:func:`cilaudio.synth.generate`)."""
    from .synth import generate

    generate(Path(out_dir), **settings)


def compare_norms(*, html: str, tex: str, md: str, tables: Mapping[str, str],
                  cka: Mapping[str, Sequence[str]], dataset: str) -> None:
    """The norms side by side (:func:`cilaudio.reporting.comparison_page.make_comparison`)."""
    from .reporting.comparison_page import make_comparison

    make_comparison(out=html, tex=tex, md=md, tables=dict(tables), cka=dict(cka), dataset=dataset)
